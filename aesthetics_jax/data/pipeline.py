"""Input pipeline: decode → resize (→ random crop) → global batches sharded over `'data'`.

Host side (numpy + PIL, in worker threads): JPEG decoding with PIL `draft()` (the JPEG
decoder's DCT downscaling, a large speed-up when the target is much smaller than the photo),
antialiased bilinear resize, random crop/flip. Images travel to the device as uint8 (4x less
host work and transfer than float32); `to_model_input` turns them into float32 in [0, 1]
(optionally ImageNet mean/std normalised) under `jax.jit`.

Determinism: the rows of step `s` depend only on `(seed, s)`, and the crop/flip of the image
at position `j` of the global batch only on `(seed, s, j)` — so a run resumed at step k sees
the batches an uninterrupted run sees, whatever the number of workers or processes.

Multi-host: every process draws the same global index list for a step and decodes only its
own contiguous rows (those of its addressable devices), then
`jax.make_array_from_process_local_data` assembles the global `jax.Array`.

No pmap: data parallelism is `jax.jit` over arrays sharded with
`NamedSharding(mesh, P('data'))` on a one-axis `jax.make_mesh` mesh (see `make_mesh`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from aesthetics_jax.data import ava
from aesthetics_jax import parallel

NUM_BUCKETS = ava.NUM_BUCKETS
NUM_TAGS = ava.NUM_TAGS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ('none', 'imagenet')
WEIGHT_SCHEMES = ('none', 'class', 'score')

# Stream tags mixed into every seed so the sampler and the augmentations draw independent
# random streams from the same (seed, step).
_SAMPLER_STREAM = 0x5A3D1E
_AUGMENT_STREAM = 0xA06E17

Batch = dict[str, jax.Array]
Record = Mapping[str, Any]


class InputError(ValueError):
  """A problem a user can fix (bad config, unreadable image); `str()` is one line."""


# ---------------------------------------------------------------------------------------
# Decoding and per-image preprocessing (numpy / PIL, host side).
# ---------------------------------------------------------------------------------------


def _open(data: bytes | Image.Image, what: str = 'image') -> Image.Image:
  if isinstance(data, Image.Image):
    return data
  try:
    img = Image.open(io.BytesIO(data))
    img.size  # noqa: B018  (header parsed; pixel data decoded lazily)
    return img
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
    raise InputError(f'{what}: cannot read image ({type(e).__name__}: {e}); '
                     'check the file or re-run launch/prepare_data.py, which skips '
                     'unreadable images') from None


def _to_rgb(img: Image.Image, what: str = 'image') -> Image.Image:
  """Any PIL mode → RGB. Alpha is dropped (as torchvision's default loader does)."""
  try:
    if img.mode == 'RGB':
      img.load()
      return img
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
      # 16/32-bit grey: PIL's convert('RGB') clips instead of scaling; scale to 8 bit.
      a = np.asarray(img, dtype=np.float64)
      hi = 65535.0 if img.mode.startswith('I;16') else max(float(a.max()), 1.0)
      a = np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8)
      return Image.fromarray(a, 'L').convert('RGB')
    if img.mode == 'P' and 'transparency' in img.info:
      img = img.convert('RGBA')  # avoids PIL's palette-transparency warning
    return img.convert('RGB')
  except InputError:
    raise
  except Exception as e:
    raise InputError(f'{what}: cannot decode image ({type(e).__name__}: {e}); '
                     'the file is corrupt or truncated — re-run launch/prepare_data.py, '
                     'which skips such images') from None


def _decode_pil(data: bytes | Image.Image, min_size: int | None,
                what: str = 'image') -> Image.Image:
  """Decodes to an RGB PIL image; JPEGs are DCT-downscaled to no less than min_size²."""
  img = _open(data, what)
  if min_size is not None and img.format == 'JPEG':
    # draft() picks the largest scale 1/2, 1/4, 1/8 that keeps BOTH sides >= min_size,
    # so the antialiased resize below still has at least target resolution to work from.
    img.draft(None, (min_size, min_size))
  return _to_rgb(img, what)


