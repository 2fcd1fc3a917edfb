"""Statistics of a prepared AVA subset: `stats.json` and the paper's Figures 1 and 2 as PNGs.

Written by `dataset.prepare` next to `skipped.csv`:
  <dataset_dir>/stats.json
  <dataset_dir>/figures/mean_score_hist.png   (paper Figure 1: mean scores, kept train split)
  <dataset_dir>/figures/tag_counts.png        (paper Figure 2: images per tag, kept train split)
The figures are drawn as PNG bytes (`plot_mean_score_hist`, `plot_tag_counts`) and written
atomically by `write_stats`; the report embeds the files `report_section` lists.
Matplotlib is drawn through the Agg canvas directly (no pyplot, no global backend switch).
"""
from __future__ import annotations

import collections
import io
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aesthetics_jax.data import ava
from aesthetics_jax.io import atomic_write_bytes, atomic_write_text

FIGURES = {
    'mean_score_hist': 'figures/mean_score_hist.png',
    'tag_counts': 'figures/tag_counts.png',
}


def figure_paths(dataset_dir: str | os.PathLike) -> dict[str, Path]:
  """{'mean_score_hist', 'tag_counts'} -> PNG paths under `dataset_dir`."""
  return {k: Path(dataset_dir) / v for k, v in FIGURES.items()}


def _mean_scores(images: Sequence[ava.AvaImage]) -> np.ndarray:
  """[N] f64 mean score of each vote histogram (scores 1..10)."""
  if not images:
    return np.zeros((0,), np.float64)
  votes = np.stack([np.asarray(i.votes, np.float64) for i in images])  # [N, 10]
  return votes @ np.arange(1, 11) / np.maximum(votes.sum(1), 1)


def tag_counts(images: Sequence[ava.AvaImage], tag_names: Mapping[int, str]) -> dict[str, int]:
  """Images per tag name (an image with two tags counts for both), most frequent first."""
  counts: dict[int, int] = {}
  for img in images:
    for t in img.tags:
      if t:
        counts[t] = counts.get(t, 0) + 1
  order = sorted(counts, key=lambda t: (-counts[t], t))
  # Keys must be one a tag: two tags named alike in tags.txt (or unnamed) overwrote each
  # other's counts.
  shared = collections.Counter(tag_names.values())
  def label(t: int) -> str:
    name = tag_names.get(t, '')
    if not name:
      return f'tag {t}'
    return name if shared[name] == 1 else f'{name} (tag {t})'
  return {label(t): counts[t] for t in order}


def compute_stats(kept: Mapping[str, Sequence[ava.AvaImage]], skipped: Sequence,
                  tag_names: Mapping[int, str]) -> dict:
  """JSON-able summary: counts per split, skip reasons, train score and tag statistics."""
  train = list(kept.get('train', ()))
  means = _mean_scores(train)
  reasons: dict[str, dict[str, int]] = {}
  for s in skipped:
    r = reasons.setdefault(s.split, {})
    r[s.reason] = r.get(s.reason, 0) + 1
  return {
      'kept': {k: len(v) for k, v in kept.items()},
      'skipped': {k: sum(v.values()) for k, v in reasons.items()},
      'skipped_reasons': reasons,
      'train': {
          'num_images': len(train),
          'mean_of_mean_scores': float(means.mean()) if len(means) else None,
          'std_of_mean_scores': float(means.std()) if len(means) else None,
          'fraction_high': float((means > 5).mean()) if len(means) else None,
          'num_high': int((means > 5).sum()),
          'num_low': int((means <= 5).sum()),
          'num_tagged': sum(any(t for t in i.tags) for i in train),
          'tag_counts': tag_counts(train, tag_names),
      },
  }


def _png(fig) -> bytes:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  return buf.getvalue()


def plot_mean_score_hist(mean_scores: np.ndarray,
                         title: str = 'Mean scores (train split)') -> bytes:
  """Histogram of mean scores [N] (paper Figure 1), threshold 5 marked, as PNG bytes."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.hist(np.asarray(mean_scores), bins=np.linspace(1, 10, 37), color='tab:blue',
          edgecolor='white')
  ax.axvline(5.0, color='tab:red', ls='--', label='high / low threshold (5)')
  ax.set_xlim(1, 10)
  ax.set_xlabel('mean score')
  ax.set_ylabel('images')
  ax.set_title(f'{title}, n={len(mean_scores)}')
  ax.legend()
  fig.tight_layout()
  return _png(fig)


def plot_tag_counts(counts: Mapping[str, int], title: str = 'Tags (train split)') -> bytes:
  """Horizontal bar chart of images per tag name (paper Figure 2), as PNG bytes."""
  import matplotlib
  # Tag names are data: a `$` in one prints as a dollar sign instead of starting math text.
  with matplotlib.rc_context({'text.parse_math': False, 'text.usetex': False}):
    return _plot_tag_counts(counts, title)


def _plot_tag_counts(counts: Mapping[str, int], title: str) -> bytes:
  from matplotlib.figure import Figure
  names = list(counts)
  fig = Figure(figsize=(7, max(2.5, 0.18 * len(names) + 1)))
  ax = fig.add_subplot()
  y = np.arange(len(names))
  ax.barh(y, [counts[n] for n in names], color='tab:green')
  ax.set_yticks(y, names, fontsize=7)
  ax.invert_yaxis()  # most frequent on top
  ax.margins(y=0.005)
  ax.set_xlabel('images')
  ax.set_title(f'{title}, {sum(counts.values())} tag assignments')
  fig.tight_layout()
  return _png(fig)


def write_stats(dataset_dir: str | os.PathLike, kept: Mapping[str, Sequence[ava.AvaImage]],
                skipped: Sequence, tag_names: Mapping[int, str]) -> dict[str, Path]:
  """Writes stats.json and both figures under `dataset_dir`; returns their paths."""
  d = Path(dataset_dir)
  stats = compute_stats(kept, skipped, tag_names)
  paths = figure_paths(d)
  atomic_write_bytes(paths['mean_score_hist'],
                     plot_mean_score_hist(_mean_scores(list(kept.get('train', ())))))
  atomic_write_bytes(paths['tag_counts'], plot_tag_counts(stats['train']['tag_counts']))
  atomic_write_text(d / 'stats.json', json.dumps(stats, indent=2) + '\n')
  return {'stats_json': d / 'stats.json', **paths}


def report_section(dataset_dir: str | os.PathLike) -> dict | None:
  """The report's dataset section: {'stats': flat scalars, 'figures': {name: PNG path}}.

  `dataset_dir` is `dataset.dataset_dir(data_dir, subset)` (or `PrepareResult.dataset_dir`);
  None if it holds no stats.json (not prepared).
  """
  d = Path(dataset_dir)
  if not (d / 'stats.json').is_file():
    return None
  s = json.loads((d / 'stats.json').read_text())
  t = s['train']
  flat = {f'kept_{k}': v for k, v in s['kept'].items()}
  flat.update({f'skipped_{k}': s['skipped'].get(k, 0) for k in s['kept']})
  flat.update({
      'train_mean_of_mean_scores': t['mean_of_mean_scores'],
      'train_std_of_mean_scores': t['std_of_mean_scores'],
      'train_fraction_high': t['fraction_high'],
      'train_num_high': t['num_high'],
      'train_num_low': t['num_low'],
      'train_num_tags_used': len(t['tag_counts']),
  })
  return {'stats': flat, 'figures': {k: p for k, p in figure_paths(d).items() if p.is_file()}}
