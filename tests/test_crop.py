"""Boxes and crops on hand-made maps with known answers."""
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from aesthetics_jax.explain import cam, crop


def _two_blobs():
  m = np.zeros((20, 30), np.float32)
  m[2:5, 3:6] = 1.0        # small, brightest blob (9 px)
  m[10:18, 12:27] = 0.6    # large blob (120 px)
  return m


def test_largest_region_wins_not_the_brightest():
  b = np.asarray(crop.boxes(_two_blobs()[None], 0.2))
  np.testing.assert_array_equal(b, [[10, 12, 18, 27]])


def test_threshold_behaviour():
  m = _two_blobs()
  # Above 0.6 only the small bright blob survives.
  np.testing.assert_array_equal(crop.boxes(m[None], 0.7), [[2, 3, 5, 6]])
  # Ramp: threshold t keeps columns with value >= t.
  ramp = np.tile(np.linspace(0, 1, 11, dtype=np.float32), (4, 1))[None]
  np.testing.assert_array_equal(crop.boxes(ramp, 0.5), [[0, 5, 4, 11]])
  np.testing.assert_array_equal(crop.boxes(ramp, 0.0), [[0, 0, 4, 11]])
  # Nothing salient → full frame.
  np.testing.assert_array_equal(crop.boxes(np.zeros((1, 4, 6)), 0.2), [[0, 0, 4, 6]])


def test_eight_connectivity():
  m = np.zeros((1, 6, 6), np.float32)
  for i in range(4):  # a diagonal line: one region with 8-connectivity
    m[0, i, i] = 1.0
  m[0, 5, 0:2] = 1.0  # a 2-pixel region elsewhere
  np.testing.assert_array_equal(crop.boxes(m), [[0, 0, 4, 4]])


def test_batched_equals_per_image_and_jit():
  rng = np.random.default_rng(0)
  maps = rng.random((5, 16, 16)).astype(np.float32) ** 4
  maps[2] = _two_blobs()[:16, :16]
  batched = np.asarray(crop.boxes(maps, 0.3))
  single = np.concatenate([np.asarray(crop.boxes(m[None], 0.3)) for m in maps])
  np.testing.assert_array_equal(batched, single)
  jitted = jax.jit(lambda m: crop.boxes(m * 2.0, 0.3))(jnp.asarray(maps))
  np.testing.assert_array_equal(np.asarray(jitted), batched)
  assert jitted.dtype == jnp.int32 and jitted.shape == (5, 4)


def test_average_boxes():
  a = jnp.array([[0, 0, 10, 10], [2, 4, 6, 8]])
  b = jnp.array([[2, 3, 20, 11], [2, 4, 6, 8]])
  np.testing.assert_array_equal(crop.average_boxes(a, b), [[1, 1, 15, 11], [2, 4, 6, 8]])
  # numpy in, numpy out (one image's boxes on the host), the same values.
  host = crop.average_boxes(np.asarray(a), np.asarray(b))
  assert isinstance(host, np.ndarray) and host.dtype == np.int32
  np.testing.assert_array_equal(host, [[1, 1, 15, 11], [2, 4, 6, 8]])
  # Odd sums: starts round down, ends up (the mean box is contained), in both.
  odd = np.array([[1, 1, 3, 3]]), np.array([[2, 2, 6, 6]])
  np.testing.assert_array_equal(crop.average_boxes(*odd), [[1, 1, 5, 5]])
  np.testing.assert_array_equal(crop.average_boxes(*map(jnp.asarray, odd)), [[1, 1, 5, 5]])