def decode_image(data: bytes, min_size: int | None = None) -> np.ndarray:
  """Decodes any PIL-readable image (JPEG, PNG, grey, CMYK, palette, RGBA) to RGB.

  Args:
    data: encoded file bytes.
    min_size: if set, JPEGs may be decoded at a reduced scale whose sides are both
      >= min_size (fast path when the image is then resized to min_size² or smaller).
  Returns:
    uint8 [H, W, 3].
  """
  return np.asarray(_decode_pil(data, min_size), dtype=np.uint8)


def _resize(img: Image.Image, size: int) -> Image.Image:
  if img.size == (size, size):
    return img
  # PIL's bilinear filter widens its support when downscaling, i.e. it is antialiased
  # (like torchvision's Resize(antialias=True)).
  return img.resize((size, size), Image.Resampling.BILINEAR)


def preprocess_eval_np(img: np.ndarray | bytes | Image.Image, size: int) -> np.ndarray:
  """Eval preprocessing: resize to size² (aspect not kept, as in the paper).

  Args:
    img: uint8 [H, W, 3] (or encoded bytes / a PIL image, decoded with the draft fast path).
    size: output side S.
  Returns:
    uint8 [S, S, 3].
  """
  if isinstance(img, np.ndarray):
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
      raise InputError(f'preprocess_eval_np: expected uint8 [H,W,3], got {img.dtype} '
                       f'{img.shape}; decode with decode_image() first')
    pil = Image.fromarray(img, 'RGB')
  else:
    pil = _decode_pil(img, size)
  return np.asarray(_resize(pil, size), dtype=np.uint8)


def preprocess_train_np(img: np.ndarray | bytes | Image.Image, resize_size: int,
                        image_size: int, rng: np.random.Generator,
                        random_flip: bool = False) -> np.ndarray:
  """Train preprocessing: resize to resize_size², random image_size² crop, optional flip.

  Args:
    img: uint8 [H, W, 3], encoded bytes or a PIL image.
    rng: the only source of randomness (crop offsets, then flip).
  Returns:
    uint8 [image_size, image_size, 3].
  """
  if image_size > resize_size:
    raise InputError(f'config.input.image_size={image_size} > config.input.resize_size='
                     f'{resize_size}; set resize_size >= image_size')
  if isinstance(img, np.ndarray):
    pil = Image.fromarray(img, 'RGB')
  else:
    pil = _decode_pil(img, resize_size)
  a = np.asarray(_resize(pil, resize_size), dtype=np.uint8)
  y, x = rng.integers(0, resize_size - image_size + 1, size=2)
  a = a[y:y + image_size, x:x + image_size]
  if random_flip and rng.random() < 0.5:
    a = a[:, ::-1]
  return np.ascontiguousarray(a)


def augment_rng(seed: int, step: int, position: int) -> np.random.Generator:
  """The crop/flip generator of global batch position `position` at `step`."""
  return np.random.default_rng([_AUGMENT_STREAM, seed, step, position])


