"""Input pipeline tests (single process, one CPU device). Tiny images: resize 40, crop 32.

Multi-process and multi-device runs are in test_multiprocess_input.py.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aesthetics_jax import parallel
from aesthetics_jax.data import pipeline
from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from source_fixture import make_source, take, tiny_config


@pytest.fixture(scope='module')
def source():
  return make_source()


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


def test_train_batch_shapes_dtypes_ranges(source, mesh):
  b = take(pipeline.train_batches(source, tiny_config(random_flip=True), mesh), 1)[0]
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


def test_train_images_are_the_host_preprocessing_of_their_positions(source, mesh):
  """Every training image is its row resized, cropped at row j of
  `augment_draws(seed, step, batch_size)` and mirrored where that row says (the pipeline
  mirrors on the device, in `to_model_input`), with and without the resized-image cache; both
  mirrored and unmirrored images occur."""
  by_id = {int(r['image_id']): r for r in source}
  c = tiny_config(random_flip=True, balanced=False)
  flips = set()
  for cache_mb in (0, 64):
    c.input.resized_cache_mb = cache_mb
    for step, b in enumerate(take(pipeline.train_batches(source, c, mesh), 4)):
      offsets, mirror = preprocess.augment_draws(int(c.seed), step, int(c.batch_size), 40, 32,
                                                 random_flip=True)
      for j, iid in enumerate(b['image_id']):
        (y, x), m = offsets[j], bool(mirror[j])
        want = preprocess.resize_train_np(by_id[int(iid)]['image'], 40)[y:y + 32, x:x + 32]
        want = want[:, ::-1] if m else want
        np.testing.assert_array_equal(b['image'][j], np.asarray(preprocess.to_model_input(want)),
                                      err_msg=f'step {step} position {j}')
        flips.add(m)
  assert flips == {True, False}


def test_to_model_input_mirrors_flagged_images_only():
  x = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), np.uint8)
  got = np.asarray(preprocess.to_model_input(x, flip=np.array([True, False, True])))
  want = x.astype(np.float32) / 255
  want[[0, 2]] = want[[0, 2], :, ::-1]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.dtype == np.float32


def test_eval_batches_order_padding_mask(source, mesh):
  c = tiny_config(normalize='imagenet')
  batches = [{k: np.asarray(v) for k, v in b.items()}
             for b in pipeline.eval_batches(source[:10], c, mesh, batch_size=4)]
  assert len(batches) == 3 and pipeline.num_eval_batches(10, 4) == 3
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(mask, [1] * 10 + [0, 0])
  ids = np.concatenate([b['image_id'] for b in batches])[:10]
  np.testing.assert_array_equal(ids, [r['image_id'] for r in source[:10]])
  np.testing.assert_array_equal(batches[-1]['weight'][2:], 0.0)
  assert batches[0]['image'].shape == (4, 32, 32, 3)
  # eval = plain resize to image_size², identical to the host-side helper
  want = preprocess.preprocess_eval_np(decoder.decode_image(source[1]['image']), 32)
  got = np.asarray(preprocess.to_model_input(want, normalize='imagenet'))
  np.testing.assert_allclose(batches[0]['image'][1], got, atol=0.05)
  assert batches[0]['image'].min() < 0  # imagenet normalisation applied


def test_train_batches_balanced_labels(source, mesh):
  batches = take(pipeline.train_batches(source, tiny_config(), mesh), 6)
  frac = np.concatenate([b['label'] for b in batches]).mean()
  assert 0.25 < frac < 0.75  # 3:1 data, balanced sampler → ~0.5 (48 draws)


@pytest.mark.parametrize('balanced', [False, True])
def test_restart_and_worker_count_determinism(source, mesh, balanced):
  c = tiny_config(random_flip=True, balanced=balanced, num_workers=1, prefetch=0)
  full = take(pipeline.train_batches(source, c, mesh), 4)
  c2 = tiny_config(random_flip=True, balanced=balanced, num_workers=3, prefetch=2)
  resumed = take(pipeline.train_batches(source, c2, mesh, start_step=2), 2)
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
  other = take(pipeline.train_batches(source, c3, mesh), 1)[0]
  assert not np.array_equal(other['image'], full[0]['image'])


def test_weights_reach_batches(source, mesh):
  b = take(pipeline.train_batches(source, tiny_config(weighting='class', balanced=False),
                                         mesh), 1)[0]
  np.testing.assert_allclose(b['weight'], np.where(b['label'] == 1, 16 / 24, 16 / 8),
                             rtol=1e-6)
  b = take(pipeline.train_batches(source, tiny_config(weighting='score'), mesh), 1)[0]
  # mean 6.0 is inside the band [4.5, 6.5], 4.0 outside
  np.testing.assert_array_equal(b['weight'], np.where(b['label'] == 1, 1.0, 7.0))


def test_process_slices_cover_batch_once():
  for procs in (1, 2, 4):
    seen = np.concatenate([np.arange(16)[parallel.process_slice(16, p, procs)]
                           for p in range(procs)])
    np.testing.assert_array_equal(seen, np.arange(16))
  with pytest.raises(parallel.ShardingError, match='divisible'):
    parallel.process_slice(15, 0, 2)


def test_bad_config_errors(source, mesh):
  c = tiny_config()
  c.batch_size = 0
  with pytest.raises(preprocess.InputError, match='batch_size'):
    next(pipeline.train_batches(source, c, mesh))
  with pytest.raises(preprocess.InputError, match='normalize'):
    pipeline.train_batches(source, tiny_config(normalize='zscore'), mesh)
  bad = [dict(source[0], image=b'garbage')] * 8
  it = pipeline.eval_batches(bad, tiny_config(), mesh)
  with pytest.raises(preprocess.InputError, match='image_id 1000'):
    next(it)


def test_closing_or_dropping_iterator_stops_threads(source, mesh):
  import gc
  import threading

  # Threads another test file of this pytest worker left to the garbage collector (a dropped
  # iterator) are not this test's: a fresh-clone CI run once found two idle ones here.
  before = set(threading.enumerate())

  def ours():
    return [t for t in threading.enumerate()
            if t.name.startswith(('input-prefetch', 'decode')) and t not in before]

  it = pipeline.train_batches(source, tiny_config(prefetch=2), mesh)
  next(it)
  assert ours()
  it.close()
  assert not ours()
  it = pipeline.eval_batches(source, tiny_config(prefetch=2), mesh)
  next(it)
  del it
  gc.collect()
  assert not ours()


def test_a_loop_that_raises_still_stops_threads(source, mesh):
  """A consumer that raises mid-pass left the iterator suspended in its frame, which a kept
  traceback (pytest's, a notebook's last one) keeps alive with its decode threads: the
  unclosed pool that test_closing_or_dropping_iterator_stops_threads once met in CI."""
  import threading
  before = set(threading.enumerate())

  def ours():
    return [t for t in threading.enumerate()
            if t.name.startswith(('input-prefetch', 'decode')) and t not in before]

  kept = []
  for batches in (pipeline.eval_batches(source, tiny_config(prefetch=2), mesh),
                  pipeline.train_batches(source, tiny_config(prefetch=0), mesh)):
    try:
      with pipeline.closing(batches) as it:
        for _ in it:
          assert ours()
          raise KeyError('the consumer failed')
    except KeyError as e:
      kept.append(e)  # the traceback, and the loop's frame with it, stay referenced
    assert not ours() and kept[-1].__traceback__ is not None
  with pipeline.closing([1, 2]) as it:  # a plain list passes through
    assert list(it) == [1, 2]

  # The loops that consume batches: the trainer's evaluation and the evaluation job's stream.
  from aesthetics_jax.evaluation import streaming
  from aesthetics_jax.train import trainer

  def failing(*_):
    raise KeyError('the step failed')

  with pytest.raises(KeyError) as e1:
    trainer.evaluate(failing, None, pipeline.eval_batches(source, tiny_config(prefetch=2), mesh),
                     tiny_config())
  assert not ours()
  with pytest.raises(KeyError) as e2:
    streaming.collect(failing, None, None, lambda src, max_examples: pipeline.eval_batches(
        src, tiny_config(prefetch=2), mesh), source)
  assert not ours() and e1.tb is not None and e2.tb is not None


_LEFT_OPEN_AT_EXIT = """
import atexit, sys, threading
sys.path.insert(0, sys.argv[1])
# Registered first, so run last: after the pipeline's exit handler and JAX's.
atexit.register(lambda: print('alive at exit:', sorted(
    t.name for t in threading.enumerate() if t.name.startswith('input-prefetch'))))