def test_aspect_crop_locates_mass():
  maps = np.zeros((3, 30, 40), np.float32)
  maps[0, 20:28, 30:38] = 1.0   # bottom-right mass
  maps[1, 2:6, 2:6] = 1.0       # top-left mass
  # maps[2] flat → centred window
  b = np.asarray(crop.aspect_crop(maps, '1:1', scale=0.5))
  assert b.shape == (3, 4) and b.dtype == np.int32
  assert np.all(b[:, 2] - b[:, 0] == 15) and np.all(b[:, 3] - b[:, 1] == 15)
  for i, (y0, x0, y1, x1) in enumerate(b[:2]):
    assert maps[i, y0:y1, x0:x1].sum() == maps[i].sum()
  np.testing.assert_array_equal(b[2], [7, 12, 22, 27])
  # Largest 16:9 window in 30x40 is 22x40 (rounded); rows 6..8 all hold the mass: most central.
  b = np.asarray(crop.aspect_crop(maps[:1], '16:9'))
  np.testing.assert_array_equal(b, [[6, 0, 28, 40]])
  # Exhaustive check against a brute-force search.
  m = np.random.default_rng(1).random((2, 12, 9)).astype(np.float32)
  b = np.asarray(jax.jit(lambda x: crop.aspect_crop(x, '4:3', 0.6))(m))
  h, w = crop.window_size((12, 9), '4:3', 0.6)
  for i in range(2):
    sums = np.array([[m[i, y:y + h, x:x + w].sum() for x in range(9 - w + 1)]
                     for y in range(12 - h + 1)])
    y, x = np.unravel_index(sums.argmax(), sums.shape)
    np.testing.assert_array_equal(b[i], [y, x, y + h, x + w])
  with pytest.raises(ValueError, match='aspect'):
    crop.aspect_crop(m, '4-3')


def test_aspect_crop_on_the_host_equals_the_jax_one():
  """numpy maps take the numpy path (one photo's map at its own shape compiled nothing
  new); the windows equal those of the JAX path, jitted, ties to the centre included."""
  rng = np.random.default_rng(2)
  for shape, aspect, scale in [((2, 30, 41), '3:2', 1.0), ((1, 64, 17), '1:1', 0.7),
                               ((3, 23, 23), '16:9', 1.0), ((1, 9, 120), '2:5', 0.5)]:
    m = rng.random(shape).astype(np.float32) ** 4
    m[-1] = 0.5   # a flat map: the most central window
    host = crop.aspect_crop(m, aspect, scale)
    assert isinstance(host, np.ndarray) and host.dtype == np.int32
    on_device = jax.jit(lambda x, a=aspect, s=scale: crop.aspect_crop(x, a, s))(m)
    np.testing.assert_array_equal(host, np.asarray(on_device))


@pytest.mark.parametrize('aspect', ['inf:1', '1:inf', 'nan:1', float('inf'), 1e9, 1e-9, '21:1',
                                    '1:21', 0, -1, True, '0:0', 'inf', '4//3', '', '1:2:3',
                                    '4x3x2'])
def test_extreme_aspects_are_refused(aspect):
  """An inf or 1e9 ratio used to give a one-pixel strip as the 'crop'."""
  with pytest.raises(ValueError, match='from 1:20 to 20:1'):
    crop.parse_aspect(aspect)


def test_aspect_bounds_are_accepted():
  assert crop.parse_aspect('20:1') == 20 and crop.parse_aspect('1:20') == 0.05
  # A number written as text is the number (the API took 1.5 but refused '1.5').
  assert crop.parse_aspect('1.5') == crop.parse_aspect(1.5) == crop.parse_aspect('3:2') == 1.5
  assert crop.window_size((100, 2000), '20:1') == (100, 2000)
  # As photo tools write it: '16/9', '4x3', '3×2' (they were refused as not valid).
  assert crop.parse_aspect('16/9') == crop.parse_aspect('16:9')
  assert crop.parse_aspect('4x3') == crop.parse_aspect(' 4X3 ') == crop.parse_aspect('4:3')
  assert crop.parse_aspect('3×2') == 1.5


