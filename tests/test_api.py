"""The notebook interface: README's example runs as written, against a tiny checkpoint.

One module-scoped run of the README block compiles the model twice (every standard target,
then every tag); the other tests reuse its `Model` and compile nothing new.
"""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import checkpoint_fixture

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 80


def readme_example() -> str:
  """The first python block under '## Python API (notebooks)' in README.md."""
  text = (ROOT / 'README.md').read_text()
  section = text.split('## Python API (notebooks)', 1)[1]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.fixture(scope='module')
def example(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('api')
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp / 'mnv2', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=32),
      aesthetic_sign=1)
  photo = tmp / 'photo.jpg'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(photo)
  code = readme_example()
  assert "'/runs/mnv2'" in code and "'photo.jpg'" in code
  code = (code.replace("'/runs/mnv2'", repr(str(wd))).replace("'photo.jpg'", repr(str(photo)))
          .replace("'crop.png'", repr(str(tmp / 'crop.png')))
          .replace("'overlay.png'", repr(str(tmp / 'overlay.png'))))
  ns: dict = {}
  exec(compile(code, 'README.md (Python API)', 'exec'), ns)  # pylint: disable=exec-used
  return ns, tmp, photo


def test_readme_example_runs_and_maps_four_targets(example):
  ns, tmp, _ = example
  maps = ns['maps']
  assert len(maps) >= 4 and {'aesthetic', 'low', 'bucket:3', 'tag:Floral'} <= set(maps)
  for heat in maps.values():
    assert heat.shape == (H, W) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0 + 1e-6
  assert maps['aesthetic'].max() > 0  # the fixture's aesthetic gradients are positive
  s = ns['s']
  assert set(s) >= {'mean_score', 'score_std', 'distribution', 'label', 'tags'}
  assert len(s['tags']) == 5 and set(s['tags'][0]) == {'id', 'name', 'prob'}
  assert Image.open(tmp / 'crop.png').size[0] > 0
  ov = Image.open(tmp / 'overlay.png')
  # The 80-px-wide photo centred on a band its legend fits, the legend strip below.
  assert ov.size[0] == 256 and ov.size[1] > H


def test_boxes_are_pil_ordered_and_crop_matches(example):
  ns, _, photo = example
  box = ns['boxes']['crop']
  assert 0 <= box.x0 < box.x1 <= W and 0 <= box.y0 < box.y1 <= H
  assert abs((box.x1 - box.x0) / (box.y1 - box.y0) - 4 / 3) < 0.1
  img = Image.open(photo)
  assert np.array_equal(np.asarray(img.crop(box)),
                        np.asarray(img)[box.y0:box.y1, box.x0:box.x1])
  assert ns['m'].crop(photo, aspect='4:3').size == (box.x1 - box.x0, box.y1 - box.y0)


def test_photos_of_new_sizes_compile_nothing(example):
  """Each photo's maps, boxes and crop come at its own aspect: an eager JAX aspect crop
  compiled (and kept) ~23 programs per new photo size, ~3.4 MB and 0.12 s each over a folder
  of mixed sizes. After one photo, photos of other sizes compile nothing."""
  from jax import monitoring  # pylint: disable=import-outside-toplevel
  ns, _, photo = example
  m = ns['m']
  arr = np.asarray(Image.open(photo).convert('RGB'))
  calls = [lambda x: m.crop(x, aspect='3:2'), lambda x: m.boxes(x, aspect='1:1'),
           m.cam, m.overlay, m.score]
  for call in calls:
    call(arr)
  compiles, counting = [], [True]

  def listen(event, _, **kw):
    if counting and 'backend_compile' in event:
      compiles.append(event)

  monitoring.register_event_duration_secs_listener(listen)
  try:
    for hw in [(37, 61), (90, 33), (55, 55)]:
      x = np.resize(arr, hw + (3,))
      for call in calls:
        call(x)
  finally:
    counting.clear()
  assert compiles == []


def test_inputs_of_every_kind_and_lists(example):
  ns, _, photo = example
  m = ns['m']
  arr = np.asarray(Image.open(photo).convert('RGB'))
  by_path, by_pil, by_array = m.score(photo), m.score(Image.open(photo)), m.score(arr)
  assert by_path == by_pil == by_array
  m.batch_size = 1  # lists run in batches of 1 here: the compiled batch size, nothing new
  both = m.score([photo, arr])
  assert both == [by_path, by_array]
  maps = m.cam([arr, arr[:, :40]], target='bucket')
  assert maps[0].shape == (10, H, W) and maps[1].shape == (10, H, 40)
  grey = m.cam(arr[..., 0], target='top_tag')
  assert grey.shape == (H, W)


@pytest.mark.parametrize('kwargs, match', [
    (dict(target='tag:Flral'), 'no such tag name; did you mean Floral'),
    (dict(target='nope'), "cam target 'nope' is not defined"),
    (dict(target='bucket:11'), 'score bucket k in 1..10'),
    (dict(method='gradcam+'), "unknown CAM method 'gradcam\\+'"),
    # Wrong types used to be TypeErrors deep inside (`list(3)`, `3.split`).
    (dict(target=3), "target=3: pass a name or a list of names"),
    (dict(target=['aesthetic', 3]), "pass a name or a list of names"),
    (dict(method=['gradcam']), "method=\\['gradcam'\\]: pass one CAM method name"),
    (dict(layer=14), 'layer=14: pass a name or a list of names'),
    (dict(layer=('features.14', None)), "layer=\\('features.14', None\\): pass a name"),
])
def test_bad_targets_and_methods_are_one_line(example, kwargs, match):
  ns, _, photo = example
  with pytest.raises(ValueError, match=match) as e:
    ns['m'].cam(photo, **kwargs)
  assert '\n' not in str(e.value)


def test_bad_arrays_are_one_line():
  from aesthetics_jax import api
  with pytest.raises(ValueError, match='dtype float32; pass uint8'):
    api.to_array(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r'shape \(4, 4, 2\)'):
    api.to_array(np.zeros((4, 4, 2), np.uint8))
  assert api.to_array(np.zeros((32, 40, 4), np.uint8)).shape == (32, 40, 3)
  # As a file of that size is refused (a 1x1 array or PIL image was scored).
  with pytest.raises(ValueError, match='4x4 px is under 32 px a side'):
    api.to_array(np.zeros((4, 4, 4), np.uint8))
  with pytest.raises(ValueError, match='PIL image: too small: 1x1 px'):
    api.to_array(Image.new('RGB', (1, 1)))