from aesthetics_jax import parallel
from aesthetics_jax.data import pipeline
from source_fixture import make_source, tiny_config
# Training batches: endless, so its thread is still producing at exit.
it = iter(pipeline.train_batches(make_source(), tiny_config(prefetch=2), parallel.make_mesh()))
next(it)
"""


def test_an_iterator_left_open_at_exit_stops_its_thread_first():
  """A script that left an iterator open (`it = iter(eval_batches(...)); next(it)`) ended
  in half of its runs with 'FATAL: exception not rethrown', exit 134: at interpreter exit
  the prefetch thread, inside XLA's transfer, was stopped with C++ frames on its stack. Its
  thread is now stopped by an exit handler, before JAX's and before daemon threads end."""
  r = subprocess.run([sys.executable, '-c', _LEFT_OPEN_AT_EXIT, str(Path(__file__).parent)],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and 'FATAL' not in r.stderr, (r.returncode, r.stderr[-2000:])
  assert r.stdout.strip().splitlines()[-1] == 'alive at exit: []', r.stdout


class _CountingSource(list):
  """A source that counts record reads (the cache should make repeats free)."""
  reads = 0

  def __getitem__(self, i):
    type(self).reads += 1
    return super().__getitem__(i)


def test_resized_cache_gives_the_same_batches_and_skips_decoding(source, mesh):
  """Cache on (default) vs off: identical batches over several epochs; with the cache each
  row is read and decoded once; the budget caps the rows kept; a negative budget is a
  one-line error."""
  off = take(pipeline.train_batches(source, tiny_config(random_flip=True, resized_cache_mb=0,
                                                        balanced=False), mesh), 6)
  counted = _CountingSource(source)
  _CountingSource.reads = 0
  on = take(pipeline.train_batches(counted, tiny_config(random_flip=True, balanced=False,
                                                        prefetch=0), mesh), 6)
  for a, b in zip(off, on):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # 6 batches of 8 = 3 epochs of 16 rows; metadata reads happen once before any batch.
  meta_reads = len(source)
  assert _CountingSource.reads - meta_reads == len(source)
  cache = pipeline.ResizedCache(budget_bytes=3 * 40 * 40 * 3 + 5, resize_size=40)
  fn = pipeline._train_image_fn(tiny_config(), cache)  # pylint: disable=protected-access
  for row in range(5):
    fn(lambda r=row: source[r]['image'], row, 0, row, f'row {row}')
  assert sorted(cache.rows) == [0, 1, 2] and cache.nbytes == 3 * 40 * 40 * 3
  with pytest.raises(preprocess.InputError, match='resized_cache_mb'):
    pipeline.train_batches(source, tiny_config(resized_cache_mb=-1), mesh)


def test_collect_keeps_raw_maps_only_for_the_pass_that_boxes_them():
  """The split-point fit and untrained passes (keep_maps=False) kept every image's raw maps
  too: at an early layer (56x56) on 10,000 fit images, 250 MB for nothing."""
  from aesthetics_jax.evaluation import streaming

  def batches(src, max_examples=None):
    yield {'image': np.zeros((2, 4, 4, 3), np.float32), 'mask': np.ones((2,)),
           **{k: np.zeros((2,)) for k in streaming.TRUE_FIELDS}}

  def forward(variables, x):
    return {'p_high': np.zeros((2,))}, np.ones((2, 1, 3, 3), np.float32)

  def summarize(maps):
    return {'intensity': maps.mean((1, 2, 3)), 'cam_aesthetic': maps[:, 0],
            'aes_norm': maps[:, 0]}

  kept = streaming.collect(forward, summarize, None, batches, [0, 1])
  assert kept.maps['cam_aesthetic'].shape == (2, 3, 3) and 'aes_norm' not in kept.maps
  fit = streaming.collect(forward, summarize, None, batches, [0, 1], keep_maps=False)
  assert set(fit.maps) == {'intensity'}
