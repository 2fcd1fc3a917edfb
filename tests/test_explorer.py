"""The explorer's files from synthetic plain inputs (no JAX): layout, encoding, atomic swap."""
import json

import numpy as np
import pytest
from PIL import Image

import explorer_fixture
from aesthetics_jax.report import explorer


def test_quantize_maps_scales_per_map_and_caps_the_side():
  m = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4), np.zeros((4, 4), np.float32)])
  q = explorer.quantize_maps(m, 32)
  assert q.dtype == np.uint8 and q.shape == (2, 4, 4)
  assert q[0].min() == 0 and q[0].max() == 255 and not q[1].any()  # empty stays zero
  big = explorer.quantize_maps(np.random.default_rng(0).random((1, 224, 112)), 32)
  assert big.shape == (1, 32, 16)  # area-averaged to <= 32 a side, aspect kept


def test_thumbnail_keeps_aspect_and_is_small():
  data = explorer_fixture.jpeg(300, 600, 0)
  jpeg, (w, h) = explorer.thumbnail_jpeg(data, 128)
  assert (w, h) == (128, 64) and jpeg[:2] == b'\xff\xd8'
  assert len(jpeg) < len(data)


def test_files_index_and_chunks(tmp_path):
  path = explorer_fixture.write(tmp_path / 'explorer', n=7, limited={'scorecam': 1},
                                chunk_size=3, demo=True)
  d = path.parent
  index = explorer.read_index(path)
  assert len(index['rows']) == 7 and index['methods'] == ['gradcam', 'scorecam']
  assert index['method_images'] == {'scorecam': 1} and index['demo'] is True
  rows = [dict(zip(index['columns'], r)) for r in index['rows']]
  assert [r['empty'] for r in rows] == [i == 2 for i in range(7)]
  assert rows[1]['tag'] == explorer_fixture.ODD_TAGS[1]
  assert sorted(p.name for p in (d / 'maps').iterdir()) == ['0.js', '1.js', '2.js']
  for r in rows:
    with Image.open(d / 'thumbs' / f'{r["row"]}.jpg') as im:
      assert im.size == (r['w'], r['h'])
  chunk = explorer.read_chunk(d / 'maps' / '0.js')
  assert set(chunk) == {0, 1, 2}
  assert set(chunk[0]['maps']) == {'gradcam', 'scorecam'} and set(chunk[1]['maps']) == {'gradcam'}
  assert chunk[0]['maps']['gradcam'].shape == (13, 6, 6)
  assert chunk[2]['empty']['gradcam'][0] and not chunk[2]['maps']['gradcam'][0].any()
  # A tag named `</script>...` cannot end the inline data early.
  html = path.read_text()
  assert html.count('</script>') == 2 and '\\u003c/script>' in html
  assert '{{' not in html
  assert index['regions'] is False and {r['region'] for r in rows} == {None}
  assert 'region' not in chunk[0] and 'peaks' not in chunk[0]


def test_regions_and_low_peaks_are_stored(tmp_path):
  """Each image's region (packed bits) and its low maps' peaks: the row says whether the
  image has a region and whether the first method's peak is inside; the chunk has both."""
  path = explorer_fixture.write(tmp_path / 'explorer', n=5, chunk_size=2, regions=True,
                                limited={'scorecam': 1})
  index = explorer.read_index(path)
  assert index['regions'] is True
  rows = [dict(zip(index['columns'], r)) for r in index['rows']]
  assert [r['region'] for r in rows] == [True, False, True, False, True]
  assert [r['hit'] for r in rows] == [True, None, False, None, False]
  assert [r['low_flat'] for r in rows] == [False, None, False, None, True]
  chunks = {}
  for p in (path.parent / 'maps').glob('*.js'):
    chunks.update(explorer.read_chunk(p))
  for i, rec in chunks.items():
    if i % 2:
      assert 'region' not in rec and 'peaks' not in rec
      continue
    np.testing.assert_array_equal(rec['region'], explorer_fixture.region(i))
    assert set(rec['peaks']) == ({'gradcam', 'scorecam'} if i == 0 else {'gradcam'})
    assert rec['peaks']['gradcam'] == {0: [0.3, 0.35, True], 2: [0.85, 0.85, False],
                                       4: [None, None, False]}[i]
  # An odd-sized region (not a multiple of 8 bits) decodes to its own shape.
  odd = explorer_fixture.images(1, 'vgg16', ['gradcam'], regions=True)[0]
  odd.region = np.eye(5, 7, dtype=bool)
  explorer.write_explorer(tmp_path / 'odd', [odd], arch='vgg16', methods=['gradcam'],
                          targets=explorer_fixture.VGG_TARGETS)
  rec = explorer.read_chunk(tmp_path / 'odd' / 'maps' / '0.js')[0]
  np.testing.assert_array_equal(rec['region'], np.eye(5, 7, dtype=bool))