def test_bytes_files_and_wrong_calls(example):
  """A file's bytes are an image like its path; an open file, a uint16 array, a list given to
  a one-image call and a bad top_k are one-line ValueErrors naming the fix (they were numpy's
  'dtype |S220247' or TypeError 'slice indices must be integers', or a silent empty list)."""
  import io
  from aesthetics_jax import api
  ns, _, photo = example
  m = ns['m']
  data = Path(photo).read_bytes()
  assert m.score(data) == m.score(photo) == m.score(bytearray(data))
  assert m.boxes(data, aspect='4:3') == m.boxes(photo, aspect='1.333333333')
  for x, match in ((io.BytesIO(data), r'BytesIO: pass its bytes \(f.read\(\)\)'),
                   (np.zeros((40, 40, 3), np.uint16), r'uint16; pass uint8 .*\(x >> 8\)'),
                   (b'not an image', 'image bytes: not an image')):
    with pytest.raises(ValueError, match=match) as e:
      m.score(x)
    assert '\n' not in str(e.value)
  for call in (m.boxes, m.crop, m.overlay):
    with pytest.raises(ValueError, match='takes one image, not a list of them'):
      call([photo, photo])
  for k in (2.5, -1, '3', True):
    with pytest.raises(ValueError, match=r'top_k=.*: pass an int >= 0'):
      m.score(photo, top_k=k)
  assert api.to_array(data).shape == (H, W, 3)


def test_pil_images_decode_as_their_files_do(tmp_path):
  """A 16-bit or float PIL image went through convert('RGB'), which clips: a 16-bit grey
  photo came out nearly white (mean 254 against 124 from its path), a float one in [0, 1]
  black. Now the file decoder's scaling applies to both, and NaN is refused."""
  from aesthetics_jax import api
  ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / 'g16.png')
  by_path = api.to_array(str(tmp_path / 'g16.png'))
  assert np.array_equal(api.to_array(Image.open(tmp_path / 'g16.png')), by_path)
  assert 100 < by_path.mean() < 155
  unit = Image.fromarray((ramp / 65535.0).astype(np.float32), 'F')
  assert 100 < api.to_array(unit).mean() < 155
  bad = np.asarray(unit).copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match='not finite'):
    api.to_array(Image.fromarray(bad, 'F'))


def test_an_rgba_array_decodes_as_its_file_does(tmp_path):
  """An RGBA array dropped its alpha while the same PNG's path was composited over white: the
  API scored another image for each. Both go through decoder.to_rgb now."""
  from aesthetics_jax import api
  rng = np.random.default_rng(5)
  rgba = rng.integers(0, 256, (H, W, 4), np.uint8)
  rgba[:, :20, 3] = 0
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'cut.png')
  by_path = api.to_array(str(tmp_path / 'cut.png'))
  assert (by_path[:, :20] == 255).all()
  assert np.array_equal(api.to_array(rgba), by_path)
  assert np.array_equal(api.to_array(Image.open(tmp_path / 'cut.png')), by_path)


def test_bad_threshold_and_empty_inputs_are_one_line(example):
  ns, _, photo = example
  m = ns['m']
  for t in (0, -1, 1.5, float('nan')):
    with pytest.raises(ValueError, match=r'threshold=.*: must be in \(0, 1\)'):
      m.boxes(photo, threshold=t)  # was a silent full-frame box
  # '0.3' was read as 0.3 (float() takes a str), True as 1.0: refused as other arguments are.
  for t, kind in (('0.3', 'str'), ('abc', 'str'), (True, 'bool')):
    with pytest.raises(ValueError, match=rf"threshold={t!r} is a {kind}; pass a float in "
                       r'\(0, 1\)') as e:
      m.boxes(photo, threshold=t)
    assert '\n' not in str(e.value)
  assert m.boxes(photo, threshold=np.float32(0.3)) == m.boxes(photo, threshold=0.3)
  with pytest.raises(ValueError, match='no images given'):
    m.score([])
  with pytest.raises(ValueError, match='no target given'):
    m.cam(photo, target=[])


@pytest.mark.parametrize('kwargs, match', [
    (dict(step='2'), "step='2': pass a checkpoint step as an int"),
    (dict(step=True), 'step=True: pass a checkpoint step as an int'),
    (dict(batch_size=0), 'batch_size=0: pass a positive int'),
    (dict(batch_size='8'), "batch_size='8': pass a positive int"),
    (dict(method=3), 'method=3: pass one CAM method name'),
    (dict(layer=14), 'layer=14: pass a name or a list of names'),
    # Overrides: a misspelled key changed nothing, another section rebuilt another model.
    (dict(overrides={'eval.box_treshold': 0.4}), 'did you mean eval.box_threshold'),
    (dict(overrides={'model.arch': 'vgg16'}), 'model.arch cannot change here'),
    (dict(overrides={'eval.box_threshold': 'abc'}), "eval.box_threshold='abc' is a str; this "
     'key takes a float'),
    (dict(overrides=['eval.box_threshold=0.4']), 'overrides must be a dict'),
])
def test_bad_load_arguments_are_one_line(example, kwargs, match):
  import aesthetics_jax
  ns, tmp, _ = example
  with pytest.raises(ValueError, match=match) as e:
    aesthetics_jax.load(tmp / 'mnv2', **kwargs)
  assert '\n' not in str(e.value)


def test_eval_overrides_apply(example):
  import aesthetics_jax
  _, tmp, _ = example
  with pytest.warns(UserWarning, match=r'^overrides eval.explorer change nothing here: '
                    r'prediction reads eval.box_threshold, .*load\(batch_size=...\)\)$'):
    m = aesthetics_jax.load(tmp / 'mnv2', overrides={'eval.box_threshold': 0.4,
                                                     'eval.explorer': False}, batch_size=2)
  assert m.predictor.threshold == pytest.approx(0.4) and m.batch_size == 2


def test_load_prints_no_orbax_notices(example, caplog):
  """Every load printed orbax's 'Given directory is read only' and 'read_only=True, setting
  save_interval_steps=0' warnings: noise under every notebook cell that loads a model."""
  import logging
  import aesthetics_jax
  _, tmp, _ = example
  with caplog.at_level(logging.INFO):
    aesthetics_jax.load(tmp / 'mnv2')
  noise = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert noise == []


