"""Benchmark suite machinery (no torch, tiny shapes): micro-batching equals the plain forward,
jitted study / CAM steps make no host transfers and trace once, interleaved timing, child-process
peak memory, streamed evaluation, and the CLI end to end at toy size."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aesthetics_jax.explain import cam
from aesthetics_jax.train import feature_cache
from aesthetics_jax import parallel
from aesthetics_jax.bench import memory, timing, workloads

ROOT = Path(__file__).resolve().parents[1]
S = 32


@pytest.fixture(scope='module')
def tiny():
  """MobileNetV2 (width 0.25) at 32 px with random weights, and 8 photo-like inputs."""
  model, variables = workloads.build('mobilenet_v2', image_size=S, width_mult=0.25)
  x = workloads.photos(8, S)
  return model, jax.device_put(variables), x


def test_map_batch_equals_whole_batch_in_order():
  x = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)
  fn = lambda v: {'a': v * 2 + v.sum(-1, keepdims=True), 'b': v[:, :1]}  # row-wise
  want = fn(x)
  for chunk, shards in ((2, 1), (1, 1), (2, 2), (1, 4), (3, 1), (8, 1), (0, 1)):
    got = parallel.map_batch(fn, x, chunk, shards)
    np.testing.assert_array_equal(got['a'], want['a'], err_msg=f'{chunk=} {shards=}')
    np.testing.assert_array_equal(got['b'], want['b'])
  assert parallel.default_chunk('cpu') == parallel.CPU_CHUNK
  assert parallel.default_chunk('gpu') == 0


def test_map_batch_really_chunks():
  seen = []
  fn = lambda v: (seen.append(v.shape), v + 1)[1]
  parallel.map_batch(fn, jnp.zeros((8, 2)), 2)
  assert seen == [(2, 2)]          # traced once, on a chunk of 2 rows
  seen.clear()
  parallel.map_batch(fn, jnp.zeros((6, 2)), 4)   # 6 % 4 != 0: whole batch
  assert seen == [(6, 2)]


def test_chunked_features_equal_whole_batch(tiny):
  model, variables, x = tiny
  whole = jax.jit(parallel.features_fn(model, 0))(variables, x)
  chunked = jax.jit(parallel.features_fn(model, 2))(variables, x)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
  enc = feature_cache.make_encode_fn(model, 'none', chunk=2)
  u8 = (x * 255).round().astype(np.uint8)
  ref = feature_cache.make_encode_fn(model, 'none', chunk=0)(variables, u8)
  np.testing.assert_allclose(enc(variables, u8), ref, rtol=1e-5, atol=1e-5)


def test_study_and_cam_steps_stay_on_device_and_trace_once(tiny):
  model, variables, x = tiny
  traces = []

  def counting_target(out):
    traces.append(1)                         # runs only while tracing
    return out['score_logits']

  cam_step = workloads.make_cam_step(model, counting_target, chunk=2, size=S)
  study = workloads.make_study_step(model, 'mobilenet_v2', S, 0.2, chunk=2)
  batches = [jax.device_put(x[i:i + 4]) for i in (0, 4)] + [jax.device_put(x[::-1][:4])]
  with jax.transfer_guard('disallow'):       # no implicit host<->device copies in the steps
    for xb in batches:
      maps = cam_step(variables, xb)
      pred, summ = study(variables, xb)
  n_first = len(traces)
  assert n_first >= 1
  for xb in batches:
    cam_step(variables, xb)
  assert len(traces) == n_first              # no retrace / recompile across batches
  if hasattr(study, '_cache_size'):
    assert study._cache_size() == 1
  maps = np.asarray(maps)
  assert maps.shape == (4, 10, S, S) and np.isfinite(maps).all()
  assert 0 <= maps.min() and maps.max() <= 1 + 1e-6
  summ = jax.device_get(summ)
  assert summ['box_aesthetic'].shape == (4, 4) and summ['bucket'].shape[:2] == (4, 10)
  assert np.asarray(pred['mean_score']).shape == (4,)


def test_cam_step_equals_library_gradcam(tiny):
  """The benchmarked step computes exactly cam.compute + cam.torch_like."""
  model, variables, x = tiny
  step = workloads.make_cam_step(model, workloads.bucket_target(3), chunk=2, size=S)

  @jax.jit
  def ref(variables, x):
    a = model.apply(variables, x, method='features')
    head = lambda z: model.apply(variables, z, method='head')
    raw = cam.compute('gradcam', head, a, lambda o: o['score_logits'][:, 3:4])
    return cam.torch_like(raw, (S, S))
  np.testing.assert_allclose(step(variables, x), ref(variables, x), atol=1e-5)


def test_stream_study_counts_every_image_once(tiny):
  model, variables, _ = tiny
  step = workloads.make_study_step(model, 'mobilenet_v2', S, 0.2, chunk=2)
  src = workloads.SyntheticSource(10, workloads.jpeg_pool(3), seed=0)
  assert len(src) == 10 and src[9]['image_id'] == 10 and len(src[2:5]) == 3
  out = workloads.stream_study(step, variables, src, workloads.eval_config(S, 4, 1),
                               parallel.make_mesh())
  assert out['num_images'] == 10                 # 3 batches of 4, last padded with mask 0
  assert out['intensity'].shape == (10,) and out['box_average'].shape == (10, 4)
  assert out['bucket_sum'].shape[0] == 10


def test_interleaved_alternates_and_separates_first_call():
  calls = []
  fns = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  res = timing.interleaved(fns, items={'a': 4, 'b': 8}, repeats=3, warmup=2)
  # first calls, one more warm-up round, then rounds a,b / b,a / a,b
  assert calls == ['a', 'b', 'a', 'b', 'a', 'b', 'b', 'a', 'a', 'b']
  for k, n in (('a', 4), ('b', 8)):
    r = res[k]
    assert r['items'] == n and r['repeats'] == 3 and r['first_call_s'] >= 0
    assert r['items_per_s']['min'] <= r['items_per_s']['median'] <= r['items_per_s']['max']
  slow = {'items_per_s': {'median': 2.0}}
  assert timing.ratio({'items_per_s': {'median': 6.0}}, slow) == 3.0


def test_peak_memory_in_child_sees_native_allocations():
  small = memory.measure_in_child('aesthetics_jax.bench.memory:allocate_setup', {'mb': 8},
                                  warmup=0, timeout=120)
  big = memory.measure_in_child('aesthetics_jax.bench.memory:allocate_setup', {'mb': 256},
                                warmup=0, timeout=120)
  assert 'error' not in big, big
  assert big['touched_mb'] == 256
  assert big['workload_mb'] >= 230, big           # numpy's buffer is native memory
  assert big['peak_rss_mb'] - small['peak_rss_mb'] >= 200
  bad = memory.measure_in_child('aesthetics_jax.bench.memory:no_such_setup', timeout=120)
  assert 'error' in bad and 'no_such_setup' in bad['error']


def test_cli_study_without_reference_writes_json(tmp_path):
  out = tmp_path / 'b.json'
  r = subprocess.run(
      [sys.executable, '-m', 'launch.benchmark', '--what=study', '--reference=none',
       f'--image_size={S}', '--cam_batch_size=4', '--study_images=8', '--repeats=2',
       f'--json={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stderr[-2000:]
  doc = json.loads(out.read_text())
  res = doc['results']['study']
  assert res['num_images'] == 8 and len(res['targets']) == 12
  ips = res['runs']['jax_study']['items_per_s']
  assert 0 < ips['min'] <= ips['median'] <= ips['max']
  assert doc['flags']['reference'] == 'none' and doc['machine']['cpu_count'] >= 1
  assert 'summary' in doc['results']
  r = subprocess.run([sys.executable, '-m', 'launch.benchmark', '--what=cam',
                      '--reference=bogus'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and 'bogus' in r.stderr
