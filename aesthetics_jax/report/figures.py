"""Report figures as PNG bytes (matplotlib, Agg backend, no display needed).

Every function takes plain numpy arrays / dicts and returns PNG bytes, so the report and the
evaluation job can embed or save them without touching JAX. Images are uint8 `[H, W, 3]`,
maps are f32 `[H, W]` in [0, 1], boxes are `(y0, x0, y1, x1)` end-exclusive pixel coords.
"""
from __future__ import annotations

import functools
import io
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')  # headless: figures are only ever written to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from aesthetics_jax import io as io_lib  # noqa: E402

BOX_COLOURS = {'aesthetic': (255, 255, 255), 'attribute': (0, 200, 255),
               'average': (255, 60, 60), 'crop': (60, 255, 60)}
# `add_legend`: an image narrower than this (or than its widest legend item) is centred on a
# band of the legend's background this wide: a 32-px-wide strip's legend had no room for text.
LEGEND_MIN_WIDTH = 256
LEGEND_BACKGROUND = (30, 30, 30)


def _literal_text(fn: Callable[..., bytes]) -> Callable[..., bytes]:
  """Runs a figure function with matplotlib's math text off: captions carry user data (AVA tag
  names, ids), and a `$` in them must print as a dollar sign, not start (or crash on) math."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with matplotlib.rc_context({'text.parse_math': False, 'text.usetex': False}):
      return fn(*args, **kwargs)

  return wrapped


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
  plt.close(fig)
  return buf.getvalue()


def _jet_lut() -> np.ndarray:
  """matplotlib's 'jet' as f32 [256, 3] in 0..255 (its own 256-entry table)."""
  return (plt.get_cmap('jet')(np.arange(256))[:, :3] * 255.0).astype(np.float32)


_JET = _jet_lut()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """Jet-coloured map over an image: uint8 [H,W,3] + f32 [h,w] in [0,1] -> uint8 [H,W,3].

  The map is resized bilinearly to the image size if needed. Works in float32 through a
  256-entry table (what `get_cmap('jet')(cam)` looks up, without its float64 RGBA copy):
  ~22 bytes per pixel; callers bound the image size (predict: long side <= 1024).
  """
  image = np.asarray(image, np.uint8)
  h, w = image.shape[:2]
  cam = np.asarray(cam, np.float32)
  if cam.shape != (h, w):
    cam = np.asarray(Image.fromarray(cam).resize((w, h), Image.BILINEAR))
  # Colormap.__call__'s index for floats: floor(x * N), x = 1 → N - 1.
  idx = np.minimum((np.clip(cam, 0.0, 1.0) * 256.0).astype(np.int32), 255)
  out = image.astype(np.float32)
  out *= 1.0 - alpha
  out += alpha * _JET[idx]
  return np.clip(out, 0, 255).astype(np.uint8)