def test_a_large_file_scores_and_boxes_as_predict_does(example, tmp_path):
  """`aesthetics-predict` feeds the model from a reduced working copy (a large JPEG decoded
  DCT-reduced); the API resized the full decode instead, so the same 4000x3000 file scored
  5.036 here and 5.060 there. Both now feed the model the same pixels."""
  import image_fixture
  ns, _, _ = example
  m = ns['m']
  big = tmp_path / 'big.jpg'
  photo = image_fixture.smooth_photo(2400, 3000).astype(np.int16)
  photo += np.random.default_rng(0).integers(-60, 60, photo.shape, np.int16)  # fine texture
  Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(big, quality=90)
  rec = next(m.predictor.predict_files([str(big)], aspect='4:3', top_k=3))
  s = m.score(str(big), top_k=3)
  assert abs(s['mean_score'] - rec['mean_score']) < 1e-5, (s['mean_score'], rec['mean_score'])
  np.testing.assert_allclose(s['distribution'], rec['distribution'], atol=1e-6)
  boxes = m.boxes(str(big), aspect='4:3')
  for name, b in boxes.items():
    assert rec['boxes'][name] == b._asdict(), name
  assert m.cam(str(big)).shape == (2400, 3000)
  assert m.crop(str(big), aspect='4:3').size == (3000, 2250)  # cut from the full decode


def test_a_strip_scores_as_predict_does_from_its_own_rows(example, tmp_path):
  """A 40x20000 JPEG strip's working copy was 5x2500 (a 4096-px long side), now the whole strip
  (a pixel budget): predict and the API score it alike from it. The API's overlay (full
  resolution) shows it with boxes 2 px wide (were 100), folded into rows (it was one line
  20000 px long), and a 3000x32 one is folded into columns centred on a band its legend fits
  (was 32 px wide)."""
  import image_fixture
  ns, _, _ = example
  m = ns['m']
  strip = tmp_path / 'strip.jpg'
  strip.write_bytes(image_fixture.encode(image_fixture.smooth_photo(40, 20000)))
  rec = next(m.predictor.predict_files([str(strip)], top_k=3))
  s = m.score(str(strip), top_k=3)
  assert abs(s['mean_score'] - rec['mean_score']) < 1e-5, (s['mean_score'], rec['mean_score'])
  # From the strip's own rows (the model input's decode keeps them), as evaluation feeds it.
  from aesthetics_jax.data import preprocess
  from aesthetics_jax.evaluation import image_files
  size = m.predictor.size
  assert image_files.model_input(strip.read_bytes(), size, 's')[0].image.shape == (40, 20000, 3)
  np.testing.assert_array_equal(m._load(str(strip)).model,
                                preprocess.preprocess_eval_np(strip.read_bytes(), size))
  # Folded as predict's overlays are: 16 rows of 1250 px (it was one line 20000 px long).
  from aesthetics_jax.report import overlays
  k = overlays.fold_count((40, 20000))
  ov = np.asarray(m.overlay(str(strip)))
  height = k * 40 + (k - 1) * 5
  assert k == 16 and ov.shape[1] == 1250 and height < ov.shape[0] < height + 150
  whole, gaps = image_fixture.unfold(ov[:height], (40, 20000), k)
  assert (gaps == overlays.LEGEND_BACKGROUND).all()
  b = rec['boxes']['average']
  # Drawn in red, or (b0a9abf: coinciding boxes are drawn once) in the colour of the first box
  # with its pixels (here all three are the whole strip): its sides are the columns of that
  # colour top to bottom.
  first = next(name for name, box in rec['boxes'].items() if box == b)
  colour = (whole == np.array(overlays.box_colour(first), np.uint8)).all(-1)
  sides = np.nonzero(colour.all(axis=0))[0]
  assert (b['y0'], b['y1']) == (0, 40) and b['x1'] - b['x0'] > 4
  assert sides.tolist() == [b['x0'], b['x0'] + 1, b['x1'] - 2, b['x1'] - 1]
  tall = tmp_path / 'tall.png'
  tall.write_bytes(image_fixture.encode(image_fixture.smooth_photo(3000, 32), 'PNG'))
  w, h = m.overlay(str(tall)).size  # 7 columns of 429 px (7x32 + 6 gaps of 4 = 248 wide)
  assert overlays.fold_count((3000, 32)) == 7 and 248 < w < 400 and 429 < h < 429 + 150


def test_crops_keep_the_rgb_colour_profile(example, tmp_path):
  """Crops were written without the photo's ICC profile: a Display P3 or Adobe RGB photo's crop
  showed other colours. An RGB profile now goes with the crop (predict's and the API's); a
  profile for another colour space (CMYK) does not fit an RGB crop and is dropped."""
  from PIL import ImageCms
  from aesthetics_jax.evaluation import image_files
  ns, _, _ = example
  m = ns['m']
  icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
  photo = tmp_path / 'p3.jpg'
  Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), np.uint8)).save(
      photo, icc_profile=icc)
  rec = next(m.predictor.predict_files([str(photo)], crop_dir=str(tmp_path / 'crops'),
                                       aspect='1:1'))
  assert Image.open(rec['crop']).info.get('icc_profile') == icc
  assert m.crop(str(photo)).info.get('icc_profile') == icc
  assert m.crop(photo.read_bytes()).info.get('icc_profile') == icc
  assert 'icc_profile' not in m.crop(np.asarray(Image.open(photo))).info  # an array has none
  cmyk = icc[:16] + b'CMYK' + icc[20:]
  assert image_files.rgb_icc_profile(str(photo)) == icc
  Image.open(photo).save(tmp_path / 'c.jpg', icc_profile=cmyk)
  assert image_files.rgb_icc_profile(str(tmp_path / 'c.jpg')) is None
  assert image_files.rgb_icc_profile(str(tmp_path / 'missing.jpg')) is None


def test_a_crop_cut_reduced_says_so_in_its_record(example, tmp_path):
  """Over 36 MP predict cuts the crop from a reduced decode (a JPEG's DCT scaling; another
  format's working copy), to bound memory: the record gave the full-size box and nothing
  else, the file was 2-7 times smaller. `crop_note` now gives both sizes; a crop at the box's
  size has none."""
  ns, _, photo = example
  m = ns['m']
  h, w = 6000, 6400   # 38.4 MP; a smooth picture, quick to write
  ramp = np.linspace(0, 255, w, dtype=np.float32)
  big = np.stack([np.broadcast_to(ramp, (h, w)),
                  np.broadcast_to(ramp[:h, None], (h, w)),
                  np.full((h, w), 90, np.float32)], -1).astype(np.uint8)
  Image.fromarray(big).save(tmp_path / 'big.jpg', quality=80)
  Image.fromarray(big).save(tmp_path / 'big.png', compress_level=1)
  del big
  recs = list(m.predictor.predict_files(
      [str(tmp_path / 'big.jpg'), str(tmp_path / 'big.png'), str(photo)],
      crop_dir=str(tmp_path / 'crops'), aspect='1:1'))
  for rec in recs[:2]:
    b = rec['boxes']['crop']
    assert (b['x1'] - b['x0'], b['y1'] - b['y0']) == (h, h)
    cw, ch = Image.open(rec['crop']).size
    assert cw < h and abs(cw - ch) <= 1
    assert rec['crop_note'].startswith(f'the crop file is {cw}x{ch} px, the box {h}x{h}: '
                                       'an image over 36 MP is cropped from a copy reduced by')
  assert 'crop_note' not in recs[2] and Image.open(recs[2]['crop']).size == (H, H)


