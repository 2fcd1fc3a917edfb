"""Input pipeline tests (single process, one CPU device). Tiny images: resize 40, crop 32."""
import io

import numpy as np
import pytest
from PIL import Image

from aesthetics_jax.data import pipeline as ip
from aesthetics_jax import parallel
from configs import default

HIGH_VOTES = np.array([0, 0, 1, 2, 4, 6, 4, 2, 1, 0], np.int32)   # mean 6.0 (in band)
LOW_VOTES = np.array([1, 2, 4, 6, 4, 2, 1, 0, 0, 0], np.int32)    # mean 4.0 (outside)


def _jpeg(rng, h, w, mode='RGB', fmt='JPEG', **kw) -> bytes:
  a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  img = Image.fromarray(a, 'RGB').convert(mode)
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def make_source(n=16, high_every=4, seed=0):
  """n records; 3 of every 4 high (mean 6.0), 1 low (mean 4.0): a 3:1 dataset."""
  rng = np.random.default_rng(seed)
  recs = []
  for i in range(n):
    low = i % high_every == 0
    recs.append({'image': _jpeg(rng, 48 + (i % 5) * 7, 56 + (i % 3) * 9, quality=90),
                 'image_id': 1000 + i,
                 'votes': (LOW_VOTES if low else HIGH_VOTES).copy(),
                 'tags': np.array([i % 66 + 1, 0 if i % 2 else 7], np.int32),
                 'challenge_id': 3})
  return recs


class CountingSource(list):
  """A list that counts random accesses (to prove metadata is read once)."""

  def __init__(self, *a):
    super().__init__(*a)
    self.reads = 0

  def __getitem__(self, i):
    self.reads += 1
    return super().__getitem__(i)


@pytest.fixture(scope='module')
def source():
  return make_source()


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


def tiny_config(**input_kw):
  c = default.get_config()
  c.batch_size = 8
  c.eval.batch_size = 8
  c.input.resize_size = 40
  c.input.image_size = 32
  c.input.num_workers = 2
  c.input.prefetch = 1
  for k, v in input_kw.items():
    c.input[k] = v
  return c


