"""google's `grain` doing our input pipeline's work: a reference formulation (optional extra).

`train_batches` / `eval_batches` here yield exactly the batches of `data.pipeline`'s functions
of the same name (same rows, crops, flips, keys, dtypes and sharding), written the way grain
is meant to be used, so `--what=input` can time one against the other like for like:

  MapDataset.range(L)                       element k of this process's stream
    .map(_Locate)                           k → step, global batch position, source row, mask
    .map(_Read(MapDataset.source(source)))  + the record's JPEG bytes (random access)
    .map(_Preprocess)                       → uint8 [S,S,3] (+ its mirror flag), as ours
  'threads':   .to_iter_dataset(ReadOptions(num_threads=W, ...)).batch(b)
  'processes': .batch(b).to_iter_dataset(ReadOptions(num_threads=0)).mp_prefetch(W workers)

Rows per step come from `sampling.train_indices` (balanced, deterministic in (seed, step));
crops from `preprocess.augment_draws(seed, step, ...)` row `position`; each process only maps the
positions of its own rows (`parallel.local_rows`). In 'processes' mode batches are formed
before the workers' round-robin slicing, so a batch's rows do not depend on the worker count.
`Batches.get_state()` is grain's JSON-able iterator state (what `grain.checkpoint.
CheckpointHandler` saves with orbax): ours needs none, the step is the state.

Measured against ours, and why ours was kept: docs/ARCHITECTURE.md (input pipeline).
grain is imported inside the functions only: importing this module needs no grain.
The `_Locate` / `_Read` / `_Preprocess` callables are module-level classes so that
grain's spawned worker processes can unpickle them.
"""
from __future__ import annotations

import importlib
import os
import signal
from typing import Any, Iterator, Sequence

import numpy as np
from jax.sharding import Mesh

from aesthetics_jax import parallel
from aesthetics_jax.bench.sections import GRAIN_MODES
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import sampling
from aesthetics_jax.data.sampling import Metadata, Record

INSTALL = "pip install -e '.[bench]'"
MODES = GRAIN_MODES
# Length of the training stream in steps (grain's MapDataset has a length; ours is a
# generator). Far beyond any run: 2**31 steps.
_MAX_STEPS = 2 ** 31


def unavailable() -> str | None:
  """None if grain imports; else why not, in one line."""
  try:
    importlib.import_module('grain')
  except Exception as e:  # pylint: disable=broad-except
    return f'grain: {type(e).__name__}: {(str(e).splitlines() or [""])[0]}'
  return None


def version() -> str | None:
  try:
    return importlib.import_module('grain').__version__
  except Exception:  # pylint: disable=broad-except
    return None


class _Locate:
  """Element k of this process's stream → {'step', 'position', 'row', 'mask'}.

  With b = this process's rows per batch: step = start_step + k // b and the global batch
  position is rows.start + k % b. Train: row = sampling.train_indices(step, ...)[position].
  Eval: row = step * batch_size + position, or row 0 with mask 0 past the end (padding).
  """

  def __init__(self, *, train: bool, batch_size: int, rows: slice, num_rows: int,
               seed: int = 0, cdf: np.ndarray | None = None, start_step: int = 0):
    self.train, self.batch_size, self.num_rows = train, batch_size, num_rows
    self.start, self.local = rows.start, rows.stop - rows.start
    self.seed, self.cdf, self.start_step = seed, cdf, start_step
    # train_indices draws a whole step at once; consecutive elements share a step.
    self._last: tuple[int, np.ndarray] | None = None

  def _indices(self, step: int) -> np.ndarray:
    last = self._last  # one read: threads may replace it concurrently
    if last is None or last[0] != step:
      last = (step, sampling.train_indices(step, self.num_rows, self.batch_size, self.seed,
                                           self.cdf))
      self._last = last
    return last[1]

  def __call__(self, k: int) -> dict[str, Any]:
    k = int(k)
    step = self.start_step + k // self.local
    position = self.start + k % self.local
    if self.train:
      row, mask = int(self._indices(step)[position]), 1.0
    else:
      p = step * self.batch_size + position
      row, mask = (p, 1.0) if p < self.num_rows else (0, 0.0)
    return {'step': step, 'position': position, 'row': row, 'mask': mask}


class _Read:
  """Adds the record's JPEG bytes and image_id (random access into a grain MapDataset)."""

  def __init__(self, records):
    self.records = records

  def __call__(self, el: dict[str, Any]) -> dict[str, Any]:
    rec = self.records[el['row']]
    return dict(el, data=rec['image'], image_id=int(rec['image_id']))


class _Preprocess:
  """{..., data: bytes} → {'image': uint8 [S,S,3], 'row': i64, 'mask': f32} (+ 'flip': bool
  when training with random flips: mirrored on the device by `to_global`), as ours does."""

  def __init__(self, *, train: bool, resize_size: int, image_size: int, seed: int = 0,
               random_flip: bool = False, batch_size: int = 0):
    self.train, self.rs, self.s = train, resize_size, image_size
    self.seed, self.flip, self.batch_size = seed, random_flip, batch_size

  def __call__(self, el: dict[str, Any]) -> dict[str, Any]:
    what = f"image_id {el['image_id']} (row {el['row']})"
    out = {'row': np.int64(el['row']), 'mask': np.float32(el['mask'])}
    if self.train:
      offsets, mirror = ip.step_draws(self.seed, int(el['step']), self.batch_size, self.rs,
                                      self.s, self.flip)
      j = int(el['position'])
      out['image'] = preprocess.crop_np(el['data'], self.rs, self.s, offsets[j], what)
      if self.flip:
        out['flip'] = np.bool_(mirror[j])
    else:
      out['image'] = preprocess.preprocess_eval_np(el['data'], self.s, what)
    return out


