"""Demo dataset: AVA layout, AVA-like scores, masks, determinism, reuse, learnable signal."""
import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from aesthetics_jax.data import ava
from aesthetics_jax.data import demo as demo_data

NUM_TRAIN, NUM_TEST = 150, 50


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
  root = tmp_path_factory.mktemp('demo_ava')
  summary = demo_data.generate(root, NUM_TRAIN, NUM_TEST, seed=3)
  return root, summary


def _files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
          if p.is_file()}


def test_layout_parses_and_style_filter_drops(demo):
  root, summary = demo
  assert not summary['reused']
  sub = ava.load_subset(root, 'style')
  assert (len(sub['train']), len(sub['test'])) == (NUM_TRAIN, NUM_TEST)
  assert all(im.tags for split in sub.values() for im in split)
  dropped = ava.style_dropped(root)
  reasons = {r for split in dropped.values() for _, r in split}
  assert reasons == {'no tag', 'not in AVA.txt'}
  everything = ava.load_subset(root, 'all')
  n_rows = len(everything['train']) + len(everything['test'])
  assert n_rows == summary['num_images'] == NUM_TRAIN + NUM_TEST + summary['num_untagged']
  tags = ava.read_tags(root / 'tags.txt')
  assert len(tags) == 66 and tags[1] == 'Abstract' and tags[7] == 'Black and White'
  assert tags[36] == 'Sky' and len(set(tags.values())) == 66
  assert ava.read_challenges(root / 'challenges.txt')
  for im in sub['train'][:20]:
    assert ava.image_path(root, im.image_id).is_file()
  assert not set(ava.KNOWN_BAD_IDS) & {im.image_id for s in everything.values() for im in s}


def test_tags_follow_content(demo):
  root, _ = demo
  recs = ava.load_subset(root, 'style')['train']
  tags = ava.read_tags(root / 'tags.txt')
  used = {tags[t] for im in recs for t in im.tags}
  # Only content tags of the generator's scenes appear, and several of them.
  allowed = {t for v in demo_data.SUBJECT_TAGS.values() for t in v}
  allowed |= {t for v in demo_data.GROUND_TAGS.values() for t in v} | {'Sky', 'Black and White'}
  assert used <= allowed and len(used) >= 8


def test_score_statistics_are_ava_like(demo):
  root, summary = demo
  recs = ava.read_ava_txt(root / 'AVA.txt')
  t = ava.votes_to_targets(np.stack([r.votes for r in recs]))
  n_votes = np.array([r.num_votes for r in recs])
  assert 100 <= n_votes.min() and n_votes.max() <= 300
  assert abs(t['mean_score'].mean() - 5.4) < 0.12
  assert 0.6 < t['mean_score'].std() < 0.85
  assert abs(t['label'].mean() - 0.72) < 0.07
  assert abs(t['std_score'].mean() - 1.4) < 0.1
  assert summary['mean_of_means'] == pytest.approx(t['mean_score'].mean(), abs=1e-3)


def test_masks_match_images_and_mark_low_images(demo):
  root, _ = demo
  recs = ava.read_ava_txt(root / 'AVA.txt')
  sizes, areas, labels = set(), [], []
  for r in recs:
    with Image.open(ava.image_path(root, r.image_id)) as im:
      assert im.format == 'JPEG' and im.mode == 'RGB'
      size = im.size
    with Image.open(root / 'defect_masks' / f'{r.image_id}.png') as mk:
      assert mk.mode == 'L' and mk.size == size
      m = np.asarray(mk)
    assert set(np.unique(m)) <= {0, 255}
    sizes.add(size)
    areas.append((m > 0).mean())
    labels.append(r.label)
  areas, labels = np.array(areas), np.array(labels)
  w, h = np.array(sorted(sizes)).T
  assert w.min() >= 160 and h.min() >= 160 and max(w.max(), h.max()) <= 400
  assert (w > h).any() and (w < h).any() and (w == h).any()  # landscape, portrait, square
  # Every low image carries a visible defect; clean images exist among the high ones.
  assert (areas[labels == 0] > 0).all() and np.median(areas[labels == 0]) > 0.15
  assert (areas[labels == 1] == 0).mean() > 0.3
  assert areas[labels == 0].mean() > 2 * areas[labels == 1].mean()
  assert areas.max() <= 0.75