def _take(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return [{k: np.asarray(v) for k, v in b.items()} for b in out]


def test_train_batch_shapes_dtypes_ranges(source, mesh):
  b = _take(ip.train_batches(source, tiny_config(random_flip=True), mesh), 1)[0]
  expect = {'image': ((8, 32, 32, 3), np.float32), 'votes': ((8, 10), np.int32),
            'distribution': ((8, 10), np.float32), 'mean_score': ((8,), np.float32),
            'label': ((8,), np.int32), 'tags': ((8, 66), np.float32),
            'weight': ((8,), np.float32), 'image_id': ((8,), np.int32),
            'mask': ((8,), np.float32)}
  assert set(b) == set(expect)
  for k, (shape, dtype) in expect.items():
    assert b[k].shape == shape and b[k].dtype == dtype, k
  assert 0.0 <= b['image'].min() and b['image'].max() <= 1.0 and b['image'].std() > 0.03
  np.testing.assert_allclose(b['distribution'].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(b['tags'].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(b['mask'], 1.0)
  by_id = {r['image_id']: r for r in source}
  for i, iid in enumerate(b['image_id']):
    r = by_id[int(iid)]
    np.testing.assert_array_equal(b['votes'][i], r['votes'])
    assert b['label'][i] == (1 if r['votes'][0] == 0 else 0)
    np.testing.assert_allclose(b['mean_score'][i], 6.0 if b['label'][i] else 4.0, atol=1e-5)


def test_eval_batches_order_padding_mask(source, mesh):
  c = tiny_config(normalize='imagenet')
  batches = [{k: np.asarray(v) for k, v in b.items()}
             for b in ip.eval_batches(source[:10], c, mesh, batch_size=4)]
  assert len(batches) == 3 and ip.num_eval_batches(10, 4) == 3
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(mask, [1] * 10 + [0, 0])
  ids = np.concatenate([b['image_id'] for b in batches])[:10]
  np.testing.assert_array_equal(ids, [r['image_id'] for r in source[:10]])
  np.testing.assert_array_equal(batches[-1]['weight'][2:], 0.0)
  assert batches[0]['image'].shape == (4, 32, 32, 3)
  # eval = plain resize to image_size², identical to the host-side helper
  want = ip.preprocess_eval_np(ip.decode_image(source[1]['image']), 32)
  got = np.asarray(ip.to_model_input(want, normalize='imagenet'))
  np.testing.assert_allclose(batches[0]['image'][1], got, atol=0.05)
  assert batches[0]['image'].min() < 0  # imagenet normalisation applied


def test_balanced_sampler_on_3_to_1_data():
  labels = np.array([0 if i % 4 == 0 else 1 for i in range(400)])  # 300 high, 100 low
  cdf = np.cumsum(ip.balanced_probabilities(labels))
  idx = np.concatenate([ip.train_indices(s, 400, 64, seed=3, cdf=cdf) for s in range(300)])
  frac_high = labels[idx].mean()
  assert abs(frac_high - 0.5) < 0.02, frac_high
  assert len(np.unique(idx)) > 390  # with replacement, but covers the data
  # deterministic in (seed, step); different steps/seeds differ
  np.testing.assert_array_equal(ip.train_indices(7, 400, 64, 3, cdf),
                                ip.train_indices(7, 400, 64, 3, cdf))
  assert not np.array_equal(ip.train_indices(7, 400, 64, 3, cdf),
                            ip.train_indices(8, 400, 64, 3, cdf))
  # unbalanced: uniform, each epoch a permutation (B does not divide N)
  idx = np.concatenate([ip.train_indices(s, 50, 8, seed=1) for s in range(25)])  # 4 epochs
  for e in range(4):
    np.testing.assert_array_equal(np.sort(idx[e * 50:(e + 1) * 50]), np.arange(50))
  assert labels[idx].mean() != 0.5  # sanity: no balancing without cdf


def test_train_batches_balanced_labels(source, mesh):
  batches = _take(ip.train_batches(source, tiny_config(), mesh), 6)
  frac = np.concatenate([b['label'] for b in batches]).mean()
  assert 0.25 < frac < 0.75  # 3:1 data, balanced sampler → ~0.5 (48 draws)


@pytest.mark.parametrize('balanced', [False, True])
def test_restart_and_worker_count_determinism(source, mesh, balanced):
  c = tiny_config(random_flip=True, balanced=balanced, num_workers=1, prefetch=0)
  full = _take(ip.train_batches(source, c, mesh), 4)
  c2 = tiny_config(random_flip=True, balanced=balanced, num_workers=3, prefetch=2)
  resumed = _take(ip.train_batches(source, c2, mesh, start_step=2), 2)
  for a, b in zip(full[2:], resumed):
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert not np.array_equal(full[0]['image'], full[1]['image'])
  if balanced:
    return
  # another seed gives other rows and crops
  c3 = tiny_config(random_flip=True, balanced=False, num_workers=1, prefetch=0)
  c3.seed = 1
  other = _take(ip.train_batches(source, c3, mesh), 1)[0]
  assert not np.array_equal(other['image'], full[0]['image'])


def test_sample_weights_exact():
  mean = np.array([4.2, 6.5, 6.6, 4.5, 4.49, 5.0], np.float32)
  labels = np.array([0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(ip.sample_weights(mean, labels, 'none'), np.ones(6))
  np.testing.assert_array_equal(ip.sample_weights(mean, labels, 'score', 7.0, (4.5, 6.5)),
                                [7, 1, 7, 1, 7, 1])
  np.testing.assert_array_equal(ip.sample_weights(mean, labels, 'score', 3.0, (4.0, 6.0)),
                                [1, 3, 3, 1, 1, 1])
  # class: w = N / (C * N_c); 3:1 data → high 4/(2*3) = 2/3, low 4/(2*1) = 2; mean 1
  w = ip.sample_weights(np.zeros(4), np.array([1, 1, 1, 0]), 'class')
  np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0], rtol=1e-6)
  assert abs(w.mean() - 1.0) < 1e-6
  w = ip.sample_weights(np.zeros(2), np.array([0, 1]), 'class', class_counts=[25, 75])
  np.testing.assert_allclose(w, [2.0, 2 / 3], rtol=1e-6)
  with pytest.raises(ip.InputError, match='weighting'):
    ip.sample_weights(mean, labels, 'bogus')


def test_weights_reach_batches(source, mesh):
  b = _take(ip.train_batches(source, tiny_config(weighting='class'), mesh), 1)[0]
  np.testing.assert_allclose(b['weight'], np.where(b['label'] == 1, 16 / 24, 16 / 8),
                             rtol=1e-6)
  b = _take(ip.train_batches(source, tiny_config(weighting='score'), mesh), 1)[0]
  # mean 6.0 is inside the band [4.5, 6.5], 4.0 outside
  np.testing.assert_array_equal(b['weight'], np.where(b['label'] == 1, 1.0, 7.0))


def test_normalisation_modes():
  x = np.array([[[0, 128, 255]]], np.uint8)
  np.testing.assert_allclose(ip.to_model_input(x), x / 255.0, rtol=1e-6)
  want = (x / 255.0 - np.array(ip.IMAGENET_MEAN)) / np.array(ip.IMAGENET_STD)
  np.testing.assert_allclose(ip.to_model_input(x, normalize='imagenet'), want, rtol=1e-5)
  with pytest.raises(ip.InputError, match='normalize'):
    ip.to_model_input(x, normalize='zscore')


@pytest.mark.parametrize('mode,fmt', [('L', 'JPEG'), ('CMYK', 'JPEG'), ('P', 'PNG'),
                                      ('RGBA', 'PNG'), ('RGB', 'PNG'), ('LA', 'PNG')])
def test_decode_any_mode_to_rgb(mode, fmt):
  data = _jpeg(np.random.default_rng(1), 20, 30, mode, fmt)
  out = ip.decode_image(data)
  assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
  want = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
  np.testing.assert_array_equal(out, want)
  if mode in ('L', 'LA'):
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_decode_16bit_and_corrupt():
  a = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'PNG')
  out = ip.decode_image(buf.getvalue())
  assert out.shape == (20, 30, 3) and out.max() > 200  # scaled, not clipped to 255
  with pytest.raises(ip.InputError) as e:
    ip.decode_image(b'not an image')
  assert '\n' not in str(e.value) and 'prepare_data' in str(e.value)
  good = _jpeg(np.random.default_rng(0), 64, 64)
  with pytest.raises(ip.InputError):
    ip.decode_image(good[:len(good) // 3])  # truncated


def test_draft_fast_path_matches_full_decode():
  rng = np.random.default_rng(0)
  # smooth image so DCT downscaling and full-resolution resize agree closely
  yy, xx = np.mgrid[0:400, 0:560]
  a = np.stack([xx * 255 / 560, yy * 255 / 400, (xx + yy) * 255 / 960], -1).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'JPEG', quality=95)
  data = buf.getvalue()
  small = ip.decode_image(data, min_size=64)
  assert small.shape[0] >= 64 and small.shape[1] >= 64 and small.shape[0] < 400
  fast = ip.preprocess_eval_np(data, 64).astype(float)
  slow = ip.preprocess_eval_np(ip.decode_image(data), 64).astype(float)
  assert fast.shape == (64, 64, 3) and np.abs(fast - slow).mean() < 3.0
  crop = ip.preprocess_train_np(data, 72, 64, rng, random_flip=True)
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  with pytest.raises(ip.InputError, match='resize_size'):
    ip.preprocess_train_np(data, 32, 64, rng)


def test_process_slices_cover_batch_once():
  for procs in (1, 2, 4):
    seen = np.concatenate([np.arange(16)[parallel.process_slice(16, p, procs)]
                           for p in range(procs)])
    np.testing.assert_array_equal(seen, np.arange(16))
  with pytest.raises(parallel.ShardingError, match='divisible'):
    parallel.process_slice(15, 0, 2)


def test_metadata_read_once_and_cached(tmp_path, mesh):
  src = CountingSource(make_source(8))
  c = tiny_config(prefetch=0)
  meta = ip.read_metadata(src, tmp_path / 'meta.npz')
  assert src.reads == 8
  assert ip.read_metadata(src) is meta and src.reads == 8
  _take(ip.train_batches(src, c, mesh), 2)
  assert src.reads == 8 + 2 * 8  # only the batch rows' records are read again
  loaded = ip.Metadata.load(tmp_path / 'meta.npz')
  np.testing.assert_array_equal(loaded.image_id, meta.image_id)
  np.testing.assert_array_equal(loaded.label, meta.label)
  np.testing.assert_allclose(loaded.tag_soft, meta.tag_soft)
  src2 = CountingSource(make_source(8))
  ip.read_metadata(src2, tmp_path / 'meta.npz')  # precomputed path: no record reads
  assert src2.reads == 0


def test_bad_config_errors(source, mesh):
  c = tiny_config()
  c.batch_size = 0
  with pytest.raises(ip.InputError, match='batch_size'):
    next(ip.train_batches(source, c, mesh))
  with pytest.raises(ip.InputError, match='normalize'):
    ip.train_batches(source, tiny_config(normalize='zscore'), mesh)
  bad = [dict(source[0], image=b'garbage')] * 8
  it = ip.eval_batches(bad, tiny_config(), mesh)
  with pytest.raises(ip.InputError, match='image_id 1000'):
    next(it)


def test_closing_or_dropping_iterator_stops_threads(source, mesh):
  import gc
  import threading

  def ours():
    return [t for t in threading.enumerate()
            if t.name.startswith(('input-prefetch', 'decode'))]

  it = ip.train_batches(source, tiny_config(prefetch=2), mesh)
  next(it)
  assert ours()
  it.close()
  assert not ours()
  it = ip.eval_batches(source, tiny_config(prefetch=2), mesh)
  next(it)
  del it
  gc.collect()
  assert not ours()

