"""Which rows a training step takes, and the per-row targets and weights (pure numpy).

`read_metadata` reads every row's image_id / votes / tags once, without decoding images,
into a `Metadata` of targets (cached per source object and optionally on disk).
`sample_weights` gives per-row loss weights; `train_indices` the global rows of a step.

Determinism: the rows of step `s` depend only on `(seed, s)` (`train_indices`), so a run
resumed at step k sees the rows an uninterrupted run sees, whatever the number of workers or
processes; every process draws the same global index list.
"""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aesthetics_jax.data import ava
from aesthetics_jax.data.errors import InputError
from aesthetics_jax.io import atomic_write_bytes

WEIGHT_SCHEMES = ('none', 'class', 'score')

# Stream tag mixed into the seed so the sampler draws a random stream independent of the
# augmentations' (data/preprocess.py) for the same (seed, step).
_SAMPLER_STREAM = 0x5A3D1E

Record = Mapping[str, Any]


# ---------------------------------------------------------------------------------------
# Metadata (targets, labels), computed once without decoding images.
# ---------------------------------------------------------------------------------------


def _targets(votes: np.ndarray, tags: np.ndarray):
  try:
    return ava.votes_to_targets(votes), ava.tags_to_soft_labels(tags, ava.NUM_TAGS)
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
    votes = np.asarray(votes, np.int32).reshape(-1, ava.NUM_BUCKETS)
    tags = np.asarray(tags, np.int32).reshape(votes.shape[0], -1)
    t, soft = _targets(votes, tags)
    return cls(image_id=np.asarray(image_id, np.int64), votes=votes, tags=tags,
               distribution=np.asarray(t['distribution'], np.float32),
               mean_score=np.asarray(t['mean_score'], np.float32),
               label=np.asarray(t['label'], np.int32),
               tag_soft=np.asarray(soft, np.float32))

  def take(self, n: int) -> 'Metadata':
    return Metadata(**{f.name: getattr(self, f.name)[:n] for f in dataclasses.fields(self)})

  def select(self, rows: np.ndarray) -> 'Metadata':
    """The rows `rows` (i64 [M]), in that order (a `validation.Rows` view's metadata)."""
    return Metadata(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

  def save(self, path: str | os.PathLike) -> None:
    """Atomic .npz write (raw columns only; targets are recomputed on load)."""
    buf = io.BytesIO()
    np.savez(buf, image_id=self.image_id, votes=self.votes, tags=self.tags)
    atomic_write_bytes(path, buf.getvalue())

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
    votes = np.zeros((n, ava.NUM_BUCKETS), np.int32)
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
          votes[i] = np.asarray(rec['votes']).reshape(ava.NUM_BUCKETS)
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


def check_weighting(balanced: bool, scheme: str) -> None:
  """Raises InputError (one line) for loss weights that repeat what the sampler does.

  The paper's class weighting (1 / N_c) is a way of sampling: balanced sampling draws each
  row with probability proportional to 1 / N_c. 'class' loss weights on top of it count
  1 / N_c twice: on the paper's 6,405 high / 2,495 low rows the low class would carry ~72%
  of the loss instead of half.
  """
  if balanced and scheme == 'class':
    raise InputError(
        "config.input.weighting='class' with config.input.balanced=True counts 1/N_c twice "
        '(balanced sampling already draws each class with weight 1/N_c); pass '
        '--config.input.weighting=none to keep the balanced sampler (what vgg16_binary:class '
        'does), or --config.input.balanced=False to weight the loss by 1/N_c instead')


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
  return train_indices_block(step, 1, num_rows, batch_size, seed)[0]


def train_indices_block(start: int, count: int, num_rows: int, batch_size: int, seed: int,
                        cdf: np.ndarray | None = None) -> np.ndarray:
  """i64 [count, batch_size]: `train_indices` of steps start .. start+count-1, equal row for
  row, with each epoch's permutation drawn once (per step it costs O(num_rows): 0.3 ms of
  host time a step at AVA's 8,900 rows, about a scanned head step's own cost)."""
  if cdf is not None:
    return np.stack([train_indices(s, num_rows, batch_size, seed, cdf)
                     for s in range(start, start + count)]).reshape(count, batch_size)
  pos = start * batch_size + np.arange(count * batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(pos, num_rows)
  out = np.empty(pos.shape, np.int64)
  for e in np.unique(epochs):  # at most two epochs per step unless B > N
    perm = np.random.default_rng([_SAMPLER_STREAM, seed, 1, int(e)]).permutation(num_rows)
    sel = epochs == e
    out[sel] = perm[offsets[sel]]
  return out.reshape(count, batch_size)
