"""The JAX side of the benchmark suite: models, jitted forward / CAM / study steps, the
frozen-encoder recipe and streamed evaluation. No torch here.

Every step is one jitted function over a whole batch, sharded over all devices as the
evaluation and prediction commands run it (on CPU, one device per core: `cpu_backend`);
inputs are placed before timing (`place`), and nothing inside a step goes back to the host
(boxes use `crop.boxes`, whose labelling is a `pure_callback` on one CPU device and runs on
the device elsewhere; over several CPU devices the study labels them on the host after the
step, as `streaming.make_summarize` does in `aesthetics-evaluate`). `tests/test_benchmark.py`
checks the steps under
`jax.transfer_guard('disallow')` and that they trace once across batches.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aesthetics_jax import models
from aesthetics_jax import cpu_backend
from aesthetics_jax import parallel
from aesthetics_jax.bench import memory
from aesthetics_jax.bench import synthetic
from aesthetics_jax.bench.stage_monitor import status_mb
from aesthetics_jax.configs import default as default_config
from aesthetics_jax.configs import mobilenet_v2_emd
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.data import sampling
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.explain import cam
from aesthetics_jax.models import outputs as outputs_lib
from aesthetics_jax.train import feature_cache
from aesthetics_jax.train import optim
from aesthetics_jax.train import trainer

STUDY_TARGETS = ('aesthetic', 'bucket', 'top_tag')   # T = 12 maps per image (MobileNetV2)


def model_config(arch: str, depthwise: str = 'auto', dtype: str = 'float32',
                 width_mult: float = 1.0, conv3x3: str = 'auto') -> ml_collections.ConfigDict:
  """`config.model` for the benchmarked models (frozen encoder, inference)."""
  c = models.model_config(arch=arch, width_mult=width_mult, fc_dim=4096, vgg_pool_size=7,
                          depthwise=depthwise, dtype=dtype, freeze_encoder=True,
                          conv3x3=conv3x3)
  return c


def build(arch: str, *, depthwise: str = 'auto', dtype: str = 'float32', image_size: int = 224,
          width_mult: float = 1.0, seed: int = 0):
  """(model, host variables) with random weights (`torch_ref.flax_variables` swaps in
  torch's)."""
  model = models.create_model(model_config(arch, depthwise, dtype, width_mult))
  return model, models.init_variables(model, seed, image_size)


def device_variables(model, image_size: int, seed: int = 0):
  """Random variables (`models.init_variables`) placed on the device."""
  return jax.device_put(models.init_variables(model, seed, image_size))


# JAX-free, in `synthetic` (the PyTorch children build their models from it).
photos = synthetic.photos


def place(variables: Any, *batches: Any) -> tuple[Any, ...]:
  """(variables replicated, each batch [B,...] sharded over its leading axis) on the mesh of
  all devices, as the inference commands place them; a batch whose B the device count does
  not divide goes whole to the first device (and the variables with it)."""
  mesh = parallel.make_mesh()
  if any(np.shape(b)[0] % mesh.size for b in batches):
    return (jax.device_put(variables),) + tuple(jax.device_put(b) for b in batches)
  return (jax.device_put(variables, parallel.replicated(mesh)),) + tuple(
      jax.device_put(b, parallel.data_sharding(mesh)) for b in batches)


def _shards(num_shards: int | None) -> int:
  return jax.device_count() if num_shards is None else int(num_shards)


def forward_fn(model, chunk: int = 0, what: str = 'features',
               num_shards: int | None = None) -> Callable:
  """jit `(variables, x f32 [B,S,S,3]) -> features [B,h,w,C]` (or the head outputs);
  `num_shards`: devices the batch is sharded over (default: all, `place`)."""
  feats = parallel.features_fn(model, chunk, _shards(num_shards))

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model))
  def fwd(variables, x):
    a = feats(variables, x)
    if what == 'features':
      return a
    return model.apply(variables, a, method='head')
  return fwd


def bucket_target(k: int) -> Callable:
  """Target = score logit of bucket k (0-based): pytorch-grad-cam's ClassifierOutputTarget(k)."""
  return lambda out: out['score_logits'][:, k:k + 1].astype(jnp.float32)


def make_cam_step(model, target_fn: Callable, chunk: int = 0, size: int | None = None,
                  method: str = 'gradcam', num_shards: int | None = None) -> Callable:
  """jit `(variables, x [B,S,S,3]) -> maps f32 [B,T,S,S]`: the encoder once, one vjp of the
  head for all T targets, then pytorch-grad-cam's normalise → resize → normalise.

  `size=None` returns the raw `[B,T,h,w]` maps (no upsampling). `num_shards`: devices the
  batch is sharded over (default: all, `place`)."""
  n = _shards(num_shards)
  feats = parallel.features_fn(model, chunk, n)

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def step(variables, x):
    a = feats(variables, x)
    head_fn = lambda z: model.apply(variables, z, method='head')  # noqa: E731
    raw = cam.compute(method, head_fn, a, target_fn)
    return raw if size is None else cam.torch_like(raw, (size, size), n)
  return step