def test_predict_files_threads_give_the_single_thread_records(example, tmp_path):
  """predict_files decodes and writes in threads: records, their order, errors and the files
  written are those of one thread (a corrupt file among the photos; batches of 2)."""
  ns, _, photo = example
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'\xff\xd8 not a jpeg')
  rng = np.random.default_rng(3)
  paths = [str(photo), str(bad)]
  for i in range(3):
    p = tmp_path / f'p{i}.png'
    Image.fromarray(rng.integers(0, 255, (H + 8 * i, W, 3), np.uint8)).save(p)
    paths.append(str(p))
  runs = {}
  for workers in (1, 3):
    out = tmp_path / f'w{workers}'
    recs = list(ns['m'].predictor.predict_files(
        paths, overlay_dir=str(out / 'ov'), crop_dir=str(out / 'cr'), batch_size=2,
        workers=workers))
    files = {q.name: q.read_bytes() for q in sorted(out.rglob('*')) if q.is_file()}
    text = json.dumps(recs).replace(str(out), 'OUT')
    runs[workers] = (text, files)
  assert runs[1] == runs[3]
  recs = json.loads(runs[1][0])
  assert [r['path'] for r in recs] == paths and set(recs[1]) == {'path', 'error'}
  assert len(runs[1][1]) == 2 * 4  # an overlay and a crop per scored image


def test_score_decodes_only_the_model_input(example, tmp_path, monkeypatch):
  """score() decoded a large file twice, the second time at full resolution (for crops and
  overlays only): 1.3 GB for a 10k x 10k photo where the working copy takes 333 MB. It decodes
  the model's input only (reduced to the model's side, as evaluation does)."""
  from aesthetics_jax.evaluation import image_files
  ns, _, _ = example
  big = tmp_path / 'big.jpg'
  Image.fromarray(np.zeros((2400, 2400, 3), np.uint8)).save(big)  # reduced to 1200 px
  targets = []
  load = image_files.load_image

  def spy(path, target=image_files.WORK_SIDE, budget=image_files.WORK_MAX_PIXELS, what=None):
    targets.append(target)
    return load(path, target, budget, what)

  monkeypatch.setattr(image_files, 'load_image', spy)
  assert ns['m'].score(str(big))['label'] in ('high', 'low')
  assert targets == [ns['m'].predictor.size]  # target=None: a full-resolution decode


def test_lists_are_decoded_batch_by_batch(example, monkeypatch):
  """score() and cam() of a list decoded every image before the first forward pass, so memory
  grew with the list's length; now at most batch_size images are decoded ahead of the model,
  and a list gives what its batches give on their own."""
  from aesthetics_jax import api
  ns, _, photo = example
  m = ns['m']
  rng = np.random.default_rng(5)
  xs = [str(photo)] + [rng.integers(0, 255, (H, W, 3), np.uint8) for _ in range(4)]
  monkeypatch.setattr(m, 'batch_size', 2)
  alone = m.score(xs[:2]) + m.score(xs[2:4]) + m.score(xs[4:])
  alone_maps = m.cam(xs[:2], target=['low', 'tag:Floral']) + m.cam(xs[2:4], ['low', 'tag:Floral'])
  events = []
  load, forward = api.Model._load, m.predictor.run_forward
  monkeypatch.setattr(api.Model, '_load',
                      lambda self, *a, **k: events.append('load') or load(self, *a, **k))
  monkeypatch.setattr(m.predictor, 'run_forward',
                      lambda *a, **k: events.append('forward') or forward(*a, **k))
  assert m.score(xs) == alone
  assert events[:3] == ['load', 'load', 'forward'] and events.count('load') == 5
  events.clear()
  both = m.cam(xs[:4], target=['low', 'tag:Floral'])  # two compiled families per batch
  assert events == ['load', 'load', 'forward', 'forward'] * 2
  for got, want in zip(both, alone_maps):
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)


def test_a_batch_holds_model_inputs_not_working_copies(example, tmp_path, monkeypatch):
  """score() of a list held every image of a batch as its working copy (up to 25 MB each:
  m.batch_size=96 over 96 12-16 MP photos peaked at 1.9 GB, 0.8 GB at 8; now 0.96 GB): a batch
  holds the model inputs [S, S, 3], and the scores are the same."""
  from aesthetics_jax import api
  ns, _, photo = example
  m = ns['m']
  big = tmp_path / 'big.jpg'
  Image.fromarray(np.random.default_rng(2).integers(0, 255, (300, 400, 3), np.uint8)).save(big)
  xs = [str(photo), str(big), np.asarray(Image.open(big))]
  monkeypatch.setattr(m, 'batch_size', 3)
  want = [m.score(x) for x in xs]
  held = []
  maps = api.Model._maps
  monkeypatch.setattr(api.Model, '_maps', lambda self, images, *a, **k: held.extend(
      im.shape for im in images) or maps(self, images, *a, **k))
  assert m.score(xs) == want
  s = m.predictor.size
  assert held == [(s, s, 3)] * 3  # one batch of three model inputs


@pytest.mark.filterwarnings('ignore:CAM layer features.18 gives a 1x1 map')
def test_boxes_name_every_box_also_when_the_maps_point_nowhere(example):
  """At a 1x1 CAM grid (the 32-px model's last layer) every map is constant, so points nowhere:
  boxes() returned {} and README's boxes['average'] was a KeyError. Every documented name is
  there, None (never a silent full frame); crop() is None and the overlay draws no box."""
  ns, _, photo = example
  m = ns['m']
  flat = dict(layer='features.18')  # 32 px / 32: a 1x1 grid
  assert m.boxes(photo, **flat) == dict.fromkeys(('aesthetic', 'attribute', 'average'))
  assert m.boxes(photo, aspect='4:3', **flat) == dict.fromkeys(
      ('aesthetic', 'attribute', 'average', 'crop'))
  assert m.boxes(photo, target='low', aspect='1:1', **flat) == {'low': None, 'crop': None}
  assert m.crop(photo, **flat) is None and m.crop(photo, aspect=None, **flat) is None
  assert m.overlay(photo, **flat).size[1] > H
  real = m.boxes(photo)  # maps that point somewhere
  assert set(real) == {'aesthetic', 'attribute', 'average'} and None not in real.values()