def test_rewrite_swaps_the_folder_and_failure_keeps_the_old_one(tmp_path):
  out = tmp_path / 'explorer'
  explorer_fixture.write(out, n=4, chunk_size=2)
  explorer_fixture.write(out, n=2, chunk_size=2)
  assert len(explorer.read_index(out / 'index.html')['rows']) == 2
  assert sorted(p.name for p in (out / 'thumbs').iterdir()) == ['0.jpg', '1.jpg']  # no stale
  imgs = explorer_fixture.images(3, 'vgg16', ['gradcam'])
  with pytest.raises(ValueError, match='in order'):
    with explorer.ExplorerWriter(out, arch='vgg16', methods=['gradcam'],
                                 targets=['aesthetic']) as w:
      w.add(imgs[0])
      w.add(imgs[2])
  assert len(explorer.read_index(out / 'index.html')['rows']) == 2  # the old one stands
  assert [p.name for p in tmp_path.iterdir()] == ['explorer']  # no temporary folder left


def test_vgg_index_has_one_target_and_no_tags(tmp_path):
  path = explorer_fixture.write(tmp_path / 'x', arch='vgg16', n=3, methods=('gradcam',))
  index = explorer.read_index(path)
  assert index['targets'] == ['aesthetic', 'low'] and index['score_name'] == 'p(high)'
  assert {r[index['columns'].index('tag')] for r in index['rows']} == {''}
  json.dumps(index)  # plain JSON


def test_a_killed_writers_partial_folder_is_removed_by_the_next(tmp_path):
  """An evaluation killed mid-explorer (SIGKILL, the OOM killer) left its partial folder,
  `.explorer.<pid>.<id>.tmp`, for good: one more hidden copy of the thumbnails and maps each
  time. The next writer removes it; a live writer's folder stays."""
  import os
  import signal
  import subprocess
  import sys
  out = tmp_path / 'explorer'
  code = ('import os, signal, sys; sys.path.insert(0, sys.argv[2]); import explorer_fixture\n'
          'from aesthetics_jax.report import explorer\n'
          "w = explorer.ExplorerWriter(sys.argv[1], arch='vgg16', methods=['gradcam'],"
          " targets=explorer_fixture.VGG_TARGETS)\n"
          "w.add(explorer_fixture.images(1, 'vgg16', ['gradcam'])[0])\n"
          'os.kill(os.getpid(), signal.SIGKILL)\n')
  r = subprocess.run([sys.executable, '-c', code, str(out), os.path.dirname(__file__)],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == -signal.SIGKILL, r.stderr
  left = [p.name for p in tmp_path.iterdir()]
  assert len(left) == 1 and left[0].startswith('.explorer.'), left
  live = tmp_path / f'.explorer.{os.getpid()}.0123abcd.tmp'  # this process: alive
  live.mkdir()
  explorer_fixture.write(out, n=2, methods=('gradcam',))
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['explorer', live.name])


def test_a_full_disk_at_the_last_files_keeps_the_old_explorer_and_no_partial(tmp_path,
                                                                              monkeypatch):
  """The disk filling while index.html (or the last chunk) was written: the error left the
  partial folder, holding the space the full disk needed back."""
  import errno
  from aesthetics_jax import io as io_lib
  out = tmp_path / 'explorer'
  explorer_fixture.write(out, n=2, methods=('gradcam',))
  write = io_lib.atomic_write_text

  def full(p, text, durable=True):
    if str(p).endswith('index.html'):
      raise OSError(errno.ENOSPC, 'No space left on device', str(p))
    return write(p, text, durable)

  monkeypatch.setattr(io_lib, 'atomic_write_text', full)
  with pytest.raises(OSError, match='No space left'):
    explorer_fixture.write(out, n=3, methods=('gradcam',))
  assert [p.name for p in tmp_path.iterdir()] == ['explorer']
  assert len(explorer.read_index(out / 'index.html')['rows']) == 2  # the old one stands