def test_scale_box_and_save_crops(tmp_path):
  np.testing.assert_array_equal(crop.scale_box([1, 2, 3, 4], (8, 8), (16, 32)), [2, 8, 6, 16])
  # Shrinking keeps at least one pixel and stays inside the target grid.
  np.testing.assert_array_equal(crop.scale_box([[7, 7, 8, 8], [0, 0, 8, 8]], (8, 8), (3, 3)),
                                [[2, 2, 3, 3], [0, 0, 3, 3]])
  imgs = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
  paths = [tmp_path / 'a' / 'x.png', tmp_path / 'y.jpg']
  crop.save_crops(imgs, np.array([[1, 2, 5, 8], [0, 0, 4, 4]]), paths)
  np.testing.assert_array_equal(np.asarray(Image.open(paths[0])), imgs[0, 1:5, 2:8])
  assert Image.open(paths[1]).size == (4, 4)
  assert sorted(p.name for p in tmp_path.rglob('*')) == ['a', 'x.png', 'y.jpg']


def test_image_boxes_in_original_pixels():
  # A 4x4 map whose hot cell is bottom-right, for a landscape 100x300 image.
  aes = np.zeros((4, 4), np.float32)
  aes[3, 3] = 5.0
  att = np.zeros((4, 4), np.float32)
  att[0, 0] = 1.0
  out = crop.image_boxes(aes, att, (100, 300), threshold=0.5, aspect='1:1', limit=60)
  assert crop.box_grid((100, 300), 60) == (20, 60)
  assert out['aesthetic_map'].shape == (20, 60) and out['aesthetic_map'].max() <= 1.0
  b = out['boxes']
  assert set(b) == {'aesthetic', 'attribute', 'average', 'crop'}
  y0, x0, y1, x1 = b['aesthetic']
  assert y1 == 100 and x1 == 300 and y0 > 50 and x0 > 150  # bottom-right, original pixels
  assert tuple(b['attribute'][:2]) == (0, 0) and b['attribute'][2] < 50
  lo, hi = np.minimum(b['aesthetic'], b['attribute']), np.maximum(b['aesthetic'], b['attribute'])
  assert np.all(lo <= b['average']) and np.all(b['average'] <= hi)
  assert not np.array_equal(b['average'], b['aesthetic'])
  cy0, cx0, cy1, cx1 = b['crop']
  assert cy1 - cy0 == 100 and cx1 - cx0 == 100 and cx1 == 300  # square window on the hot side
  vgg = crop.image_boxes(aes, None, (100, 300), threshold=0.5)
  assert set(vgg['boxes']) == {'aesthetic'} and vgg['attribute_map'] is None
  np.testing.assert_allclose(crop.resize_maps(np.ones((2, 3, 4, 4)), (5, 7)), np.ones((2, 3, 5, 7)))


def test_a_thin_strip_is_boxed_on_a_grid_with_rows():
  """A 40x20000 strip's box grid at the 512 limit was 1x512: one row, so every box spanned the
  strip's height. With `BOX_MIN_SIDE` it keeps 23 rows (within 512² cells) and a map whose
  mass sits in the strip's top half gives a box in the top half; photos are unchanged."""
  assert crop.box_grid((40, 20000), 512) == (1, 512)
  assert crop.box_grid((40, 20000), 512, crop.BOX_MIN_SIDE) == (23, 11397)  # 512² cells
  assert crop.box_grid((20000, 40), 512, 64) == (11397, 23)
  assert crop.box_grid((30, 2000), 512, 64) == (30, 2000)  # within the budget: whole
  assert crop.box_grid((100, 65000), 512, 64) == (20, 13053)
  for hw in ((4000, 6000), (3000, 3000), (512, 4096), (33, 40)):
    assert crop.box_grid(hw, 512, 64) == crop.box_grid(hw, 512)
  aes = np.zeros((7, 7), np.float32)
  aes[:3, 2:4] = 1.0  # the top rows of the model's square input: the strip's top half
  y0, x0, y1, x1 = crop.image_boxes(aes, None, (40, 20000), threshold=0.5)['boxes']['aesthetic']
  assert y0 == 0 and 12 <= y1 <= 24 and 4000 < x0 < x1 < 13000