class Batches(Iterator[ip.Batch]):
  """Global batches (as `pipeline.train_batches` yields) from a grain dataset of host rows.

  `get_state` / `set_state`: grain's iterator state (JSON-able; orbax saves it with
  `grain.checkpoint.CheckpointSave`). `close()` stops grain's threads / worker processes.
  """

  def __init__(self, ds, meta: Metadata, weights: np.ndarray, sharding, batch_size: int,
               normalize: str):
    self._it = iter(ds)
    self.meta, self.weights, self.sharding = meta, weights, sharding
    self.batch_size, self.normalize = batch_size, normalize

  def __next__(self) -> ip.Batch:
    el = next(self._it)
    host = ip.row_targets(self.meta, self.weights, np.asarray(el['row'], np.int64),
                          np.asarray(el['mask'], np.float32))
    host['image'] = np.asarray(el['image'])
    if 'flip' in el:
      host['flip'] = np.asarray(el['flip'], bool)
    return ip.to_global(host, self.sharding, self.batch_size, self.normalize)

  def get_state(self) -> dict[str, Any]:
    return self._it.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._it.set_state(state)

  def close(self) -> None:
    self._it.close()


def _dataset(source: Sequence[Record], locate: _Locate, prep: _Preprocess, length: int,
             mode: str, workers: int, prefetch: int):
  """The grain IterDataset of host batches {'image' [b,S,S,3], 'row' [b], 'mask' [b]}."""
  import grain  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  if mode not in MODES:
    raise ValueError(f'mode={mode!r}; use one of {MODES}')
  if not flags.FLAGS.is_parsed():
    # grain reads its absl flags while iterating and raises UnparsedFlagAccessError outside
    # an absl app (google/grain#1355, #1360); the workaround given there: mark the
    # defaults parsed.
    flags.FLAGS.mark_as_parsed()
  b = locate.local
  ds = (grain.MapDataset.range(length).map(locate)
        .map(_Read(grain.MapDataset.source(source))).map(prep))
  if mode == 'threads':
    # Images in parallel (as ours); `prefetch` batches of look-ahead, as config.input.prefetch.
    read = grain.ReadOptions(num_threads=workers,
                             prefetch_buffer_size=max(workers, max(1, prefetch) * b))
    return ds.to_iter_dataset(read).batch(b)
  # One whole batch per worker process at a time, sequential inside the worker; grain
  # round-robins the workers' batches back into step order.
  ds = ds.batch(b).to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return ds.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=workers, per_worker_buffer_size=max(1, prefetch)), worker_init_fn=_quiet_worker)


def _quiet_worker(index: int, count: int) -> None:
  """A worker process leaves Ctrl-C to the benchmark, which closes it: a terminal's Ctrl-C
  reaches the whole process group, and each worker printed its own KeyboardInterrupt
  ('Exception ignored in ... _xla_gc_callback') after the benchmark's one line."""
  del index, count
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_batches(source: Sequence[Record], config, mesh: Mesh, start_step: int = 0, *,
                  mode: str = 'threads', metadata: Metadata | None = None,
                  metadata_cache: str | os.PathLike | None = None) -> Batches:
  """`pipeline.train_batches`'s batches, decoded by grain (`mode`: 'threads' | 'processes',
  config.input.num_workers threads or worker processes)."""
  batch_size = int(config.batch_size)
  meta = metadata if metadata is not None else sampling.read_metadata(source, metadata_cache)
  limit = int(config.data.max_train_images)
  if 0 < limit < len(meta):
    meta = meta.take(limit)
  weights, cdf = ip.train_sampling(meta, config)
  sharding = parallel.data_sharding(mesh)
  rows = parallel.local_rows(sharding, batch_size)
  locate = _Locate(train=True, batch_size=batch_size, rows=rows, num_rows=len(meta),
                   seed=int(config.seed), cdf=cdf, start_step=int(start_step))
  prep = _Preprocess(train=True, resize_size=int(config.input.resize_size),
                     image_size=int(config.input.image_size), seed=int(config.seed),
                     random_flip=bool(config.input.random_flip), batch_size=batch_size)
  ds = _dataset(source, locate, prep, _MAX_STEPS * locate.local, mode, ip.num_workers(config),
                int(config.input.prefetch))
  return Batches(ds, meta, weights, sharding, batch_size, str(config.input.normalize))


def eval_batches(source: Sequence[Record], config, mesh: Mesh,
                 batch_size: int | None = None, *, mode: str = 'threads',
                 metadata: Metadata | None = None,
                 class_counts: Sequence[int] | None = None) -> Batches:
  """`pipeline.eval_batches`'s batches (one ordered pass, the last padded with mask 0),
  decoded by grain."""
  if batch_size is None:
    batch_size = int(config.eval.batch_size or config.batch_size)
  meta = metadata if metadata is not None else sampling.read_metadata(source)
  sharding = parallel.data_sharding(mesh)
  rows = parallel.local_rows(sharding, batch_size)
  locate = _Locate(train=False, batch_size=batch_size, rows=rows, num_rows=len(meta))
  prep = _Preprocess(train=False, resize_size=int(config.input.image_size),
                     image_size=int(config.input.image_size))
  length = ip.num_eval_batches(len(meta), batch_size) * locate.local
  ds = _dataset(source, locate, prep, length, mode, ip.num_workers(config),
                int(config.input.prefetch))
  return Batches(ds, meta, ip.loss_weights(meta, config, class_counts), sharding,
                 batch_size, str(config.input.normalize))
