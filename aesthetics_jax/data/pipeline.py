"""Input pipeline: a data source → global batches sharded over mesh axis `'data'`.

A step's global row list comes from `sampling.train_indices` (training) or is the source
order (eval); each image is decoded and preprocessed on the host by `preprocess` in a thread
pool, `config.input.prefetch` batches ahead of the consumer, and reaches the device as uint8,
where `preprocess.to_model_input` makes it float32.

Determinism: the rows of step `s` depend only on `(seed, s)`, and the crop/flip of the image
at position `j` of the global batch only on `(seed, s, j)` and the batch size
(`preprocess.augment_draws`) — so a run resumed at step k sees
the batches an uninterrupted run sees, whatever the number of workers or processes.

Multi-host: every process draws the same global index list for a step and decodes only its
own contiguous rows (those of its addressable devices), then
`jax.make_array_from_process_local_data` assembles the global `jax.Array`.

No pmap: data parallelism is `jax.jit` over arrays sharded with
`NamedSharding(mesh, P('data'))` on a one-axis `jax.make_mesh` mesh (`parallel.make_mesh`).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import os
import queue
import sys
import threading
import time
from typing import Callable, ContextManager, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from aesthetics_jax import cpu_backend
from aesthetics_jax import parallel
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import resized_store
from aesthetics_jax.data import sampling
from aesthetics_jax.data.preprocess import InputError
from aesthetics_jax.data.sampling import Metadata, Record

Batch = dict[str, jax.Array]
# (read the encoded image, source row, step, global position, description)
#   -> (uint8 [S,S,3], mirror it left-right): the mirror is applied on the device
ImageFn = Callable[[Callable[[], bytes], int, int, int, str], tuple[np.ndarray, bool]]


def _check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    raise InputError(f'{what}={batch_size} must be a positive multiple of the device count '
                     f'{n}; set it to e.g. {max(n, (max(batch_size, 1) // n) * n)}')


def num_workers(config) -> int:
  """Decode threads for `config.input.num_workers` (0: one per CPU core this process may use)."""
  n = int(config.input.num_workers)
  return n if n > 0 else cpu_backend.host_cpu_count()


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
    self.normalize = str(config.input.normalize)
    if self.normalize not in preprocess.NORMALIZE_MODES:
      raise InputError(f'config.input.normalize={self.normalize!r}; use one of '
                       f'{preprocess.NORMALIZE_MODES}')
    self.pool = concurrent.futures.ThreadPoolExecutor(num_workers(config),
                                                      thread_name_prefix='decode')

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)

  def host_batch(self, step: int, indices: np.ndarray, mask: np.ndarray,
                 image_fn: ImageFn, size: int, flips: bool = False) -> dict[str, np.ndarray]:
    """This process's rows of batch `step` with global rows `indices` [B] (numpy).

    image_fn(read bytes, source row, step, global position, description) -> (uint8
    [size, size, 3], mirror); it calls `read()` only when it needs the encoded image.
    `flips`: the batch carries 'flip' bool [b] (`to_global` mirrors those images on the
    device); without it image_fn must never ask for a mirror.
    """
    rows = self.rows
    local = indices[rows]
    images = np.empty((len(local), size, size, 3), np.uint8)
    flip = np.zeros(len(local), bool)

    def work(k: int) -> None:
      i = int(local[k])
      what = f'image_id {int(self.meta.image_id[i])} (row {i})'
      images[k], flip[k] = image_fn(lambda: self.source[i]['image'], i, step, rows.start + k,
                                    what)

    # Rows the image function serves from memory (`ResizedCache`: a crop) run right here:
    # waking the decode threads for them costs the model more than the copy.
    cheap = getattr(image_fn, 'cheap', None)
    futures = []
    for k in range(len(local)):
      if cheap is not None and cheap(int(local[k])):
        work(k)
      else:
        futures.append(self.pool.submit(work, k))
    for f in futures:
      f.result()  # re-raises a worker's InputError here
    if flip.any() and not flips:
      raise AssertionError('an image function asked for a mirror in a batch without flips')
    out = dict(row_targets(self.meta, self.weights, local, mask[rows]), image=images)
    return dict(out, flip=flip) if flips else out

  def to_global(self, host: dict[str, np.ndarray]) -> Batch:
    return to_global(host, self.sharding, self.batch_size, self.normalize)


def row_targets(meta: Metadata, weights: np.ndarray, rows: np.ndarray,
                mask: np.ndarray) -> dict[str, np.ndarray]:
  """A batch's per-row arrays other than the image, for source rows `rows` i64 [b] with
  `mask` [b] (1 = real row): votes, distribution, mean_score, label, tags, weight (= weights
  x mask), image_id, mask — the dtypes of the `train_batches` docstring."""
  return {
      'votes': meta.votes[rows],
      'distribution': meta.distribution[rows],
      'mean_score': meta.mean_score[rows],
      'label': meta.label[rows],
      'tags': meta.tag_soft[rows],
      'weight': (weights[rows] * mask).astype(np.float32),
      'image_id': meta.image_id[rows].astype(np.int32),
      'mask': mask.astype(np.float32),
  }


def to_global(host: dict[str, np.ndarray], sharding, batch_size: int,
              normalize: str = 'none') -> Batch:
  """This process's rows (leading axis b <= batch_size) → global arrays of `batch_size` rows
  sharded by `sharding`; `host['image']` uint8 [b,S,S,3] becomes f32 via `to_model_input`,
  mirrored where `host['flip']` (bool [b], optional; not in the result) says so."""
  # One call for the whole dict: a single batched transfer (one call per array cost ~0.5 ms
  # more per batch).
  out = jax.make_array_from_process_local_data(
      sharding, dict(host), {k: (batch_size,) + v.shape[1:] for k, v in host.items()})
  out['image'] = preprocess.to_model_input(out['image'], normalize=normalize,
                                           flip=out.pop('flip', None))
  return out


def closing(batches: Iterable[Batch]) -> ContextManager[Iterable[Batch]]:
  """`with closing(batches) as it: for b in it: ...` stops the decode threads however the
  loop ends. A loop that raises leaves a suspended iterator to the garbage collector, and a
  traceback kept for debugging (pytest's, a notebook's last one) keeps its threads alive."""
  return (contextlib.closing(batches) if callable(getattr(batches, 'close', None))
          else contextlib.nullcontext(batches))


class _Producer:
  """The prefetch thread of one iterator: its stop flag and queue, so that the iterator's
  close and `_stop_producers` at interpreter exit can stop it."""

  def __init__(self, thread: threading.Thread, stop: threading.Event, q: queue.Queue):
    self.thread, self.stop, self.q = thread, stop, q

  def halt(self, timeout: float | None = None) -> None:
    """Stops the thread and waits for it (at most `timeout` seconds), unblocking a put on
    the full queue."""
    self.stop.set()
    deadline = None if timeout is None else time.monotonic() + timeout
    while self.thread.is_alive() and (deadline is None or time.monotonic() < deadline):
      try:
        self.q.get_nowait()
      except queue.Empty:
        self.thread.join(timeout=0.1)


_producers: set[_Producer] = set()  # the prefetch threads of iterators not closed yet
_EXIT_WAIT_S = 10.0  # at most this long at exit for the threads to leave XLA


@atexit.register
def _stop_producers() -> None:
  """At interpreter exit, before the daemon threads are stopped (and, registered after JAX's
  import, before JAX clears its backends): stops the prefetch threads of iterators still
  open. A script that left one open (`it = iter(eval_batches(...)); next(it)`) ended in half
  of its runs with 'FATAL: exception not rethrown', exit 134: the thread, inside XLA's
  transfer, was stopped with C++ frames on its stack."""
  deadline = time.monotonic() + _EXIT_WAIT_S
  for p in list(_producers):
    p.stop.set()
  for p in list(_producers):
    p.halt(max(0.0, deadline - time.monotonic()))


def _prefetch(produce: Callable[[int], Batch], items: Iterator[int], depth: int,
              on_close: Callable[[], None],
              _finalizing: Callable[[], bool] = sys.is_finalizing) -> Iterator[Batch]:
  """Runs `produce` over `items` `depth` batches ahead in a daemon thread.

  Closing the iterator (or dropping it) stops the thread and the decode pool; so does
  interpreter exit (`_stop_producers`) for an iterator left open.
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
  full = queue.Full  # bound now: module globals may be gone at exit

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
      if not stop.is_set():  # a stopped consumer takes nothing more (nor would a full queue)
        q.put(e)

  t = threading.Thread(target=run, daemon=True, name='input-prefetch')
  producer = _Producer(t, stop, q)
  _producers.add(producer)
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
    _producers.discard(producer)
    producer.halt()
    on_close()