@functools.partial(jax.jit, static_argnames=('normalize',))
def to_model_input(x: jax.Array, normalize: str = 'none') -> jax.Array:
  """uint8 [..., 3] → float32 in [0, 1]; `normalize='imagenet'` → (x - mean) / std."""
  y = x.astype(jnp.float32) * (1.0 / 255.0)
  if normalize == 'imagenet':
    y = (y - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  elif normalize != 'none':
    raise InputError(f"config.input.normalize={normalize!r}; use one of {NORMALIZE_MODES}")
  return y


# ---------------------------------------------------------------------------------------
# Metadata (targets, labels), computed once without decoding images.
# ---------------------------------------------------------------------------------------


def _targets(votes: np.ndarray, tags: np.ndarray):
  try:
    return ava.votes_to_targets(votes), ava.tags_to_soft_labels(tags, NUM_TAGS)
  except ValueError as e:
    raise InputError(f'data source: malformed votes/tags ({e}); re-run '
                     'launch/prepare_data.py') from None


@dataclasses.dataclass(frozen=True)
class Metadata:
  """Per-row arrays of a source, in row order (N rows)."""
  image_id: np.ndarray      # i64 [N]
  votes: np.ndarray         # i32 [N, 10]
  tags: np.ndarray          # i32 [N, 2]   AVA tag ids, 0 = none
  distribution: np.ndarray  # f32 [N, 10]
  mean_score: np.ndarray    # f32 [N]
  label: np.ndarray         # i32 [N]      1 = high (mean > 5)
  tag_soft: np.ndarray      # f32 [N, 66]

  def __len__(self) -> int:
    return int(self.image_id.shape[0])

  @classmethod
  def from_arrays(cls, image_id, votes, tags) -> 'Metadata':
    votes = np.asarray(votes, np.int32).reshape(-1, NUM_BUCKETS)
    tags = np.asarray(tags, np.int32).reshape(votes.shape[0], -1)
    t, soft = _targets(votes, tags)
    return cls(image_id=np.asarray(image_id, np.int64), votes=votes, tags=tags,
               distribution=np.asarray(t['distribution'], np.float32),
               mean_score=np.asarray(t['mean_score'], np.float32),
               label=np.asarray(t['label'], np.int32),
               tag_soft=np.asarray(soft, np.float32))

  def take(self, n: int) -> 'Metadata':
    return Metadata(**{f.name: getattr(self, f.name)[:n] for f in dataclasses.fields(self)})

  def save(self, path: str | os.PathLike) -> None:
    """Atomic .npz write (raw columns only; targets are recomputed on load)."""
    path = Path(path)
    tmp = path.with_name(path.name + f'.tmp{os.getpid()}')
    with open(tmp, 'wb') as f:
      np.savez(f, image_id=self.image_id, votes=self.votes, tags=self.tags)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike) -> 'Metadata':
    with np.load(path) as z:
      return cls.from_arrays(z['image_id'], z['votes'], z['tags'])


def _read_records(source: Sequence[Record], indices: Sequence[int]) -> list[Record]:
  getitems = getattr(source, '__getitems__', None)  # TFDS/grain data sources batch reads
  if getitems is not None:
    return list(getitems(list(indices)))
  return [source[i] for i in indices]


# Metadata per source object, so repeated eval passes do not re-read every record.
_METADATA_CACHE: dict[int, tuple[Sequence[Record], Metadata]] = {}
_METADATA_CACHE_SIZE = 8


def read_metadata(source: Sequence[Record], cache_path: str | os.PathLike | None = None,
                  progress: bool | None = None) -> Metadata:
  """Reads image_id / votes / tags of every row once (no image decoding) and caches it.

  Cached per source object in this process; with `cache_path` also on disk (.npz),
  reused when its row count matches (the precomputed path: a data source whose metadata
  was saved with `Metadata.save` at prepare time is never scanned). Reading a record also
  reads its JPEG bytes — a one-off cost at start; `progress` (default: when >= 20k rows)
  shows a tqdm bar.
  """
  key = id(source)
  hit = _METADATA_CACHE.get(key)
  if hit is not None and hit[0] is source and len(hit[1]) == len(source):
    return hit[1]
  meta = None
  if cache_path is not None and Path(cache_path).exists():
    meta = Metadata.load(cache_path)
    if len(meta) != len(source):
      meta = None
  if meta is None:
    n = len(source)
    ids = np.zeros(n, np.int64)
    votes = np.zeros((n, NUM_BUCKETS), np.int32)
    tags = np.zeros((n, 2), np.int32)
    chunks = range(0, n, 1024)
    if progress or (progress is None and n >= 20000):
      import tqdm  # pylint: disable=import-outside-toplevel
      chunks = tqdm.tqdm(chunks, desc='reading metadata', unit_scale=1024, unit='rec')
    for start in chunks:
      stop = min(start + 1024, n)
      for i, rec in zip(range(start, stop), _read_records(source, range(start, stop))):
        try:
          ids[i] = int(rec['image_id'])
          votes[i] = np.asarray(rec['votes']).reshape(NUM_BUCKETS)
          t = np.asarray(rec['tags']).reshape(-1)[:2]
          tags[i, :t.shape[0]] = t
        except (KeyError, ValueError, TypeError) as e:
          raise InputError(f'data source row {i}: malformed record ({e}); expected keys '
                           "image, image_id, votes[10], tags[2] — re-run "
                           'launch/prepare_data.py') from None
    meta = Metadata.from_arrays(ids, votes, tags)
    if cache_path is not None:
      meta.save(cache_path)
  if len(_METADATA_CACHE) >= _METADATA_CACHE_SIZE:
    _METADATA_CACHE.pop(next(iter(_METADATA_CACHE)))
  _METADATA_CACHE[key] = (source, meta)
  return meta


