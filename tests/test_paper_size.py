"""Paper-size synthetic AVA: list sizes and rejects as AVA's, AVA-sized JPEGs, determinism."""
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from aesthetics_jax.data import ava
from aesthetics_jax.data import dataset
from aesthetics_jax.data import demo
from aesthetics_jax.data import paper_size
from aesthetics_jax.data import selection

SMALL = (56, 64)  # long side of the tiny folders: every short side stays >= 32 px


def _files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
          if p.is_file()}


def test_plan_at_paper_scale_matches_the_style_lists():
  tr, te = paper_size.plan_split(8900, 'train'), paper_size.plan_split(2203, 'test')
  assert (tr.listed, te.listed) == (11270, 2809)
  for p in (tr, te):
    assert p.kept + p.untagged + p.missing + p.corrupt == p.listed
    # Most of AVA's losses are untagged ids; missing files and corrupt JPEGs are a few dozen.
    assert p.untagged > 10 * (p.missing + p.corrupt) and p.missing > p.corrupt >= 1


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp('paper_tiny')
  s = paper_size.generate(root, 16, 8, seed=5, long_side=SMALL, workers=1)
  return root, s


def test_prepare_keeps_the_requested_counts_and_skips_every_kind(tiny):
  root, s = tiny
  sel = dataset.select_images(root, 'style', num_workers=1)
  assert {k: len(v) for k, v in sel.kept.items()} == {'train': 16, 'test': 8}
  reasons = {r.reason for r in sel.skipped}
  assert reasons >= {selection.NO_TAG, selection.MISSING} and reasons & {selection.TRUNCATED,
                                                                     selection.EMPTY}
  listed = {k: len(ava.read_image_list(root / 'style_image_lists' / f'{k}.jpgl'))
            for k in ('train', 'test')}
  assert listed == s['num_listed'] == {'train': 20, 'test': 10}
  assert len(sel.skipped) == 6 == s['num_untagged'] + s['num_missing'] + s['num_corrupt']
  for im in sel.kept['train']:
    with Image.open(ava.image_path(root, im.image_id)) as img:
      assert SMALL[0] <= max(img.size) <= SMALL[1]
    assert (root / 'defect_masks' / f'{im.image_id}.png').is_file()


def test_same_bytes_with_any_worker_count_and_reuse(tiny, tmp_path):
  root, _ = tiny
  s = paper_size.generate(tmp_path, 16, 8, seed=5, long_side=SMALL, workers=2)
  assert not s['reused'] and s['workers'] == 2
  assert _files(tmp_path) == _files(root)
  again = paper_size.generate(tmp_path, 16, 8, seed=5, long_side=SMALL, workers=2)
  assert again['reused'] and again['num_listed'] == s['num_listed']


def test_a_missing_file_stays_missing_over_an_earlier_generation(tiny, tmp_path):
  """Generated into a root another seed or size had filled, an id meant to be a missing file
  kept the earlier image there: prepare kept one image more than planned, of another scene."""
  root, _ = tiny
  missing = demo.read_manifest(root)['missing_ids'][0]
  (tmp_path / 'images').mkdir()
  stale = tmp_path / 'images' / f'{missing}.jpg'
  Image.new('RGB', (64, 48), 'red').save(stale)
  paper_size.generate(tmp_path, 16, 8, seed=5, long_side=SMALL, workers=1)
  assert not stale.exists() and _files(tmp_path) == _files(root)


def test_regeneration_removes_the_earlier_images_it_does_not_list(tiny, tmp_path):
  """Regenerated with another seed or size, the earlier generation's images stayed, unlisted:
  GBs at the paper's size. The root holds the same files as one generated afresh."""
  paper_size.generate(tmp_path, 24, 8, seed=6, long_side=SMALL, workers=1)
  paper_size.generate(tmp_path, 16, 8, seed=5, long_side=SMALL, workers=1)
  assert _files(tmp_path) == _files(tiny[0])


def test_images_are_ava_sized(tmp_path):
  s = paper_size.generate(tmp_path, 3, 1, seed=0, workers=1)
  sizes = [Image.open(p).size for p in (tmp_path / 'images').glob('*.jpg')]
  assert len(sizes) == sum(s['num_listed'].values()) == 5
  assert all(500 <= max(wh) <= 800 for wh in sizes)
  assert len({round(w / h, 2) for w, h in sizes}) >= 2  # varying aspect ratios
  assert 80 <= s['mean_jpeg_kb'] <= 250
  masks = [np.asarray(Image.open(p)) for p in (tmp_path / 'defect_masks').glob('*.png')]
  assert all(set(np.unique(m)) <= {0, 255} for m in masks)


def test_bad_long_side_is_one_line(tmp_path):
  with pytest.raises(paper_size.demo.DemoDataError, match='long_side'):
    paper_size.generate(tmp_path, 4, 2, long_side=(20, 40))


def test_make_demo_data_size_paper_flag(tmp_path):
  cmd = [sys.executable, '-m', 'launch.make_demo_data', '--size=paper', '--num_train=3',
         '--num_test=1', '--workers=1']
  ok = subprocess.run(cmd + [f'--out_dir={tmp_path / "ava"}'], capture_output=True, text=True,
                      timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert 'paper-size synthetic AVA' in ok.stdout and 'keeps 3 / 1' in ok.stdout
  assert paper_size.demo.read_manifest(tmp_path / 'ava')['params']['size'] == 'paper'
  (tmp_path / 'file').write_text('x')
  bad = subprocess.run(cmd + [f'--out_dir={tmp_path / "file" / "ava"}'], capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 2 and bad.stderr.strip().count('\n') == 0  # a bad flag: exit 2
  assert 'pass a folder you can write to' in bad.stderr


def test_make_demo_data_refuses_a_huge_worker_pool(tmp_path):
  """--workers=100000 started 100,000 spawned interpreters at once (40 took 1.6 GB)."""
  from aesthetics_jax import cpu_backend
  most = 4 * cpu_backend.host_cpu_count()
  r = subprocess.run([sys.executable, '-m', 'launch.make_demo_data', '--size=paper',
                      '--num_train=3', '--num_test=1', f'--workers={most + 1}',
                      f'--out_dir={tmp_path / "ava"}'], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and not (tmp_path / 'ava').exists(), r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      f'make_demo_data: --workers={most + 1}: pass 0 (one per core) or 1 to {most} (4 per '
      'core: more processes only take memory)']


def test_a_full_disk_names_the_space_these_counts_need(tmp_path, monkeypatch):
  """A failed write said '(choose a writable --out_dir with ~2.5 GB free)', the paper counts'
  size, for any --num_train / --num_test (a 300 / 80 folder takes 68 MB)."""
  import errno  # pylint: disable=import-outside-toplevel

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'images' / '1.jpg'))
  monkeypatch.setattr(paper_size, '_generate', full)
  with pytest.raises(paper_size.demo.DemoDataError) as e:
    paper_size.generate(tmp_path, 300, 80, workers=1)
  assert str(e.value).endswith('(No space left on device) (choose a writable --out_dir with '
                               '~87 MB free)'), str(e.value)
  with pytest.raises(paper_size.demo.DemoDataError, match='~2.5 GB free'):
    paper_size.generate(tmp_path, workers=1)