def test_vgg16_target_errors_name_what_was_typed(tmp_path):
  """VGG16 (one logit: no score buckets, no tags) answered 'tag:Floral' with "cam target
  'tag:16' is not defined", a misspelled tag with tag names to choose from, boxes' 'bucket'
  with "use target='bucket:<k>'" and a wrong type with a 'bucket:3' example."""
  import aesthetics_jax
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'vgg', checkpoint_fixture.smoke_config('vgg16', image_size=32))
  m = aesthetics_jax.load(wd)
  img = np.zeros((H, W, 3), np.uint8)
  for target in ('tag:Floral', 'tag:Flral', 'bucket', 'bucket:3', 'top_tag'):
    for call in (m.cam, m.boxes):
      with pytest.raises(ValueError) as e:
        call(img, target=target)
      assert str(e.value) == (f"cam target '{target}' is not defined for vgg16; use one of "
                              "'aesthetic', 'low'"), (call.__name__, str(e.value))
  for call in (m.cam, m.boxes):
    with pytest.raises(ValueError, match=r"target=3: pass a .*'aesthetic' or") as e:
      call(img, target=3)
    assert 'bucket' not in str(e.value), str(e.value)


def test_bucket_targets_spelled_loosely_are_their_bucket(example):
  """'bucket:03' and 'bucket: 3' passed the target check (bucket 3) but no compiled map was
  labelled so: an UnboundLocalError ('pred') deep in _maps. They are bucket 3 now."""
  ns, _, photo = example
  m = ns['m']
  want = m.cam(photo, target='bucket:3')
  for t in ('bucket:03', 'bucket: 3', ' bucket:3 '):
    assert np.array_equal(m.cam(photo, target=t), want), t
  assert set(m.cam(photo, target=['bucket:03', 'low'])) == {'bucket:03', 'low'}
  assert m.boxes(photo, target='bucket:03') == {'bucket:03': m.boxes(photo, target='bucket:3')[
      'bucket:3']}
  with pytest.raises(ValueError, match="cam target 'bucket:x': use 'bucket:<k>'"):
    m.cam(photo, target='bucket:x')


def test_a_tag_of_digit_symbols_is_a_name_not_a_crash(example):
  """'tag:²' passed str.isdigit(), then int('²') raised "invalid literal for int() with base
  10" naming neither the target nor the fix."""
  ns, _, photo = example
  with pytest.raises(ValueError, match=r'cam target tag:²: no such tag name') as e:
    ns['m'].cam(photo, target='tag:²')
  assert '\n' not in str(e.value)


def test_a_falsy_aspect_is_refused_not_ignored(example):
  """aspect=0, '' or False was read as 'no aspect': boxes() left out 'crop' and crop() cut the
  suggested box instead of an aspect window, silently. They are one-line errors now; None
  stays 'no aspect window'."""
  ns, _, photo = example
  m = ns['m']
  for aspect in (0, 0.0, '', False):
    for call in (m.boxes, m.crop, m.overlay):
      with pytest.raises(ValueError, match=r'crop aspect .* is not valid.*aspect=None') as e:
        call(photo, aspect=aspect)
      assert '\n' not in str(e.value)
  assert 'crop' not in m.boxes(photo, aspect=None)


def test_batch_size_set_on_the_model_is_checked(example):
  """`m.batch_size = 0` (or 2.5) was taken, then the next list ended in range()'s 'arg 3 must
  not be zero' ('float object cannot be interpreted as an integer')."""
  ns, _, _ = example
  m = ns['m']
  for bad in (0, -1, 2.5, None):
    with pytest.raises(ValueError, match=r'batch_size=.*: pass a positive int'):
      m.batch_size = bad
  assert m.batch_size >= 1


def test_an_empty_layer_is_the_default_layer(example):
  """cam(layer=[]) or layer='' used the model's last layer (here a 1x1 grid: a flat, all-zero
  map), where load(layer=[]) and layer=None use the checkpoint's config.eval.cam_layers."""
  ns, _, photo = example
  m = ns['m']
  want = m.cam(photo)
  assert want.max() > 0
  for layer in ([], (), '', ' , '):
    assert np.array_equal(m.cam(photo, layer=layer), want), layer
  assert m.boxes(photo, layer=[]) == m.boxes(photo)


def test_layer_names_are_stripped_in_a_list_as_in_a_string(example):
  """layer=' features.14' (a str) was stripped and taken, ['features.14 '] refused ('CAM layer
  'features.14 ' is not a module'): both are stripped now; a wrong name still names the valid
  ones."""
  from aesthetics_jax import models
  ns, _, _ = example
  model = ns['m'].predictor.model
  want = ('features.14',)
  for layer in (' features.14', ['features.14 '], (' features.14\t',), ['features.14']):
    assert models.resolve_layers(model, layer) == want, layer
  assert models.resolve_layers(model, [' features.18 ', 'features.14']) == (
      'features.14', 'features.18')
  for layer in (['features.99 '], ' features.99'):
    with pytest.raises(ValueError, match=r"CAM layer 'features.99' is not a module of "
                       r'mobilenet_v2 features; use one of .*features.14, ') as e:
      models.resolve_layers(model, layer)
    assert '\n' not in str(e.value)


def test_inputs_that_are_no_image_name_their_type():
  """None, a number, a dict, a set or an array of paths were 'image array has dtype object'
  (int64, <U20): 'pass uint8', a cast that was no fix; memoryview(a) of a uint8 array was read
  as a file's bytes ('not an image')."""
  from aesthetics_jax import api
  for x, name in ((None, 'NoneType'), (3, 'int'), ({}, 'dict'), ({'a.jpg'}, 'set'),
                  (object(), 'object')):
    with pytest.raises(ValueError, match=f"image of type {name}: pass a path, a file's bytes"):
      api.to_array(x)
  for x in (np.array(['a.jpg', 'b.jpg']), np.array([np.zeros(3), None], dtype=object)):
    with pytest.raises(ValueError, match=r'dtype .*: for several images pass a list'):
      api.to_array(x)
  a = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
  assert np.array_equal(api.to_array(memoryview(a)), a)


def test_a_memoryview_of_an_array_scores_as_the_array(example):
  """to_array read memoryview(a) as the array (bf5e564), but score / cam / crop still took it
  for a file's bytes: 'image bytes: not an image'."""
  ns, _, _ = example
  m = ns['m']
  a = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
  assert m.score(memoryview(a)) == m.score(a)
  assert np.array_equal(m.cam(memoryview(a)), m.cam(a))
  assert m.crop(memoryview(a)).size == m.crop(a).size