# ---------------------------------------------------------------------------------------
# Weights and sampling (pure numpy, deterministic).
# ---------------------------------------------------------------------------------------


def sample_weights(mean_scores: np.ndarray, labels: np.ndarray, scheme: str = 'none',
                   factor: float = 7.0, band: Sequence[float] = (4.5, 6.5),
                   class_counts: Sequence[int] | None = None) -> np.ndarray:
  """Per-sample loss weights f32 [N].

  - 'none':  w = 1.
  - 'class': w_i = N / (C * N_{c(i)}), i.e. the paper's 1 / N_c rescaled by N / C so that
    the mean weight over the training set is exactly 1 (C = number of classes present,
    N_c = count of class c; N, N_c from `class_counts` — the TRAINING counts, e.g. when
    weighting eval rows — or else from `labels` itself).
  - 'score': w = factor if mean < band[0] or mean > band[1] else 1 (band is inclusive).
  """
  mean_scores = np.asarray(mean_scores, np.float32)
  labels = np.asarray(labels, np.int64)
  if scheme == 'none':
    return np.ones(mean_scores.shape, np.float32)
  if scheme == 'score':
    lo, hi = float(band[0]), float(band[1])
    outside = (mean_scores < lo) | (mean_scores > hi)
    return np.where(outside, np.float32(factor), np.float32(1.0)).astype(np.float32)
  if scheme == 'class':
    counts = (np.bincount(labels, minlength=2) if class_counts is None
              else np.asarray(class_counts, np.int64))
    present = counts > 0
    n, c = counts.sum(), present.sum()
    per_class = np.where(present, n / (c * np.maximum(counts, 1)), 0.0)
    return per_class[labels].astype(np.float32)
  raise InputError(f'config.input.weighting={scheme!r}; use one of {WEIGHT_SCHEMES}')


def balanced_probabilities(labels: np.ndarray) -> np.ndarray:
  """f64 [N] sampling probabilities: each present class gets equal total mass."""
  labels = np.asarray(labels, np.int64)
  counts = np.bincount(labels, minlength=2)
  present = (counts > 0).sum()
  p = 1.0 / (present * counts[labels])
  return p / p.sum()


def train_indices(step: int, num_rows: int, batch_size: int, seed: int,
                  cdf: np.ndarray | None = None) -> np.ndarray:
  """The global row indices i64 [batch_size] of training step `step`.

  With `cdf` (cumulative sampling probabilities, see `balanced_probabilities`): weighted
  sampling with replacement, an independent draw per step. Without: uniform sampling without
  replacement, a fresh permutation per epoch over the stream of positions step*B + j.
  """
  if cdf is not None:
    u = np.random.default_rng([_SAMPLER_STREAM, seed, step]).random(batch_size)
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side='right'), num_rows - 1)
  pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(pos, num_rows)
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):  # at most two epochs per batch unless B > N
    perm = np.random.default_rng([_SAMPLER_STREAM, seed, 1, int(e)]).permutation(num_rows)
    sel = epochs == e
    out[sel] = perm[offsets[sel]]
  return out


def _check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    raise InputError(f'{what}={batch_size} must be a positive multiple of the device count '
                     f'{n}; set it to e.g. {max(n, (max(batch_size, 1) // n) * n)}')


def _num_workers(config) -> int:
  n = int(config.input.get('num_workers', 0))
  if n > 0:
    return n
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


