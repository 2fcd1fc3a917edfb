"""launch.predict (= aesthetics-predict) with an initialised checkpoint: good, corrupt, missing
and hostile images, folders and globs, --output, and the one-line usage errors found before the
model loads.

One CLI run (`cli` fixture) scores every input of the first tests: startup and compilation
dominate its time."""
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
  (tiny file), a bomb, an oversize file (sparse), a truncated JPEG, a text file, a 1x1 PNG, a
  40x20000 JPEG strip and a 3000x32 PNG one."""
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
  out['strip'] = tmp / 'strip.jpg'
  out['strip'].write_bytes(image_fixture.encode(image_fixture.smooth_photo(40, 20000)))
  out['tall'] = tmp / 'tall.png'
  out['tall'].write_bytes(image_fixture.encode(image_fixture.smooth_photo(3000, 32), 'PNG'))
  return out


# Runs launch.predict in this interpreter and reports its peak RSS on stderr: VmHWM of its own
# address space. Not ru_maxrss: Linux carries the parent's high-water mark across a vfork+exec,
# so after in-process training tests it reported pytest's peak, not predict's.
_MEASURED = ('import atexit, re, resource, runpy, sys\n'
             'def _peak_mb():\n'
             '  try:\n'
             '    with open("/proc/self/status") as f:\n'
             '      return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)) // 1024\n'
             '  except (OSError, AttributeError):\n'
             '    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n'
             'atexit.register(lambda: print("PEAK_RSS_MB", _peak_mb(), file=sys.stderr))\n'
             'sys.argv[0] = "predict"\n'
             'runpy.run_module("launch.predict", run_name="__main__", alter_sys=True)\n')


def _run(*args, measure: bool = False):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  head = ['-c', _MEASURED] if measure else ['-m', 'launch.predict']
  return subprocess.run([sys.executable, *head, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope='module')
def cli(files):
  """ONE run over every test input, overlays, 4:3 crops, --top_k=3 and --output on: files, a
  folder (recursive, image files only, sorted), globs, an empty folder, then the hostile images.

  Returns (lines in order, records by path, hostile paths, photos folder, output file, result).
  """
  tmp, wd, good, bad, missing = files
  photos = tmp / 'photos'
  (photos / 'sub').mkdir(parents=True)
  (photos / 'empty').mkdir()
  rgb = np.random.default_rng(1).integers(0, 255, (40, 36, 3), np.uint8)  # >= 32 px a side
  for name in ('b.png', 'a.JPG', 'sub/c.jpg'):
    Image.fromarray(rgb).save(photos / name)
  (photos / 'notes.txt').write_text('not an image')
  # A link back up: glob's `**` followed it (41 copies of c.jpg for one link, a hang for two).
  (photos / 'sub' / 'up').symlink_to('..')
  (photos / 'sub' / 'up2').symlink_to('..')
  # Last run's overlays inside the input folder: not inputs of this one.
  (photos / 'ov').mkdir()
  Image.fromarray(rgb).save(photos / 'ov' / '0003_b_cam.png')
  hostile = _hostile(tmp)
  # A valid name of 240 bytes: its overlay's and crop's names (and their temporary names)
  # must stay under the 255-byte limit.
  long_name = tmp / ('l' * 236 + '.jpg')
  long_name.write_bytes(good.read_bytes())
  out = tmp / 'preds.jsonl'
  r = _run(f'--workdir={wd}', f'--overlay_dir={photos / "ov"}', f'--crop_dir={tmp / "crops"}',
           '--aspect=4:3', f'--output={out}', '--top_k=3', good, bad, missing, photos,
           f'{photos}/**/*.jpg', f'{photos}/*.gif', photos / 'empty', *hostile.values(),
           long_name, measure=True)
  assert r.returncode == 1, r.stderr[-2000:]  # some inputs failed
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  return lines, {x['path']: x for x in lines}, hostile, photos, out, r


def test_cli_files_folders_globs_to_output(files, cli):
  """Files, a folder (recursive, image files only, sorted) and globs, in the order given; an
  unreadable file or an input naming no image gets an error line and the others carry on;
  --output receives every line (stdout stays empty); exit 1 as some inputs failed."""
  tmp, wd, good, bad, missing = files
  lines, _, hostile, photos, out, r = cli
  # 9 lines of the files, folders and globs (4 failed), 12 of the hostile images (5 failed),
  # the long name.
  assert r.stdout == '' and f'wrote 22 lines (9 failed) to {out}' in r.stderr
  assert 'Traceback' not in r.stderr
  c = str(photos / 'sub' / 'c.jpg')
  assert [x['path'] for x in lines] == [
      str(good), str(bad), str(missing),
      str(photos / 'a.JPG'), str(photos / 'b.png'), c,   # the folder, sorted; not ov/
      c,                                                  # the recursive glob: once
      f'{photos}/*.gif', str(photos / 'empty'), *map(str, hostile.values()),
      str(tmp / ('l' * 236 + '.jpg'))]
  long_rec = lines[-1]
  assert Path(long_rec['overlay']).is_file() and Path(long_rec['crop']).is_file()
  assert len(Path(long_rec['overlay']).name.encode()) < 200
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
  # The 80-px-wide image centred on a band as wide as its legend, the legend strip below.
  assert ov.shape[1:] == (256, 3) and ov.shape[0] > 48
  crop = Image.open(ok['crop'])
  assert crop.size == Image.open(good).crop((b['x0'], b['y0'], b['x1'], b['y1'])).size
  # --crop_format=auto: a JPEG's crop is a JPEG with the photo's own tables, a PNG's a PNG.
  assert ok['crop'].endswith('_crop.jpg') and crop.quantization == Image.open(good).quantization
  assert lines[4]['path'].endswith('b.png') and lines[4]['crop'].endswith('_crop.png')
  assert set(corrupt) == {'path', 'error'} and str(bad) in corrupt['error']
  assert set(gone) == {'path', 'error'} and 'no such file' in gone['error']
  assert 'no image files match' in lines[7]['error']
  assert 'no image files' in lines[8]['error'] and set(lines[8]) == {'path', 'error'}


def test_cli_exif_rotated_photo_scores_and_boxes_as_upright(cli):
  """A photo stored sideways with an EXIF orientation is scored and boxed in the displayed
  frame: the same score and boxes as its upright copy, sizes and boxes within 96 x 128."""
  _, recs, hostile, _, _, _ = cli
  for upright, rotated, tol in (('upright_png', 'rot8_png', 0), ('upright_jpg', 'rot6_jpg', 2)):
    a, b = recs[str(hostile[upright])], recs[str(hostile[rotated])]
    assert 'error' not in a and 'error' not in b, (a, b)
    assert abs(a['mean_score'] - b['mean_score']) <= 0.01
    assert a['boxes'].keys() == b['boxes'].keys()
    for name, box in a['boxes'].items():
      other = b['boxes'][name]
      assert set(box) == set(other) == {'x0', 'y0', 'x1', 'y1'}
      assert max(abs(box[k] - other[k]) for k in box) <= tol, (name, box, b['boxes'])
      assert 0 <= other['y0'] < other['y1'] <= 96 and 0 <= other['x0'] < other['x1'] <= 128
    ov = np.asarray(Image.open(b['overlay']))
    assert ov.shape[1:] == (256, 3) and ov.shape[0] > 96  # centred above the legend strip
    assert Image.open(b['crop']).size == Image.open(a['crop']).size


def test_cli_hostile_files_are_one_line_errors_with_bounded_memory(cli):
  _, recs, hostile, _, _, r = cli
  want = {'bomb': 'decompression bomb: 144 MP > cap 100 MP',
          'oversize': 'file too large: 2048 MB > cap 64 MB',
          'truncated': 'truncated file', 'text': 'not an image',
          'tiny': 'too small: 1x1 px, under 32 px a side'}
  for name, text in want.items():
    rec = recs[str(hostile[name])]
    assert set(rec) == {'path', 'error'}, rec
    assert rec['error'].startswith(f'{hostile[name]}: {text}') and '\n' not in rec['error']
  # The 25 MP PNG is scored; its overlay is drawn at <= 1024 px (+ the legend strip below),
  # its crop cut at full size.
  big = recs[str(hostile['big'])]
  assert 'error' not in big and max(big['box'].values()) <= 5000
  w, h = Image.open(big['overlay']).size
  assert w == 1024 and h > 1024
  b = big['boxes']['crop']
  assert Image.open(big['crop']).size == (b['x1'] - b['x0'], b['y1'] - b['y0'])
  # Thin strips are scored from their own rows (the working copy is a pixel budget), their
  # overlays show them whole (were 1024x2 and 11x1024 px above the legend), folded into 16
  # rows (7 columns) of about 2:1 (were 20000x86 and 256x3036), the narrow one centred on a
  # band its legend fits, and a crop is cut at full size.
  strip, tall = recs[str(hostile['strip'])], recs[str(hostile['tall'])]
  assert 'error' not in strip and 'error' not in tall, (strip, tall)
  assert strip['note'].startswith('aspect 500:1: the model sees the image squashed')
  assert tall['note'].startswith('aspect 94:1') and 'note' not in recs[str(hostile['big'])]
  w, h = Image.open(strip['overlay']).size
  assert w == 1250 and 16 * 40 + 15 * 5 < h < 16 * 40 + 15 * 5 + 100
  w, h = Image.open(tall['overlay']).size
  assert w == 256 and 429 < h < 429 + 100
  b = strip['boxes']['crop']
  assert b['y1'] - b['y0'] == 40 and Image.open(strip['crop']).size == (b['x1'] - b['x0'], 40)
  # Before: 2.6 GB for this PNG alone (float64 RGBA overlay at full size); now ~0.8 GB.
  peak = int(r.stderr.split('PEAK_RSS_MB')[-1].split()[0])
  assert peak < 1024, f'predict peak RSS {peak} MB'


def test_a_strip_feeds_the_model_its_own_rows(tmp_path):
  """The working copy was capped by its long side (4096): a 40x20000 JPEG strip was decoded at
  1/8, 5x2500, and the model's 224x224 input was a smear of 5 rows. Within the pixel budget the
  strip stays whole: its model input is the full image's."""
  from aesthetics_jax.data import preprocess
  from aesthetics_jax.evaluation import image_files
  rows = np.linspace(0, 255, 40).astype(np.uint8)[:, None].repeat(20000, axis=1)
  path = tmp_path / 'strip.jpg'
  path.write_bytes(image_fixture.encode(np.stack([rows, 255 - rows, rows // 2], -1)))
  work = image_files.load_image(path)
  assert work.size == (40, 20000) and work.image.shape == (40, 20000, 3) and not work.reduced
  full = image_files.load_image(path, target=None, budget=None).image
  np.testing.assert_array_equal(preprocess.preprocess_eval_np(work.image, 224),
                                preprocess.preprocess_eval_np(full, 224))


def _overlay(size, copy_hw=None, boxes=None):
  """`Predictor.overlay_image` of a grey image of displayed (H, W) `size` (working copy
  `copy_hw`), a map rising left to right, and `boxes` (original pixels). The method is all of
  the predictor it reads."""
  import types
  from aesthetics_jax.data import decoder
  from aesthetics_jax.evaluation import predictor
  copy = np.full(tuple(copy_hw or size) + (3,), 128, np.uint8)
  amap = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
  vis = {'aesthetic_map': amap, 'boxes': boxes or {}}
  me = types.SimpleNamespace(method='gradcam')
  return predictor.Predictor.overlay_image(me, decoder.Decoded(copy, tuple(size)), vis)


def _red(a):
  """bool [h, w]: the pixels of the 'average' box's colour."""
  return (a == np.array([255, 60, 60], np.uint8)).all(-1)


def test_overlays_of_thin_strips_show_the_image_the_boxes_and_a_legend():
  """A 20x3000 image's overlay was 7x1024 px above a legend strip 36 px high, a 3000x32 one's
  1024x11 above a legend with no room for its text. A strip is now drawn with its own short side
  (`overlay_grid`, within a pixel budget), folded into rows (columns) about 2:1 overall
  (`overlays.fold`), a narrow one centred on a band its legend fits, and the boxes stay on the
  image."""
  from aesthetics_jax.evaluation import image_files
  from aesthetics_jax.report import overlays
  wide = _overlay((20, 3000), boxes={'average': (0, 1000, 20, 1500)})
  k = overlays.fold_count((20, 3000))
  assert k == 9 and wide.shape[1] == 334  # 9 rows of 334 px: 204 px high, 1.6:1
  assert 9 * 20 + 8 * 3 + 16 <= wide.shape[0] <= 9 * 20 + 8 * 3 + 60
  unfolded, gaps = image_fixture.unfold(wide[:9 * 20 + 8 * 3], (20, 3000), k)
  assert (gaps == overlays.LEGEND_BACKGROUND).all()
  red = _red(unfolded)
  assert red[:, 1000:1002].all() and red[:, 1498:1500].all() and red[:2, 1000:1500].all()
  assert not red[:, :1000].any() and not red[:, 1500:].any()
  assert unfolded[10, 2900, 0] > unfolded[10, 100, 0] + 50  # the map: blue left, red right
  tall = _overlay((3000, 32), copy_hw=(1500, 16), boxes={'average': (1000, 0, 1500, 32)})
  k = overlays.fold_count((3000, 32))
  assert k == 7  # 7 columns of 429 px: 7 * 32 + 6 * 4 = 248 px wide
  height = -(-3000 // k)
  assert tall.shape[1] == overlays.LEGEND_MIN_WIDTH and height + 16 <= tall.shape[0] <= height + 120
  left = (overlays.LEGEND_MIN_WIDTH - 248) // 2
  assert (tall[:height, :left] == overlays.LEGEND_BACKGROUND).all()
  assert (tall[:height, left + 248:] == overlays.LEGEND_BACKGROUND).all()
  unfolded, gaps = image_fixture.unfold(tall[:height, :left + 248], (3000, 32), k, left)
  assert (gaps == overlays.LEGEND_BACKGROUND).all()
  rows, cols = np.nonzero(_red(unfolded))
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1000, 1499, 0, 31)
  assert (tall[height:] != overlays.LEGEND_BACKGROUND).any(-1).sum() > 200  # the legend's ink
  assert image_files.overlay_grid((40, 20000)) == (40, 20000)
  assert image_files.overlay_grid((1000, 20000)) == (128, 2560)
  assert image_files.overlay_grid((20000, 1000)) == (2560, 128)
  # Strips the overlay folds keep their rows within a larger budget: at OVERLAY_MAX_SIDE² a
  # 100x65000 strip's were 40 px high and a 32x100000 one's 18.
  assert image_files.overlay_grid((100, 65000)) == (80, 52214)  # the pixel budget wins
  assert 80 * 52214 <= image_files.OVERLAY_STRIP_PIXELS
  assert image_files.overlay_grid((32, 100_000)) == (32, 100_000)
  assert image_files.overlay_grid((100_000, 32)) == (100_000, 32)
  assert image_files.overlay_grid((1000, 100_000)) == (128, 12800)
  assert image_files.overlay_grid((200, 3000)) == (128, 1920)  # within the photo budget


def test_an_extreme_strip_is_folded_into_rows_of_its_own_height():
  """A 32x100000 strip (3.2 MP: its working copy is the whole strip) is drawn at its own 32-px
  rows, 40 of them, 2500 px long, the box on it where it was."""
  from aesthetics_jax.report import overlays
  k = overlays.fold_count((32, 100_000))
  ov = _overlay((32, 100_000), boxes={'average': (0, 40_000, 32, 60_000)})
  height = k * 32 + (k - 1) * 4
  assert k == 40 and ov.shape[1] == 2500 and height + 16 <= ov.shape[0] <= height + 120
  unfolded, gaps = image_fixture.unfold(ov[:height], (32, 100_000), k)
  assert (gaps == overlays.LEGEND_BACKGROUND).all()
  cols = np.nonzero(_red(unfolded).all(axis=0))[0]
  assert cols.min() == 40_000 and cols.max() == 59_999


@pytest.mark.parametrize('size, copy_hw', [((4000, 6000), (1334, 2000)),
                                           ((6000, 4000), (2000, 1334)),
                                           ((1080, 1920), (1080, 1920)),
                                           ((1024, 8000), (524, 4096))])
def test_overlays_of_photos_are_as_before(size, copy_hw):
  """A photo's overlay (even an 8:1 panorama's) is what it was: the copy resized to a long side
  of 1024, the map, boxes 1/200 of that side wide, the legend strip below, nothing padded."""
  from aesthetics_jax.evaluation import image_files
  from aesthetics_jax.explain import crop
  from aesthetics_jax.report import overlays
  h, w = size
  boxes = {'aesthetic': (h // 4, w // 4, h // 2, w // 2), 'average': (0, 0, h, w // 3)}
  got = _overlay(size, copy_hw, boxes)
  grid = crop.box_grid(size, 1024)
  assert image_files.overlay_grid(size) == grid and max(grid) == 1024
  copy = np.full(copy_hw + (3,), 128, np.uint8)
  small = np.asarray(Image.fromarray(copy).resize((grid[1], grid[0]), Image.BILINEAR))
  amap = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
  shown = {k: crop.scale_box(v, size, grid) for k, v in boxes.items()}
  drawn = overlays.draw_boxes(overlays.overlay(small, amap), shown, width=max(2, 1024 // 200))
  np.testing.assert_array_equal(got, overlays.add_legend(drawn, 'map: aesthetic (gradcam)',
                                                        list(shown)))
  assert got.shape[1] == grid[1] and (got[:grid[0]] == drawn).all()


def test_overlay_shows_a_box_that_another_covers():
  """An empty aesthetic map's average box is its attribute box: drawn in red over the cyan
  one, it hid it, while the legend named both. The box is drawn once, in the first one's
  colour, and the legend names it 'attribute = average'."""
  from aesthetics_jax.report import overlays
  box = (16, 16, 48, 48)
  got = _overlay((64, 64), boxes={'attribute': box, 'average': box})
  cyan = (got[:64] == np.array(overlays.BOX_COLOURS['attribute'], np.uint8)).all(-1)
  assert cyan.any() and not _red(got[:64]).any()
  assert overlays.merge_coinciding({'aesthetic': (0, 0, 4, 4), 'attribute': box,
                                    'average': box, 'crop': (0, 0, 4, 4)}) == {
      'aesthetic = crop': (0, 0, 4, 4), 'attribute = average': box}


def test_overlay_merges_boxes_that_coincide_once_scaled():
  """Boxes a pixel apart in a 4096 px photo are one box on its 1024 px overlay: merged before
  scaling, the red 'average' box was drawn over the cyan 'attribute' one and hid it."""
  from aesthetics_jax.report import overlays
  got = _overlay((4096, 4096), (64, 64), boxes={'attribute': (1024, 1024, 2048, 2048),
                                                'average': (1025, 1025, 2047, 2047)})
  cyan = (got[:1024] == np.array(overlays.BOX_COLOURS['attribute'], np.uint8)).all(-1)
  assert cyan.any() and not _red(got[:1024]).any()


def test_cli_all_failed_exits_1(files):
  _, wd, _, bad, missing = files
  r = _run(f'--workdir={wd}', bad, missing)
  assert r.returncode == 1
  assert all('error' in json.loads(x) for x in r.stdout.strip().splitlines())


def test_cli_failures_to_stdout_say_so_on_stderr(tmp_path):
  """With the lines on stdout (`> preds.jsonl`), a run whose inputs failed ended with exit 1
  and nothing on stderr; the closing line --output gets says how many failed. No input
  needs the model here: the checkpoint is never opened."""
  r = _run(f'--workdir={tmp_path}', '', tmp_path / 'nothing_here_*.jpg')
  assert r.returncode == 1 and len(r.stdout.splitlines()) == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == ['predict: wrote 2 lines (2 failed) to stdout']


def test_cli_output_dash_is_stdout(tmp_path):
  """`--output=-`, the Unix spelling of stdout, wrote the lines to a file named '-'."""
  r = subprocess.run([sys.executable, '-m', 'launch.predict', f'--workdir={tmp_path}',
                      '--output=-', ''], cwd=tmp_path, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS='cpu',
                              PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
                                  'PYTHONPATH', '')])), timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]  # the empty argument's line: nothing to score
  assert 'empty argument' in json.loads(r.stdout)['error']
  assert r.stderr.strip().splitlines() == ['predict: wrote 1 line (1 failed) to stdout']
  assert not (tmp_path / '-').exists()


def test_cli_home_in_a_flag_value_is_the_home_folder(tmp_path):
  """The shell expands '~' only at a word's start: `--workdir=~/runs/mnv2` reached predict as
  written, 'no such folder', and `--output=~/preds.jsonl` would have gone to a folder named
  '~'. A flag value's leading '~' is the home folder now."""
  (tmp_path / 'wd').mkdir()
  r = subprocess.run([sys.executable, '-m', 'launch.predict', '--workdir=~/wd',
                      '--output=~/preds.jsonl', ''], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS='cpu', HOME=str(tmp_path)), timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]  # the empty argument's line: nothing to score
  assert r.stderr.strip().splitlines() == [
      f'predict: wrote 1 line (1 failed) to {tmp_path}/preds.jsonl']
  assert 'empty argument' in json.loads((tmp_path / 'preds.jsonl').read_text())['error']


# launch.predict with every PNG write and the --output write failing as on a full disk.
_FULL_DISK = ('import errno, runpy, sys\n'
              'from aesthetics_jax import io\n'
              'def full(*a, **k):\n'
              '  raise OSError(errno.ENOSPC, "No space left on device")\n'
              'io.atomic_write_bytes = io.atomic_write_stream = full\n'
              'sys.argv[0] = "predict"\n'
              'runpy.run_module("launch.predict", run_name="__main__", alter_sys=True)\n')


def test_cli_full_disk_keeps_the_scores(files, tmp_path):
  """Overlays and crops that cannot be written are a per-image `overlay_error` /
  `crop_error` (exit 1), and JSON lines that cannot go to --output go to stdout instead."""
  _, wd, good, _, _ = files
  out = tmp_path / 'preds.jsonl'
  r = subprocess.run([sys.executable, '-c', _FULL_DISK, f'--workdir={wd}',
                      f'--overlay_dir={tmp_path / "ov"}', f'--crop_dir={tmp_path / "cr"}',
                      f'--output={out}', good], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
      f'predict: could not write --output={out} (No space left on device); the 1 line follow '
      'on stdout')
  rec = json.loads(r.stdout)
  assert 1 <= rec['mean_score'] <= 10 and 'overlay' not in rec and 'crop' not in rec
  for key, flag in (('overlay_error', 'overlay_dir'), ('crop_error', 'crop_dir')):
    assert rec[key].endswith(f'not written (No space left on device); free space or pass '
                             f'another --{flag}'), rec
  assert not out.exists()


def test_cli_crops_not_written_are_counted_apart_from_failed_images(files, tmp_path):
  """A --crop_dir made read-only midway counted every scored image as 'failed' ('wrote 58
  lines (56 failed)', no error line among them) and told to 'free space'."""
  _, wd, good, _, _ = files
  out = tmp_path / 'preds.jsonl'
  script = _FULL_DISK.replace('errno.ENOSPC, "No space left on device"',
                              'errno.EPERM, "Operation not permitted"').replace(
                                  'io.atomic_write_bytes = io.atomic_write_stream = full',
                                  'io.atomic_write_bytes = full')
  r = subprocess.run([sys.executable, '-c', script, f'--workdir={wd}',
                      f'--crop_dir={tmp_path / "cr"}', f'--output={out}', good], cwd=ROOT,
                     capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                     timeout=300)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
      f'predict: wrote 1 line (0 failed, 1 with a crop or overlay not written (crop_error / '
      f'overlay_error)) to {out}'), r.stderr[-2000:]
  rec = json.loads(out.read_text())
  assert rec['crop_error'].endswith('not written (Operation not permitted); make it writable '
                                    'or pass another --crop_dir'), rec


# launch.predict given Ctrl-C (a real SIGINT, to itself) once its first record is out: when
# the record loop asks for the second.
_CTRL_C_AFTER_FIRST = ('import runpy, signal, sys\n'
                       'from aesthetics_jax.cli import predict\n'
                       'in_order = predict._in_order\n'
                       'def ctrl_c_after_first(items, records):\n'
                       '  for rec in in_order(items, records):\n'
                       '    yield rec\n'
                       '    signal.raise_signal(signal.SIGINT)\n'
                       'predict._in_order = ctrl_c_after_first\n'
                       'sys.argv[0] = "predict"\n'
                       'runpy.run_module("launch.predict", run_name="__main__", alter_sys=True)\n')


def test_cli_ctrl_c_writes_the_lines_so_far(files, tmp_path):
  """Ctrl-C ended the run in a KeyboardInterrupt traceback, and with --output every line
  scored so far was lost. Now they are written (atomically), one stderr line says how many
  and that the run was interrupted, and the exit status is 130 (128 + SIGINT)."""
  _, wd, good, bad, _ = files
  out = tmp_path / 'preds.jsonl'
  r = subprocess.run([sys.executable, '-c', _CTRL_C_AFTER_FIRST, f'--workdir={wd}',
                      f'--output={out}', good, bad, good], cwd=ROOT, capture_output=True,
                     text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert r.returncode == 130 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-2000:])
  assert r.stdout == '' and r.stderr.strip().splitlines()[-1] == (
      f'predict: interrupted (Ctrl-C): wrote 1 line (0 failed) to {out}; 2 of 3 inputs left')
  (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
  assert rec['path'] == str(good) and 1 <= rec['mean_score'] <= 10
  assert not [q for q in tmp_path.iterdir() if q != out]  # no temporary file left


def test_cli_sigterm_writes_the_lines_so_far(files, tmp_path):
  """SIGTERM (`timeout`, a batch job's time limit, `docker stop`) killed the run at once: with
  --output every line scored so far was lost. It now ends the run as Ctrl-C does, exit 143
  (128 + SIGTERM)."""
  _, wd, good, bad, _ = files
  out = tmp_path / 'preds.jsonl'
  r = subprocess.run([sys.executable, '-c', _CTRL_C_AFTER_FIRST.replace('SIGINT', 'SIGTERM'),
                      f'--workdir={wd}', f'--output={out}', good, bad, good], cwd=ROOT,
                     capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                     timeout=300)
  assert r.returncode == 143 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-2000:])
  assert r.stdout == '' and r.stderr.strip().splitlines()[-1] == (
      f'predict: terminated (SIGTERM): wrote 1 line (0 failed) to {out}; 2 of 3 inputs left')
  (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
  assert rec['path'] == str(good) and 1 <= rec['mean_score'] <= 10


def test_cli_an_error_mid_run_writes_the_lines_so_far(files, tmp_path):
  """Out of memory mid-run (XLA's RESOURCE_EXHAUSTED, a RuntimeError, on a large
  --batch_size) ended the run in a traceback, and with --output every line scored before it
  was lost. They are written, and one stderr line names the error; exit 1."""
  _, wd, good, bad, _ = files
  out = tmp_path / 'preds.jsonl'
  oom = 'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes.'
  script = _CTRL_C_AFTER_FIRST.replace('signal.raise_signal(signal.SIGINT)',
                                       f'raise RuntimeError({oom!r} + chr(10) + "more")')
  r = subprocess.run([sys.executable, '-c', script, f'--workdir={wd}', f'--output={out}', good,
                      bad, good], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-2000:])
  assert r.stdout == '' and r.stderr.strip().splitlines()[-1] == (
      f'predict: stopped by an error ({oom}): wrote 1 line (0 failed) to {out}; 2 of 3 inputs '
      'left')
  (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
  assert rec['path'] == str(good)


def test_cli_reader_closing_the_pipe_ends_quietly(files, tmp_path):
  """`aesthetics-predict ... | head -1`: exit 141 (SIGPIPE's), no traceback. 3,000 missing
  files make enough error lines (~0.3 MB) to fill the pipe without loading the model."""
  _, wd, _, _, _ = files
  args = [f'--workdir={wd}'] + [str(tmp_path / f'missing_{i:05d}.jpg') for i in range(3000)]
  p = subprocess.Popen([sys.executable, '-m', 'launch.predict', *args], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  first = p.stdout.readline()
  p.stdout.close()
  err = p.stderr.read().decode()
  assert p.wait(timeout=120) == 141 and err == '', err
  assert 'missing_00000.jpg' in json.loads(first)['path']


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_cli_stdout_on_a_full_disk_is_one_line(files, tmp_path):
  """`aesthetics-predict ... > /dev/full` (stdout on a full disk): one line naming the cause and
  exit 1, where a traceback ended the command. Missing files: the lines without the model."""
  _, wd, _, _, _ = files
  args = [f'--workdir={wd}'] + [str(tmp_path / f'missing_{i}.jpg') for i in range(3)]
  with open('/dev/full', 'w') as full:
    r = subprocess.run([sys.executable, '-m', 'launch.predict', *args], cwd=ROOT, stdout=full,
                       stderr=subprocess.PIPE, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert r.returncode == 1, r.stderr
  assert r.stderr.strip() == (
      'predict: could not write to stdout (No space left on device); files written before are '
      'kept: rerun with stdout on a disk with free space'), r.stderr


def test_cli_bad_workdir_one_line(tmp_path):
  r = _run(f'--workdir={tmp_path}', tmp_path / 'x.jpg')
  assert r.returncode == 2 and r.stdout == ''
  assert 'Traceback' not in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and str(tmp_path) in r.stderr


@pytest.mark.parametrize('flag', ['crop_dir', 'overlay_dir', 'output'])
def test_cli_an_output_another_run_writes_is_refused(files, tmp_path, flag):
  """Two runs into one --crop_dir (or --output) at once both exited 0; the later overwrote the
  earlier's crops, so records pointed at the other run's pictures. The second now stops
  before loading the model: one line, exit 2, nothing written. Here the test holds the claim,
  as a running aesthetics-predict does (through a link: the claim is on the real path)."""
  from aesthetics_jax.cli import process_claim
  _, wd, good, _, _ = files
  target = tmp_path / ('out.jsonl' if flag == 'output' else 'dir')
  claimed = subprocess.Popen(
      [sys.executable, '-c', 'import sys; from aesthetics_jax.cli import process_claim as c; '
       'assert c.hold(c.output_name(sys.argv[1])); print("held", flush=True); sys.stdin.read()',
       str(target)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert claimed.stdout.readline() == 'held\n'
    (tmp_path / 'link').symlink_to(tmp_path)
    shown = tmp_path / 'link' / target.name
    r = _run(f'--workdir={wd}', f'--{flag}={shown}', '--aspect=1:1', good)
    assert r.returncode == 2 and r.stdout == '' and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        f'predict: --{flag}={shown} is being written by another aesthetics-predict run on '
        f'this host; wait for it to finish, or pass another '
        f'{"file" if flag == "output" else "folder"}']
    assert not target.exists() or not any(target.iterdir())
  finally:
    claimed.communicate('')
  assert process_claim.hold(process_claim.output_name(str(target)))  # freed with the holder
  process_claim._HELD.pop().close()  # pylint: disable=protected-access


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
  # With --aspect the crop is that window or nothing: it used to cut the attribute box, of
  # another aspect, while the notebook API's crop() gave None.
  assert rec['crop'] is None and not any((tmp_path / 'crops').glob('*'))
  assert r.stderr.strip().splitlines()[-1] == (
      'predict: no crop for 1 of 1 scored image: the map points nowhere ("map": "empty", '
      '"crop": null)')


def test_eval_overrides_follow_the_trainers_value_rules(files):
  """--config.eval.batch_size=0 (or eval.bootstrap_samples=-5) was taken by aesthetics-predict
  and the API without a word, while aesthetics-evaluate refused it."""
  _, wd, good, _, _ = files
  r = _run(f'--workdir={wd}', '--config.eval.batch_size=0', good)
  assert r.returncode == 2 and r.stdout == ''
  assert r.stderr.strip() == 'predict: config.eval.batch_size=0: must be an integer >= 1'


def test_config_eval_override_changes_the_box(files, cli):
  """`--config.eval.box_threshold` reaches the predictor: a higher threshold than the config's
  0.2 (the `cli` run's box of the same image), a tighter box."""
  _, wd, good, _, _ = files
  _, by_path, *_ = cli
  r = _run(f'--workdir={wd}', '--config.eval.box_threshold=0.9', '--config.eval.explorer=False',
           good)
  assert r.returncode == 0, r.stderr[-2000:]
  # A key predict does not read changed nothing without a word.
  assert ('predict: --config.eval.explorer change nothing here: prediction reads '
          '--config.eval.box_threshold, --config.eval.cam_layers, --config.eval.cam_method (its '
          'batch size: --batch_size)') in r.stderr.splitlines()
  boxes = []
  for rec in (by_path[str(good)], json.loads(r.stdout.strip().splitlines()[-1])):
    b = rec['boxes']['aesthetic']
    boxes.append((b['y1'] - b['y0']) * (b['x1'] - b['x0']))
  assert boxes[1] < boxes[0]


@pytest.mark.parametrize('args, expect', [
    (['--cam_method=gradcam+', 'x.jpg'], "unknown CAM method 'gradcam+'; use one of gradcam"),
    (['--output={tmp}', 'x.jpg'], '--output={tmp} is a folder'),
    (['--overlay_dir={tmp}/file', 'x.jpg'], '--overlay_dir={tmp}/file is a file, not a folder'),
    (['--crop_dir={tmp}/file/crops', 'x.jpg'], 'cannot be created: {tmp}/file is a file'),
    # The space form takes the next argument: the first photo would become JSON.
    (['--output', '{tmp}/a.jpg', '{tmp}/b.jpg'], '--output={tmp}/a.jpg names an image file'),
    (['--output={tmp}/file', '{tmp}/file'], '--output={tmp}/file is also an input'),
    # The folder was made first, the lines written onto it at the end: exit 1 after the run.
    (['--output={tmp}/ov', '--overlay_dir={tmp}/ov', 'x.jpg'], '--output={tmp}/ov is also '
     '--overlay_dir; the JSON lines go to a file of their own: pass e.g. --output={tmp}/ov/'),
    (['--output={tmp}/c', '--crop_dir={tmp}/./c/', 'x.jpg'], '--output={tmp}/c is also --crop_dir'),
    ([], 'no images given'),
    # Was '--top_k must be >= 0 and --batch_size >= 1' for either: the bad one is named.
    (['--batch_size=0', 'x.jpg'], 'predict: --batch_size=0: must be >= 1'),
    (['--top_k=-1', 'x.jpg'], 'predict: --top_k=-1: must be >= 0'),
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


def test_a_dash_file_name_gets_a_hint_and_a_rerun_into_used_folders_says_so(files, tmp_path):
  """absl reads `-dash.jpg` as a flag: the one line says to put -- before it (no model is
  loaded). With --, it scores; into an --overlay_dir holding an earlier run's file (files are
  named by input position, so a rerun mixed two runs' pictures silently) it says so."""
  _, wd, good, _, _ = files
  (tmp_path / '-dash.jpg').write_bytes(good.read_bytes())
  ov = tmp_path / 'ov'
  ov.mkdir()
  (ov / '0003_old_cam.png').write_bytes(b'')  # as an earlier run left it
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  run = lambda *a: subprocess.run(  # noqa: E731
      [sys.executable, '-m', 'launch.predict', f'--workdir={wd}', *a], cwd=tmp_path,
      capture_output=True, text=True, env=env, timeout=300)
  r = run('-dash.jpg')
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "predict: Unknown command line flag 'dash.jpg'; -dash.jpg is a file: put -- before file "
      "names that start with '-' (... -- -dash.jpg)"]
  r = run('--overlay_dir=ov', '--', '-dash.jpg')
  assert r.returncode == 0 and json.loads(r.stdout)['path'] == '-dash.jpg', r.stderr[-500:]
  assert r.stderr.strip().splitlines()[0] == (
      'predict: --overlay_dir=ov already holds 1 file of an earlier run; files are named by '
      'input position (0000_<name>), so this run replaces those at its positions and keeps the '
      'rest: use an empty folder to keep runs apart')
  assert sorted(q.name for q in ov.iterdir()) == ['0000_-dash_cam.png', '0003_old_cam.png']


def test_top_k_0_gives_an_empty_tag_list():
  """--top_k=0 (and the API's top_k=0) left `tags` out of MobileNetV2's records, so a reader
  of the documented fields (`s['tags']`) met a KeyError; it is [] now."""
  from aesthetics_jax.evaluation import records
  pred = {'distribution': np.full((1, 10), 0.1), 'mean_score': np.array([5.5]),
          'p_high': np.array([0.5]), 'label_pred': np.array([1]),
          'tag_probs': np.linspace(0, 1, 66)[None]}
  assert records.score_fields(pred, 0, 'mobilenet_v2', {}, top_k=0)['tags'] == []
  assert [t['id'] for t in records.score_fields(pred, 0, 'mobilenet_v2', {66: 'x'}, 2)['tags']
          ] == [66, 65]
  del pred['tag_probs'], pred['distribution'], pred['mean_score']  # VGG16: no tags
  assert 'tags' not in records.score_fields(pred, 0, 'vgg16', {}, top_k=0)


def test_non_utf8_file_names_are_valid_json():
  """A non-UTF-8 byte in a file name (Python's surrogateescape) was printed as "\\udce9", a lone
  surrogate that strict JSON readers refuse; now as a backslash escape, in every field."""
  from aesthetics_jax.evaluation import records
  p = os.fsdecode(b'shoot/caf\xe9.jpg')
  line = records.to_json_line({'path': p, 'error': f'{p}: missing', 'boxes': [p, '\ud800']})
  back = json.loads(line)
  assert json.dumps(back, ensure_ascii=False).encode('utf-8')  # no lone surrogate left
  assert back == {'path': 'shoot/caf\\xe9.jpg', 'error': 'shoot/caf\\xe9.jpg: missing',
                              'boxes': ['shoot/caf\\xe9.jpg', '\\ud800']}
  ok = {'path': 'café.jpg', 'mean_score': 5.0}
  assert json.loads(records.to_json_line(ok)) == ok


def test_cli_png_crops_are_lossless_and_a_rerun_sees_jpeg_crops(files, cli):
  """--crop_format=png cuts the decoded photo's pixels exactly; the fixture's run left JPEG
  crops in that folder (`_crop.jpg`), which the rerun's note counts as an earlier run's."""
  tmp, wd, good, _, _ = files
  crops = tmp / 'crops'
  assert any(crops.glob('0000_good_crop.jpg'))
  r = _run(f'--workdir={wd}', f'--crop_dir={crops}', '--crop_format=png', good)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'already holds' in r.stderr.splitlines()[0]
  rec = json.loads(r.stdout)
  assert rec['crop'] == str(crops / '0000_good_crop.png')
  b = rec['box']
  want = np.asarray(Image.open(good).convert('RGB').crop((b['x0'], b['y0'], b['x1'], b['y1'])))
  np.testing.assert_array_equal(np.asarray(Image.open(rec['crop'])), want)


_TWO_DEVICE_PREDICTIONS = r'''
import json, sys
from aesthetics_jax import cpu_backend
cpu_backend.configure()  # the XLA settings `aesthetics-predict` runs with (common.run)
from aesthetics_jax.evaluation import predictor, records
wd, paths = sys.argv[1], sys.argv[2:]
p = predictor.Predictor(wd)
print(p.placement("eigencam")[0].size, p.placement("gradcam")[0].size, p.shards("eigencam"),
      p.shards("gradcam"))
for method in ('eigencam', 'gradcam'):  # predict's own pass, as the command runs it
  for rec in predictor.Predictor(wd, cam_method=method).predict_files(paths, batch_size=8):
    print(method, records.to_json_line(rec))
'''


def test_eigencam_over_two_cpu_devices_finishes(files):
  """EigenCAM's host callback deadlocked across CPU devices in the evaluation's explorer and
  faithfulness passes (XLA aborted after 40 s; in 4 of 5 runs of the explorer's maps on 2
  devices); predict's pass did not in our runs, but routes the method to one device all the
  same (`Predictor.placement`). With one device per core (the commands' default on >= 2
  cores, forced to 2 here) the scores and boxes come out for every image. Both methods and
  the placement in one process: each process that starts JAX costs seconds."""
  tmp, wd, good, _, _ = files
  many = tmp / 'eigencam_inputs'
  many.mkdir()
  for i in range(8):  # batches of several images (one image per device did not deadlock)
    Image.fromarray(image_fixture.smooth_photo(48 + 8 * i, 64)).save(many / f'{i}.png')
  env_flags = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2')
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=env_flags.strip())
  r = subprocess.run([sys.executable, '-c', _TWO_DEVICE_PREDICTIONS, str(wd),
                      *map(str, sorted(many.iterdir()))], cwd=ROOT, capture_output=True,
                     text=True, env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  lines = r.stdout.strip().splitlines()
  assert lines[0].split() == ['1', '2', '1', '2']  # make_forward loops by its mesh's devices
  outs = {m: [json.loads(x.split(' ', 1)[1]) for x in lines[1:] if x.startswith(m + ' ')]
          for m in ('eigencam', 'gradcam')}
  assert len(outs['eigencam']) == len(outs['gradcam']) == 8
  for e, g in zip(outs['eigencam'], outs['gradcam']):
    assert e['mean_score'] == pytest.approx(g['mean_score'], abs=1e-5)
    assert e['map'] in ('ok', 'empty') and len(e['box']) == 4


def test_output_lines_wait_in_a_bounded_spool(monkeypatch, tmp_path):
  """--output's lines were a list until the end of the run (~0.6 KB an image: 600 MB for a
  million). They now wait in a spool that moves to a temporary file past its size; what is
  written out is every whole line, in order, also after a failed write, which stops the run
  with one line instead of losing the lines."""
  from aesthetics_jax.evaluation import records
  spool = records.LineSpool(max_bytes=4096)
  want = [json.dumps({'path': f'p{i}.jpg', 'mean_score': i / 7}) for i in range(500)]
  for line in want:
    spool.keep(line)
  assert spool.file._rolled  # pylint: disable=protected-access  (on disk, not in memory)
  out = tmp_path / 'out.jsonl'
  with open(out, 'wb') as f:
    spool.copy_to(f)
  assert out.read_text().splitlines() == want

  def full(data):
    spool.file._file.write(data[:7])  # pylint: disable=protected-access  (part of a line)
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(spool.file, 'write', full)
  with pytest.raises(RuntimeError, match=r'could not be kept in .*No space left on device.*'
                     'TMPDIR'):
    spool.keep('{"path": "late.jpg"}')
  assert [json.loads(r) for r in spool.lines()] == [json.loads(x) for x in want]


def test_a_one_cell_cam_grid_is_named_up_front(tmp_path):
  """--cam_layers=features.18 of a 32-px model (and VGG16's features.30) is a 1x1 grid: every
  map constant, every record "map": "empty", with no line saying why; one stderr line now
  names the grid and the deepest layer with a finer one. A finer grid adds no line."""
  from PIL import Image
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'm32', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=32))
  photo = tmp_path / 'p.png'
  Image.fromarray(image_fixture.smooth_photo(40, 48)).save(photo)
  r = _run(f'--workdir={wd}', '--cam_layers=features.18', photo)
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout)['map'] == 'empty'
  assert r.stderr.strip().splitlines()[-1] == (
      "predict: CAM layer features.18 gives a 1x1 map for this model's 32 px input: every map "
      'is constant, so "map": "empty", with no box or crop; pass --cam_layers=features.13 '
      '(2x2)'), r.stderr
  # The finer grid in-process (a second predict process cost ~5 s): the command prints the
  # line exactly when `one_cell_note` gives one (cli/predict.py).
  from aesthetics_jax.evaluation import predictor
  assert predictor.Predictor(wd, cam_layers='features.13').one_cell_note() is None


def test_a_large_batch_holds_a_bounded_number_of_working_copies(files, tmp_path, monkeypatch):
  """--batch_size=96 with --overlay_dir held 96 decoded photos at once (2.1 GB peak for 12 MP
  photos, 0.8 GB at 8); now a batch that draws overlays or crops runs its files in groups
  within `WORKING_COPIES_BYTES`, and one that draws nothing keeps no working copy at all.
  The records are those of batches of that size."""
  from aesthetics_jax.evaluation import image_files, predictor
  _, wd, good, _, _ = files
  photos = []
  for i in range(7):
    photos.append(tmp_path / f'p{i}.jpg')
    Image.fromarray(np.roll(image_fixture.smooth_photo(64, 96), 9 * i, axis=1)).save(photos[-1])
  monkeypatch.setattr(predictor, 'WORKING_COPIES_BYTES', 3 * image_files.WORK_MAX_PIXELS * 3)
  p = predictor.Predictor(wd)
  batches, kept = [], []
  run, finish = p.run, p._finish
  monkeypatch.setattr(p, 'run', lambda x: batches.append(len(x)) or run(x))
  monkeypatch.setattr(p, '_finish', lambda path, image, *a: kept.append(image.image.size)
                      or finish(path, image, *a))
  small = list(p.predict_files(photos, overlay_dir=str(tmp_path / 'a'), batch_size=3))
  batches.clear()
  big = list(p.predict_files(photos, overlay_dir=str(tmp_path / 'b'), batch_size=1000))
  assert batches == [3, 3, 1] and all(kept)
  drop = lambda r: {k: v for k, v in r.items() if k != 'overlay'}
  assert [drop(r) for r in big] == [drop(r) for r in small]
  kept.clear()
  bare = list(p.predict_files(photos, batch_size=1000))
  assert not any(kept) and len(kept) == 7  # no pixels held: nothing is drawn from them
  assert [drop(r) for r in bare] == [drop(r) for r in small]

