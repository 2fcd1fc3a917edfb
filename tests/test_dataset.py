"""TFDS `ava` builder: every fault is skipped with its reason, kept bytes are the file bytes."""
import contextlib
import csv
import errno
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from aesthetics_jax.data import ava
from aesthetics_jax.data import stats as data_stats
from aesthetics_jax.data import dataset
from aesthetics_jax.data import decoder
from aesthetics_jax.data import prepare_lock
from aesthetics_jax.data import selection
from image_fixture import huge_header_png

TAG_NAMES = {1: 'Abstract', 2: 'Nature', 3: 'Portraiture', 4: 'Landscape'}


def _rgb(w, h, seed=0):
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), 'RGB')


def _encode(im, fmt, **kw):
  buf = io.BytesIO()
  im.save(buf, fmt, **kw)
  return buf.getvalue()


def rotated_jpeg(h=48, w=64, orientation=6) -> tuple[bytes, np.ndarray]:
  """(JPEG stored rotated with EXIF `orientation` 6 (or 8), the displayed image uint8 [h,w,3]).

  A smooth image, so that JPEG coding of the rotated pixels stays close to the upright ones."""
  yy, xx = np.mgrid[0:h, 0:w]
  shown = np.stack([xx * 255 / w, yy * 255 / h, 255 - (xx + yy) * 255 / (h + w)], -1)
  shown = shown.astype(np.uint8)
  # Orientation 6 is displayed by turning the stored pixels 90° clockwise (8: anticlockwise).
  turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
  exif = Image.Exif()
  exif[0x0112] = orientation
  return _encode(Image.fromarray(shown).transpose(turn), 'JPEG', quality=95,
                 exif=exif.tobytes()), shown


def write_ava(root: Path, rows, lists, files: dict[int, bytes]) -> Path:
  """AVA layout: rows = (image_id, votes[10], (tag1, tag2), challenge_id)."""
  (root / 'images').mkdir(parents=True)
  (root / 'style_image_lists').mkdir()
  lines = [' '.join(str(x) for x in (n + 1, i, *votes, *tags, ch))
           for n, (i, votes, tags, ch) in enumerate(rows)]
  (root / 'AVA.txt').write_text('\n'.join(lines) + '\n')
  (root / 'tags.txt').write_text(''.join(f'{k} {v}\n' for k, v in TAG_NAMES.items()))
  (root / 'challenges.txt').write_text('7 Test challenge\n')
  for split, ids in lists.items():
    (root / 'style_image_lists' / f'{split}.jpgl').write_text(''.join(f'{i}\n' for i in ids))
  for i, data in files.items():
    (root / 'images' / f'{i}.jpg').write_bytes(data)
  return root