class _Loader:
  """Decodes the local rows of global batches in a thread pool and assembles jax.Arrays.

  Threads, not processes: PIL releases the GIL while decoding and resizing, and threads
  share the source and the output buffer (see launch/benchmark.py --what=input).
  """

  def __init__(self, source: Sequence[Record], meta: Metadata, weights: np.ndarray,
               config, mesh: Mesh, batch_size: int):
    self.source, self.meta, self.weights = source, meta, weights
    self.config, self.batch_size = config, batch_size
    self.sharding = parallel.data_sharding(mesh)
    self.rows = parallel.local_rows(self.sharding, batch_size)
    self.normalize = str(config.input.get('normalize', 'none'))
    if self.normalize not in NORMALIZE_MODES:
      raise InputError(f'config.input.normalize={self.normalize!r}; use one of '
                       f'{NORMALIZE_MODES}')
    self.pool = concurrent.futures.ThreadPoolExecutor(_num_workers(config),
                                                      thread_name_prefix='decode')

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)

  def host_batch(self, step: int, indices: np.ndarray, mask: np.ndarray,
                 image_fn: Callable[[bytes, int, int, str], np.ndarray],
                 size: int) -> dict[str, np.ndarray]:
    """This process's rows of batch `step` with global rows `indices` [B] (numpy).

    image_fn(bytes, step, global position, description) -> uint8 [size, size, 3].
    """
    rows = self.rows
    local = indices[rows]
    images = np.empty((len(local), size, size, 3), np.uint8)

    def work(k: int) -> None:
      i = int(local[k])
      rec = self.source[i]
      what = f'image_id {int(self.meta.image_id[i])} (row {i})'
      images[k] = image_fn(rec['image'], step, rows.start + k, what)

    for f in [self.pool.submit(work, k) for k in range(len(local))]:
      f.result()  # re-raises a worker's InputError here
    m = self.meta
    return {
        'image': images,
        'votes': m.votes[local],
        'distribution': m.distribution[local],
        'mean_score': m.mean_score[local],
        'label': m.label[local],
        'tags': m.tag_soft[local],
        'weight': (self.weights[local] * mask[rows]).astype(np.float32),
        'image_id': m.image_id[local].astype(np.int32),
        'mask': mask[rows].astype(np.float32),
    }

  def to_global(self, host: dict[str, np.ndarray]) -> Batch:
    out = {}
    for k, v in host.items():
      shape = (self.batch_size,) + v.shape[1:]
      out[k] = jax.make_array_from_process_local_data(self.sharding, v, shape)
    out['image'] = to_model_input(out['image'], normalize=self.normalize)
    return out


def _prefetch(produce: Callable[[int], Batch], items: Iterator[int], depth: int,
              on_close: Callable[[], None],
              _finalizing: Callable[[], bool] = sys.is_finalizing) -> Iterator[Batch]:
  """Runs `produce` over `items` `depth` batches ahead in a daemon thread.

  Closing the iterator (or dropping it) stops the thread and the decode pool; at
  interpreter exit cleanup is skipped (daemon threads end with the process).
  """
  if depth <= 0:
    try:
      for it in items:
        yield produce(it)
    finally:
      if not _finalizing():
        on_close()
    return
  q: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()
  empty, full = queue.Empty, queue.Full  # bound now: module globals may be gone at exit

  def run():
    try:
      for it in items:
        if stop.is_set():
          return
        b = produce(it)
        while not stop.is_set():
          try:
            q.put(b, timeout=0.1)
            break
          except full:
            pass
      q.put(done)
    except BaseException as e:  # surfaced in the consumer
      q.put(e)

  t = threading.Thread(target=run, daemon=True, name='input-prefetch')
  t.start()
  try:
    while True:
      b = q.get()
      if b is done:
        return
      if isinstance(b, BaseException):
        raise b
      yield b
  finally:
    stop.set()
    if _finalizing():
      return
    while t.is_alive():  # unblock a producer waiting on a full queue
      try:
        q.get_nowait()
      except empty:
        t.join(timeout=0.1)
    on_close()


def _train_image_fn(config) -> Callable[[bytes, int, int, str], np.ndarray]:
  rs, s = int(config.input.resize_size), int(config.input.image_size)
  flip, seed = bool(config.input.get('random_flip', False)), int(config.seed)
  if s > rs:
    raise InputError(f'config.input.image_size={s} > config.input.resize_size={rs}; '
                     'set resize_size >= image_size')

  def fn(data: bytes, step: int, position: int, what: str) -> np.ndarray:
    pil = _decode_pil(data, rs, what)
    return preprocess_train_np(pil, rs, s, augment_rng(seed, step, position), flip)
  return fn