@pytest.mark.parametrize('hw, aspect, want_hw', [
    ((4000, 6000), '1:1', (4000, 4000)),    # was 3997 x 4000 (the 512-px grid, scaled up)
    ((2448, 3264), '1:1', (2448, 2448)),    # was 2448 x 2449
    ((4000, 6000), '16:9', (3375, 6000)),   # was 3379 high
    ((400, 8000), '9:16', (400, 225)),      # was 235 wide (4.4% off)
    ((40, 20000), '4:3', (40, 53)),         # was 40 x 40 (a 1-px-high grid)
    ((5000, 32), '4:3', (24, 32)),
])
def test_aspect_crop_is_exactly_the_aspect_in_image_pixels(hw, aspect, want_hw):
  """The window is found on the <= 512-px grid; scaled up, each side rounded on its own, so a
  '1:1' crop was not square. It is now the largest window of the aspect in the image's own
  pixels, centred where the grid's window was (and inside the image)."""
  aes = np.zeros((8, 8), np.float32)
  aes[6, 6] = 1.0  # hot near the bottom-right
  out = crop.image_boxes(aes, None, hw, threshold=0.5, aspect=aspect)
  y0, x0, y1, x1 = (int(v) for v in out['boxes']['crop'])
  assert (y1 - y0, x1 - x0) == want_hw == crop.window_size(hw, aspect)
  assert 0 <= y0 and 0 <= x0 and y1 <= hw[0] and x1 <= hw[1]
  H, W = hw
  # Where there is room to move, the window sits towards the hot corner.
  if want_hw[0] < H:
    assert y0 > 0
  if want_hw[1] < W:
    assert x0 > 0
  np.testing.assert_array_equal(crop.exact_window([10, 10, 20, 20], (100, 100), (30, 30)),
                                [0, 0, 30, 30])  # centred on 15: starts at 0
  np.testing.assert_array_equal(crop.exact_window([90, 90, 100, 100], (100, 100), (30, 30)),
                                [70, 70, 100, 100])


def test_boxes_of_empty_maps_follow_one_rule():
  """predict and per_image.csv drop the box of a map that points nowhere; the CSV used to keep
  an empty attribute map's (full-frame) box and average it in."""
  b = {'aesthetic': 'A', 'attribute': 'T', 'average': 'avg', 'crop': 'C'}
  assert crop.without_empty(b, {'aesthetic': False, 'attribute': False}) == b
  assert crop.without_empty(b, {'aesthetic': False, 'attribute': True}) == {
      'aesthetic': 'A', 'average': 'A', 'crop': 'C'}
  assert crop.without_empty(b, {'aesthetic': True, 'attribute': False}) == {
      'attribute': 'T', 'average': 'T'}
  assert crop.without_empty(b, {'aesthetic': True, 'attribute': True}) == {}
  assert crop.without_empty({'aesthetic': 'A'}, {'aesthetic': True}) == {}  # VGG16
  # image_boxes (predict, the API) applies it.
  aes = np.zeros((4, 4), np.float32)
  aes[3, 3] = 5.0
  out = crop.image_boxes(aes, np.zeros((4, 4), np.float32), (100, 300), threshold=0.5)
  assert set(out['boxes']) == {'aesthetic', 'average'}
  np.testing.assert_array_equal(out['boxes']['average'], out['boxes']['aesthetic'])