# id -> (file bytes or None for missing, tags, expected skip reason or None = kept)
def _cases():
  good = _encode(_rgb(48, 40, 1), 'JPEG', quality=90)
  truncated = _encode(_rgb(64, 64, 2), 'JPEG', quality=95)
  truncated = truncated[:len(truncated) // 2]
  pal = _rgb(40, 36, 3).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
  rgba = _rgb(36, 40, 4).convert('RGBA')
  rgba.putalpha(128)
  blank = Image.new('L', (300, 300), 255)  # 90,000 px: over the test's 50,000 px limit
  return {
      # kept: unusual but decodable formats, stored byte for byte
      101: (good, (1, 2), None),
      102: (_encode(_rgb(40, 40, 5).convert('L'), 'JPEG'), (2, 0), None),       # grayscale
      103: (_encode(_rgb(40, 48, 6).convert('CMYK'), 'JPEG'), (3, 0), None),    # CMYK JPEG
      104: (_encode(pal, 'PNG'), (4, 0), None),                                 # palette PNG
      105: (_encode(rgba, 'PNG'), (1, 0), None),                                # RGBA PNG
      106: (_encode(_rgb(44, 40, 7), 'PNG'), (0, 2), None),                     # PNG as .jpg
      107: (rotated_jpeg()[0], (1, 0), None),                     # EXIF-rotated: stored upright
      # skipped, one per fault
      201: (None, (1, 0), selection.MISSING),
      202: (b'', (1, 0), selection.EMPTY),
      203: (truncated, (1, 0), selection.TRUNCATED),
      204: (np.random.default_rng(0).bytes(3000), (1, 0), selection.UNDECODABLE),
      205: (_encode(_rgb(20, 20, 8), 'JPEG'), (1, 0), selection.TOO_SMALL),
      206: (huge_header_png(), (1, 0), selection.DECOMPRESSION_BOMB),           # header only
      207: (_encode(blank, 'PNG'), (1, 0), selection.DECOMPRESSION_BOMB),        # over limit
      440774: (good, (1, 0), selection.KNOWN_BAD),                               # known-bad id
      208: (good, (0, 0), selection.NO_TAG),                                     # untagged style id
      210: (b'sparse', (1, 0), selection.TOO_LARGE),          # > MAX_FILE_BYTES (written sparse)
  }


MAX_PIXELS = 50_000
TEST_IDS = [301, 302]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('ava')
  cases = _cases()
  rows, files = [], {}
  for n, (i, (data, tags, _)) in enumerate(cases.items()):
    rows.append((i, [n % 3 + 1, 1, 2, 3, 5, 8 - n % 5, 4, 2, 1, n % 2], tags, 7))
    if data is not None:
      files[i] = data
  for i in TEST_IDS:
    rows.append((i, [0, 0, 1, 2, 3, 4, 3, 2, 1, 0], (2, 3), 7))
    files[i] = _encode(_rgb(40, 40, i), 'JPEG')
  # 209 is listed for training but has no AVA.txt row.
  write_ava(root, rows, {'train': list(cases) + [209], 'test': TEST_IDS}, files)
  with open(root / 'images' / '210.jpg', 'wb') as f:  # refused from its size, never read
    f.truncate(decoder.MAX_FILE_BYTES + 1)
  data_dir = tmp_path_factory.mktemp('tfds')
  res = dataset.prepare(root, data_dir, 'style', max_pixels=MAX_PIXELS, num_workers=2)
  return root, data_dir, cases, res


def test_skipped_rows_and_kept_counts_are_exact(built):
  _, _, cases, res = built
  expected = {(i, r) for i, (_, _, r) in cases.items() if r is not None}
  expected.add((209, selection.NOT_IN_AVA_TXT))
  with open(res.skipped_csv, newline='') as f:
    reader = csv.DictReader(f)
    assert reader.fieldnames == ['split', 'image_id', 'reason']
    rows = list(reader)
  assert {(int(r['image_id']), r['reason']) for r in rows} == expected
  assert len(rows) == len(expected) and {r['split'] for r in rows} == {'train'}
  assert res.kept == {'train': 7, 'test': 2}
  assert res.skipped == {'train': len(expected), 'test': 0}
  assert res.skipped_csv == dataset.dataset_dir(built[1], 'style') / 'skipped.csv'
  assert not res.reused


def test_records_hold_original_bytes_without_tensorflow(built):
  root, data_dir, cases, _ = built
  sources = dataset.load_sources(data_dir, 'style')
  assert {k: len(v) for k, v in sources.items()} == {'train': 7, 'test': 2}
  train = [sources['train'][i] for i in range(len(sources['train']))]
  by_id = {int(r['image_id']): r for r in train}
  assert set(by_id) == {i for i, (_, _, r) in cases.items() if r is None}
  rows = {a.image_id: a for a in ava.read_ava_txt(root / 'AVA.txt')}
  for i, r in by_id.items():
    if i != 107:
      assert r['image'] == (root / 'images' / f'{i}.jpg').read_bytes()  # never re-encoded
    np.testing.assert_array_equal(r['votes'], rows[i].votes)
    assert r['votes'].dtype == np.int32 and r['votes'].shape == (10,)
    assert r['tags'].dtype == np.int32 and r['tags'].shape == (2,)
    assert sorted(t for t in r['tags'] if t) == sorted(rows[i].tags)
    assert int(r['challenge_id']) == 7
    # kept bytes decode (to RGB) however odd the format
    assert np.asarray(Image.open(io.BytesIO(r['image'])).convert('RGB')).shape[2] == 3
  assert sorted(int(sources['test'][i]['image_id']) for i in range(2)) == TEST_IDS
  # The EXIF-rotated photo is stored as displayed, orientation tag gone: any reader agrees.
  with Image.open(io.BytesIO(by_id[107]['image'])) as im:
    assert im.size == (64, 48) and im.format == 'JPEG'
    assert im.getexif().get(0x0112, 1) == 1
    stored = np.asarray(im.convert('RGB'), np.float32)
  assert np.abs(stored - rotated_jpeg()[1]).mean() < 3
  # order is deterministic: a fresh source returns the same sequence of ids
  again = dataset.load_sources(data_dir, 'style')['train']
  assert [int(again[i]['image_id']) for i in range(len(again))] == [
      int(r['image_id']) for r in train]
  assert 'tensorflow' not in sys.modules


def test_stats_and_figures(built):
  _, _, _, res = built
  assert res.stats_json.parent == res.skipped_csv.parent
  for name in ('mean_score_hist', 'tag_counts'):
    png = res.figures[name]
    assert png.parent.parent == res.skipped_csv.parent
    with Image.open(png) as im:
      assert im.format == 'PNG' and min(im.size) > 100
  stats = json.loads(res.stats_json.read_text())
  assert stats['kept'] == {'train': 7, 'test': 2}
  # kept train tags: 101 (1,2) 102 (2) 103 (3) 104 (4) 105 (1) 106 (2) 107 (1)
  assert stats['train']['tag_counts'] == {'Nature': 3, 'Abstract': 3, 'Portraiture': 1,
                                          'Landscape': 1}
  src = dataset.load_sources(built[1], 'style')['train']
  votes = np.stack([src[i]['votes'] for i in range(len(src))]).astype(np.float64)
  means = votes @ np.arange(1, 11) / votes.sum(1)
  assert stats['train']['mean_of_mean_scores'] == pytest.approx(means.mean())
  assert stats['train']['fraction_high'] == pytest.approx((means > 5).mean())
  section = data_stats.report_section(res.dataset_dir)
  assert section['figures'] == res.figures
  assert section['stats']['kept_train'] == 7 and section['stats']['skipped_train'] == 11
  assert section['stats']['train_fraction_high'] == pytest.approx((means > 5).mean())
  assert data_stats.report_section(res.dataset_dir / 'nope') is None


def test_rerun_reuses_without_rebuilding(built, monkeypatch):
  root, data_dir, _, first = built
  files = sorted(first.dataset_dir.rglob('*'))
  mtimes = [p.stat().st_mtime_ns for p in files]

  def boom(*a, **k):
    raise AssertionError('rebuilt')
  monkeypatch.setattr(dataset, 'select_images', boom)
  res = dataset.prepare(root, data_dir, 'style', max_pixels=MAX_PIXELS)
  assert res.reused
  assert res.kept == first.kept and res.skipped == first.skipped
  assert res.skipped_rows == first.skipped_rows
  assert sorted(first.dataset_dir.rglob('*')) == files
  assert [p.stat().st_mtime_ns for p in files] == mtimes


@pytest.mark.parametrize('make,reason', [
    (lambda: b'', selection.EMPTY),
    (lambda: huge_header_png(), selection.DECOMPRESSION_BOMB),
    (lambda: _encode(_rgb(64, 31), 'PNG'), selection.TOO_SMALL),
    (lambda: _encode(_rgb(64, 64), 'JPEG')[:-200], selection.TRUNCATED),
    (lambda: b'\xff\xd8\xff' + bytes(500), selection.UNDECODABLE),
    (lambda: _encode(_rgb(64, 32).convert('CMYK'), 'JPEG'), None),
])
def test_check_image_bytes(make, reason):
  assert selection.check_image_bytes(make()) == reason


def test_pixel_limit_is_configurable():
  data = _encode(_rgb(64, 64), 'PNG')
  assert selection.check_image_bytes(data, max_pixels=64 * 64) is None
  assert selection.check_image_bytes(data, max_pixels=64 * 64 - 1) == selection.DECOMPRESSION_BOMB


def test_load_sources_unprepared_is_one_line(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    dataset.load_sources(tmp_path, 'style')
  assert 'aesthetics-prepare-data --ava_dir' in str(e.value) and '\n' not in str(e.value)


def test_tag_counts_use_names():
  imgs = [ava.AvaImage(image_id=1, votes=np.ones(10, np.int64), tags=(1, 2), challenge_id=0),
          ava.AvaImage(image_id=2, votes=np.ones(10, np.int64), tags=(2,), challenge_id=0)]
  assert data_stats.tag_counts(imgs, TAG_NAMES) == {'Nature': 2, 'Abstract': 1}


def test_tags_named_alike_or_unnamed_keep_their_own_counts(tmp_path):
  """tags.txt naming two tags alike (or a line without a name) made one stats.json key for
  both: the last tag's count overwrote the other's; unnamed tags were '' in reports."""
  imgs = [ava.AvaImage(image_id=i, votes=np.ones(10, np.int64), tags=(t,), challenge_id=0)
          for i, t in enumerate([1, 1, 1, 2, 3, 3, 4])]
  names = {1: 'Still Life', 2: 'Still Life', 3: '', 4: 'Macro'}
  assert data_stats.tag_counts(imgs, names) == {
      'Still Life (tag 1)': 3, 'tag 3': 2, 'Still Life (tag 2)': 1, 'Macro': 1}
  meta = dataset.root_metadata(tmp_path, names)
  assert meta['tag_names'][:5] == ['Still Life', 'Still Life', 'tag 3', 'Macro', 'tag 5']


def test_demo_dataset_end_to_end(tmp_path):
  from aesthetics_jax.data import demo as demo_data  # pylint: disable=import-outside-toplevel
  root = tmp_path / 'demo'
  summary = demo_data.generate(root, num_train=12, num_test=4, seed=3)
  listed = {s: ava.read_image_list(root / 'style_image_lists' / f'{s}.jpgl')
            for s in dataset.SPLITS}
  kept_ids = {s: [im.image_id for im in v] for s, v in ava.load_subset(root, 'style').items()}
  assert [len(kept_ids[s]) for s in dataset.SPLITS] == [12, 4]
  # two faults injected into demo images
  trunc, empty = kept_ids['train'][:2]
  p = ava.image_path(root, trunc)
  p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
  ava.image_path(root, empty).write_bytes(b'')

  res = dataset.prepare(root, tmp_path / 'tfds', 'style', num_workers=2)
  assert res.kept == {'train': 10, 'test': 4}
  reasons = {(r.split, r.image_id): r.reason for r in res.skipped_rows}
  assert reasons[('train', trunc)] == selection.TRUNCATED
  assert reasons[('train', empty)] == selection.EMPTY
  dropped = {(s, i) for s in dataset.SPLITS for i in listed[s] if i not in kept_ids[s]}
  assert set(reasons) == dropped | {('train', trunc), ('train', empty)}
  by_reason = [r.reason for r in res.skipped_rows]
  assert by_reason.count(selection.NO_TAG) == summary['num_untagged']
  assert by_reason.count(selection.NOT_IN_AVA_TXT) == summary['num_listed_missing']

  sources = dataset.load_sources(tmp_path / 'tfds', 'style')
  for s in dataset.SPLITS:
    ids = set()
    for k in range(len(sources[s])):
      r = sources[s][k]
      ids.add(int(r['image_id']))
      assert r['image'] == ava.image_path(root, int(r['image_id'])).read_bytes()
    assert ids == set(kept_ids[s]) - {trunc, empty}
  assert all(p.stat().st_size > 1000 for p in res.figures.values())
  assert 'tensorflow' not in sys.modules


def test_split_over_the_shuffle_buffer_spills_without_tensorflow(built, tmp_path, monkeypatch):
  """A split bigger than TFDS's in-memory shuffle buffer (1 GB; here 1 KB) is spilled to
  bucket files, which TFDS writes through tf.io.gfile: the same records, no TensorFlow."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel
  root, data_dir, _, _ = built
  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 1000)
  spilled = dataset.prepare(root, tmp_path / 'tfds', 'style', max_pixels=MAX_PIXELS,
                            num_workers=2)
  assert spilled.kept == {'train': 7, 'test': 2}
  want = dataset.load_sources(data_dir, 'style')
  got = dataset.load_sources(tmp_path / 'tfds', 'style')
  for s in dataset.SPLITS:
    rows = lambda src: [(int(r['image_id']), r['image']) for r in (src[i] for i in range(len(src)))]
    assert rows(got[s]) == rows(want[s])
  assert 'tensorflow' not in sys.modules
  # Without the stand-in, the spill is where TFDS reaches for TensorFlow.
  monkeypatch.setattr(dataset.tfds_spill, 'gfile_without_tensorflow', contextlib.nullcontext)
  with pytest.raises(ModuleNotFoundError, match='tensorflow'):
    dataset.prepare(root, tmp_path / 'tfds_plain', 'style', max_pixels=MAX_PIXELS,
                    num_workers=2)


# --------------------------------------------------------------------------- data_dir faults

def _tiny_root(root: Path) -> Path:
  from tiny_ava import write_tiny_ava  # pylint: disable=import-outside-toplevel
  return write_tiny_ava(root, num_train=4, num_test=2)


def _leftovers(data_dir: Path) -> list[Path]:
  return sorted((data_dir / 'ava' / 'style').glob('incomplete.*'))


def _raise_finalize(self):
  raise RuntimeError('write() failed: No space left on device')  # as array_record's writer


def _raise_csv(path, rows):
  raise OSError(errno.ENOSPC, 'No space left on device', str(path))


@pytest.mark.parametrize('where', ['tfds_writer', 'skipped_csv'])
def test_full_disk_is_one_line_and_removes_the_partial_dataset(tmp_path, monkeypatch, where):
  from tensorflow_datasets.core import writer  # pylint: disable=import-outside-toplevel
  if where == 'tfds_writer':  # TFDS re-raises it as 'Failed to finalize writing of split ...'
    monkeypatch.setattr(writer.Writer, 'finalize', _raise_finalize)
  else:
    monkeypatch.setattr(dataset, 'write_skipped_csv', _raise_csv)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(dataset.NoSpaceError) as e:
    dataset.prepare(_tiny_root(tmp_path / 'ava'), data_dir, 'style')
  msg = str(e.value)
  assert '\n' not in msg and f'--data_dir={data_dir}:' in msg and 'free space' in msg
  assert 'No space left on device' in msg
  assert e.value.errno == errno.ENOSPC and e.value.filename == str(data_dir)  # train's handler
  assert not dataset.is_prepared(data_dir) and _leftovers(data_dir) == []


def _race(monkeypatch, make_destination):
  """The destination appears after this prepare wrote its records, before TFDS renames."""
  original = dataset.Ava._download_and_prepare

  def racing(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    make_destination()
    return out
  monkeypatch.setattr(dataset.Ava, '_download_and_prepare', racing)


def test_losing_a_prepare_race_reuses_the_winners_dataset(tmp_path, monkeypatch):
  root = _tiny_root(tmp_path / 'ava')
  winner = dataset.prepare(root, tmp_path / 'winner', 'style')
  data_dir = tmp_path / 'tfds'
  _race(monkeypatch, lambda: shutil.copytree(winner.dataset_dir, dataset.dataset_dir(data_dir)))
  lost = dataset.prepare(root, data_dir, 'style')
  monkeypatch.undo()
  rerun = dataset.prepare(root, data_dir, 'style')
  assert lost.reused and rerun.reused
  assert (lost.dataset_dir, lost.kept, lost.skipped, lost.skipped_rows) == (
      rerun.dataset_dir, rerun.kept, rerun.skipped, rerun.skipped_rows)
  assert lost.kept == winner.kept and _leftovers(data_dir) == []


def test_losing_a_race_to_a_half_written_dataset_is_one_line(tmp_path, monkeypatch):
  data_dir = tmp_path / 'tfds'
  _race(monkeypatch, lambda: dataset.dataset_dir(data_dir).mkdir(parents=True))
  with pytest.raises(dataset.DataDirError) as e:
    dataset.prepare(_tiny_root(tmp_path / 'ava'), data_dir, 'style')
  assert '\n' not in str(e.value) and str(dataset.dataset_dir(data_dir)) in str(e.value)
  assert _leftovers(data_dir) == []


def test_a_damaged_dataset_folder_is_one_line_not_an_empty_dataset(tmp_path):
  root = _tiny_root(tmp_path / 'ava')
  data_dir = tmp_path / 'tfds'
  done = dataset.prepare(root, data_dir, 'style')
  (done.dataset_dir / 'dataset_info.json').unlink()  # e.g. lost in a copy
  # TFDS took the folder for a prepared dataset and _result found no splits (KeyError).
  with pytest.raises(dataset.DataDirError, match='no dataset_info.json') as e:
    dataset.prepare(root, data_dir, 'style')
  assert '\n' not in str(e.value) and str(done.dataset_dir) in str(e.value)
  assert 'remove that folder' in str(e.value)
  assert (done.dataset_dir / dataset.SKIPPED_CSV).is_file()  # nothing removed for the user


@pytest.mark.parametrize('damage', ['info', 'missing_shard', 'truncated_shard'])
def test_a_damaged_prepared_dataset_is_one_line_for_prepare_and_train(tmp_path, damage):
  root = _tiny_root(tmp_path / 'ava')
  data_dir = tmp_path / 'tfds'
  d = dataset.prepare(root, data_dir, 'style').dataset_dir
  shard = next(d.glob('ava-train.array_record-*'))
  if damage == 'info':
    (d / 'dataset_info.json').write_text('{"name": "\x01')
  elif damage == 'missing_shard':
    shard.unlink()
  else:
    with open(shard, 'r+b') as f:
      f.truncate(1000)
  # Each was a traceback: protobuf's ParseError, array_record's RuntimeError.
  for call in (lambda: dataset.prepare(root, data_dir, 'style'),
               lambda: dataset.load_sources(data_dir, 'style')):
    with pytest.raises(dataset.DataDirError, match='damaged') as e:
      call()
    assert '\n' not in str(e.value) and str(d) in str(e.value)
    assert 'rerun aesthetics-prepare-data' in str(e.value)


def test_an_image_that_changes_after_validation_is_one_line(tmp_path, monkeypatch):
  root = _tiny_root(tmp_path / 'ava')
  real = dataset.select_images

  def then_overwritten(*args, **kwargs):
    sel = real(*args, **kwargs)
    victim = ava.image_path(root, sel.kept['train'][0].image_id)
    victim.write_bytes(b'not an image any more')
    return sel
  monkeypatch.setattr(dataset, 'select_images', then_overwritten)
  data_dir = tmp_path / 'tfds'
  # Was PIL's UnidentifiedImageError as a traceback out of TFDS's generation.
  with pytest.raises(ava.AvaError, match='unreadable while writing the dataset') as e:
    dataset.prepare(root, data_dir, 'style')
  assert '\n' not in str(e.value) and str(root / 'images') in str(e.value)
  assert not dataset.is_prepared(data_dir) and _leftovers(data_dir) == []


def test_an_image_refused_to_us_is_skipped_as_unreadable(tmp_path, monkeypatch):
  """A file or its folder of mode 000 (as non-root): open() / stat() raise PermissionError;
  patched here, so that the test also runs as root. The folder's ended the whole run with
  '[Errno 13] Permission denied' (is_symlink() raised it again); the file's was 'missing'."""
  root = _tiny_root(tmp_path / 'ava')
  no_stat, no_open = (str(ava.image_path(root, i)) for i in (1000, 1001))
  real_stat, real_open = os.stat, open

  def denied(p):
    return PermissionError(errno.EACCES, 'Permission denied', os.fspath(p))

  def stat(p, *args, **kwargs):
    if os.fspath(p) == no_stat:
      raise denied(p)
    return real_stat(p, *args, **kwargs)

  def opener(p, *args, **kwargs):
    if os.fspath(p) == no_open:
      raise denied(p)
    return real_open(p, *args, **kwargs)
  monkeypatch.setattr(os, 'stat', stat)
  monkeypatch.setattr(decoder, 'open', opener, raising=False)
  for p in (no_stat, no_open):
    with pytest.raises(decoder.DecodeError) as e:
      decoder.read_file(p)
    assert e.value.reason == decoder.UNREADABLE
    assert str(e.value) == (f'{p}: cannot read (Permission denied); check the permissions of '
                            'the file and its folders')
  res = dataset.prepare(root, tmp_path / 'tfds', 'style')
  assert res.kept == {'train': 2, 'test': 2}
  assert res.skipped_csv.read_text() == ('split,image_id,reason\ntrain,1000,unreadable\n'
                                         'train,1001,unreadable\n')


def _killed_prepare_leftovers(folder: Path, age: float) -> list[Path]:
  """What a prepare killed `age` seconds ago (kill -9) left in <data_dir>/ava/<subset>."""
  incomplete = folder / 'incomplete.K9K9K9_1.0.0'
  (incomplete / 'figures').mkdir(parents=True)
  (incomplete / 'ava-train.array_record-00000-of-00001').write_bytes(b'half')
  store = folder / 'resized' / '.1.0.0-train-256.npy.4242.tmp'
  record = folder / 'resized' / '.1.0.0-train-256.json.4242.0a1b2c3d.tmp'
  store.parent.mkdir(exist_ok=True)
  for p in (store, record):
    p.write_bytes(b'half')
  then = time.time() - age
  for p in (incomplete, store, record):
    os.utime(p, (then, then))
  return [incomplete, store, record]


def test_a_rerun_removes_what_a_killed_prepare_left_unless_another_runs(tmp_path):
  """TFDS's incomplete.* folders and the store's .tmp files of a killed prepare stayed
  forever; another prepare of the same dataset that still runs keeps its own."""
  root = _tiny_root(tmp_path / 'ava')
  data_dir = tmp_path / 'tfds'
  folder = data_dir / 'ava' / 'style'
  with prepare_lock.running(data_dir, 'style'):  # another prepare of this dataset runs
    left = _killed_prepare_leftovers(folder, age=60)  # its own, a minute old
    dataset.prepare(root, data_dir, 'style')
    dataset.prepare_resized(data_dir, 'style', [40], progress=False)
    assert all(p.exists() for p in left)
  # It was killed: the next prepare, the only one now, removes them.
  dataset.prepare(root, data_dir, 'style')
  assert not any(p.exists() for p in left)
  assert sorted(p.name for p in folder.iterdir()) == ['1.0.0', 'resized']  # no lock file
  assert sorted(p.name for p in (folder / 'resized').iterdir()) == [
      '1.0.0-train-40.json', '1.0.0-train-40.npy']
  left = _killed_prepare_leftovers(folder, age=60)
  dataset.prepare_resized(data_dir, 'style', [40], progress=False)
  assert not any(p.exists() for p in left)
  # Only what is older than the prepare that finds it: not a file that appeared since.
  young = _killed_prepare_leftovers(folder, age=1)
  prepare_lock._remove_leftovers(folder, time.time() - 30)  # pylint: disable=protected-access
  assert all(p.exists() for p in young)


def test_reuse_only_from_the_same_root_and_options(tmp_path, monkeypatch):
  root = _tiny_root(tmp_path / 'ava')
  data_dir = tmp_path / 'tfds'
  first = dataset.prepare(root, data_dir, 'style')
  (tmp_path / 'link').symlink_to(root)
  monkeypatch.chdir(tmp_path)
  for same in (tmp_path / 'link', Path('ava'), Path('link')):  # same root, other spellings
    assert dataset.prepare(same, data_dir, 'style').kept == first.kept
  # A copy (a moved root) has the same metadata files: the same dataset.
  other = shutil.copytree(root, tmp_path / 'other')
  assert dataset.prepare(other, data_dir, 'style').kept == first.kept
  # Its test list changed: another dataset.
  lists = other / 'style_image_lists'
  (lists / 'test.jpgl').write_text(''.join(
      f'{i}\n' for i in ava.read_image_list(lists / 'test.jpgl')[1:]))
  with pytest.raises(dataset.ReuseError) as e:
    dataset.prepare(other, data_dir, 'style')
  msg = str(e.value)
  assert '\n' not in msg and f'--ava_dir={root.absolute()}, whose AVA.txt' in msg
  assert f'--ava_dir={other}' in msg and 'fresh --data_dir' in msg
  # A dataset prepared before the fingerprint was recorded: compared by the root's path.
  meta_path = dataset.dataset_dir(data_dir) / 'metadata.json'
  meta = json.loads(meta_path.read_text())
  del meta['ava_fingerprint']
  meta_path.write_text(json.dumps(meta))
  assert dataset.prepare(tmp_path / 'link', data_dir, 'style').kept == first.kept
  with pytest.raises(dataset.ReuseError, match=r'prepared from --ava_dir=.*, not --ava_dir='):
    dataset.prepare(shutil.copytree(root, tmp_path / 'moved'), data_dir, 'style')
  with pytest.raises(dataset.ReuseError, match=r'--max_pixels=100000000, not --max_pixels=5000;'):
    dataset.prepare(root, data_dir, 'style', max_pixels=5000)


def test_train_id_in_the_test_list_is_kept_in_test_only(tmp_path):
  root = _tiny_root(tmp_path / 'ava')
  lists = root / 'style_image_lists'
  train = ava.read_image_list(lists / 'train.jpgl')
  test = ava.read_image_list(lists / 'test.jpgl')
  (lists / 'test.jpgl').write_text(''.join(f'{i}\n' for i in test + [train[1]]))
  res = dataset.prepare(root, tmp_path / 'tfds', 'style')
  assert res.kept == {'train': 3, 'test': 3} and res.skipped == {'train': 1, 'test': 0}
  assert res.skipped_rows == [dataset.Skipped('train', train[1], selection.IN_TEST_LIST)]
  assert res.skipped_csv.read_text().splitlines()[1] == f'train,{train[1]},in_test_list'
  sources = dataset.load_sources(tmp_path / 'tfds', 'style')
  ids = {s: {int(src[i]['image_id']) for i in range(len(src))} for s, src in sources.items()}
  assert not ids['train'] & ids['test'] and train[1] in ids['test']


def test_building_leaves_no_empty_tfds_folder_in_tmp(tmp_path, monkeypatch):
  """TFDS's GCS lookup for a dataset not prepared yet made a `tempfile.mkdtemp('tfds')` and
  left it: 1,300 empty /tmp/tmp*tfds folders after a few days of test runs here."""
  import tempfile
  made = []
  real = tempfile.mkdtemp

  def recording(*a, **k):
    made.append((a, k))
    return real(*a, **k)

  monkeypatch.setattr(tempfile, 'mkdtemp', recording)
  b = dataset.builder(tmp_path / 'fresh', 'style')
  assert b.info.features is not None and made == []


def test_validation_decodes_at_most_max_pixels_at_once(tmp_path, monkeypatch):
  """Each validation thread held a whole decode, so memory grew with --num_workers (3.15 GB
  in 8 threads against 0.46 GB in 1 on 9,900-px PNGs; one thread per core by default). The
  pixels being decoded at once now stay within max_pixels; every image is still checked."""
  from tiny_ava import write_tiny_ava
  import threading
  root = write_tiny_ava(tmp_path / 'ava', num_train=8, num_test=4)
  rng = np.random.default_rng(0)
  big = []
  for p in sorted((root / 'images').glob('*.jpg'))[:8]:  # 1 MP PNGs (by content)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (1000, 1000, 3), np.uint8)).save(buf, 'PNG')
    p.write_bytes(buf.getvalue())
    big.append(p.stem)
  live, peak, lock = [0], [0], threading.Lock()
  real = selection.check_image_bytes

  def tracked(data, **kw):
    with Image.open(io.BytesIO(data)) as im:
      n = im.size[0] * im.size[1]
    with lock:
      live[0] += n
      peak[0] = max(peak[0], live[0])
    try:
      time.sleep(0.05)  # long enough for the other threads to start theirs
      return real(data, **kw)
    finally:
      with lock:
        live[0] -= n

  monkeypatch.setattr(selection, 'check_image_bytes', tracked)
  sel = dataset.select_images(root, 'style', max_pixels=1_500_000, num_workers=8)
  assert sum(len(v) for v in sel.kept.values()) == 12 and not sel.skipped
  assert 1_000_000 <= peak[0] <= 1_500_000, peak[0]
  assert selection._decoded_pixels(b'not an image') == 0


def test_images_named_as_mirrors_and_copies_name_them_are_found(tmp_path):
  """Every image not named exactly images/<id>.jpg was skipped as 'missing': `.JPG` and
  `.jpeg` (a copy made on Windows, a re-save), zero-padded ids, subfolders (mirrors split in
  parts), an `Images/` folder. Each is now found, and an id two files claim is skipped as
  'ambiguous' rather than stored from either."""
  from tiny_ava import write_tiny_ava  # pylint: disable=import-outside-toplevel
  root = write_tiny_ava(tmp_path / 'ava', num_train=5, num_test=2)
  im = root / 'images'
  (im / 'part1' / 'a').mkdir(parents=True)
  (im / '1000.jpg').rename(im / '1000.JPG')
  (im / '1001.jpg').rename(im / '1001.jpeg')
  (im / '1002.jpg').rename(im / 'part1' / 'a' / '01002.jpg')
  shutil.copy(im / '1003.jpg', im / 'part1' / '1003.Jpg')
  (im / '1003.jpg').rename(im / '1003.jpeg')
  os.symlink(im, im / 'part1' / 'loop')  # a link back up is walked once
  sel = dataset.select_images(root, 'style', num_workers=1)
  assert sel.skipped == [dataset.Skipped('train', 1003, 'ambiguous')]
  assert [i.image_id for i in sel.kept['train']] == [1000, 1001, 1002, 1004]
  res = dataset.prepare(root, tmp_path / 'tfds', 'style')
  assert res.kept == {'train': 4, 'test': 2}
  src = dataset.load_sources(tmp_path / 'tfds', 'style')['train']
  stored = {int(r['image_id']): r['image'] for r in (src[i] for i in range(len(src)))}
  assert stored[1002] == (im / 'part1' / 'a' / '01002.jpg').read_bytes()
  im.rename(root / 'Images')
  sel = dataset.select_images(root, 'style', num_workers=1)
  assert sel.kept['test'] and [i.image_id for i in sel.kept['train']] == [1000, 1001, 1002, 1004]