def test_a_generator_of_images_is_a_list_read_batch_by_batch(example, monkeypatch):
  """A generator (or map, iter) of images was one image: 'image array has dtype object'. It is
  read batch_size images at a time now and gives the list's results; a set (no order) and a
  generator given to a one-image call are one-line errors."""
  ns, _, photo = example
  m = ns['m']
  rng = np.random.default_rng(7)
  xs = [str(photo)] + [rng.integers(0, 255, (H, W, 3), np.uint8) for _ in range(2)]
  monkeypatch.setattr(m, 'batch_size', 2)
  want = m.score(xs)
  pulled = []

  def gen():
    for i, x in enumerate(xs):
      pulled.append(i)
      yield x

  forward = m.predictor.run_forward
  monkeypatch.setattr(m.predictor, 'run_forward',
                      lambda *a, **k: pulled.append('forward') or forward(*a, **k))
  assert m.score(gen()) == want
  assert pulled == [0, 1, 'forward', 2, 'forward']  # never more than a batch ahead
  assert [c.shape for c in m.cam(iter(xs[1:]))] == [(H, W)] * 2
  with pytest.raises(ValueError, match='no images given'):
    m.score(iter([]))
  with pytest.raises(ValueError, match='images given as a set, which has no order'):
    m.score({str(photo)})
  with pytest.raises(ValueError, match='boxes takes one image, not a generator of them'):
    m.boxes(x for x in xs)


def test_a_bad_image_in_a_list_is_named_and_found_before_any_is_scored(example, monkeypatch,
                                                                        tmp_path):
  """A list's bad image ended the call with an error naming no image ('image array of 4x4 px
  is under 32 px a side': which one?), and only when its batch came: after every image before
  it was scored, their results lost. Its index is named now, and what can be checked without
  decoding (type, dtype, shape, a missing file, a PIL image's size) is checked first."""
  ns, _, photo = example
  m = ns['m']
  good = np.random.default_rng(2).integers(0, 255, (H, W, 3), np.uint8)
  monkeypatch.setattr(m, 'batch_size', 2)
  forwards = []
  forward = m.predictor.run_forward
  monkeypatch.setattr(m.predictor, 'run_forward',
                      lambda *a, **k: forwards.append(1) or forward(*a, **k))
  for bad, match in ((np.zeros((4, 4, 3), np.uint8), r'images\[2\]: image array of 4x4 px'),
                     (str(tmp_path / 'nope.jpg'), r'images\[2\]: .*nope.jpg: no such file'),
                     (good.astype(np.float32), r'images\[2\]: image array has dtype float32'),
                     (Image.new('RGB', (8, 8)), r'images\[2\]: PIL image: too small'),
                     (None, r'images\[2\]: image of type NoneType')):
    for call in (m.score, m.cam):
      with pytest.raises(ValueError, match=match) as e:
        call([str(photo), good, bad])
      assert '\n' not in str(e.value)
  assert forwards == []  # refused before the first batch ran
  # Refused only when decoded (a corrupt file): still named by its index.
  with pytest.raises(ValueError, match=r'images\[3\]: image bytes: not an image'):
    m.score([good, good, good, b'not an image'])


def test_image_paths_as_a_notebook_writes_them(example, tmp_path, monkeypatch):
  """'~/p.png' was 'no such file' (not expanded), a PathLike giving bytes a TypeError from
  pathlib, '' read as '.' ('not a regular file'), a NUL byte a bare 'embedded null byte' and
  a URL 'https:/example.com/a.jpg: no such file' (one slash)."""
  import os
  ns, _, photo = example
  m = ns['m']
  monkeypatch.setenv('HOME', str(tmp_path))
  (tmp_path / 'p.png').write_bytes(Path(photo).read_bytes())
  want = m.score(photo)

  class BytesPath:
    def __fspath__(self):
      return os.fsencode(str(photo))

  for x in ('~/p.png', Path('~/p.png'), BytesPath()):
    assert m.score(x) == want, x
  assert m.crop('~/p.png').size == m.crop(photo).size
  assert m.score(['~/p.png', photo]) == [want, want]
  # A path read from a file list with its '\n' printed its error on two lines.
  for x, match in (('', r"image path '' is empty"),
                   ('a\0b.jpg', r"image path 'a\\x00b.jpg' holds a NUL byte"),
                   ('https://example.com/a.jpg', r'https://example.com/a.jpg: a URL; .*download'),
                   (f'{photo}\n', r"photo.jpg\\n': no such file; .*strip\(\) it")):
    for call in (m.score, m.boxes):
      with pytest.raises(ValueError, match=match) as e:
        call(x)
      assert '\n' not in str(e.value)


def test_load_names_what_is_wrong_with_the_workdir(example, tmp_path, monkeypatch):
  """load(None) or load(3) was a TypeError from os.fspath deep in io.path, load(b'/runs/x')
  pathlib's 'a bytes-like object is required'; '~/runs/x' was not expanded; a missing folder,
  a file or the checkpoints/ folder were '<it>/config.json: not found; is --workdir a training
  workdir' (a path with its '\n' on two lines; a folder of no run: the command's --workdir).
  Each is a one-line ValueError (WorkdirError) naming it now."""
  import os
  import aesthetics_jax
  from aesthetics_jax.train import checkpoint_errors
  _, tmp, photo = example
  wd = tmp / 'mnv2'
  monkeypatch.setenv('HOME', str(tmp))
  assert aesthetics_jax.load('~/mnv2').predictor.step == aesthetics_jax.load(wd).predictor.step
  assert aesthetics_jax.load(os.fsencode(str(wd))).arch == 'mobilenet_v2'
  for bad, match in ((None, r"workdir=None: pass a training workdir's path"),
                     (3, r"workdir=3: pass a training workdir's path"),
                     ('', r"workdir='' is empty"),
                     (tmp_path / 'nope', r'nope: no such folder; pass the folder aesthetics'),
                     (photo, r'photo.jpg: a file, not a folder'),
                     (wd / 'checkpoints', r'no config.json here but in its parent; pass '),
                     (tmp_path, r'no config.json, so not a training workdir; pass the folder'),
                     (f'{wd}\n', r"mnv2\\n': no such folder")):
    with pytest.raises(checkpoint_errors.WorkdirError, match=match) as e:
      aesthetics_jax.load(bad)
    assert '\n' not in str(e.value)
  # A copy under a name not in UTF-8: orbax's C++ refused it with pybind11's 'Unable to cast
  # Python instance of type <class 'str'> to C++ type '?'' (a RuntimeError).
  latin1 = os.fsdecode(os.fsencode(str(tmp_path)) + b'/run\xff')
  shutil.copytree(wd, latin1)
  with pytest.raises(checkpoint_errors.WorkdirError, match=r'run\\xff is not a UTF-8 name: '
                     r'.*rename the folder \(or pass a link to it'):
    aesthetics_jax.load(latin1)


