"""Data parallelism over all devices of all processes: the mesh, shardings, placement.

No pmap (maintenance mode since JAX 0.8): `jax.jit` over arrays sharded with
`NamedSharding(mesh, P('data'))` on a one-axis `jax.make_mesh` mesh; parameters replicated.
Also the inference micro-batching (`map_batch`, `features_fn`).

Why micro-batches: on XLA:CPU MobileNetV2's early layers (112x112x96 activations) are memory
bound; a batch of 32 spills every activation out of cache (32x112x112x96 f32 = 154 MB), so the
1x1 convs run at a few GFLOP/s. Mapping the encoder over chunks of 2 images keeps each layer's
working set in cache: 3-4x the images/s on 2 cores, bit-identical outputs
(`launch/benchmark.py --what=model` shows both). On GPU/TPU large batches are what is fast,
so `default_chunk()` is 0 (off) there. Inference only: a train-mode BatchNorm would see chunk
statistics instead of batch ones.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aesthetics_jax import cpu_backend, moved


class ShardingError(ValueError):
  """A batch / process layout the mesh cannot take; `str()` is one line with the fix."""


def process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  """Contiguous rows of a global batch that process `process_index` decodes."""
  if global_batch % process_count:
    raise ShardingError(f'batch size {global_batch} is not divisible by the number of '
                     f'processes {process_count}; choose a multiple')
  n = global_batch // process_count
  return slice(process_index * n, (process_index + 1) * n)


def local_rows(sharding: jax.sharding.Sharding, global_batch: int) -> slice:
  """The contiguous leading-axis rows this process's devices hold under `sharding`."""
  idx = sharding.addressable_devices_indices_map((global_batch,))
  starts = sorted({(s[0].start or 0, s[0].stop if s[0].stop is not None else global_batch)
                   for s in idx.values()})
  lo, hi = starts[0][0], starts[-1][1]
  covered = sum(b - a for a, b in starts)
  if covered != hi - lo:
    raise ShardingError('this process\'s devices do not hold one contiguous block of the '
                     "batch; build the mesh with parallel.make_mesh()")
  return slice(lo, hi)


def make_mesh(devices=None) -> Mesh:
  """One-axis mesh `('data',)` over all devices of all processes (process-contiguous), or over
  `devices` (a sequence of devices) when given.

  Auto axis type: shardings propagate as in classic GSPMD `jit` code.
  """
  n = jax.device_count() if devices is None else len(devices)
  return jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def train_mesh() -> Mesh:
  """The mesh training runs on: `make_mesh()`, except on the CPU backend with the one device
  per core that `cpu_backend.configure` added, where each process trains on its first device
  (a computation there still uses every core; sharded over per-core devices a training step
  ran ~10% slower and the feature-cache head steps 6x, `cpu_backend`). A device count the user
  set in XLA_FLAGS trains on every device."""
  if jax.default_backend() != 'cpu' or not cpu_backend.devices_added():
    return make_mesh()
  first: dict[int, Any] = {}
  for d in jax.devices():
    first.setdefault(d.process_index, d)
  return make_mesh([first[p] for p in sorted(first)])


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host pytree (identical on every process) → replicated global jax.Arrays."""
  sh = replicated(mesh)
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def to_host(x: jax.Array) -> np.ndarray:
  """Global (possibly multi-process) array → full numpy copy on this process."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def disagreement(values: dict[str, str]) -> tuple[str, list[str | None], int] | None:
  """The first key (in `values`' order) whose value differs between the processes, with every
  process's value (None: the key is absent there) and how many keys differ; None when all
  agree.

  Every process must call it with its own `values` (collectives). One all-gather of a digest
  when they agree; the values themselves are gathered only when they do not. Processes started
  with different settings otherwise trained silently apart (another seed: each process's own
  "replicated" weights; another data_dir or batch_size) or hung in mismatched collectives.
  """
  if jax.process_count() == 1:
    return None
  blob = json.dumps(values).encode()
  digest = np.frombuffer(hashlib.sha256(blob).digest()[:8], np.uint32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  if (digests == digests[0]).all():
    return None
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(blob)))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.int32)
  padded[:len(blob)] = np.frombuffer(blob, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(padded))
  per_process = [json.loads(bytes(r[:n].astype(np.uint8))) for r, n in zip(rows, sizes)]
  keys = list(dict.fromkeys(k for d in per_process for k in d))
  differ = [k for k in keys if len({json.dumps(d.get(k)) for d in per_process}) > 1]
  if not differ:  # a digest collision in 64 bits: as good as agreeing
    return None
  return differ[0], [d.get(differ[0]) for d in per_process], len(differ)


# How a collective reports a process that went away: XLA:CPU's Gloo ("Gloo all-reduce failed:
# ... Connection reset by peer"), or JAX's distributed service, whose barriers (orbax's, in a
# checkpoint save) fail once the process missed its heartbeats ("Task 1 heartbeat timeout").
_GLOO_LOST = ('Connection reset by peer', 'Connection closed by peer', 'Connection refused',
              'Broken pipe', 'Socket closed')