def train_batches(source: Sequence[Record], config, mesh: Mesh, start_step: int = 0, *,
                  metadata: Metadata | None = None,
                  metadata_cache: str | os.PathLike | None = None) -> Iterator[Batch]:
  """Infinite training batches (see module docstring and docs/ARCHITECTURE.md).

  Rows: `config.input.balanced` → weighted sampling with replacement, high and low equally
  likely; else uniform, one permutation per epoch. `config.data.max_train_images > 0` uses
  only the first rows. Yields dicts of global arrays sharded over mesh axis 'data':
  image f32 [B,S,S,3] (S = config.input.image_size), votes i32 [B,10], distribution f32
  [B,10], mean_score f32 [B], label i32 [B], tags f32 [B,66], weight f32 [B], image_id i32
  [B], mask f32 [B] (all ones).
  """
  batch_size = int(config.batch_size)
  _check_batch_size(batch_size, mesh, 'config.batch_size')
  meta = metadata if metadata is not None else read_metadata(source, metadata_cache)
  limit = int(config.get('data', {}).get('max_train_images', 0) or 0)
  if limit > 0 and limit < len(meta):
    meta = meta.take(limit)
  n = len(meta)
  if n == 0:
    raise InputError('the training split is empty; check config.data.data_dir and re-run '
                     'launch/prepare_data.py')
  weights = sample_weights(meta.mean_score, meta.label, config.input.get('weighting', 'none'),
                           config.input.get('weight_factor', 7.0),
                           tuple(config.input.get('weight_band', (4.5, 6.5))))
  cdf = (np.cumsum(balanced_probabilities(meta.label))
         if config.input.get('balanced', True) else None)
  seed = int(config.seed)
  loader = _Loader(source, meta, weights, config, mesh, batch_size)
  image_fn = _train_image_fn(config)
  ones = np.ones(batch_size, np.float32)

  def produce(step: int) -> Batch:
    idx = train_indices(step, n, batch_size, seed, cdf)
    return loader.to_global(loader.host_batch(step, idx, ones, image_fn,
                                              int(config.input.image_size)))

  def steps() -> Iterator[int]:
    s = int(start_step)
    while True:
      yield s
      s += 1

  return _prefetch(produce, steps(), int(config.input.get('prefetch', 2)), loader.close)


def num_eval_batches(num_rows: int, batch_size: int) -> int:
  return -(-num_rows // batch_size)


def eval_batches(source: Sequence[Record], config, mesh: Mesh, batch_size: int | None = None,
                 *, metadata: Metadata | None = None,
                 metadata_cache: str | os.PathLike | None = None,
                 max_examples: int | None = None,
                 class_counts: Sequence[int] | None = None) -> Iterator[Batch]:
  """One ordered pass over the source; the last batch is padded with `mask = 0`.

  batch_size defaults to config.eval.batch_size (else config.batch_size). Images are resized
  to config.input.image_size². Padded rows repeat row 0 with mask = weight = 0. `weight`
  uses config.input.weighting with `class_counts` (training counts) for 'class'.
  Same keys, dtypes and sharding as `train_batches`.
  """
  if batch_size is None:
    batch_size = int(config.get('eval', {}).get('batch_size', 0) or config.batch_size)
  _check_batch_size(batch_size, mesh, 'eval batch size (config.eval.batch_size)')
  meta = metadata if metadata is not None else read_metadata(source, metadata_cache)
  if max_examples:
    meta = meta.take(min(int(max_examples), len(meta)))
  n = len(meta)
  weights = sample_weights(meta.mean_score, meta.label, config.input.get('weighting', 'none'),
                           config.input.get('weight_factor', 7.0),
                           tuple(config.input.get('weight_band', (4.5, 6.5))),
                           class_counts=class_counts)
  size = int(config.input.image_size)
  loader = _Loader(source, meta, weights, config, mesh, batch_size)

  def image_fn(data: bytes, step: int, position: int, what: str) -> np.ndarray:
    del step, position
    return preprocess_eval_np(_decode_pil(data, size, what), size)

  def produce(b: int) -> Batch:
    pos = b * batch_size + np.arange(batch_size)
    mask = (pos < n).astype(np.float32)
    idx = np.where(pos < n, pos, 0)
    return loader.to_global(loader.host_batch(b, idx, mask, image_fn, size))

  return _prefetch(produce, iter(range(num_eval_batches(n, batch_size))),
                   int(config.input.get('prefetch', 2)), loader.close)
