"""The validation split: rows carved out of the training split to choose the best checkpoint.

AVA has only train and test. Choosing the kept 'best' checkpoint (config.best_metric) on test
would report a test score that was also the selection criterion, so training holds out
`config.data.validation_fraction` of the training rows (per class, so both classes are in it)
and runs its periodic evaluations and the selection on them; test is evaluated once, at the
end, with the selected checkpoint.

Determinism: the split depends only on (labels, fraction, seed) — `split_rows` draws from its
own seeded stream — so every process of a multi-host run, and a resumed run, computes the same
rows. `record` / `mismatch` keep the split in `W/validation_ids.json`, so a resumed run
with another split (other seed, fraction or data) stops instead of mixing two.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

RECORD_FILE = 'validation_ids.json'
_SPLIT_STREAM = 0xA11DA7


@dataclasses.dataclass(frozen=True)
class Split:
  """Row indices (sorted, i64) into the training source: disjoint, together all `pool` rows."""
  train: np.ndarray
  validation: np.ndarray

  @property
  def enabled(self) -> bool:
    return self.validation.size > 0


def split_rows(labels: np.ndarray, fraction: float, seed: int) -> Split:
  """Holds out `fraction` of the rows of each class (labels i32 [N]) for validation.

  Per class c with n_c rows: round(fraction * n_c) rows, at least 1 and at most n_c - 1 when
  n_c >= 2 (validation sees both classes, training keeps both). fraction 0 disables it.
  """
  labels = np.asarray(labels, np.int64)
  n = labels.size
  fraction = float(fraction)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'config.data.validation_fraction={fraction}; use 0 (off) or a '
                     'fraction in (0, 1), e.g. 0.1')
  if fraction == 0.0:
    return Split(train=np.arange(n, dtype=np.int64), validation=np.zeros(0, np.int64))
  rng = np.random.default_rng([_SPLIT_STREAM, int(seed)])
  held = []
  for c in np.unique(labels):  # sorted: the same draw order on every process
    rows = np.flatnonzero(labels == c)
    if rows.size < 2:
      continue
    k = int(np.clip(round(fraction * rows.size), 1, rows.size - 1))
    held.append(rng.permutation(rows)[:k])
  val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  keep = np.ones(n, bool)
  keep[val] = False
  return Split(train=np.flatnonzero(keep).astype(np.int64), validation=val.astype(np.int64))


class Rows(Sequence):
  """The rows `rows` of a data source, as a data source (records are read on access)."""

  def __init__(self, source: Sequence, rows: np.ndarray):
    self.source, self.rows = source, np.asarray(rows, np.int64)

  def __len__(self) -> int:
    return int(self.rows.size)

  def __getitem__(self, i):
    return self.source[int(self.rows[i])]

  def __getitems__(self, indices):
    inner = [int(self.rows[i]) for i in indices]
    getitems = getattr(self.source, '__getitems__', None)  # TFDS/grain batch reads
    return list(getitems(inner)) if getitems is not None else [self.source[i] for i in inner]

  # A source with prepared resized images (`resized_store.WithResized`) keeps them.
  @property
  def resized_size(self) -> int | None:
    return getattr(self.source, 'resized_size', None)

  def resized(self, i: int) -> np.ndarray:
    return self.source.resized(int(self.rows[i]))


def record(split: Split, image_ids: np.ndarray, fraction: float, seed: int) -> dict[str, Any]:
  """What `W/validation_ids.json` holds: the settings, the counts and the held-out image ids."""
  ids = np.asarray(image_ids, np.int64)
  return {'seed': int(seed), 'fraction': float(fraction),
          'num_train': int(split.train.size), 'num_validation': int(split.validation.size),
          'image_ids': [int(i) for i in ids[split.validation]],
          'note': ('held out of the training split; periodic evaluations and the best '
                   'checkpoint use it, test is evaluated once at the end') if split.enabled
                  else ('validation_fraction=0: no validation split; periodic evaluations and '
                        'the best checkpoint use the TEST split')}


def mismatch(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
  """'' when two records describe the same split, else what differs (for the error line)."""
  for key in ('seed', 'fraction', 'num_train', 'num_validation', 'image_ids'):
    if saved.get(key) != now.get(key):
      return f'{key} was {_short(saved.get(key))}, now {_short(now.get(key))}'
  return ''


def _short(v: Any) -> str:
  return f'{len(v)} ids starting {v[:3]}' if isinstance(v, list) else repr(v)
