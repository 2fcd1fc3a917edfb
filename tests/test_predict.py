"""launch.predict (= aesthetics-predict) with an initialised checkpoint: good, corrupt and missing
images, folders and globs, --output, and the one-line usage errors found before the model loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import checkpoint_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('predict')
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp / 'mnv2', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=64),
      aesthetic_sign=1)
  good = tmp / 'good.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8)).save(good)
  bad = tmp / 'corrupt.jpg'
  bad.write_bytes(b'\xff\xd8 this is not really a jpeg')
  return tmp, wd, good, bad, tmp / 'missing.jpg'


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'launch.predict', *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli_files_folders_globs_to_output(files, tmp_path):
  """Files, a folder (recursive, image files only, sorted) and globs, in the order given; an
  unreadable file or an input naming no image gets an error line and the others carry on;
  --output receives every line (stdout stays empty); exit 1 as some inputs failed."""
  tmp, wd, good, bad, missing = files
  photos = tmp_path / 'photos'
  (photos / 'sub').mkdir(parents=True)
  (photos / 'empty').mkdir()
  rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), np.uint8)
  for name in ('b.png', 'a.JPG', 'sub/c.jpg'):
    Image.fromarray(rgb).save(photos / name)
  (photos / 'notes.txt').write_text('not an image')
  out = tmp_path / 'preds.jsonl'
  r = _run(f'--workdir={wd}', f'--overlay_dir={tmp / "ov"}', f'--crop_dir={tmp / "crops"}',
           '--aspect=4:3', f'--output={out}', '--top_k=3', good, bad, missing, photos,
           f'{photos}/**/*.jpg', f'{photos}/*.gif', photos / 'empty')
  assert r.returncode == 1, r.stderr[-2000:]
  assert r.stdout == '' and f'wrote 9 lines (4 failed) to {out}' in r.stderr
  assert 'Traceback' not in r.stderr
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  c = str(photos / 'sub' / 'c.jpg')
  assert [x['path'] for x in lines] == [
      str(good), str(bad), str(missing),
      str(photos / 'a.JPG'), str(photos / 'b.png'), c,   # the folder, sorted
      c,                                                  # the recursive glob
      f'{photos}/*.gif', str(photos / 'empty')]
  ok, corrupt, gone = lines[:3]
  assert 'error' not in ok and ok['map'] == 'ok'
  assert len(ok['distribution']) == 10 and abs(sum(ok['distribution']) - 1) < 1e-3
  assert 1.0 <= ok['mean_score'] <= 10.0 and ok['label'] in ('high', 'low')
  assert (ok['label'] == 'high') == (ok['mean_score'] > 5)
  dist = np.array(ok['distribution'])
  assert ok['score_std'] == pytest.approx(
      np.sqrt(dist @ (np.arange(1, 11) - ok['mean_score']) ** 2), abs=1e-3)
  assert all(len(x['tags']) == 3 for x in lines[:1] + lines[3:7])
  assert set(ok['tags'][0]) == {'id', 'name', 'prob'}
  assert [t['prob'] for t in ok['tags']] == sorted((t['prob'] for t in ok['tags']), reverse=True)
  box = ok['box']
  assert set(box) == {'x0', 'y0', 'x1', 'y1'}
  assert 0 <= box['y0'] < box['y1'] <= 48 and 0 <= box['x0'] < box['x1'] <= 80  # image pixels
  b = ok['boxes']['crop']
  assert abs((b['x1'] - b['x0']) / (b['y1'] - b['y0']) - 4 / 3) < 0.1
  ov = np.asarray(Image.open(ok['overlay']))
  assert ov.shape[1:] == (80, 3) and ov.shape[0] > 48   # the legend strip below the image
  crop = Image.open(ok['crop'])
  assert crop.size == Image.open(good).crop((b['x0'], b['y0'], b['x1'], b['y1'])).size
  assert set(corrupt) == {'path', 'error'} and str(bad) in corrupt['error']
  assert set(gone) == {'path', 'error'} and 'no such file' in gone['error']
  assert 'no image files match' in lines[-2]['error']
  assert 'no image files' in lines[-1]['error'] and set(lines[-1]) == {'path', 'error'}


def test_cli_all_failed_exits_1(files):
  _, wd, _, bad, missing = files
  r = _run(f'--workdir={wd}', bad, missing)
  assert r.returncode == 1
  assert all('error' in json.loads(x) for x in r.stdout.strip().splitlines())


def test_cli_bad_workdir_one_line(tmp_path):
  r = _run(f'--workdir={tmp_path}', tmp_path / 'x.jpg')
  assert r.returncode == 2 and r.stdout == ''
  assert 'Traceback' not in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and str(tmp_path) in r.stderr


def test_cli_bad_aspect_one_line(files):
  _, wd, good, _, _ = files
  r = _run(f'--workdir={wd}', '--aspect=4-3', good)
  assert r.returncode == 2 and r.stdout == ''
  assert 'Traceback' not in r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "'4-3'" in lines[0] and 'W:H' in lines[0]


def test_empty_map_is_reported_not_turned_into_the_full_frame(files, tmp_path):
  """A map that points nowhere (every gradient negative) says so: no aesthetic box, no crop."""
  tmp, _, good, _, _ = files
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'neg', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=64),
      aesthetic_sign=-1)
  r = _run(f'--workdir={wd}', f'--crop_dir={tmp_path / "crops"}', '--aspect=4:3', good)
  assert r.returncode == 0, r.stderr[-2000:]
  rec = json.loads(r.stdout.strip().splitlines()[-1])
  assert rec['map'] == 'empty'
  assert 'aesthetic' not in rec['boxes'] and 'crop' not in rec['boxes']
  # The suggested box falls back to the attribute map's (never a silent full frame).
  assert rec['box'] == rec['boxes'].get('attribute')
  if rec['box'] is None:
    assert 'crop' not in rec


def test_config_eval_override_changes_the_box(files):
  """`--config.eval.box_threshold` reaches the predictor: a higher threshold, a tighter box."""
  _, wd, good, _, _ = files
  boxes = []
  for thr in (0.1, 0.9):
    r = _run(f'--workdir={wd}', f'--config.eval.box_threshold={thr}', good)
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(r.stdout.strip().splitlines()[-1])['boxes']['aesthetic']
    boxes.append((b['y1'] - b['y0']) * (b['x1'] - b['x0']))
  assert boxes[1] < boxes[0]


@pytest.mark.parametrize('args, expect', [
    (['--cam_method=gradcam+', 'x.jpg'], "unknown CAM method 'gradcam+'; use one of gradcam"),
    (['--output={tmp}', 'x.jpg'], '--output={tmp} is a folder'),
    (['--overlay_dir={tmp}/file', 'x.jpg'], '--overlay_dir={tmp}/file is a file, not a folder'),
    (['--crop_dir={tmp}/file/crops', 'x.jpg'], 'cannot be created: {tmp}/file is a file'),
    ([], 'no images given'),
])
def test_usage_errors_are_one_line_before_the_model_loads(files, tmp_path, args, expect):
  """Exit 2, one stderr line, nothing on stdout; the checkpoint is never opened (orbax would
  log lines of its own)."""
  _, wd, _, _, _ = files
  (tmp_path / 'file').write_text('x')
  r = _run(f'--workdir={wd}', *(a.format(tmp=tmp_path) for a in args))
  assert r.returncode == 2 and r.stdout == ''
  assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
  assert r.stderr.startswith('predict: ') and expect.format(tmp=tmp_path) in r.stderr


def test_gradcam_plus_plus_spelling_is_accepted():
  from aesthetics_jax.explain import cam
  assert cam.canonical_method('gradcam++') == cam.canonical_method('GradCAMPlusPlus') == 'gradcampp'
  assert cam.canonical_method('Score-CAM') == 'scorecam'
