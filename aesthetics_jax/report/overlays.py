"""Map overlays drawn with PIL and numpy: the pictures predict, the API and the report show.

`overlay` colours a map over its image, `draw_boxes` outlines the boxes, `fold` lays a long
strip out in rows and `add_legend` appends the key. Images are uint8 `[H, W, 3]`, maps f32
`[H, W]` in [0, 1], boxes `(y0, x0, y1, x1)` end-exclusive pixel coords. No pyplot: importing
this (the API does) leaves the user's matplotlib backend alone.
"""
from __future__ import annotations

import functools
import io
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aesthetics_jax import io as io_lib

BOX_COLOURS = {'aesthetic': (255, 255, 255), 'attribute': (0, 200, 255),
               'average': (255, 60, 60), 'crop': (60, 255, 60)}
# `add_legend`: an image narrower than this (or than its widest legend item) is centred on a
# band of the legend's background this wide: a 32-px-wide strip's legend had no room for text.
LEGEND_MIN_WIDTH = 256
LEGEND_BACKGROUND = (30, 30, 30)
# Appended to an overlay's title when its map points nowhere (`crop.empty_maps`): an all-zero
# map drawn in jet is an even blue wash, which read as 'nothing matters here', not 'no map'.
EMPTY_NOTE = ' EMPTY: points nowhere'


def _jet(values: np.ndarray) -> np.ndarray:
  """matplotlib's 'jet' at `values` in [0, 1] (or its table indices, ints): RGB [..., 3] in
  0..1. matplotlib is imported here, on first use: it took 0.15 s of the predictor's start-up,
  and a prediction without overlays never draws one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  return matplotlib.colormaps['jet'](values)[..., :3]


@functools.cache
def _jet_lut() -> np.ndarray:
  """matplotlib's 'jet' as f32 [256, 3] in 0..255 (its own 256-entry table)."""
  return (_jet(np.arange(256)) * 255.0).astype(np.float32)


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
  out += alpha * _jet_lut()[idx]
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


def box_colour(name: str) -> tuple[int, int, int]:
  """A box's outline colour by its name; a `merge_coinciding` name ('attribute = average') by
  its first box's."""
  return BOX_COLOURS.get(name.split(' = ')[0].split(' (')[0], (255, 255, 0))


def legend_names(boxes: Mapping[str, Sequence[int]], hw: tuple[int, int]) -> list[str]:
  """The legend's name of each box drawn on an `hw` picture: a box that is the whole frame
  says so ('aesthetic (full frame)'), its outline running along the edge, where it is
  missed (the legend named a box nobody could find)."""
  return [name + (' (full frame)' if full_frame(box, hw) else '') for name, box in boxes.items()]


def merge_coinciding(boxes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
  """`boxes` with each box that has the pixels of an earlier one folded into that one's name
  ('attribute = average'), in the earlier one's place. Drawn over it, the later box hid it,
  and the legend named a box the picture did not show (an empty aesthetic map's average box
  is its attribute box, drawn in red over the cyan one)."""
  merged: list[tuple[list[str], tuple[int, ...]]] = []
  for name, box in boxes.items():
    box = tuple(int(v) for v in box)
    same = next((names for names, b in merged if b == box), None)
    if same is None:
      merged.append(([name], box))
    else:
      same.append(name)
  return {' = '.join(names): box for names, box in merged}


def draw_boxes(image: np.ndarray, boxes: Mapping[str, Sequence[int]],
               width: int = 2) -> np.ndarray:
  """Draws named boxes `(y0, x0, y1, x1)` (end-exclusive) on a copy of uint8 [H,W,3]."""
  pil = Image.fromarray(np.asarray(image, np.uint8))
  draw = ImageDraw.Draw(pil)
  for name, box in boxes.items():
    y0, x0, y1, x1 = (int(v) for v in box)
    colour = box_colour(name)
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)
  return np.asarray(pil)


# zlib level for pictures looked at rather than kept (predict's overlays): a 0.2 MP overlay
# took 67 ms at PNG's default level 6 and 13 ms at 1, for 13% more bytes (2-core EPYC).
FAST_PNG_LEVEL = 1


def save_png(path, image: np.ndarray | Image.Image, compress_level: int = 6) -> None:
  """Atomically writes uint8 [H,W,3] (or a PIL image) as PNG (parent folders created), at zlib
  `compress_level` (0-9; the pixels are the same at every level)."""
  buf = io.BytesIO()
  if not isinstance(image, Image.Image):
    image = Image.fromarray(np.asarray(image, np.uint8))
  image.save(buf, format='PNG', compress_level=compress_level)
  io_lib.atomic_write_bytes(path, buf.getvalue())


def full_frame(box: Sequence[int], hw: tuple[int, int] | None) -> bool:
  return hw is not None and tuple(int(v) for v in box) == (0, 0, int(hw[0]), int(hw[1]))


def aesthetic_title(boxes: Mapping[str, Sequence[int]], empty: bool = False,
                    hw: tuple[int, int] | None = None) -> str:
  """Caption of an aesthetic-map panel naming the boxes actually drawn on it (VGG16 has no
  average box; an empty map has no box of its own). With the panel's `hw`, a box that is the
  whole frame says so: its outline runs along the panel's edge, where it is easily missed."""
  labels = {'aesthetic': 'box (white)', 'average': 'avg (red)'}
  drawn = [label + (' = full frame' if full_frame(boxes[name], hw) else '')
           for name, label in labels.items() if name in boxes]
  head = 'aesthetic map EMPTY (no box)' if empty else 'aesthetic map'
  return head + ('; ' + ', '.join(drawn) if drawn else '')


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
  scale = (_jet(np.linspace(0, 1, bar)) * 255).astype(np.uint8)
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
        colour = box_colour(payload)
        draw.rectangle([x, top, x + fs - 1, top + fs - 1], outline=colour, width=max(2, fs // 6))
        draw.text((x + fs + pad, top), payload, fill=colour, font=font)
  return np.concatenate([image, np.asarray(strip)], axis=0)


def fold_with_legend(image: np.ndarray, title: str, box_names: Sequence[str] = ()) -> np.ndarray:
  """An overlay as predict and the API show it: a strip beyond `FOLD_ASPECT`:1 folded into
  rows (a tall one into columns, `fold`), the title saying so, then `add_legend` below.
  uint8 [H, W, 3] → uint8 [H', W', 3]."""
  k = fold_count(image.shape)
  if k > 1:  # a strip: its pieces in rows (columns) that a window shows at a useful size
    image = fold(image, k)
    title += f'; folded in {k} {"columns" if image.shape[0] > image.shape[1] else "rows"}'
  return add_legend(image, title, box_names)