def lost_process_error(e: BaseException | None) -> str | None:
  """The first line of `e`, or of an error it was raised from, when it says that another
  process of the job went away in a collective (killed, crashed, or exited after an error of
  its own); None otherwise."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    head = (str(e).strip().splitlines() or [''])[0]
    if ('Gloo' in head and any(s in head for s in _GLOO_LOST)) or 'heartbeat timeout' in head:
      # 'UNKNOWN: Gloo all-reduce failed: [external/gloo/.../pair.cc:538] Read error ...'
      return re.sub(r'\[external/[^\]]*\] ', '', head.removeprefix('UNKNOWN: '))
    e = e.__cause__ or e.__context__
  return None


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
  """Pads host rows [B,...] to a multiple of `multiple` (device count, batch size) with row 0.

  Returns (padded [B2,...], B): a batch axis sharded over every device must divide evenly.
  """
  b = x.shape[0]
  pad = (-b) % max(1, int(multiple))
  if pad:
    x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
  return x, b


def capped_batch_size(batch_size: int, rows: int, num_devices: int) -> int:
  """`batch_size`, at most `rows`, rounded up to a multiple of `num_devices`: evaluation
  batches are padded to the batch size, so a larger one only adds padding
  (--config.eval.batch_size=20000 trained the smoke run in 3 GB and 3x the time), and a
  batch the devices cannot split is padded up to one they can (padding rows are masked)."""
  return -(-min(int(batch_size), max(1, int(rows))) // num_devices) * num_devices


# Images per chunk on the CPU backend (measured: 2 is best for MobileNetV2 at 224 px).
CPU_CHUNK = 2


def default_chunk(backend: str | None = None) -> int:
  """Chunk size for inference forwards: `CPU_CHUNK` on CPU, 0 (no chunking) elsewhere."""
  backend = backend or jax.default_backend()
  return CPU_CHUNK if backend == 'cpu' else 0


def map_batch(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int,
              num_shards: int = 1) -> Any:
  """`fn(x)` computed `chunk` rows (per shard) at a time; equal to `fn(x)` for row-wise `fn`.

  Args:
    fn: `[b, ...] -> pytree of [b, ...]`, independent per row (inference forward).
    x: `[B, ...]` (or a pytree of such arrays, one B); with `num_shards > 1`, sharded over
      its leading axis in `num_shards`
      contiguous blocks (a data-parallel mesh axis): each step of the map takes `chunk` rows
      of every block, so no rows move between devices.
    chunk: rows per shard per step; `<= 0` disables chunking.
    num_shards: devices the leading axis is split over.
  Returns:
    pytree of `[B, ...]`, rows in the order of `x`. Falls back to `fn(x)` when `B` is not a
    multiple of `chunk * num_shards` or is not larger than it.
  """
  b = jax.tree.leaves(x)[0].shape[0]
  step = chunk * num_shards
  if chunk <= 0 or b <= step or b % step:
    return fn(x)
  n = b // step

  def stack(v):
    # [B] = [shards, n, chunk] -> [n, shards * chunk]: step i holds rows i*chunk.. of each block.
    rest = v.shape[1:]
    return v.reshape((num_shards, n, chunk) + rest).swapaxes(0, 1).reshape((n, step) + rest)

  ys = jax.lax.map(fn, jax.tree.map(stack, x))

  def unstack(y):
    tail = y.shape[2:]
    return y.reshape((n, num_shards, chunk) + tail).swapaxes(0, 1).reshape((b,) + tail)

  return jax.tree.map(unstack, ys)


def features_fn(model, chunk: int | None = None, num_shards: int = 1):
  """`(variables, x [B,H,W,3]) -> A [B,h,w,C]`: the model's inference `features`, chunked
  (`chunk` images a step; a model's `CHUNK_SPLIT = (layer, factor)` runs the layers after
  `layer` `chunk * factor` images a step).

  `chunk=None` uses `default_chunk()`. Call inside `jax.jit`.
  """
  c = default_chunk() if chunk is None else int(chunk)
  # Work that depends only on the variables (VGG16's Winograd kernels) runs once, not per chunk.
  prepare = getattr(model, 'inference_variables', lambda v: v)
  # (layer, factor): the encoder up to `layer` in chunks of c, the rest in chunks of c*factor
  # (MobileNetV2: large early maps want small chunks, later small maps bigger GEMMs).
  split = getattr(model, 'CHUNK_SPLIT', None) if c > 0 else None

  def features(variables, x):
    variables = prepare(variables)
    if split is None:
      return map_batch(lambda xi: model.apply(variables, xi, train=False, method='features'),
                       x, c, num_shards)
    layer, factor = split
    a = map_batch(lambda xi: model.apply(variables, xi, layer, train=False,
                                         method='features_until'), x, c, num_shards)
    return map_batch(lambda ai: model.apply(variables, ai, layer, model.default_layer,
                                            train=False, method='features_between'),
                     a, c * factor, num_shards)

  return features


# `host_cpu_count` moved to `cpu_backend` (JAX-free) in 2026-12.
__getattr__ = moved.forwarder(__name__, {'host_cpu_count': 'aesthetics_jax.cpu_backend'})