def _features(path: Path, size: int = 64) -> np.ndarray:
  """Hand-crafted statistics at 64 px: detail, noise, exposure, colour."""
  with Image.open(path) as im:
    x = np.asarray(im.convert('RGB').resize((size, size), Image.BILINEAR), np.float32)
  g = x.mean(2)
  lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
  blocks = lap[:56, :56].reshape(7, 8, 7, 8).mean((1, 3))
  sat = x.max(2) - x.min(2)
  chroma = np.abs(x - g[..., None]).reshape(8, 8, 8, 8, 3).mean((1, 3))
  return np.array([lap.mean(), np.percentile(blocks, 90), np.percentile(blocks, 10),
                   blocks.std(), (x.min(2) > 235).mean(), (x.max(2) < 40).mean(), sat.mean(),
                   chroma.max(), np.percentile(sat, 95)])


def _logistic_fit(a: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
  w = np.zeros(a.shape[1])
  for _ in range(30):  # Newton steps
    p = 1 / (1 + np.exp(-a @ w))
    hess = a.T @ (a * (p * (1 - p))[:, None]) + l2 * np.eye(a.shape[1])
    w -= np.linalg.solve(hess, a.T @ (p - y) + l2 * w)
  return w


def test_image_statistics_separate_high_and_low(demo):
  root, _ = demo
  recs = ava.read_ava_txt(root / 'AVA.txt')
  x = np.stack([_features(ava.image_path(root, r.image_id)) for r in recs])
  y = np.array([r.label for r in recs], np.float64)
  x = (x - x.mean(0)) / (x.std(0) + 1e-8)
  # Clear gaps in class means (Cohen's d) for exposure and colour features.
  d = (x[y == 1].mean(0) - x[y == 0].mean(0)) / x.std(0)
  assert d[4] + d[5] < -0.6  # clipped highlights / crushed shadows: more for low images
  # Logistic regression on these features, 5-fold cross-validated, beats the majority class.
  a = np.concatenate([x, x ** 2, np.ones((len(x), 1))], 1)
  folds = np.array_split(np.random.default_rng(0).permutation(len(y)), 5)
  correct = 0
  for k, test in enumerate(folds):
    train = np.concatenate([f for j, f in enumerate(folds) if j != k])
    w = _logistic_fit(a[train], y[train])
    correct += ((a[test] @ w > 0) == (y[test] > 0)).sum()
  acc = correct / len(y)
  majority = max(y.mean(), 1 - y.mean())
  assert acc >= majority + 0.05, (acc, majority)


def _saturation(x: np.ndarray) -> float:
  x = x.astype(np.float32)
  return float((x.max(2) - x.min(2)).mean())


def test_no_global_quality_cue_by_default():
  # Two clean images (damage 0) of different latent quality: the same pixels, so a model can
  # only learn quality from the local defects. With the version-3 cue they differ, and the
  # better one is more vivid.
  seed = [5, 123, 1]
  a, b = demo_data.render_image(seed, 6.2), demo_data.render_image(seed, 7.4)
  assert a['damage'] == b['damage'] == 0 and not a['defects']
  np.testing.assert_array_equal(a['image'], b['image'])
  a, b = (demo_data.render_image(seed, q, vivid_gain=0.1) for q in (6.2, 7.4))
  assert _saturation(b['image']) > _saturation(a['image']) + 1


def test_vivid_gain_is_a_parameter_of_the_dataset(tmp_path):
  plain = demo_data.generate(tmp_path / 'a', 6, 3, seed=2)
  cued = demo_data.generate(tmp_path / 'a', 6, 3, seed=2, vivid_gain=0.1)
  assert plain['vivid_gain'] == 0.0 and cued['vivid_gain'] == 0.1
  assert not cued['reused']  # a different gain is a different dataset, not a reuse
  assert demo_data.generate(tmp_path / 'a', 6, 3, seed=2, vivid_gain=0.1)['reused']
  with pytest.raises(demo_data.DemoDataError, match='vivid_gain'):
    demo_data.generate(tmp_path / 'b', 6, 3, vivid_gain=-1)


def test_deterministic_per_seed(tmp_path):
  s1 = demo_data.generate(tmp_path / 'a', 10, 4, seed=7)
  demo_data.generate(tmp_path / 'b', 10, 4, seed=7)
  demo_data.generate(tmp_path / 'c', 10, 4, seed=8)
  fa, fb, fc = (_files(tmp_path / n) for n in 'abc')
  assert fa == fb
  assert fa.keys() != fc.keys() and fa['AVA.txt'] != fc['AVA.txt']
  assert s1['num_images'] == 10 + 4 + 2 and len([k for k in fa if k.startswith('images/')]) == 16


def test_reuse_and_regeneration(tmp_path):
  root = tmp_path / 'ava'
  first = demo_data.generate(root, 8, 3, seed=1)
  man = json.loads((root / demo_data.MANIFEST).read_text())
  assert man['params']['num_train'] == 8 and len(man['image_ids']) == first['num_images']
  meta = (root / 'demo_meta.csv').read_text().splitlines()
  assert meta[0].startswith('image_id,split,latent_quality')
  assert len(meta) == 1 + len(man['image_ids'])
  assert sorted(int(row.split(',')[0]) for row in meta[1:]) == man['image_ids']
  stamp = (root / 'AVA.txt').stat().st_mtime_ns
  again = demo_data.generate(root, 8, 3, seed=1)
  assert again['reused'] and (root / 'AVA.txt').stat().st_mtime_ns == stamp
  assert again['mean_of_means'] == first['mean_of_means']
  # A missing image makes the dataset incomplete; other parameters make a new one.
  (root / 'images' / f"{man['image_ids'][0]}.jpg").unlink()
  assert not demo_data.generate(root, 8, 3, seed=1)['reused']
  assert not demo_data.generate(root, 9, 3, seed=1)['reused']
  assert len(ava.load_subset(root, 'style')['train']) == 9


def test_regeneration_removes_the_earlier_images_it_does_not_list(tmp_path):
  """A root regenerated with another seed or fewer images kept every earlier image and mask,
  unlisted (disk only; a paper-size root regenerated at a tenth of its size kept GBs). Files
  the earlier manifest does not list (a user's) stay."""
  root = tmp_path / 'ava'
  demo_data.generate(root, 8, 3, seed=1)
  (root / 'images' / 'mine.jpg').write_bytes(b'x')
  demo_data.generate(root, 5, 2, seed=2)
  ids = json.loads((root / demo_data.MANIFEST).read_text())['image_ids']
  assert sorted(p.name for p in (root / 'images').iterdir()) == sorted(
      [f'{i}.jpg' for i in ids] + ['mine.jpg'])
  assert sorted(p.name for p in (root / 'defect_masks').iterdir()) == sorted(
      f'{i}.png' for i in ids)


def test_bad_parameters_raise_one_line(tmp_path):
  with pytest.raises(demo_data.DemoDataError, match='pass positive counts'):
    demo_data.generate(tmp_path, 0, 5)
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(demo_data.DemoDataError, match='choose a writable --out_dir') as e:
    demo_data.generate(blocker / 'sub', 2, 1)
  assert '\n' not in str(e.value)


def test_launcher_prints_summary_and_one_line_errors(tmp_path):
  repo = Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  cmd = [sys.executable, '-m', 'launch.make_demo_data', '--num_train=3', '--num_test=2']
  ok = subprocess.run(cmd + [f'--out_dir={tmp_path / "ava"}'], cwd=repo, env=env,
                      capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert 'mean of means' in ok.stdout and (tmp_path / 'ava' / demo_data.MANIFEST).is_file()
  (tmp_path / 'file').write_text('x')
  bad = subprocess.run(cmd + [f'--out_dir={tmp_path / "file" / "ava"}'], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=120)
  # An --out_dir that cannot be created is a bad flag: exit 2 before any work (it was 1).
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr
  assert bad.stderr.strip().count('\n') == 0 and 'pass a folder you can write to' in bad.stderr
  # A real AVA root is not overwritten (its AVA.txt, tags and lists were replaced).
  real = tmp_path / 'AVA'
  real.mkdir()
  (real / 'AVA.txt').write_text('1 42 0 0 0 0 0 0 0 0 0 0 0 0 1\n')
  refused = subprocess.run(cmd + [f'--out_dir={real}'], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=120)
  assert refused.returncode == 2 and 'did not write (an AVA root?)' in refused.stderr
  assert (real / 'AVA.txt').read_text() == '1 42 0 0 0 0 0 0 0 0 0 0 0 0 1\n'
  # More images than the id pool holds was a numpy traceback (exit 1); a bad count is a bad
  # flag: exit 2, nothing written.
  huge = subprocess.run(cmd[:-2] + ['--num_train=2000000', '--num_test=2',
                                    f'--out_dir={tmp_path / "huge"}'], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=120)
  assert huge.returncode == 2 and huge.stderr.strip().count('\n') == 0, huge.stderr
  assert 'is more than the generator makes (500,000' in huge.stderr
  assert not (tmp_path / 'huge').exists()


def test_launcher_vivid_gain_flag(tmp_path):
  repo = Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  cmd = [sys.executable, '-m', 'launch.make_demo_data', '--num_train=3', '--num_test=2']
  ok = subprocess.run(cmd + [f'--out_dir={tmp_path / "ava"}', '--vivid_gain=0.1'], cwd=repo,
                      env=env, capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert demo_data.read_manifest(tmp_path / 'ava')['params']['vivid_gain'] == 0.1
  bad = subprocess.run(cmd + [f'--out_dir={tmp_path / "p"}', '--size=paper', '--vivid_gain=0.3'],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr
  assert bad.stderr.strip().count('\n') == 0 and '--size=paper uses 0.1' in bad.stderr