def test_per_image_csv_drops_an_empty_attribute_box(tmp_path):
  import csv
  from aesthetics_jax.evaluation import run as eval_run
  from aesthetics_jax.evaluation import streaming
  n = 2
  peak = np.zeros((4, 4), np.float32)
  peak[0, 0] = 1.0
  maps = {'cam_aesthetic': np.stack([peak, np.zeros_like(peak)]),
          'cam_attribute': np.stack([np.zeros_like(peak), peak[::-1, ::-1]]),
          'empty_aesthetic': np.array([False, True]),
          'empty_attribute': np.array([True, False]), 'intensity': np.ones(n),
          'raw_mean': np.ones(n), 'raw_min': np.zeros(n), 'raw_max': np.full(n, 2.0)}
  test = streaming.SplitSummary(
      pred={'label_pred': np.ones(n, int), 'mean_score': np.full(n, 5.5),
            'p_high': np.full(n, .6)},
      true={'image_id': np.arange(n), 'mean_score': np.full(n, 5.0), 'label': np.ones(n, int)},
      maps=maps, score_maps=None, bucket_maps=None)
  buf = io.BytesIO()
  Image.new('RGB', (40, 40)).save(buf, 'JPEG')
  source = [{'image': buf.getvalue(), 'image_id': i} for i in range(n)]
  eval_run._write_csv(tmp_path / 'p.csv', test, eval_run._image_boxes(test, source, 0.5))
  rows = list(csv.DictReader(open(tmp_path / 'p.csv')))
  # Image 0: attribute map empty → no attribute box, average = the aesthetic box.
  assert (rows[0]['box_attribute'], rows[0]['box_average']) == ('', rows[0]['box_aesthetic'])
  # Image 1: aesthetic map empty → no aesthetic box, average = the attribute box.
  assert rows[1]['map'] == 'empty' and rows[1]['box_aesthetic'] == ''
  assert rows[1]['box_average'] == rows[1]['box_attribute'] != ''


def test_crop_of_a_thin_strip_is_cut_at_full_resolution(tmp_path):
  """A 40x20000 PNG (0.8 MP) was re-decoded with its long side <= 6000 for the crop, so a
  40x53 box came out 14x10 px; crops are bounded by pixels (36 MP), not by the long side. The
  working copy keeps such a strip whole now (a pixel budget): its crop is cut from it; from a
  reduced copy (a smaller budget), the file is decoded again at full size."""
  from aesthetics_jax.evaluation import image_files
  strip = np.zeros((40, 20000, 3), np.uint8)
  strip[:, 10000:10053] = 255
  path = tmp_path / 'strip.png'
  Image.fromarray(strip).save(path)
  whole = image_files.load_image(path)
  reduced = image_files.load_image(path, budget=100_000)
  assert not whole.reduced and reduced.reduced and whole.size == reduced.size == (40, 20000)
  for decoded in (whole, reduced):
    cut = image_files.crop_image(path, decoded, [0, 10000, 40, 10053])
    assert cut.size == (53, 40)
    assert np.asarray(cut).min() == 255  # the very pixels of the box


def _serpentine(n: int) -> np.ndarray:
  """One 1-pixel-wide path zigzagging down an n x n grid (rows 0, 2, 4, ... joined at
  alternate ends): a region whose far end is ~n*n/2 steps away, the slowest to label."""
  m = np.zeros((n, n), np.float32)
  m[0::2] = 1.0
  for row in range(1, n - 1, 2):
    m[row, n - 1 if row % 4 == 1 else 0] = 1.0
  return m


def _hard_maps() -> np.ndarray:
  """Maps whose boxes need every rule of `boxes_np`: `[B, 24, 24]`."""
  rng = np.random.default_rng(3)
  maps = [rng.random((24, 24)) ** 4, rng.random((24, 24)), _serpentine(24)]
  tie = np.zeros((24, 24))
  tie[2:5, 15:18] = tie[10:13, 1:4] = 1.0       # equal sizes: the first in raster order wins
  diag = np.zeros((24, 24))
  for i in range(14):
    diag[5 + i, 3 + i] = 0.9                    # joined corner to corner only (8-connected)
  diag[0:3, 20:24] = 1.0                        # 12 pixels: larger unless diagonals connect
  empty = [np.zeros((24, 24)), -np.ones((24, 24)), np.full((24, 24), np.nan)]
  partly_nan = rng.random((24, 24))
  partly_nan[3, 3] = np.nan
  maps += [tie, diag, *empty, partly_nan, np.full((24, 24), 0.5)]
  return np.stack(maps).astype(np.float32)