def make_study_step(model, arch: str, size: int, threshold: float = 0.2,
                    chunk: int = 0, num_shards: int | None = None) -> Callable:
  """`(variables, x f32 [B,S,S,3]) -> (predictions, summaries)`: the study of one batch —
  the aesthetic map, the 10 bucket maps and the top-tag map from ONE vjp, then
  `streaming.make_summarize`: mean intensity, boxes (aesthetic, attribute, average) and the
  normalised bucket maps. `num_shards`: devices the batch is sharded over (default: all,
  `place`); over several CPU devices the boxes are labelled on the host after the jitted
  part, as in `aesthetics-evaluate`."""
  n = _shards(num_shards)
  feats = parallel.features_fn(model, chunk, n)
  names = STUDY_TARGETS if arch == 'mobilenet_v2' else ('aesthetic',)
  target_fn = cam.targets_for(arch, names)
  summarize = streaming.make_summarize(
      size, threshold, arch, parallel.make_mesh() if n > 1 else None)

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def maps_step(variables, x):
    a = feats(variables, x)
    head_fn = lambda z: model.apply(variables, z, method='head')  # noqa: E731
    outputs = head_fn(a)
    maps = cam.compute('gradcam', head_fn, a, target_fn)
    return outputs_lib.predict_outputs(outputs, arch), maps

  def step(variables, x):
    pred, maps = maps_step(variables, x)
    return pred, summarize(maps)
  step.maps_step = maps_step  # the jitted part (tests count its compilations)
  return step


# ---------------------------------------------------------------------------------------
# Streamed evaluation over a lazily generated source (memory must not grow with N).


class SyntheticSource(Sequence):
  """`n` AVA-like records whose JPEG bytes cycle through a small pool: random access and
  `len` like a TFDS data source, constant memory whatever `n`."""

  def __init__(self, n: int, pool: Sequence[bytes], seed: int = 0):
    self._n, self._pool = int(n), list(pool)
    self._votes = np.random.default_rng(seed).integers(0, 20, (len(self._pool) * 7 + 1, 10))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(self._n))]
    i = int(i)
    if not 0 <= i < self._n:
      raise IndexError(i)
    votes = self._votes[i % len(self._votes)].astype(np.int32) + 1
    return {'image': self._pool[i % len(self._pool)], 'image_id': i + 1, 'votes': votes,
            'tags': np.array([1 + i % 66, 0], np.int32), 'challenge_id': 0}


def train_input_config(batch: int, resize: int, size: int, workers: int,
                       resized_cache_mb: float = 0) -> ml_collections.ConfigDict:
  """configs/default.py with the input pipeline's sizes for `input_pipeline.train_batches`.

  The resized-image cache is off unless asked for: decode figures (and the comparison with
  grain, which does not cache) must decode every image, also when a source repeats."""
  c = default_config.get_config()
  c.batch_size = batch
  c.input.resize_size, c.input.image_size = resize, size
  c.input.num_workers = workers
  c.input.resized_cache_mb = resized_cache_mb
  return c


def eval_config(size: int, batch: int, workers: int = 0) -> ml_collections.ConfigDict:
  c = default_config.get_config()
  c.input.image_size = size
  c.input.resize_size = size
  c.eval.batch_size = batch
  c.batch_size = batch
  c.input.num_workers = workers
  return c