def test_a_closed_pil_image_says_how_to_keep_it(example, tmp_path):
  """A PIL image whose file was closed before it was read was 'cannot decode image
  (ValueError: Operation on closed image); re-export or re-download it' (after a `with` block:
  'AssertionError: '): the file is fine and the fix is im.load() while it is open."""
  ns, _, photo = example
  m = ns['m']
  closed = Image.open(photo)
  closed.close()
  with Image.open(photo) as ended:
    pass
  with Image.open(photo) as loaded:
    loaded.load()  # read while open: usable after the block
  for im in (closed, ended):
    for x in (im, [np.zeros((H, W, 3), np.uint8), im]):
      with pytest.raises(ValueError, match=r'PIL image: closed before its pixels were read.*'
                         r'im.load\(\) inside the block, pass im.copy\(\)') as e:
        m.score(x)
      assert '\n' not in str(e.value)
  assert m.score(loaded) == m.score(photo)
  assert m.score(Image.open(photo)) == m.score(photo)  # lazily opened, still open


def test_a_premultiplied_la_pil_image_decodes():
  """A PIL image in mode La (premultiplied grey + alpha) was 'cannot decode image (ValueError:
  conversion from La to L not supported); re-export or re-download it'; it decodes as LA."""
  from aesthetics_jax import api
  grey = np.random.default_rng(4).integers(0, 255, (H, W), np.uint8)
  la = Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), 'LA')
  want = api.to_array(la)
  assert np.array_equal(want[..., 0], grey)
  assert np.array_equal(api.to_array(la.convert('La')), want)  # opaque: premultiplying is a no-op


def test_arrays_in_the_other_layouts_of_a_notebook(example):
  """[H, W, 1] (grey with a channel axis) was refused; [1, H, W, 3] (a batch) and [3, H, W]
  (channels first, torch's) were refused with no word of how to get [H, W, 3]."""
  from aesthetics_jax import api
  ns, _, _ = example
  a = np.random.default_rng(6).integers(0, 255, (H, W, 3), np.uint8)
  assert np.array_equal(api.to_array(a[..., :1]), api.to_array(a[..., 0]))
  assert ns['m'].score(a[..., :1]) == ns['m'].score(a[..., 0])
  for x, match in ((a[None], r'shape \(1, 48, 80, 3\).*a batch\? pass x\[0\] .*list\(x\)'),
                   (np.stack([a, a]), r'a batch\? pass x\[0\]'),
                   (a.transpose(2, 0, 1), r'shape \(3, 48, 80\).*x.transpose\(1, 2, 0\)'),
                   (a[..., :1].transpose(2, 0, 1), r'channels first\?')):
    with pytest.raises(ValueError, match=match):
      api.to_array(x)


def test_the_cast_a_wrong_dtype_error_suggests_fits_the_values():
  """Every non-uint8 array got one hint, '(x * 255).round().astype(np.uint8) for floats in
  [0, 1]': followed for floats in [0, 255] it wrapped them around (300 -> 44), and an array
  holding NaN was not told so. The hint now fits the values."""
  from aesthetics_jax import api
  a = np.random.default_rng(8).integers(0, 255, (H, W, 3)).astype(np.float32)
  nan = a.copy()
  nan[0, 0, 0] = np.nan
  for x, match in ((a / 255, r'values in \[0, 1\]: \(x \* 255\)'),
                   (a, r'values in \[0, 255\]: x.round\(\).astype\(np.uint8\)'),
                   (a.astype(np.int64), r'values in \[0, 255\]: x.astype\(np.uint8\)'),
                   (a * 4 - 100, r'values in \[-100, .*\]: scale them to 0..255'),
                   (nan, r'holds NaN or inf: replace them'),
                   (a > 100, r'x.astype\(np.uint8\) \* 255')):
    with pytest.raises(ValueError, match=r'image array has dtype \w+; pass uint8 .*' + match):
      api.to_array(x)


def test_an_array_like_that_numpy_cannot_read_is_one_line():
  """What torch does for a tensor on a GPU or one that requires grad: its __array__ raises
  (TypeError / RuntimeError), which came out of np.asarray as it was."""
  from aesthetics_jax import api

  class GpuTensor:
    def __array__(self, dtype=None, copy=None):
      raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu()\nmore")

  class GradTensor:
    def __array__(self, dtype=None, copy=None):
      raise RuntimeError("Can't call numpy() on Tensor that requires grad.")

  for x, match in ((GpuTensor(), r"GpuTensor cannot be read as an array \(can't convert cuda"),
                   (GradTensor(), r'GradTensor cannot be read as an array \(Can.t call')):
    with pytest.raises(ValueError, match=match + r'.*x.detach\(\).cpu\(\).numpy\(\)') as e:
      api.to_array(x)
    assert '\n' not in str(e.value)


def test_errors_keep_scores_the_rest_of_a_list(example, tmp_path, monkeypatch):
  """A corrupt file in a list stopped score/cam when its batch came, the results of every image
  before it lost (scoring a folder of 10,000 photos with one broken file gave nothing).
  errors='keep' puts its one-line error in its place and scores the others, identically."""
  ns, _, photo = example
  m = ns['m']
  monkeypatch.setattr(m, 'batch_size', 2)
  good = np.random.default_rng(3).integers(0, 255, (H, W, 3), np.uint8)
  images = [str(photo), b'not an image', good, str(tmp_path / 'nope.jpg'),
            np.zeros((4, 4, 3), np.uint8), good]
  got = m.score(images, errors='keep')
  assert [sorted(r) == ['error'] for r in got] == [False, True, False, True, True, False]
  assert got[1]['error'].startswith('images[1]: image bytes: not an image')
  assert 'images[3]: ' in got[3]['error'] and 'nope.jpg' in got[3]['error']
  assert got[4]['error'].startswith('images[4]: image array of 4x4 px')
  alone = m.score([str(photo), good, good])
  for a, b in zip([got[0], got[2], got[5]], alone):
    assert a.keys() == b.keys() and np.allclose(a['p_high'], b['p_high'], atol=1e-6)
  maps = m.cam(images, target=['aesthetic', 'low'], errors='keep')
  assert maps[1] == {'error': got[1]['error']} and maps[0]['low'].shape == (H, W)
  assert np.allclose(maps[2]['aesthetic'], m.cam(good), atol=1e-6)
  assert m.cam((x for x in images[:2]), errors='keep')[1] == {'error': got[1]['error']}
  with pytest.raises(ValueError, match=r'images\[3\]: .*nope.jpg: no such file'):
    m.score(images)  # the default still stops (the missing file found before any decoding)
  with pytest.raises(ValueError, match=r"errors='skip': use 'raise' .* or 'keep'"):
    m.score(images, errors='skip')