def test_boxes_on_device_equal_scipys():
  """The accelerator's labelling gives scipy's boxes, rule for rule, at several thresholds,
  jitted (its while_loop) and in a batch that mixes every case."""
  maps = _hard_maps()
  fn = jax.jit(crop.boxes_on_device, static_argnums=1)
  for threshold in (0.0, 0.2, 0.5, 0.95, 1.5):
    want = crop.boxes_np(maps, threshold)
    got = np.asarray(fn(jnp.asarray(maps), threshold))
    np.testing.assert_array_equal(got, want, err_msg=f'threshold {threshold}')
  assert got.dtype == np.int32
  # The serpentine is one region end to end; the tie goes to the first in raster order.
  np.testing.assert_array_equal(crop.boxes_np(maps[2:4], 0.5), [[0, 0, 23, 24], [2, 15, 5, 18]])
  with pytest.raises(ValueError, match=r'\[B, H, W\]'):
    crop.boxes_on_device(jnp.zeros((4, 4)))


def test_boxes_on_device_equal_scipys_on_cam_like_maps():
  """Upsampled 7x7 maps (what the study labels), 224 px."""
  rng = np.random.default_rng(0)
  raw = jnp.asarray(np.maximum(rng.standard_normal((6, 1, 7, 7)), 0), jnp.float32)
  up = np.asarray(cam.upsample(cam.normalize(raw, 'per_image'), (224, 224))[:, 0])
  np.testing.assert_array_equal(np.asarray(jax.jit(crop.boxes_on_device)(jnp.asarray(up))),
                                crop.boxes_np(up, 0.2))


def test_traced_boxes_label_on_the_device_off_the_cpu(monkeypatch):
  """Inside jit `boxes` labels on the device when the backend is not the CPU (no callback in
  the compiled step), on the host otherwise; the same boxes either way."""
  maps = jnp.asarray(_hard_maps())
  host = jax.jit(lambda m: crop.boxes(m, 0.2))
  assert 'callback' in host.lower(maps).as_text()
  monkeypatch.setattr(crop, 'label_on_device', lambda: True)
  device = jax.jit(lambda m: crop.boxes(m, 0.2))
  text = device.lower(maps).as_text()
  assert 'callback' not in text and 'while' in text
  np.testing.assert_array_equal(np.asarray(device(maps)), np.asarray(host(maps)))


def test_device_labelling_under_a_two_device_mesh():
  """What several GPUs run: `streaming.make_summarize` with a mesh of 2 devices and labelling
  on the device (the batch sharded; no host callback) gives the host-labelled boxes. A fresh
  process, as XLA reads its CPU device count at start-up."""
  import os
  import subprocess
  import sys
  code = '''
import json, numpy as np, jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from aesthetics_jax import parallel
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.explain import crop
assert jax.device_count() == 2, jax.devices()
mesh = parallel.make_mesh()
rng = np.random.default_rng(0)
maps = np.maximum(rng.standard_normal((4, 12, 7, 7)), 0).astype(np.float32)
x = jax.device_put(maps, NamedSharding(mesh, P(mesh.axis_names[0])))
host = streaming.make_summarize(48, 0.2, 'mobilenet_v2', mesh)(x)
crop.label_on_device = lambda: True
fn = streaming.make_summarize(48, 0.2, 'mobilenet_v2', mesh)
assert 'callback' not in fn.lower(x).as_text()
dev = fn(x)
print(json.dumps({k: np.asarray(dev[k]).tolist() == np.asarray(host[k]).tolist()
                  for k in ('box_aesthetic', 'box_attribute', 'box_average')}))
'''
  env = {**os.environ, 'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +
                                     ' --xla_force_host_platform_device_count=2').strip()}
  p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert json.loads(p.stdout.strip().splitlines()[-1]) == {
      'box_aesthetic': True, 'box_attribute': True, 'box_average': True}
