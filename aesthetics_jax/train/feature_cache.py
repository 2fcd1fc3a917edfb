"""Frozen-encoder feature cache: encode every image once, then train heads in seconds.

With `config.model.freeze_encoder` the encoder output A = features(x) never changes, so the
paper's 50-epoch recipe is one encoder pass over
  - K augmented train views (`config.cache.num_train_views`; view k of row i is the random
    crop/flip drawn from `view_rng(seed, k, i)`), and
  - the eval view of the test split,
  - the eval view of the validation rows (`data/validation.py`), when there are any,
followed by head steps over the cache. Step s uses the same rows as the online pipeline
(`sampling.train_indices(s, ...)`, balanced as configured) and, per row, a view drawn
from (seed, s). The cache lives in host memory on every process (numpy, f32 or bf16);
each process uploads only its own rows of a step's global batch.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh

from aesthetics_jax.data import preprocess
from aesthetics_jax.data import sampling
from aesthetics_jax import parallel

_VIEW_STREAM = 0xCAC4E
_PICK_STREAM = 0x91C4


def view_rng(seed: int, view: int, row: int) -> np.random.Generator:
  """Crop/flip generator of cached train view `view` of row `row`."""
  return np.random.default_rng([_VIEW_STREAM, seed, view, row])


def _storage_dtype(name: str):
  if name == 'bfloat16':
    return jnp.bfloat16
  if name == 'float32':
    return np.float32
  raise ValueError(f"config.cache.dtype={name!r}; use 'float32' or 'bfloat16'")


def make_encode_fn(model, normalize: str, chunk: int | None = None):
  """jit: (variables, uint8 images [B,S,S,3]) → features A [B,h,w,C] (inference mode).

  The encoder runs `chunk` images per device at a time inside the jit (`microbatch`; default
  per backend: 2 on CPU, where it is ~3x faster, whole batch elsewhere); same result. The
  batch is sharded over all devices (`parallel.make_mesh`), so chunks stay local.
  """
  features = parallel.features_fn(model, chunk, num_shards=jax.device_count())

  @jax.jit
  def encode(variables, images):
    x = preprocess.to_model_input(images, normalize=normalize)
    return features(variables, x)
  return encode


def _encode_rows(encode, variables, image_fn, source: Sequence[Any], rows: np.ndarray,
                 mesh: Mesh, batch_size: int, size: int, dtype, desc: str,
                 progress: bool) -> np.ndarray:
  """Encodes `rows` of `source` with `image_fn(bytes, row) -> uint8 [S,S,3]`; `[N,h,w,C]`."""
  sharding = parallel.data_sharding(mesh)
  local = parallel.local_rows(sharding, batch_size)
  n = len(rows)
  out = None
  pool = concurrent.futures.ThreadPoolExecutor(max(1, len(jax.local_devices()) * 2))
  starts = range(0, n, batch_size)
  try:
    for start in tqdm.tqdm(starts, desc=desc, disable=not progress, leave=False):
      pos = start + np.arange(batch_size)
      idx = rows[np.minimum(pos, n - 1)]  # pad with the last row; dropped below
      mine = idx[local]
      imgs = np.stack(list(pool.map(lambda i: image_fn(source[int(i)]['image'], int(i)),
                                    mine)))
      x = jax.make_array_from_process_local_data(sharding, imgs,
                                                 (batch_size, size, size, 3))
      a = parallel.to_host(encode(variables, x))
      if out is None:
        out = np.empty((n,) + a.shape[1:], dtype)
      take = min(batch_size, n - start)
      out[start:start + take] = a[:take].astype(dtype)
  finally:
    pool.shutdown()
  return out


@dataclasses.dataclass
class FeatureCache:
  """Host-resident features and targets.

  train: `[K, N, h, w, C]` K augmented views of the N training rows.
  test: `[M, h, w, C]` eval view of the M test rows.
  validation: `[V, h, w, C]` eval view of the V validation rows (None: no validation split).
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

  def train_batch(self, step: int, batch_size: int) -> dict[str, jax.Array]:
    """Global batch of step `step`: `features [B,h,w,C]` (f32) + the usual target keys."""
    n = self.train.shape[1]
    idx = sampling.train_indices(step, n, batch_size, self.seed, self.cdf)
    views = np.random.default_rng([_PICK_STREAM, self.seed, step]).integers(
        0, self.train.shape[0], batch_size)
    rows = parallel.local_rows(parallel.data_sharding(self.mesh), batch_size)
    li, lv = idx[rows], views[rows]
    host = self._rows(self.train_meta, self.train_weights, li, np.ones(len(li), np.float32))
    host['features'] = self.train[lv, li].astype(np.float32)
    return self._global(host, batch_size)

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


def build(model, variables, train_source: Sequence[Any], test_source: Sequence[Any],
          config, mesh: Mesh, progress: bool = True, *,
          train_meta: sampling.Metadata | None = None,
          validation_source: Sequence[Any] | None = None,
          validation_meta: sampling.Metadata | None = None) -> FeatureCache:
  """Encodes K train views, the test eval view and, with `validation_source` (rows held out of
  training, `data/validation.py`), its eval view once (see module docstring).

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
  rs, s = int(config.input.resize_size), int(config.input.image_size)
  flip, seed = bool(config.input.random_flip), int(config.seed)
  dtype = _storage_dtype(str(config.cache.dtype))
  encode = make_encode_fn(model, str(config.input.normalize))
  bs = int(config.eval.batch_size or config.batch_size)
  k_views = max(1, int(config.cache.num_train_views))
  n = len(train_meta)
  views = []
  for k in range(k_views):
    fn = lambda data, i, k=k: preprocess.preprocess_train_np(data, rs, s, view_rng(seed, k, i),
                                                             flip)
    views.append(_encode_rows(encode, variables, fn, train_source, np.arange(n), mesh, bs, s,
                              dtype, f'caching train view {k + 1}/{k_views}', progress))
  test = _encode_rows(encode, variables, lambda data, i: preprocess.preprocess_eval_np(data, s),
                      test_source, np.arange(len(test_meta)), mesh, bs, s, dtype,
                      'caching test view', progress)
  val = val_meta = val_w = None
  if validation_source is not None and len(validation_source):
    val_meta = (validation_meta if validation_meta is not None
                else sampling.read_metadata(validation_source))
    val = _encode_rows(encode, variables,
                       lambda data, i: preprocess.preprocess_eval_np(data, s), validation_source,
                       np.arange(len(val_meta)), mesh, bs, s, dtype, 'caching validation view',
                       progress)
  weighting = config.input.weighting
  factor = config.input.weight_factor
  band = tuple(config.input.weight_band)
  train_w = sampling.sample_weights(train_meta.mean_score, train_meta.label, weighting, factor,
                                    band)
  counts = np.bincount(train_meta.label, minlength=2)
  test_w = sampling.sample_weights(test_meta.mean_score, test_meta.label, weighting, factor,
                                   band, class_counts=counts)
  if val is not None:
    val_w = sampling.sample_weights(val_meta.mean_score, val_meta.label, weighting, factor,
                                    band, class_counts=counts)
  cdf = (np.cumsum(sampling.balanced_probabilities(train_meta.label))
         if config.input.balanced else None)
  return FeatureCache(train=np.stack(views), train_meta=train_meta, train_weights=train_w,
                      cdf=cdf, test=test, test_meta=test_meta, test_weights=test_w,
                      seed=seed, mesh=mesh, validation=val, validation_meta=val_meta,
                      validation_weights=val_w)