def test_target_names_are_case_blind(example):
  """'High' or 'Tag:Floral' were errors, though tag names and methods were case-blind."""
  ns, _, photo = example
  m = ns['m']
  a = m.cam(str(photo), target=['aesthetic', 'low', 'bucket:3', 'tag:Floral'])
  b = m.cam(str(photo), target=['High', 'LOW', 'Bucket:3', 'Tag:floral'])
  for x, y in zip(a.values(), b.values()):
    assert np.array_equal(x, y)


@pytest.mark.parametrize('part', ['scores', 'maps'])
def test_non_finite_model_outputs_are_one_line_not_numbers(example, monkeypatch, part):
  """A checkpoint of a diverged run (NaN weights): score() gave mean_score NaN labelled 'low',
  boxes() full-frame boxes and crop() the whole image (the map was not 'empty'), overlay() an
  IndexError; predict reports such an image as an error line. Now one ValueError, as there."""
  m = example[0]['m']
  real = m.predictor.run_forward

  def nan_forward(x, forward, method=None):
    pred, maps = real(x, forward, method)
    if part == 'scores':
      pred = {k: np.full_like(v, np.nan) if v.dtype.kind == 'f' else v for k, v in pred.items()}
    return pred, np.full_like(maps, np.nan) if part == 'maps' else maps
  monkeypatch.setattr(m.predictor, 'run_forward', nan_forward)
  a = np.random.default_rng(1).integers(0, 255, (H, W, 3), np.uint8)
  for call in (m.score, m.cam, m.boxes, m.crop, m.overlay, lambda x: m.score([x], errors='keep')):
    with pytest.raises(ValueError, match=r'^the model output is not finite .* step=') as e:
      call(a)
    assert '\n' not in str(e.value)


def test_odd_tag_targets_are_one_clear_line(example):
  """'tag:' was "cam target tag:: no such tag name", and a signed id ('tag:-1') was looked up
  as a tag name; they say what to pass, and a signed id goes through the id range check."""
  m = example[0]['m']
  a = np.zeros((H, W, 3), np.uint8)
  for target, match in (('tag:', r"^cam target 'tag:' names no tag; use 'tag:<name or id>'"),
                        ('tag: ', r"^cam target 'tag:' names no tag"),
                        ('tag:-1', r"^cam target 'tag:-1': use 'tag:<k>' with an AVA tag id")):
    with pytest.raises(ValueError, match=match):
      m.cam(a, target=target)
  assert np.array_equal(m.cam(a, target='tag:+13'), m.cam(a, target='tag:13'))


@pytest.mark.filterwarnings('ignore:CAM layer features.18 gives a 1x1 map')
def test_overlays_of_a_map_that_points_nowhere_say_so(example, monkeypatch):
  """An empty map (all zero, or constant as on the 32-px model's 1x1 last layer) was drawn as
  an even blue wash captioned 'map: aesthetic (gradcam)', which reads as 'nothing matters
  here'; the API's and predict's overlays now say EMPTY in the legend, as the report does."""
  from aesthetics_jax.report import overlays
  ns, _, photo = example
  m = ns['m']
  titles = []
  real = overlays.fold_with_legend
  monkeypatch.setattr(overlays, 'fold_with_legend',
                      lambda img, title, names=(): titles.append(title) or real(img, title, names))
  m.overlay(photo, layer='features.18')  # 32 px / 32: a 1x1 grid, every map constant
  m.overlay(photo)                       # a map that points somewhere
  assert titles[0].endswith('EMPTY: points nowhere') and 'EMPTY' not in titles[1], titles
  p = m.predictor
  img = np.asarray(Image.open(photo).convert('RGB'))
  pred, maps = p.run(np.stack([np.zeros((p.size, p.size, 3), np.uint8)]))
  for scale, empty in ((0.0, True), (1.0, False)):
    maps['aesthetic'] = np.asarray(maps['aesthetic']) * 0 + scale * np.eye(
        *maps['aesthetic'].shape[1:], dtype=np.float32)
    rec, vis = p.describe(img, pred, maps, 0)
    p.overlay_image(img, vis)
    assert rec['map'] == ('empty' if empty else 'ok')
    assert titles[-1].endswith('EMPTY: points nowhere') == empty, titles[-1]


def test_a_layer_list_of_empty_names_is_the_checkpoints_layer(example):
  """layer=[''] / predict's --cam_layers=, (a list flag: ['', '']) names no layer: it is the
  default, the checkpoint's config.eval.cam_layers (features.13 here), as layer=[] is; it gave
  the model's last layer (a 1x1 grid at 32 px: every map empty), or 'CAM layer '' is not a
  module' before empty names were skipped."""
  from aesthetics_jax.evaluation import predictor as predictor_lib
  ns, tmp, photo = example
  m = ns['m']
  assert m.layers == ('features.13',)
  want = m.cam(photo)
  for layer in ([''], ['', ' '], ('',)):
    assert np.array_equal(m.cam(photo, layer=layer), want), layer
  assert predictor_lib.Predictor(tmp / 'mnv2', cam_layers=['', '']).cam_layers == (
      'features.13',)


def test_a_layer_with_a_1x1_grid_warns_once_naming_a_finer_one(example):
  """layer='features.18' at 32 px (a 1x1 grid) gave all-zero maps and None boxes with no word
  why, where predict and evaluate say it: now one UserWarning per method and layers, at the
  caller's line."""
  import warnings
  ns, _, photo = example
  m = type(ns['m'])(ns['m'].predictor)  # nothing compiled yet: other tests used features.18
  with pytest.warns(UserWarning, match=r"CAM layer features\.18 gives a 1x1 map .*; pass "
                    r"layer='features\.\d+' \(2x2\)") as w:
    assert m.cam(photo, target='low', layer='features.18').max() == 0
  assert w[0].filename == __file__
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    m.boxes(photo, layer='features.18')  # compiled already: said once
    m.cam(photo)  # the checkpoint's layer: a finer grid