def stream_study(step, variables, source, config, mesh,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
  """One pass of `step` over `source` via `input_pipeline.eval_batches`, keeping only
  per-image scalars and boxes on the host (bucket maps are summed, not kept); `on_batch(n)`
  after each batch, with the images done so far."""
  n = 0
  per_image: dict[str, list] = {}
  bucket_sum = None
  with ip.closing(ip.eval_batches(source, config, mesh)) as batches:
    for batch in batches:
      pred, summ = step(variables, batch['image'])
      host = jax.device_get({'pred': pred, 'summ': summ, 'mask': batch['mask']})
      keep = host['mask'] > 0
      for k, v in host['summ'].items():
        if k == 'bucket':
          b = np.asarray(v)[keep].sum(0)
          bucket_sum = b if bucket_sum is None else bucket_sum + b
        else:
          per_image.setdefault(k, []).append(np.asarray(v)[keep])
      score = host['pred']['mean_score' if 'mean_score' in host['pred'] else 'p_high']
      per_image.setdefault('mean_score', []).append(np.asarray(score)[keep])
      n += int(keep.sum())
      if on_batch is not None:
        on_batch(n)
  out = {k: np.concatenate(v) for k, v in per_image.items()}
  out['num_images'] = n
  out['bucket_sum'] = bucket_sum
  return out


def jpeg_pool(n: int = 32, seed: int = 0) -> list[bytes]:
  return synthetic.synthetic_jpegs(n, seed=seed)


def stream_setup(num_images: int, batch: int = 32, size: int = 224, chunk: int = -1,
                 workers: int = 0, arch: str = 'mobilenet_v2', width_mult: float = 1.0,
                 dtype: str = 'float32', trace: bool = False) -> Callable[[], dict]:
  """Child-process workload (bench.memory): the whole study streamed over `num_images`
  synthetic images. Setup compiles the step on one batch; `run()` streams all images and,
  with `trace`, also returns the process's resident memory after every batch: lists
  `trace_images`, `trace_rss_mb` (VmRSS) and `trace_hwm_mb` (VmHWM, the high-water mark
  since bench.memory reset it)."""
  model, variables = build(arch, dtype=dtype, image_size=size, width_mult=width_mult)
  chunk = parallel.default_chunk() if chunk < 0 else chunk
  step = make_study_step(model, arch, size, 0.2, chunk)
  mesh = parallel.make_mesh()
  config = eval_config(size, batch, workers)
  variables = jax.device_put(variables, parallel.replicated(mesh))
  pool = jpeg_pool(32)
  stream_study(step, variables, SyntheticSource(batch, pool), config, mesh)  # compile

  def run():
    samples: list[tuple[int, ...]] = []

    def sample(n: int) -> None:
      m = memory.malloc_mb() or {}
      samples.append((n, status_mb('VmRSS'), status_mb('VmHWM'),
                      status_mb('AnonHugePages', file='smaps_rollup'),
                      m.get('in_use'), m.get('footprint')))

    t0 = time.perf_counter()
    out = stream_study(step, variables, SyntheticSource(num_images, pool), config, mesh,
                       sample if trace else None)
    secs = time.perf_counter() - t0
    res = {'num_images': out['num_images'], 'stream_s': secs,
           'images_per_s': out['num_images'] / secs}
    names = ('trace_images', 'trace_rss_mb', 'trace_hwm_mb', 'trace_anon_huge_mb',
             'trace_malloc_in_use_mb', 'trace_malloc_footprint_mb')
    # RSS and its high-water mark come as a pair; the other figures where this system has them.
    if samples and all(s[1] is not None and s[2] is not None for s in samples):
      res.update({name: [s[i] for s in samples] for i, name in enumerate(names)
                  if all(s[i] is not None for s in samples)})
    return res
  return run


def cam_setup(batch: int = 32, size: int = 224, targets: str = 'one', chunk: int = -1,
              dtype: str = 'float32') -> Callable[[], Any]:
  """Child-process workload: our Grad-CAM step (MobileNetV2, one bucket or all 10), maps
  resized to the input and fetched to the host as pytorch-grad-cam returns them."""
  model, variables = build('mobilenet_v2', dtype=dtype, image_size=size)
  chunk = parallel.default_chunk() if chunk < 0 else chunk
  target_fn = bucket_target(0) if targets == 'one' else cam.targets_for('mobilenet_v2',
                                                                        'bucket')
  step = make_cam_step(model, target_fn, chunk, size)
  variables, x = place(variables,
                       np.random.default_rng(0).random((batch, size, size, 3), np.float32))
  return lambda: np.asarray(step(variables, x))


# ---------------------------------------------------------------------------------------
# The paper's frozen MobileNetV2 recipe with the feature cache.


def recipe_config(num_train: int, num_test: int, batch: int, epochs: float, views: int,
                  size: int = 224, resize: int = 256, workers: int = 0
                  ) -> ml_collections.ConfigDict:
  c = mobilenet_v2_emd.get_config()
  c.batch_size = batch
  c.eval.batch_size = batch
  c.num_epochs = float(epochs)
  c.cache.num_train_views = views
  c.input.image_size, c.input.resize_size = size, resize
  c.input.num_workers = workers
  c.data.max_train_images = num_train
  c.data.max_test_images = num_test
  return c


_COMPILED: dict[Any, Callable] = {}


def _once(key, make: Callable[[], Callable]) -> Callable:
  """The jitted function for `key`, built once per process: a training run builds its cache
  and its step once, so timed repeats should not pay jit compilation again."""
  if key not in _COMPILED:
    _COMPILED[key] = make()
  return _COMPILED[key]


def run_recipe(model, variables, train_source, test_source, config, mesh,
               progress: bool = False) -> dict[str, Any]:
  """Cache build (K views + test view) → head steps for `num_epochs` → test metrics.

  Returns seconds per phase and the step count. Uses the library's own pieces:
  `feature_cache.build`, `trainer.make_train_segment` (or, with the cache over
  `config.cache.device_budget_gb`, `trainer.make_train_step(..., 'features')`),
  `trainer.make_eval_step`;
  jitted functions are reused across calls in this process (compile once, as one run does).
  """
  orig = feature_cache.make_encode_fn
  feature_cache.make_encode_fn = lambda m, norm, chunk=None, cacheable=False, num_shards=None: (
      _once(('encode', m, norm, chunk, cacheable, num_shards),
            lambda: orig(m, norm, chunk, cacheable, num_shards)))
  try:
    t0 = time.perf_counter()
    cache = feature_cache.build(model, variables, train_source, test_source, config, mesh,
                                progress=progress)
    t_cache = time.perf_counter() - t0
  finally:
    feature_cache.make_encode_fn = orig
  state, metrics, steps, t_steps = _head_steps(model, variables, config, cache, mesh)
  b, arch = int(config.batch_size), str(config.model.arch)
  eval_step = _once(('eval',) + _jit_key(model, config),
                    lambda: jax.jit(trainer.make_eval_step(model, arch, 'features')))
  t2 = time.perf_counter()
  res, _, _ = trainer.evaluate(eval_step, state.variables, cache.test_batches(b), config)
  t_eval = time.perf_counter() - t2
  return {'cache_s': t_cache, 'steps': steps, 'steps_s': t_steps, 'eval_s': t_eval,
          'total_s': t_cache + t_steps + t_eval, 'num_train': int(cache.train.shape[1]),
          'num_test': int(cache.test.shape[0]), 'views': int(cache.train.shape[0]),
          'final_loss': float(metrics['loss']),
          'binary_accuracy': float(res.get('binary_accuracy', float('nan')))}

def _jit_key(model, config) -> tuple:
  """What the recipe's jitted steps depend on besides shapes (the `_once` key)."""
  return (model, str(config.model.arch), float(config.optim.lr), str(config.optim.name),
          int(config.batch_size))


def _head_steps(model, variables, config, cache: feature_cache.FeatureCache, mesh):
  """The recipe's head steps over `cache`, as the trainer runs them: on the device, the steps
  between two logs in one call (host-fed one at a time over `config.cache.device_budget_gb`).
  Returns (state, last metrics, steps, seconds)."""
  n, b = cache.train.shape[1], int(config.batch_size)
  steps = optim.total_train_steps(config, n)
  tx = optim.make_optimizer(config, steps)
  state = trainer.create_state(model, config, tx, mesh, variables)
  key = _jit_key(model, config)
  rng = jax.random.key(0)
  t1 = time.perf_counter()
  device_rows = cache.device_rows(float(config.cache.device_budget_gb))
  if device_rows is None:
    step_fn = _once(('step',) + key, lambda: jax.jit(
        trainer.make_train_step(model, config, tx, 'features'), donate_argnums=0))
    for s in range(steps):
      state, metrics = step_fn(state, cache.train_batch(s, b), rng)
  else:
    segment = _once(('segment',) + key, lambda: trainer.make_train_segment(
        trainer.make_train_step(model, config, tx, 'features'), mesh))
    s = 0
    while s < steps:
      end = trainer.next_boundary(s, steps, int(config.log_every_steps),
                                  int(config.eval_every_steps),
                                  int(config.checkpoint_every_steps))
      state, metrics = trainer.run_segment(segment, state, cache, device_rows, s, end, b, rng,
                                           np.bool_(end == steps), mesh)
      metrics = jax.tree.map(lambda v: v[-1], metrics)
      s = end
  jax.block_until_ready(metrics)
  return state, metrics, steps, time.perf_counter() - t1


def warm_head_steps(model, variables, train_source, config, mesh) -> float:
  """Compiles the head steps of `run_recipe(..., train_source, ..., config)` without encoding
  anything: the same steps over a zero cache of the same shape (a segment's jit depends on the
  cache's row count, so a smaller warm-up run would not compile them). Returns seconds."""
  t0 = time.perf_counter()
  meta = sampling.read_metadata(train_source)
  if 0 < int(config.data.max_train_images) < len(meta):
    meta = meta.take(int(config.data.max_train_images))
  lay = feature_cache.layout(model, config, len(meta), 1)
  weights, cdf = ip.train_sampling(meta, config)
  cache = feature_cache.FeatureCache(
      train=np.zeros(lay.shapes()['train'], lay.dtype), train_meta=meta, train_weights=weights,
      cdf=cdf, test=np.zeros(lay.shapes()['test'], lay.dtype), test_meta=meta.take(1),
      test_weights=weights[:1], seed=int(config.seed), mesh=mesh)
  _head_steps(model, variables, config, cache, mesh)
  return time.perf_counter() - t0
