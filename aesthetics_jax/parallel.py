"""Inference over a batch in small chunks inside one jitted function (`lax.map`).

Why: on XLA:CPU MobileNetV2's early layers (112x112x96 activations) are memory bound; a
batch of 32 spills every activation out of cache (32x112x112x96 f32 = 154 MB), so the 1x1
convs run at a few GFLOP/s. Mapping the encoder over chunks of 2 images keeps each layer's
working set in cache: 3-4x the images/s on 2 cores, bit-identical outputs
(`launch/benchmark.py --what=model` shows both). On GPU/TPU large batches are what is fast,
so `default_chunk()` is 0 (off) there.

Inference only: a train-mode BatchNorm would see chunk statistics instead of batch ones.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

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
    x: `[B, ...]`; with `num_shards > 1`, sharded over its leading axis in `num_shards`
      contiguous blocks (a data-parallel mesh axis): each step of the map takes `chunk` rows
      of every block, so no rows move between devices.
    chunk: rows per shard per step; `<= 0` disables chunking.
    num_shards: devices the leading axis is split over.
  Returns:
    pytree of `[B, ...]`, rows in the order of `x`. Falls back to `fn(x)` when `B` is not a
    multiple of `chunk * num_shards` or is not larger than it.
  """
  b = x.shape[0]
  step = chunk * num_shards
  if chunk <= 0 or b <= step or b % step:
    return fn(x)
  n = b // step
  rest = x.shape[1:]
  # [B] = [shards, n, chunk] -> [n, shards * chunk]: step i holds rows i*chunk.. of each block.
  xs = x.reshape((num_shards, n, chunk) + rest).swapaxes(0, 1).reshape((n, step) + rest)
  ys = jax.lax.map(fn, xs)

  def unstack(y):
    tail = y.shape[2:]
    return y.reshape((n, num_shards, chunk) + tail).swapaxes(0, 1).reshape((b,) + tail)

  return jax.tree.map(unstack, ys)


def features_fn(model, chunk: int | None = None, num_shards: int = 1):
  """`(variables, x [B,H,W,3]) -> A [B,h,w,C]`: the model's inference `features`, chunked.

  `chunk=None` uses `default_chunk()`. Call inside `jax.jit`.
  """
  c = default_chunk() if chunk is None else int(chunk)

  def features(variables, x):
    return map_batch(lambda xi: model.apply(variables, xi, train=False, method='features'),
                     x, c, num_shards)

  return features