def box_width(hw: Sequence[int]) -> int:
  """Line width of the boxes drawn on an (h, w) picture: 1/200 of its long side, at least 2,
  at most 1/16 of its short side (a 40x20000 strip's were 100 px wide, covering it)."""
  return max(2, min(max(hw[:2]) // 200, min(hw[:2]) // 16))


# `fold`: a picture longer than FOLD_ASPECT times its short side is cut into segments laid
# side by side, so that a viewer scaled to the window still shows its rows (a 40x20000 strip's
# overlay was one line 20000 px long, shown 1/15 of a pixel high on a 1300-px screen).
FOLD_ASPECT = 10
FOLD_TARGET_ASPECT = 2.0  # the folded picture is about twice as wide as high (or tall as wide)


def fold_count(hw: Sequence[int], max_aspect: float = FOLD_ASPECT,
               target_aspect: float = FOLD_TARGET_ASPECT) -> int:
  """Segments `fold` cuts an (h, w) picture into: 1 up to `max_aspect`:1; beyond, k such
  that k segments of length L/k stacked across come out about `target_aspect`:1
  (L/k ~ target_aspect * k * s, so k ~ sqrt(L / (target_aspect * s)))."""
  long_side, short_side = max(hw[:2]), max(1, min(hw[:2]))
  if long_side <= max_aspect * short_side:
    return 1
  return max(2, int(round(np.sqrt(long_side / (target_aspect * short_side)))))


def fold(image: np.ndarray, segments: int, gap: int | None = None,
         background: Sequence[int] = LEGEND_BACKGROUND) -> np.ndarray:
  """A long picture cut into `segments` equal pieces along its long side and laid across it,
  in reading order: a wide one's pieces as rows from top to bottom, a tall one's as columns
  from left to right, `gap` px of `background` between them (default: 1/8 of the short side,
  at least 3). The last piece is padded with `background` to the others' length.
  uint8 [H, W, C] → uint8 [k*H + (k-1)*gap, ceil(W/k), C] (wide; transposed for tall);
  `segments` 1 returns the image unchanged."""
  image = np.asarray(image, np.uint8)
  if segments <= 1:
    return image
  tall = image.shape[0] > image.shape[1]
  strip = image.transpose(1, 0, 2) if tall else image  # [short, long, C]
  short, long_side, c = strip.shape
  gap = max(3, short // 8) if gap is None else gap
  seg = -(-long_side // segments)
  out = np.empty((segments * short + (segments - 1) * gap, seg, c), np.uint8)
  out[:] = np.asarray(background, np.uint8)[:c]
  for i in range(segments):
    piece = strip[:, i * seg:(i + 1) * seg]
    top = i * (short + gap)
    out[top:top + short, :piece.shape[1]] = piece
  return out.transpose(1, 0, 2) if tall else out


def draw_boxes(image: np.ndarray, boxes: Mapping[str, Sequence[int]],
               width: int = 2) -> np.ndarray:
  """Draws named boxes `(y0, x0, y1, x1)` (end-exclusive) on a copy of uint8 [H,W,3]."""
  pil = Image.fromarray(np.asarray(image, np.uint8))
  draw = ImageDraw.Draw(pil)
  for name, box in boxes.items():
    y0, x0, y1, x1 = (int(v) for v in box)
    colour = BOX_COLOURS.get(name, (255, 255, 0))
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)
  return np.asarray(pil)


def save_png(path, image: np.ndarray | Image.Image) -> None:
  """Atomically writes uint8 [H,W,3] (or a PIL image) as PNG (parent folders created)."""
  buf = io.BytesIO()
  if not isinstance(image, Image.Image):
    image = Image.fromarray(np.asarray(image, np.uint8))
  image.save(buf, format='PNG')
  io_lib.atomic_write_bytes(path, buf.getvalue())


def _full_frame(box: Sequence[int], hw: tuple[int, int] | None) -> bool:
  return hw is not None and tuple(int(v) for v in box) == (0, 0, int(hw[0]), int(hw[1]))


def aesthetic_title(boxes: Mapping[str, Sequence[int]], empty: bool = False,
                    hw: tuple[int, int] | None = None) -> str:
  """Caption of an aesthetic-map panel naming the boxes actually drawn on it (VGG16 has no
  average box; an empty map has no box of its own). With the panel's `hw`, a box that is the
  whole frame says so: its outline runs along the panel's edge, where it is easily missed."""
  labels = {'aesthetic': 'box (white)', 'average': 'avg (red)'}
  drawn = [label + (' = full frame' if _full_frame(boxes[name], hw) else '')
           for name, label in labels.items() if name in boxes]
  head = 'aesthetic map EMPTY (no box)' if empty else 'aesthetic map'
  return head + ('; ' + ', '.join(drawn) if drawn else '')


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
  fig, axes = plt.subplots(n, cols, figsize=(2.4 * cols, 2.5 * n), squeeze=False)
  for row, ex in zip(axes, examples):
    img = np.asarray(ex['image'], np.uint8)
    boxes = dict(ex.get('boxes', {}))
    row[0].imshow(img)
    row[0].set_title(ex.get('caption', ''), fontsize=7)
    aes_boxes = {k: v for k, v in boxes.items() if k in ('aesthetic', 'average')}
    row[1].imshow(draw_boxes(overlay(img, ex['aesthetic_map']), aes_boxes))
    row[1].set_title(aesthetic_title(aes_boxes, bool(ex.get('aesthetic_empty')), img.shape[:2]),
                     fontsize=7)
    c = 2
    if has_attr:
      if ex.get('attribute_map') is not None:
        attr_boxes = {k: v for k, v in boxes.items() if k == 'attribute'}
        row[2].imshow(draw_boxes(overlay(img, ex['attribute_map']), attr_boxes))
        full = attr_boxes and _full_frame(attr_boxes['attribute'], img.shape[:2])
        row[2].set_title(f"{ex.get('attribute_name', 'attribute map')}"
                         f"{'; box (cyan)' if attr_boxes else ''}"
                         f"{' = full frame' if full else ''}", fontsize=7)
      c = 3
    if ex.get('crop') is not None:
      row[c].imshow(np.asarray(ex['crop'], np.uint8))
      row[c].set_title('crop', fontsize=7)
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
  fig, ax = plt.subplots(figsize=(5, 3.6))
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
  fig, axes = plt.subplots(g, k, figsize=(1.15 * k, 1.2 * g + 0.7), squeeze=False)
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
    scale = plt.cm.ScalarMappable(cmap='jet', norm=plt.Normalize(0, 1))  # unfaded
    bar = fig.colorbar(scale, ax=axes, fraction=0.015, pad=0.01)
    bar.set_label('normalised map', fontsize=7)
    bar.ax.tick_params(labelsize=6)
  return _png(fig)


@_literal_text
def concentration_figure(series: Mapping[str, Mapping], title: str) -> bytes:
  """Per-image map entropy by true score bucket: name -> `study.map_concentration` dict; the
  mean per bucket with its bootstrap interval, buckets of fewer than `FEW_IMAGES` images hollow
  (no interval, not joined by the line), the mid-range band shaded."""
  fig, ax = plt.subplots(figsize=(5, 3.2))
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
  fig, axes = plt.subplots(1, 11, figsize=(13, 1.6))
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
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for name, ys in curves.items():
    ys = np.asarray(ys, np.float64)
    ax.plot(np.linspace(0, 1, ys.size), ys, label=name, lw=1.2)
  ax.set_xlabel('fraction of pixels')
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7)
  return _png(fig)


def _font(size: int) -> ImageFont.ImageFont:
  try:
    return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
  except (TypeError, OSError, ImportError):
    return ImageFont.load_default()


def _legend_items(title: str, box_names: Sequence[str]) -> list[tuple[str, object]]:
  """(kind, payload) in reading order: the colour scale, what the map shows, each box."""
  return [('scale', None), ('text', title)] + [('box', name) for name in box_names]


def add_legend(image: np.ndarray, title: str, box_names: Sequence[str] = (),
               min_width: int = LEGEND_MIN_WIDTH) -> np.ndarray:
  """The key of an `overlay` + `draw_boxes` image, in a strip appended BELOW it.

  The strip shows the map's colour scale (low → high), `title` (what the map explains, e.g.
  'map: aesthetic (gradcam)') and a swatch per drawn box in its `BOX_COLOURS` colour, wrapped
  to the image width. The image is unchanged (boxes keep their pixel coordinates), but one
  narrower than `min_width` or than the widest legend item is centred on a band of the
  legend's background that wide (its columns shift by (W' - W) // 2), so the text fits.
  uint8 [H,W,3] → uint8 [H+h,W',3], W' = W for a photo.
  """
  image = np.asarray(image, np.uint8)
  w = max(image.shape[1], min_width)
  # Text scales with the width up to 28 px (every overlay up to 1260 px wide, all of predict's
  # photos); a larger picture (the API's, at full resolution) is shown scaled down, so its
  # text grows on to 64 px, by the short side too: a long strip keeps 28 px.
  fs = int(np.clip(w // 45, 10, 28))
  if w > 45 * 28:
    fs = int(np.clip(min(w, 2 * image.shape[0]) // 45, 28, 64))
  font, pad = _font(fs), max(2, fs // 3)
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  bar = 4 * fs
  low, high = (int(measure.textlength(t, font=font)) for t in ('low', 'high'))

  def item_width(kind, payload):
    if kind == 'scale':  # 'low ▮▮▮▮ high' stays on one row
      return low + bar + high + 2 * pad
    text = int(measure.textlength(payload, font=font))
    return text + (fs + pad if kind == 'box' else 0)

  items = _legend_items(title, box_names)
  w = max(w, max(item_width(*item) for item in items) + 2 * pad)
  if w > image.shape[1]:  # centred on the legend's background: each item fits on a row
    band = np.empty((image.shape[0], w, 3), np.uint8)
    band[:] = LEGEND_BACKGROUND
    left = (w - image.shape[1]) // 2
    band[:, left:left + image.shape[1]] = image
    image = band
  rows, x = [[]], pad
  for item in items:
    iw = item_width(*item)
    if rows[-1] and x + iw > w - pad:
      rows.append([])
      x = pad
    rows[-1].append((x, item))
    x += iw + 2 * pad
  row_h = fs + 2 * pad
  strip = Image.new('RGB', (w, row_h * len(rows)), LEGEND_BACKGROUND)
  draw = ImageDraw.Draw(strip)
  scale = (plt.get_cmap('jet')(np.linspace(0, 1, bar))[:, :3] * 255).astype(np.uint8)
  for r, row in enumerate(rows):
    top = r * row_h + pad
    for x, (kind, payload) in row:
      if kind == 'text':
        draw.text((x, top), payload, fill=(235, 235, 235), font=font)
      elif kind == 'scale':
        draw.text((x, top), 'low', fill=(235, 235, 235), font=font)
        strip.paste(Image.fromarray(np.repeat(scale[None], fs, axis=0)), (x + low + pad, top))
        draw.text((x + low + bar + 2 * pad, top), 'high', fill=(235, 235, 235), font=font)
      else:
        colour = BOX_COLOURS.get(payload, (255, 255, 0))
        draw.rectangle([x, top, x + fs - 1, top + fs - 1], outline=colour, width=max(2, fs // 6))
        draw.text((x + fs + pad, top), payload, fill=colour, font=font)
  return np.concatenate([image, np.asarray(strip)], axis=0)
