"""launch.predict on good, corrupt, missing and hostile images with an initialised checkpoint.

One CLI run (`cli` fixture) scores them all: startup and compilation dominate its time."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import checkpoint_fixture
import image_fixture

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


def _hostile(tmp: Path) -> dict[str, Path]:
  """A phone photo stored sideways (EXIF 6, JPEG; 8, PNG) beside its upright copies, a big PNG
  (tiny file), a bomb, an oversize file (sparse), a truncated JPEG, a text file, a 1x1 PNG."""
  shown = image_fixture.smooth_photo(96, 128)
  out = {}
  for name, fmt, o in (('upright_jpg', 'JPEG', 1), ('rot6_jpg', 'JPEG', 6),
                       ('upright_png', 'PNG', 1), ('rot8_png', 'PNG', 8)):
    out[name] = tmp / f'{name}.{"jpg" if fmt == "JPEG" else "png"}'
    out[name].write_bytes(image_fixture.encode(shown, fmt, o))
  out['big'] = image_fixture.big_png(tmp / 'big.png', 5000, 5000)
  out['bomb'] = tmp / 'bomb.png'
  out['bomb'].write_bytes(image_fixture.huge_header_png(12000, 12000))
  out['oversize'] = tmp / 'oversize.png'
  with open(out['oversize'], 'wb') as f:
    f.truncate(2 * 2**30)
  out['truncated'] = tmp / 'truncated.jpg'
  out['truncated'].write_bytes(image_fixture.encode(shown)[:-400])
  out['text'] = tmp / 'notes.jpg'
  out['text'].write_text('not an image at all')
  out['tiny'] = tmp / 'tiny.png'
  Image.new('RGB', (1, 1)).save(out['tiny'])
  return out


# Runs launch.predict in this interpreter and reports its peak RSS on stderr.
_MEASURED = ('import atexit, resource, runpy, sys\n'
             'atexit.register(lambda: print("PEAK_RSS_MB", resource.getrusage('
             'resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr))\n'
             'sys.argv[0] = "predict"\n'
             'runpy.run_module("launch.predict", run_name="__main__", alter_sys=True)\n')


def _run(*args, measure: bool = False):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  head = ['-c', _MEASURED] if measure else ['-m', 'launch.predict']
  return subprocess.run([sys.executable, *head, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope='module')
def cli(files):
  """(records by path, stderr) of ONE run over every test image, overlays and 4:3 crops on."""
  tmp, wd, good, bad, missing = files
  hostile = _hostile(tmp)
  paths = [good, bad, missing, *hostile.values()]
  r = _run(f'--workdir={wd}', f'--overlay_dir={tmp / "ov"}', f'--crop_dir={tmp / "crops"}',
           '--aspect=4:3', *paths, measure=True)
  assert r.returncode == 0, r.stderr[-2000:]
  lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
  assert [x['path'] for x in lines] == [str(p) for p in paths]
  return {x['path']: x for x in lines}, hostile, r.stderr


def test_cli_good_corrupt_missing(files, cli):
  tmp, wd, good, bad, missing = files
  recs, _, stderr = cli
  ok, corrupt, gone = recs[str(good)], recs[str(bad)], recs[str(missing)]
  assert 'error' not in ok and ok['map'] == 'ok'
  assert len(ok['distribution']) == 10 and abs(sum(ok['distribution']) - 1) < 1e-3
  assert 1.0 <= ok['mean_score'] <= 10.0 and ok['label'] in ('high', 'low')
  assert (ok['label'] == 'high') == (ok['mean_score'] > 5)
  y0, x0, y1, x1 = ok['box']
  assert 0 <= y0 < y1 <= 48 and 0 <= x0 < x1 <= 80  # original-image pixels, not 64x64
  cy0, cx0, cy1, cx1 = ok['boxes']['crop']
  assert abs((cx1 - cx0) / (cy1 - cy0) - 4 / 3) < 0.1
  ov = np.asarray(Image.open(ok['overlay']))
  assert ov.shape == (48, 80, 3)
  assert np.asarray(Image.open(ok['crop'])).shape[:2] == (cy1 - cy0, cx1 - cx0)
  assert set(corrupt) == {'path', 'error'} and str(bad) in corrupt['error']
  assert set(gone) == {'path', 'error'} and 'no such file' in gone['error']
  assert 'Traceback' not in stderr


def test_cli_exif_rotated_photo_scores_and_boxes_as_upright(cli):
  """A photo stored sideways with an EXIF orientation is scored and boxed in the displayed
  frame: the same score and boxes as its upright copy, sizes and boxes within 96 x 128."""
  recs, hostile, _ = cli
  for upright, rotated, tol in (('upright_png', 'rot8_png', 0), ('upright_jpg', 'rot6_jpg', 2)):
    a, b = recs[str(hostile[upright])], recs[str(hostile[rotated])]
    assert 'error' not in a and 'error' not in b, (a, b)
    assert abs(a['mean_score'] - b['mean_score']) <= 0.01
    assert a['boxes'].keys() == b['boxes'].keys()
    for name, box in a['boxes'].items():
      assert np.abs(np.subtract(box, b['boxes'][name])).max() <= tol, (name, box, b['boxes'])
      y0, x0, y1, x1 = b['boxes'][name]
      assert 0 <= y0 < y1 <= 96 and 0 <= x0 < x1 <= 128
    assert np.asarray(Image.open(b['overlay'])).shape == (96, 128, 3)
    assert Image.open(b['crop']).size == Image.open(a['crop']).size


def test_cli_hostile_files_are_one_line_errors_with_bounded_memory(cli):
  recs, hostile, stderr = cli
  want = {'bomb': 'decompression bomb: 144 MP > cap 100 MP',
          'oversize': 'file too large: 2048 MB > cap 64 MB',
          'truncated': 'truncated file', 'text': 'not an image',
          'tiny': 'too small: 1x1 px, under 32 px a side'}
  for name, text in want.items():
    rec = recs[str(hostile[name])]
    assert set(rec) == {'path', 'error'}, rec
    assert rec['error'].startswith(f'{hostile[name]}: {text}') and '\n' not in rec['error']
  # The 25 MP PNG is scored; its overlay is drawn at <= 1024 px, its crop cut at full size.
  big = recs[str(hostile['big'])]
  assert 'error' not in big and max(big['box']) <= 5000
  assert max(Image.open(big['overlay']).size) == 1024
  y0, x0, y1, x1 = big['boxes']['crop']
  assert Image.open(big['crop']).size == (x1 - x0, y1 - y0)
  # Before: 2.6 GB for this PNG alone (float64 RGBA overlay at full size); now ~0.8 GB.
  peak = int(stderr.split('PEAK_RSS_MB')[-1].split()[0])
  assert peak < 1024, f'predict peak RSS {peak} MB'


def test_cli_all_failed_exits_1(files):
  _, wd, _, bad, missing = files
  r = _run(f'--workdir={wd}', bad, missing)
  assert r.returncode == 1
  assert all('error' in json.loads(x) for x in r.stdout.strip().splitlines())


def test_cli_bad_workdir_one_line(tmp_path):
  r = _run(f'--workdir={tmp_path}', tmp_path / 'x.jpg')
  assert r.returncode == 1
  assert 'Traceback' not in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and str(tmp_path) in r.stderr


def test_cli_bad_aspect_one_line(files):
  _, wd, good, _, _ = files
  r = _run(f'--workdir={wd}', '--aspect=4-3', good)
  assert r.returncode == 1 and r.stdout == ''
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
    y0, x0, y1, x1 = json.loads(r.stdout.strip().splitlines()[-1])['boxes']['aesthetic']
    boxes.append((y1 - y0) * (x1 - x0))
  assert boxes[1] < boxes[0]
