"""Frozen-encoder feature cache: encode every image once, then train heads in seconds.

With `config.model.freeze_encoder` the encoder output A = features(x) never changes, so the
paper's 50-epoch recipe is one encoder pass over
  - K augmented train views (`config.cache.num_train_views`; view k of row i is the random
    crop/flip drawn from `view_rng(seed, k, i)`), and
  - the eval view of the test split,
  - the eval view of the validation rows (`data/validation.py`), when there are any,
followed by head steps over the cache. Step s uses the same rows as the online pipeline
(`sampling.train_indices(s, ...)`, balanced as configured) and, per row, a view drawn
from (seed, s). Each process uploads only its own rows of a step's global batch.

What is stored is only what the trainable part needs: `model.cache_features(A)` (MobileNetV2:
the global average pool, 1280 floats a view at any image size; VGG16: the 7x7x512 map that
fc6 flattens), which `model.head` accepts as it accepts A. The cache is in host RAM, or, over
`config.cache.ram_budget_gb`, memory-mapped from `<workdir>/cache/` and reused on resume
(cache_store.py). `config.cache.enabled=False` with a frozen encoder is the online mode: the
encoder runs every step on freshly cropped images (the paper's exact augmentation), no cache.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh

from aesthetics_jax.data import decoder
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import resized_store
from aesthetics_jax.data import sampling
from aesthetics_jax import cpu_backend
from aesthetics_jax import memory_fit
from aesthetics_jax import parallel
from aesthetics_jax.train import cache_store
from aesthetics_jax.train.errors import TrainingError

_VIEW_STREAM = 0xCAC4E
_PICK_STREAM = 0x91C4


def view_rng(seed: int, view: int, row: int) -> np.random.Generator:
  """Crop/flip generator of cached train view `view` of row `row`."""
  return np.random.default_rng([_VIEW_STREAM, seed, view, row])


def make_encode_fn(model, normalize: str, chunk: int | None = None, cacheable: bool = False,
                   num_shards: int | None = None):
  """jit: (variables, uint8 images [B,S,S,3]) → features A [B,h,w,C] (inference mode), or
  with `cacheable` the cached form `model.cache_features(A)` (reduced on the device).

  The encoder runs `chunk` images per device at a time inside the jit (`microbatch`; default
  per backend: 2 on CPU, where it is ~3x faster, whole batch elsewhere); same result. The
  batch is sharded over `num_shards` devices (default: all; the training mesh's size), so
  chunks stay local.
  """
  return _encode_fn(model, normalize, chunk, cacheable,
                    cpu_backend.options_key(cpu_backend.encoder_options(model)),
                    jax.device_count() if num_shards is None else int(num_shards))


# One jit per argument set (compiler options included) in a process: each cache build (the
# train views, then validation/test, a resumed or second run) reuses its trace (~0.7 s for a
# small MobileNetV2 on 2 cores).
@functools.lru_cache(maxsize=8)
def _encode_fn(model, normalize: str, chunk: int | None, cacheable: bool,
               options: tuple | None, num_shards: int):
  features = parallel.features_fn(model, chunk, num_shards=num_shards)

  @functools.partial(jax.jit, compiler_options=dict(options) if options else None)
  def encode(variables, images, flip=None):
    x = preprocess.to_model_input(images, normalize=normalize, flip=flip)
    a = features(variables, x)
    return model.apply(variables, a, method='cache_features') if cacheable else a
  return encode


@functools.lru_cache(maxsize=16)  # a trace of the encoder (~1 s for MobileNetV2 on 2 cores)
def view_shape(model, image_size: int) -> tuple[int, ...]:
  """Shape of one cached view, `model.cache_features(features(x))[0]`, without compute."""
  from aesthetics_jax.models import abstract_variables  # pylint: disable=import-outside-toplevel
  v = abstract_variables(model, image_size)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  out = jax.eval_shape(lambda v, x: model.apply(
      v, model.apply(v, x, method='features'), method='cache_features'), v, x)
  return tuple(int(d) for d in out.shape[1:])


def layout(model, config, num_train: int, num_test: int, num_validation: int = 0
           ) -> cache_store.Layout:
  """Sizes of the cache `build` makes for `num_train` / `num_test` / `num_validation` rows
  under `config`."""
  shape = view_shape(model, int(config.input.image_size))
  budget = float(config.cache.ram_budget_gb)
  return cache_store.Layout(
      num_views=max(1, int(config.cache.num_train_views)), num_train=int(num_train),
      num_test=int(num_test), num_validation=int(num_validation), view_shape=shape,
      dtype=cache_store.storage_dtype(str(config.cache.dtype), shape),
      # Capped: a budget past int64 bytes (1e300 GB: inf) was an OverflowError traceback.
      ram_budget_bytes=int(min(budget * 2**30, 2**63 - 1)))


def describe_online(config, total_steps: int, num_test: int, num_validation: int = 0) -> str:
  """One line: the online mode's cost (no cache; encoder passes per step and evaluation).

  With a validation split (`num_validation` > 0) the periodic evaluations run on it and the
  test split once at the end: the line counted the test split per evaluation (the paper's
  26 evaluations x 2,203 test images, against 26 x 890 validation + 2,203)."""
  b = int(config.batch_size)
  evals = math.ceil(total_steps / max(1, int(config.eval_every_steps)))
  if num_validation:
    evaluations = f'{num_validation} validation per evaluation x {evals} + {num_test} test'
    passes = total_steps * b + num_validation * evals + num_test
  else:
    evaluations = f'{num_test} per evaluation x {evals}'
    passes = total_steps * b + num_test * evals
  return (f'online frozen encoder (config.cache.enabled=False): fresh crops every step, 0 bytes '
          f'cached; encoder passes: {total_steps} steps x {b} = {total_steps * b} train + '
          f'{evaluations} = {passes}')


def train_views_fn(resize_size: int, image_size: int, seed: int, num_views: int,
                   random_flip: bool, resized: Callable[[int], np.ndarray] | None = None
                   ) -> Callable[[Callable[[], bytes], int], list[tuple[np.ndarray, bool]]]:
  """`encode_rows`' image function for the K cached train views of a row: one decode and
  resize for all K (view k: the crop/flip of `view_rng(seed, k, row)`); the mirror is applied
  on the device, as the input pipeline's (`preprocess.train_crop_np`). `resized(row)`: the
  row prepared decoded and resized (`resized_store`), cropped instead (same pixels; the
  record's bytes are then never read)."""
  return lambda read, i: preprocess.train_view_crops_np(
      resized(i) if resized is not None else read(), resize_size, image_size,
      [view_rng(seed, k, i) for k in range(num_views)], random_flip)


def eval_view_fn(image_size: int
                 ) -> Callable[[Callable[[], bytes], int], list[tuple[np.ndarray, bool]]]:
  """`encode_rows`' image function for the one cached test / validation view of a row."""
  return lambda read, i: [(preprocess.preprocess_eval_np(read(), image_size), False)]


def encode_rows(encode, variables, image_fn, source: Sequence[Any], rows: np.ndarray,
                mesh: Mesh, batch_size: int, size: int, outs: Sequence[np.ndarray], desc: str,
                progress: bool, workers: int = 0) -> None:
  """Encodes `rows` of `source` into `outs[k] [N, ...]`, a batch at a time (in place: the
  outputs may be memmaps). `image_fn(read, row)` (`read()` -> the record's encoded bytes,
  called only when needed, as by the input pipeline's image functions) returns one (uint8
  [S,S,3] image, mirror) per output (the K train views of a row come from one decode);
  `encode(variables, images, flip)` mirrors on the device. The next batch's images are
  decoded while the encoder runs
  on this one (measured serial: ~1.3 of 2 cores busy), in `workers` threads (0: one per
  CPU core; `pipeline.num_workers(config)`). Not per device: the build is decode-bound on an
  accelerator host, whose cores have nothing else to do (2 threads on a 16-core 1-GPU host).
  """
  sharding = parallel.data_sharding(mesh)
  local = parallel.local_rows(sharding, batch_size)
  n = len(rows)
  pool = concurrent.futures.ThreadPoolExecutor(
      workers if workers > 0 else cpu_backend.host_cpu_count(), thread_name_prefix='encode')

  def submit(start: int) -> list[concurrent.futures.Future] | None:
    """Starts decoding this process's rows of the batch at `start` (None past the end)."""
    if start >= n:
      return None
    idx = rows[np.minimum(start + np.arange(batch_size), n - 1)]  # pad with the last row
    return [pool.submit(lambda i: image_fn(lambda: source[i]['image'], i), int(i))
            for i in idx[local]]

  def store(a, out: np.ndarray, start: int) -> None:
    a = parallel.to_host(a)
    take = min(batch_size, n - start)
    with np.errstate(over='ignore'):  # overflow is the error below
      stored = a[:take].astype(out.dtype)
    if not np.isfinite(stored).all() and np.isfinite(a[:take]).all():
      raise TrainingError(f'encoder features overflow config.cache.dtype={out.dtype.name} '
                          f'(max |A| = {np.abs(a).max():.4g}); set '
                          "--config.cache.dtype=float32 or bfloat16")
    out[start:start + take] = stored

  starts = range(0, n, batch_size)
  pending = submit(0)
  try:
    for start in tqdm.tqdm(starts, desc=desc, disable=not progress, leave=False):
      views = [f.result() for f in pending]
      encoded = []
      for k in range(len(outs)):
        # One batched transfer; lists, as a tuple of shapes would read as one shape.
        x, flip = jax.make_array_from_process_local_data(
            sharding, [np.stack([v[k][0] for v in views]), np.array([v[k][1] for v in views])],
            [(batch_size, size, size, 3), (batch_size,)])
        if start == 0 and k == 0:  # activations too large for the machine: one line first
          memory_fit.check(encode, (variables, x, flip), flag='config.eval.batch_size',
                           batch=batch_size)
        encoded.append(encode(variables, x, flip))  # dispatched; no wait
      pending = submit(start + batch_size)  # decodes while the encoder runs
      for a, out in zip(encoded, outs):
        store(a, out, start)
  finally:
    pool.shutdown()


@dataclasses.dataclass
class FeatureCache:
  """Cached features (host RAM or read-only memmaps) and targets.

  train: `[K, N, *view]` K augmented views of the N training rows.
  test: `[M, *view]` eval view of the M test rows.
  validation: `[V, *view]` eval view of the V validation rows (None: no validation split).
  view: `model.cache_features` of one image (MobileNetV2 [C], VGG16 [P, P, C]).
  """
  train: np.ndarray
  train_meta: sampling.Metadata
  train_weights: np.ndarray   # f32 [N]
  cdf: np.ndarray | None      # balanced sampling CDF or None (uniform epochs)
  test: np.ndarray
  test_meta: sampling.Metadata
  test_weights: np.ndarray
  seed: int
  mesh: Mesh
  layout: cache_store.Layout | None = None
  directory: Path | None = None   # the committed entry when on disk
  reused: bool = False            # read back from an earlier run's entry
  validation: np.ndarray | None = None
  validation_meta: sampling.Metadata | None = None
  validation_weights: np.ndarray | None = None

  def _global(self, host: dict[str, np.ndarray], batch_size: int) -> dict[str, jax.Array]:
    sharding = parallel.data_sharding(self.mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v, (batch_size,) + v.shape[1:])
            for k, v in host.items()}

  def _rows(self, meta: sampling.Metadata, weights: np.ndarray, idx: np.ndarray,
            mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        'votes': meta.votes[idx], 'distribution': meta.distribution[idx],
        'mean_score': meta.mean_score[idx], 'label': meta.label[idx],
        'tags': meta.tag_soft[idx], 'weight': (weights[idx] * mask).astype(np.float32),
        'image_id': meta.image_id[idx].astype(np.int32), 'mask': mask.astype(np.float32)}

  def _views(self, step: int, batch_size: int) -> np.ndarray:
    """Which cached view each row of step `step` uses, i64 [batch_size]."""
    return np.random.default_rng([_PICK_STREAM, self.seed, step]).integers(
        0, self.train.shape[0], batch_size)

  def train_batch(self, step: int, batch_size: int) -> dict[str, jax.Array]:
    """Global batch of step `step`: `features [B, *view]` (f32) + the usual target keys."""
    n = self.train.shape[1]
    idx = sampling.train_indices(step, n, batch_size, self.seed, self.cdf)
    views = self._views(step, batch_size)
    rows = parallel.local_rows(parallel.data_sharding(self.mesh), batch_size)
    li, lv = idx[rows], views[rows]
    host = self._rows(self.train_meta, self.train_weights, li, np.ones(len(li), np.float32))
    host['features'] = self.train[lv, li].astype(np.float32)
    return self._global(host, batch_size)

  def step_features_finite(self, step: int, batch_size: int) -> bool:
    """Whether the cached features that `train_batch(step, batch_size)` feeds (this process's
    rows) are all finite: a damaged cache file (NaNs written over a row) made the loss NaN,
    which the trainer blamed on the checkpoint it resumed from."""
    idx = sampling.train_indices(step, self.train.shape[1], batch_size, self.seed, self.cdf)
    rows = parallel.local_rows(parallel.data_sharding(self.mesh), batch_size)
    views = self._views(step, batch_size)
    return bool(np.isfinite(self.train[views[rows], idx[rows]]).all())

  def device_rows(self, budget_gb: float) -> dict[str, jax.Array] | None:
    """The train split on every device for `train_segment`: `features [K, N, *view]` in the
    storage dtype and each target key of `train_batch` [N, ...]. None when the cache is
    memory-mapped from disk or its features exceed `budget_gb` per device (on CPU, whose
    devices share host RAM, summed over this process's devices).
    """
    if self.host_fed_reason(budget_gb) is not None:
      return None
    n = self.train.shape[1]
    host = self._rows(self.train_meta, self.train_weights, np.arange(n), np.ones(n, np.float32))
    del host['mask']  # every train row is real
    host['features'] = self.train
    return parallel.replicate(host, self.mesh)

  def host_fed_reason(self, budget_gb: float) -> str | None:
    """Why `device_rows(budget_gb)` leaves the train split on the host, for the run's line
    (it said 'over config.cache.device_budget_gb' for a memory-mapped cache of a few KiB, or a
    budget of 0); None when the split goes on the devices."""
    if isinstance(self.train, np.memmap):
      return 'memory-mapped from disk, over config.cache.ram_budget_gb'
    if budget_gb <= 0:
      return f'config.cache.device_budget_gb={budget_gb:g}'
    copies = len(self.mesh.local_devices) if jax.default_backend() == 'cpu' else 1
    if self.train.nbytes * copies > budget_gb * 2**30:
      held = f'{self.train.nbytes * copies / 2**30:.2f} GiB' + (
          f' on {copies} CPU devices' if copies > 1 else '')
      return f'{held}: over config.cache.device_budget_gb={budget_gb:g}'
    return None

  def segment_indices(self, start: int, count: int, batch_size: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, views), i32 [count, batch_size] each: what `train_batch` reads at steps
    start .. start+count-1, for `gather_batch` over `device_rows`."""
    idx = sampling.train_indices_block(start, count, self.train.shape[1], batch_size,
                                       self.seed, self.cdf)
    views = np.stack([self._views(s, batch_size) for s in range(start, start + count)])
    return idx.astype(np.int32), views.astype(np.int32)

  def test_batches(self, batch_size: int) -> Iterator[dict[str, jax.Array]]:
    """One ordered pass over the test features, padded with mask = 0."""
    return self._eval_batches(self.test, self.test_meta, self.test_weights, batch_size)

  def validation_batches(self, batch_size: int) -> Iterator[dict[str, jax.Array]]:
    """One ordered pass over the validation features, padded with mask = 0."""
    if self.validation is None:
      raise ValueError('the feature cache holds no validation split')
    return self._eval_batches(self.validation, self.validation_meta, self.validation_weights,
                              batch_size)

  def _eval_batches(self, feats: np.ndarray, meta: sampling.Metadata, weights: np.ndarray,
                    batch_size: int) -> Iterator[dict[str, jax.Array]]:
    m = feats.shape[0]
    rows = parallel.local_rows(parallel.data_sharding(self.mesh), batch_size)
    for start in range(0, m, batch_size):
      pos = start + np.arange(batch_size)
      mask = (pos < m).astype(np.float32)
      idx = np.where(pos < m, pos, 0)[rows]
      host = self._rows(meta, weights, idx, mask[rows])
      host['features'] = feats[idx].astype(np.float32)
      yield self._global(host, batch_size)


def gather_batch(device_rows: dict[str, jax.Array], rows: jax.Array, views: jax.Array
                 ) -> dict[str, jax.Array]:
  """Inside jit: the batch `train_batch` builds on the host, from `device_rows` at
  `rows` / `views` (i32 [B] each, from `segment_indices`)."""
  batch = {k: v[rows] for k, v in device_rows.items() if k != 'features'}
  batch['features'] = device_rows['features'][views, rows].astype(jnp.float32)
  batch['mask'] = jnp.ones(rows.shape, jnp.float32)
  return batch


def _cache_key(variables, config, train_meta: sampling.Metadata,
               test_meta: sampling.Metadata, val_meta: sampling.Metadata | None,
               lay: cache_store.Layout) -> str:
  """Everything a cached view depends on: encoder weights, model and input settings, data."""
  encoder = {c: variables.get(c, {}).get('encoder', {}) for c in ('params', 'batch_stats')}
  data = cache_store.tree_digest({
      'train': (train_meta.image_id, train_meta.votes),
      'test': (test_meta.image_id, test_meta.votes),
      'validation': () if val_meta is None else (val_meta.image_id, val_meta.votes)})
  return cache_store.digest({
      'version': cache_store.FORMAT_VERSION, 'encoder': cache_store.tree_digest(encoder),
      'model': config.model.to_dict(), 'seed': int(config.seed),
      'input': {k: config.input[k] for k in ('resize_size', 'image_size', 'random_flip',
                                              'normalize')},
      'decoder': decoder.RULE,  # another decoding rule, other pixels
      'data': data, 'shapes': lay.shapes(), 'dtype': lay.dtype.name})


def _storage(lay: cache_store.Layout, key: str, cache_dir: str | Path | None, owner: list
             ) -> tuple[dict[str, np.ndarray], Any, Path | None]:
  """(arrays to fill, writer or None, directory) — or the reused entry (writer None)."""
  if not lay.on_disk:
    return cache_store.allocate_ram(lay), None, None
  if cache_dir is None:  # no workdir (benchmarks): a temporary folder, removed with the cache
    cache_dir = tempfile.mkdtemp(prefix='feature_cache_')
    owner.append(cache_dir)
  directory = Path(cache_dir)
  if jax.process_count() > 1:  # every process holds its own copy
    directory = directory / f'process{jax.process_index()}'
  found = cache_store.open_committed(directory, key, lay)
  if found is not None:
    return found, None, directory / key
  writer = cache_store.DiskWriter(directory, key, lay)
  return writer.arrays, writer, directory / key


def _fill(model, variables, train_source, test_source, validation_source, config, mesh: Mesh,
          progress: bool, lay: cache_store.Layout, key: str, cache_dir, owner: list, n: int,
          m: int, v: int):
  """Storage for the cache, filled by encoding, or a reused entry: (arrays, directory, reused).
  """
  arrays, writer, directory = _storage(lay, key, cache_dir, owner)
  reused = lay.on_disk and writer is None
  if reused:
    return arrays, directory, True
  try:  # the train views, test and validation rows into `arrays`
    rs, s = int(config.input.resize_size), int(config.input.image_size)
    flip, seed = bool(config.input.random_flip), int(config.seed)
    encode = make_encode_fn(model, str(config.input.normalize), cacheable=True,
                            num_shards=mesh.size)
    bs = parallel.capped_batch_size(int(config.eval.batch_size or config.batch_size),
                                    max(n, m, v), mesh.size)
    k_views, workers = lay.num_views, ip.num_workers(config)
    views_fn = train_views_fn(rs, s, seed, k_views, flip,
                              resized_store.resized_fn(train_source, rs))
    encode_rows(encode, variables, views_fn, train_source,
                np.arange(n), mesh, bs, s, [arrays['train'][k] for k in range(k_views)],
                f'caching train views (K={k_views})', progress, workers)
    eval_fn = eval_view_fn(s)
    encode_rows(encode, variables, eval_fn, test_source, np.arange(m), mesh, bs, s,
                [arrays['test']], 'caching test view', progress, workers)
    if v:
      encode_rows(encode, variables, eval_fn, validation_source, np.arange(v), mesh, bs, s,
                  [arrays['validation']], 'caching validation view', progress, workers)
  except BaseException:  # an error or Ctrl-C: its allocated files would stay until a rerun
    if writer is not None:
      writer.abort()
    raise
  if writer is not None:
    arrays = writer.commit()
  return arrays, directory, False


def build(model, variables, train_source: Sequence[Any], test_source: Sequence[Any],
          config, mesh: Mesh, progress: bool = True,
          cache_dir: str | Path | None = None, *,
          train_meta: sampling.Metadata | None = None,
          validation_source: Sequence[Any] | None = None,
          validation_meta: sampling.Metadata | None = None) -> FeatureCache:
  """Encodes K train views, the test eval view and, with `validation_source` (rows held out of
  training, `data/validation.py`), its eval view once (see module docstring).

  Over the RAM budget the cache is memory-mapped under `cache_dir` (the trainer's
  `<workdir>/cache`; None: a temporary folder) and an entry with the same key is reused.
  train_meta / validation_meta: the sources' metadata when the caller already has it (a
  `validation.Rows` view would otherwise be scanned again).
  """
  if train_meta is None:
    train_meta = sampling.read_metadata(train_source)
  test_meta = sampling.read_metadata(test_source)
  max_train = int(config.data.max_train_images)
  max_test = int(config.data.max_test_images)
  if 0 < max_train < len(train_meta):
    train_meta = train_meta.take(max_train)
  if 0 < max_test < len(test_meta):
    test_meta = test_meta.take(max_test)
  # Before any encoding: a refused weighting is one line, not minutes later.
  train_w, cdf = ip.train_sampling(train_meta, config)
  counts = np.bincount(train_meta.label, minlength=2)
  test_w = ip.loss_weights(test_meta, config, counts)
  val_meta = val_w = None
  if validation_source is not None and len(validation_source):
    val_meta = (validation_meta if validation_meta is not None
                else sampling.read_metadata(validation_source))
    val_w = ip.loss_weights(val_meta, config, counts)
  num_val = 0 if val_meta is None else len(val_meta)
  seed, n = int(config.seed), len(train_meta)
  lay = layout(model, config, n, len(test_meta), num_val)
  key = (_cache_key(variables, config, train_meta, test_meta, val_meta, lay) if lay.on_disk
         else '')
  owner: list = []  # temporary folders to delete with the cache (or on failure)
  try:
    arrays, directory, reused = _fill(model, variables, train_source, test_source,
                                      validation_source, config, mesh, progress, lay, key,
                                      cache_dir, owner, n, len(test_meta), num_val)
  except BaseException:
    for d in owner:
      shutil.rmtree(d, ignore_errors=True)
    raise
  cache = FeatureCache(train=arrays['train'], train_meta=train_meta, train_weights=train_w,
                       cdf=cdf, test=arrays['test'], test_meta=test_meta, test_weights=test_w,
                       seed=seed, mesh=mesh, layout=lay, directory=directory, reused=reused,
                       validation=arrays['validation'] if num_val else None,
                       validation_meta=val_meta, validation_weights=val_w)
  for d in owner:
    weakref.finalize(cache, shutil.rmtree, d, True)
  return cache