def loss_weights(meta: Metadata, config,
                 class_counts: Sequence[int] | None = None) -> np.ndarray:
  """f32 [N] loss weights of `meta`'s rows under config.input.weighting."""
  return sampling.sample_weights(meta.mean_score, meta.label,
                                 config.input.weighting,
                                 config.input.weight_factor,
                                 tuple(config.input.weight_band),
                                 class_counts=class_counts)


def train_sampling(meta: Metadata, config) -> tuple[np.ndarray, np.ndarray | None]:
  """(loss weights f32 [N], sampling CDF f64 [N] or None) of the training rows `meta`.

  `config.input.balanced`: rows drawn with replacement, each class equally often (the CDF of
  `sampling.balanced_probabilities`); else None (uniform epochs). Refuses 'class' loss
  weights on top of balanced sampling (`sampling.check_weighting`).
  """
  sampling.check_weighting(bool(config.input.balanced), str(config.input.weighting))
  cdf = (np.cumsum(sampling.balanced_probabilities(meta.label))
         if config.input.balanced else None)
  return loss_weights(meta, config), cdf


class ResizedCache:
  """Decoded, resized training images (uint8 [R,R,3], before the random crop) by source row,
  up to `budget_bytes`; rows past the budget are decoded every time they are drawn.

  The resize is deterministic and the crop/flip come after it, so a cached row gives the
  same pixels as decoding it again; from the second epoch on, a cached row costs a crop
  (a copy) instead of a JPEG decode and a resize, which otherwise compete with the model
  for the CPU (`launch/benchmark.py --what=input`). Filled by the decode threads; a row
  decoded twice at once is stored once (dict assignment is atomic under the GIL).
  """

  def __init__(self, budget_bytes: int, resize_size: int):
    self.item_bytes = resize_size * resize_size * 3
    self.capacity = max(0, int(budget_bytes) // self.item_bytes)
    self.rows: dict[int, np.ndarray] = {}

  def get(self, row: int) -> np.ndarray | None:
    return self.rows.get(row)

  def put(self, row: int, resized: np.ndarray) -> None:
    if len(self.rows) < self.capacity:
      self.rows[row] = resized

  @property
  def nbytes(self) -> int:
    return len(self.rows) * self.item_bytes


@functools.lru_cache(maxsize=16)  # a few steps in flight (prefetch); thread-safe
def step_draws(seed: int, step: int, batch_size: int, resize_size: int, image_size: int,
               random_flip: bool) -> tuple[list[list[int]], list[bool]]:
  """`preprocess.augment_draws` as lists, drawn once per step: a step's images ask for their
  row one by one."""
  offsets, mirror = preprocess.augment_draws(seed, step, batch_size, resize_size, image_size,
                                             random_flip)
  return offsets.tolist(), mirror.tolist()


def _train_image_fn(config, cache: ResizedCache | None = None,
                    prepared: Callable[[int], np.ndarray] | None = None) -> ImageFn:
  """The training image function; `prepared(row)`: the row already decoded and resized
  (`resized_store`), cropped instead of decoding (then `cache` is not used)."""
  rs, s = int(config.input.resize_size), int(config.input.image_size)
  flip, seed, batch_size = bool(config.input.random_flip), int(config.seed), int(config.batch_size)
  if s > rs:
    raise InputError(f'config.input.image_size={s} > config.input.resize_size={rs}; '
                     'set resize_size >= image_size')

  def fn(read: Callable[[], bytes], row: int, step: int, position: int,
         what: str) -> tuple[np.ndarray, bool]:
    offsets, mirror = step_draws(seed, step, batch_size, rs, s, flip)
    if prepared is not None:
      return preprocess.crop_np(prepared(row), rs, s, offsets[position], what), mirror[position]
    if cache is None:
      return preprocess.crop_np(read(), rs, s, offsets[position], what), mirror[position]
    resized = cache.get(row)
    if resized is None:
      resized = preprocess.resize_train_np(read(), rs, what)
      cache.put(row, resized)
    return preprocess.crop_np(resized, rs, s, offsets[position], what), mirror[position]
  if cache is not None:
    fn.cheap = cache.rows.__contains__  # type: ignore[attr-defined]
  return fn


def resized_cache(config) -> ResizedCache | None:
  """The training pipeline's `ResizedCache` of `config.input.resized_cache_mb` MB; None at 0."""
  mb = float(config.input.resized_cache_mb)
  if mb < 0:
    raise InputError(f'config.input.resized_cache_mb={mb:g} must be >= 0 (0 turns the cache '
                     'of resized training images off)')
  return ResizedCache(int(mb * 2 ** 20), int(config.input.resize_size)) if mb > 0 else None


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
  meta = metadata if metadata is not None else sampling.read_metadata(source, metadata_cache)
  limit = int(config.data.max_train_images)
  if limit > 0 and limit < len(meta):
    meta = meta.take(limit)
  n = len(meta)
  if n == 0:
    raise InputError('the training split is empty; check config.data.data_dir and re-run '
                     'launch/prepare_data.py')
  weights, cdf = train_sampling(meta, config)
  seed = int(config.seed)
  loader = _Loader(source, meta, weights, config, mesh, batch_size)
  # Rows prepared decoded and resized (`resized_store`) are cropped, not decoded: the same
  # pixels without the decode's CPU, and no memory cache is needed.
  prepared = resized_store.resized_fn(source, int(config.input.resize_size))
  image_fn = _train_image_fn(config, None if prepared else resized_cache(config), prepared)
  ones = np.ones(batch_size, np.float32)

  def produce(step: int) -> Batch:
    idx = sampling.train_indices(step, n, batch_size, seed, cdf)
    return loader.to_global(loader.host_batch(step, idx, ones, image_fn,
                                              int(config.input.image_size),
                                              flips=bool(config.input.random_flip)))

  def steps() -> Iterator[int]:
    s = int(start_step)
    while True:
      yield s
      s += 1

  return _prefetch(produce, steps(), int(config.input.prefetch), loader.close)


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
    batch_size = int(config.eval.batch_size or config.batch_size)
  _check_batch_size(batch_size, mesh, 'eval batch size (config.eval.batch_size)')
  meta = metadata if metadata is not None else sampling.read_metadata(source, metadata_cache)
  if max_examples:
    meta = meta.take(min(int(max_examples), len(meta)))
  n = len(meta)
  weights = loss_weights(meta, config, class_counts)
  size = int(config.input.image_size)
  loader = _Loader(source, meta, weights, config, mesh, batch_size)

  def image_fn(read: Callable[[], bytes], row: int, step: int, position: int,
               what: str) -> tuple[np.ndarray, bool]:
    del row, step, position
    return preprocess.preprocess_eval_np(read(), size, what), False

  def produce(b: int) -> Batch:
    pos = b * batch_size + np.arange(batch_size)
    mask = (pos < n).astype(np.float32)
    idx = np.where(pos < n, pos, 0)
    return loader.to_global(loader.host_batch(b, idx, mask, image_fn, size))

  return _prefetch(produce, iter(range(num_eval_batches(n, batch_size))),
                   int(config.input.prefetch), loader.close)
