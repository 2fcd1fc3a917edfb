"""The report's charts as PNG bytes, drawn by matplotlib on its own Agg canvas.

Every function takes plain numpy arrays / dicts and returns PNG bytes, so the report and the
evaluation job can embed or save them without touching JAX. Figures are `matplotlib.figure.
Figure`s, not pyplot's: nothing global changes (a user's backend, open figures). Images are
uint8 `[H, W, 3]`, maps f32 `[H, W]` in [0, 1], boxes `(y0, x0, y1, x1)` end-exclusive.
"""
from __future__ import annotations

import functools
import io
import textwrap
from typing import Callable, Mapping, Sequence

import matplotlib
from matplotlib import cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from aesthetics_jax.report.overlays import aesthetic_title, draw_boxes, full_frame, overlay


def _literal_text(fn: Callable[..., bytes]) -> Callable[..., bytes]:
  """Runs a figure function with matplotlib's math text off: captions carry user data (AVA tag
  names, ids), and a `$` in them must print as a dollar sign, not start (or crash on) math."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with matplotlib.rc_context({'text.parse_math': False, 'text.usetex': False}):
      return fn(*args, **kwargs)

  return wrapped


def _figure(**kwargs) -> Figure:
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)  # the canvas savefig draws on
  return fig


def _png(fig: Figure) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
  return buf.getvalue()


# Characters of a tag name shown over its map: the figure is saved with a tight bounding box,
# so a 400-character name (tags.txt is data) made the PNG 2,452 px wide and the maps tiny.
TITLE_CHARS = 48


def _short(text: str, limit: int = TITLE_CHARS) -> str:
  return text if len(text) <= limit else text[:limit - 1] + '…'


# Characters per line of an examples panel's title: a 2.4-inch column at 7 pt holds about 32
# beside its neighbours' (one-line titles of 31-51 characters ran into each other, and the
# predicted score was printed over).
PANEL_TITLE_CHARS = 32


def _panel_title(ax, text: str) -> None:
  ax.set_title(textwrap.fill(text, PANEL_TITLE_CHARS, break_long_words=True), fontsize=7)


@_literal_text
def examples_figure(examples: Sequence[Mapping], title: str) -> bytes:
  """Paper Figures 5-6: one row per example image.

  Each example: `image` uint8 [H,W,3], `aesthetic_map` f32 [H,W], optional
  `attribute_map` f32 [H,W], `boxes` {name: (y0,x0,y1,x1)}, optional `crop` uint8,
  `caption` str and `aesthetic_empty` bool (the map points nowhere).
  Columns: image | aesthetic map + box | attribute map + box | crop.
  """
  n = max(1, len(examples))
  has_attr = any(e.get('attribute_map') is not None for e in examples)
  cols = 4 if has_attr else 3
  fig = _figure(figsize=(2.4 * cols, 2.8 * n))  # room for titles of two or three lines
  axes = fig.subplots(n, cols, squeeze=False)
  for row, ex in zip(axes, examples):
    img = np.asarray(ex['image'], np.uint8)
    boxes = dict(ex.get('boxes', {}))
    row[0].imshow(img)
    _panel_title(row[0], ex.get('caption', ''))
    aes_boxes = {k: v for k, v in boxes.items() if k in ('aesthetic', 'average')}
    row[1].imshow(draw_boxes(overlay(img, ex['aesthetic_map']), aes_boxes))
    _panel_title(row[1], aesthetic_title(aes_boxes, bool(ex.get('aesthetic_empty')),
                                         img.shape[:2]))
    c = 2
    if has_attr:
      if ex.get('attribute_map') is not None:
        attr_boxes = {k: v for k, v in boxes.items() if k == 'attribute'}
        row[2].imshow(draw_boxes(overlay(img, ex['attribute_map']), attr_boxes))
        full = attr_boxes and full_frame(attr_boxes['attribute'], img.shape[:2])
        _panel_title(row[2], f"{_short(ex.get('attribute_name', 'attribute map'))}"
                             f"{'; box (cyan)' if attr_boxes else ''}"
                             f"{' = full frame' if full else ''}")
      c = 3
    if ex.get('crop') is not None:
      row[c].imshow(np.asarray(ex['crop'], np.uint8))
      _panel_title(row[c], 'crop')
    for ax in row:
      ax.axis('off')
  for ax in axes[len(examples):].ravel():
    ax.axis('off')
  fig.suptitle(title, fontsize=10)
  return _png(fig)


@_literal_text
def intensity_scatter(intensity: np.ndarray, scores: np.ndarray, band=(4.5, 6.5),
                      pearson_all: float | None = None, pearson_extreme: float | None = None,
                      title: str = 'Map intensity vs mean score') -> bytes:
  """Paper Figure 7: mean map intensity [N] vs mean score [N]; extremes highlighted."""
  x = np.asarray(scores, np.float64)
  y = np.asarray(intensity, np.float64)
  ext = (x < band[0]) | (x > band[1])
  fig = _figure(figsize=(5, 3.6))
  ax = fig.subplots()
  ax.scatter(x[~ext], y[~ext], s=8, alpha=0.5, color='#888888', label='mid-range')
  ax.scatter(x[ext], y[ext], s=10, alpha=0.8, color='#d1495b',
             label=f'extreme (<{band[0]} or >{band[1]})')
  if x.size >= 2 and np.ptp(x) > 0:
    k, b = np.polyfit(x, y, 1)
    xs = np.linspace(x.min(), x.max(), 10)
    ax.plot(xs, k * xs + b, 'k-', lw=1, label='least squares')
  sub = []
  if pearson_all is not None:
    sub.append(f'r(all)={pearson_all:.2f}')
  if pearson_extreme is not None:
    sub.append(f'r(extreme)={pearson_extreme:.2f}')
  ax.set_title(title + ('  ' + ', '.join(sub) if sub else ''), fontsize=9)
  ax.set_xlabel('mean score')
  ax.set_ylabel('mean map intensity')
  ax.legend(fontsize=7)
  return _png(fig)


FEW_IMAGES = 5  # a bucket-map panel averaging fewer images is faded


@_literal_text
def bucket_maps_figure(mean_maps: np.ndarray, counts: np.ndarray,
                       row_labels: Sequence[str], title: str,
                       col_labels: Sequence[str] | None = None) -> bytes:
  """Paper Figure 8: grid of average maps, rows = image groups, columns = target bucket 1..10.

  mean_maps f32 [G, 10, h, w] (already averaged over the `counts[g]` images of each group);
  counts [G] (per row) or [G, 10] (per panel); a panel with no images is grey and says so,
  one averaging fewer than `FEW_IMAGES` is faded and says "n<5" (one image is no average).
  col_labels: may hold a newline (two short lines fit a narrow column; one long one overlaps).
  One colour scale for every panel, shown in a colour bar.
  """
  mean_maps = np.asarray(mean_maps, np.float32)
  g, k = mean_maps.shape[:2]
  fig = _figure(figsize=(1.15 * k, 1.2 * g + 0.7))
  axes = fig.subplots(g, k, squeeze=False)
  shown = None
  for i in range(g):
    for j in range(k):
      ax = axes[i, j]
      ax.set_xticks([])
      ax.set_yticks([])
      c = counts[i] if np.ndim(counts) == 1 else counts[i][j]
      if c > 0 and np.isfinite(mean_maps[i, j]).all():
        shown = ax.imshow(mean_maps[i, j], cmap='jet', vmin=0, vmax=1,
                          alpha=1.0 if c >= FEW_IMAGES else 0.35)
        if c < FEW_IMAGES:
          ax.text(0.5, 0.5, f'n<{FEW_IMAGES}', transform=ax.transAxes, ha='center',
                  va='center', fontsize=7, color='black')
      else:  # same square as its neighbours, visibly not a (blank) map
        ax.imshow(np.ones(mean_maps.shape[2:]), cmap='gray', vmin=0, vmax=1.15)
        ax.text(0.5, 0.5, 'no images', transform=ax.transAxes, ha='center', va='center',
                fontsize=7, color='#555555')
      if i == 0:
        ax.set_title(col_labels[j] if col_labels else f'bucket {j + 1}', fontsize=7)
      if j == 0:
        n = f'\n(n={int(counts[i])})' if np.ndim(counts) == 1 else ''
        ax.set_ylabel(f'{row_labels[i]}{n}', fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(w_pad=0.4, h_pad=0.6)
  if shown is not None:  # one shared 0-1 scale: say so
    scale = cm.ScalarMappable(cmap='jet', norm=colors.Normalize(0, 1))  # unfaded
    bar = fig.colorbar(scale, ax=axes, fraction=0.015, pad=0.01)
    bar.set_label('normalised map', fontsize=7)
    bar.ax.tick_params(labelsize=6)
  return _png(fig)


@_literal_text
def concentration_figure(series: Mapping[str, Mapping], title: str) -> bytes:
  """Per-image map entropy by true score bucket: name -> `study.map_concentration` dict; the
  mean per bucket with its bootstrap interval, buckets of fewer than `FEW_IMAGES` images hollow
  (no interval, not joined by the line), the mid-range band shaded."""
  fig = _figure(figsize=(5, 3.2))
  ax = fig.subplots()
  styles = (('#2a6fdb', '-', 'o'), ('#888888', '--', 's'))
  for j, (name, c) in enumerate(series.items()):
    colour, line, marker = styles[j % len(styles)]
    x = np.arange(1, 11) + 0.08 * (j - (len(series) - 1) / 2)  # side by side, not on top
    y = np.array([np.nan if v is None else v for v in c['per_bucket']], np.float64)
    n = np.asarray(c['per_bucket_n'])
    full = (n >= FEW_IMAGES) & np.isfinite(y)
    # Only buckets of enough images are joined: a line into a one-image bucket draws a trend.
    ax.plot(x[full], y[full], color=colour, ls=line, lw=1, label=name)
    for k in np.flatnonzero(full):
      if c['per_bucket_ci'][k] is None:  # no interval (eval.bootstrap_samples=0): the mean only
        continue
      lo, hi = c['per_bucket_ci'][k]
      ax.plot([x[k], x[k]], [lo, hi], color=colour, lw=1)
    ax.scatter(x[full], y[full], color=colour, marker=marker, s=18, zorder=3)
    few = (n < FEW_IMAGES) & np.isfinite(y)
    ax.scatter(x[few], y[few], facecolors='none', edgecolors=colour, marker=marker, s=18,
               zorder=3)
  ax.axvspan(4.5, 6.5, color='#eeeeee', zorder=0, label='mid-range (4.5 to 6.5)')
  ax.set_xticks(range(1, 11))
  ax.set_xlim(0.5, 10.5)
  ax.set_xlabel(f'true score bucket (hollow: fewer than {FEW_IMAGES} images)', fontsize=8)
  ax.set_ylabel('map entropy (0 one cell, 1 uniform)', fontsize=8)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  return _png(fig)


@_literal_text
def image_bucket_maps_figure(image: np.ndarray, maps: np.ndarray, caption: str) -> bytes:
  """Per-image Figure 8 panel: the image and its 10 bucket maps f32 [10, H, W]."""
  fig = _figure(figsize=(13, 1.6))
  axes = fig.subplots(1, 11)
  axes[0].imshow(np.asarray(image, np.uint8))
  axes[0].text(0.0, -0.08, caption, transform=axes[0].transAxes, ha='left', va='top',
               fontsize=7)
  for j in range(10):
    axes[j + 1].imshow(overlay(image, maps[j]))
    axes[j + 1].set_title(f'bucket {j + 1}', fontsize=7)
  for ax in axes:
    ax.axis('off')
  return _png(fig)


@_literal_text
def curves_figure(curves: Mapping[str, np.ndarray], title: str, ylabel: str) -> bytes:
  """Deletion / insertion curves: method -> f32 [S] (mean over images, fraction on x)."""
  fig = _figure(figsize=(5, 3.2))
  ax = fig.subplots()
  for name, ys in curves.items():
    ys = np.asarray(ys, np.float64)
    ax.plot(np.linspace(0, 1, ys.size), ys, label=name, lw=1.2)
  ax.set_xlabel('fraction of pixels')
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7)
  return _png(fig)
