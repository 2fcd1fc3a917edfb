"""CAM → boxes → crops, batched.

Boxes are i32 `(y0, x0, y1, x1)`, end-exclusive, in the pixel grid of the map they were computed
on (`scale_box` moves them to another image size).

* `boxes`: bounding box of the LARGEST 8-connected region (by pixel count; ties → the region
  whose first pixel comes first in raster order) of pixels `>= threshold * max(map)`. A map whose
  max is <= 0 (nothing salient) gives the full frame. On CPU labelling runs on the host with
  one `scipy.ndimage.label` call for the whole batch (a structure that never connects images),
  via `jax.pure_callback` when traced, so it can sit inside a jitted function; traced on an
  accelerator it runs there (`boxes_on_device`, the same boxes), so the maps never leave it.
* `average_boxes`: the paper's §4.4.3 average of the aesthetic and the attribute box.
* `aspect_crop`: the window of a given aspect ratio (largest that fits, times `scale`) that
  encloses the most map mass, over all positions at once with summed-area tables; ties (flat
  maps) go to the window closest to the centre.
* `image_boxes`: the raw maps of ONE image → its maps in the original aspect and its boxes in
  original pixels (what prediction and the evaluation figures show).
"""
from __future__ import annotations

import io
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from aesthetics_jax import io as io_lib
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import choices

# Longest side at which one image's maps are brought back to its aspect for boxes and crops:
# a 7x7 map's cell is 37 px here, far coarser than the grid; at 512 the explorer's and the CSV's
# boxes (every test image, every method) cost 4.5x as much (~8 vs ~1.5 ms an image and method).
BOX_RESOLUTION = 256
# `image_boxes`' grid keeps at least this short side (within BOX_RESOLUTION² pixels): a thin
# strip's map would otherwise be one cell across and every box would span it.
BOX_MIN_SIDE = 64

# 8-connectivity inside each image, nothing across the batch axis.
_STRUCTURE = np.zeros((3, 3, 3), bool)
_STRUCTURE[1] = True


def empty_maps(maps, rtol: float = 1e-6):
  """bool `[...]`: maps `[..., h, w]` that point nowhere — no positive value, or constant.

  Such a map (a ReLU'd Grad-CAM whose gradients are all negative, a dead layer) carries no
  location; its box would be the whole frame by default, which reads like "keep everything".
  Callers report it as empty instead. Works on numpy and jax arrays.
  """
  hi = maps.max(axis=(-2, -1))
  lo = maps.min(axis=(-2, -1))
  return (hi <= 0) | (hi - lo <= rtol * abs(hi))


def boxes_np(maps: np.ndarray, threshold: float = 0.2) -> np.ndarray:
  """Host version of `boxes` (numpy in, numpy out). `[B,H,W] -> i32 [B,4]`."""
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 3:
    raise ValueError(f'crop.boxes: maps must be [B, H, W], got shape {maps.shape}')
  B, H, W = maps.shape
  out = np.tile(np.array([0, 0, H, W], np.int32), (B, 1))
  if B == 0:
    return out
  peak = maps.reshape(B, -1).max(axis=1)
  # One pass: a map with no positive peak (or a NaN) compares against +inf, so has no pixel.
  with np.errstate(invalid='ignore'):
    cut = np.where(peak > 0, threshold * peak, np.inf).astype(np.float32)
  labels = np.empty(maps.shape, np.intp)  # intp: bincount would convert int32 labels first
  n = ndimage.label(maps >= cut[:, None, None], structure=_STRUCTURE, output=labels)
  if n == 0:
    return out
  sizes = np.bincount(labels.ravel(), minlength=n + 1)
  # Labels run in raster order over the batch and never span two images, so image b holds
  # the labels after the previous images' last one, up to its own last (its max).
  last = labels.reshape(B, -1).max(axis=1)
  first = np.concatenate([[1], np.maximum.accumulate(last)[:-1] + 1])
  has = last >= first
  best = np.zeros(B, np.intp)
  for b in np.flatnonzero(has):  # argmax: the first of the largest, the lowest label
    best[b] = first[b] + np.argmax(sizes[first[b]:last[b] + 1])
  mask = labels == best[:, None, None]
  rows, cols = mask.any(axis=2), mask.any(axis=1)
  box = np.stack([rows.argmax(1), cols.argmax(1),
                  H - rows[:, ::-1].argmax(1), W - cols[:, ::-1].argmax(1)], 1)
  out[has] = box[has]
  return out


def boxes_on_device(maps: jax.Array, threshold: float = 0.2) -> jax.Array:
  """`boxes_np` in jax.numpy (`[B,H,W] -> i32 [B,4]`, the same boxes), for accelerators.

  Each foreground pixel starts labelled with its raster index and repeatedly takes the
  smallest label of its 3x3 neighbourhood (8-connectivity), then its label's label (pointer
  jumping: that pixel is in the same region and its label is no larger), until nothing
  changes: every region ends labelled with its first pixel in raster order, which is the
  order of `scipy.ndimage.label`'s numbers, so the tie rule is the same. About 70 rounds for
  CAM-like 224-px maps, each a few element-wise passes: on an accelerator the maps stay there;
  on a 2-core CPU it is 15-60x slower than scipy, so `boxes` uses it off the CPU only.
  """
  if maps.ndim != 3:
    raise ValueError(f'crop.boxes: maps must be [B, H, W], got shape {maps.shape}')
  B, H, W = maps.shape
  n = H * W
  maps = jnp.asarray(maps, jnp.float32)
  peak = maps.reshape(B, -1).max(axis=1)
  # numpy's max of a map holding a NaN is NaN (no foreground, the full frame); XLA's max may
  # skip the NaN, so such maps are ruled out explicitly.
  peak = jnp.where(jnp.isnan(maps).any(axis=(1, 2)), jnp.nan, peak)
  fg = (maps >= (threshold * peak)[:, None, None]) & (peak > 0)[:, None, None]
  none = jnp.int32(n)  # background's label, larger than any pixel's
  lab0 = jnp.where(fg, jnp.arange(n, dtype=jnp.int32).reshape(1, H, W), none)

  def body(carry):
    lab, _ = carry
    near = jax.lax.reduce_window(lab, none, jax.lax.min, (1, 3, 3), (1, 1, 1), 'SAME')
    flat = jnp.where(fg, near, none).reshape(B, n)
    jumped = jnp.take_along_axis(flat, jnp.minimum(flat, n - 1), axis=1).reshape(B, H, W)
    new = jnp.where(fg, jumped, none)
    return new, jnp.any(new != lab)

  lab, _ = jax.lax.while_loop(lambda c: c[1], body, (lab0, jnp.bool_(True)))
  flat = lab.reshape(B, n)
  sizes = jnp.zeros((B, n + 1), jnp.int32).at[jnp.arange(B)[:, None], flat].add(1)[:, :n]
  best = jnp.argmax(sizes, axis=1)  # the first of the largest: the lowest label, as scipy's
  mask = lab == best[:, None, None]
  rows, cols = mask.any(axis=2), mask.any(axis=1)
  box = jnp.stack([jnp.argmax(rows, 1), jnp.argmax(cols, 1),
                   H - jnp.argmax(rows[:, ::-1], 1), W - jnp.argmax(cols[:, ::-1], 1)], 1)
  full = jnp.array([0, 0, H, W], jnp.int32)
  return jnp.where((sizes.max(axis=1) > 0)[:, None], box.astype(jnp.int32), full)


def label_on_device() -> bool:
  """Whether a traced `boxes` labels on the device (accelerators) or on the host (CPU)."""
  return jax.default_backend() != 'cpu'


def boxes(maps: jax.Array, threshold: float = 0.2) -> jax.Array:
  """Bounding box of the largest connected region above `threshold * max` per map.

  Args:
    maps: f32 `[B, H, W]` (normalised or raw; only the ratio to each map's max matters).
    threshold: fraction of each map's maximum.
  Returns:
    i32 `[B, 4]` `(y0, x0, y1, x1)`, end-exclusive. Usable inside `jax.jit`.
  """
  try:
    host = np.asarray(maps)
  except jax.errors.TracerArrayConversionError:  # inside jit
    if label_on_device():
      return boxes_on_device(maps, threshold)
    shape = jax.ShapeDtypeStruct((maps.shape[0], 4), jnp.int32)
    return jax.pure_callback(lambda m: boxes_np(m, threshold), shape, maps,
                             vmap_method='broadcast_all')
  return jnp.asarray(boxes_np(host, threshold))


def average_boxes(a: jax.Array, b: jax.Array) -> jax.Array:
  """Average of two boxes `[B,4]` (paper §4.4.3): mean corners, starts rounded down and ends
  up so the result contains the exact mean box. numpy in (both), numpy out: one image's boxes
  on the host need no JAX dispatch (~0.2 ms an op)."""
  xp = np if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) else jnp
  s = xp.asarray(a, xp.int32) + xp.asarray(b, xp.int32)
  start = xp.floor_divide(s[:, :2], 2)
  end = -xp.floor_divide(-s[:, 2:], 2)
  return xp.concatenate([start, end], axis=1).astype(xp.int32)


# Crop aspects are parsed in `choices` (JAX-free: the commands check --aspect before JAX loads).
MAX_ASPECT, parse_aspect = choices.MAX_ASPECT, choices.parse_aspect


def window_size(hw: tuple[int, int], aspect: str | float, scale: float = 1.0) -> tuple[int, int]:
  """(h, w) of the largest window of `aspect` (width:height) inside `hw`, times `scale`."""
  H, W = hw
  r = parse_aspect(aspect)
  if W >= H * r:
    h, w = H, H * r
  else:
    h, w = W / r, W
  if not 0 < scale <= 1:
    raise ValueError(f'crop scale must be in (0, 1], got {scale}')
  return (int(min(H, max(1, round(h * scale)))), int(min(W, max(1, round(w * scale)))))


def window_mass(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Map mass inside every `size` window: `[B,H,W] -> [B, H-h+1, W-w+1]` (summed-area table).

  Maps are centred per image before the cumulative sums (the window area is constant, so the
  argmax is unchanged) to keep float32 round-off small on large maps. numpy in, numpy out.
  """
  h, w = size
  xp = np if isinstance(maps, np.ndarray) else jnp
  m = xp.asarray(maps, xp.float32)
  m = m - m.mean(axis=(1, 2), keepdims=True)
  sat = xp.pad(xp.cumsum(xp.cumsum(m, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
  return sat[:, h:, w:] - sat[:, :-h, w:] - sat[:, h:, :-w] + sat[:, :-h, :-w]


def aspect_crop(maps: jax.Array, aspect: str | float = '4:3', scale: float = 1.0) -> jax.Array:
  """Window of `aspect` (W:H) and size `scale` x the largest that fits, maximising enclosed mass.

  Args:
    maps: f32 `[B, H, W]`, non-negative (e.g. normalised CAMs at image resolution).
    aspect: 'W:H' string or width/height ratio.
    scale: fraction (0, 1] of the largest fitting window's side lengths.
  Returns:
    i32 `[B, 4]` `(y0, x0, y1, x1)`, end-exclusive. jit-able (aspect and scale are static).
    numpy maps in, numpy out, no JAX dispatch: one photo's map comes at its own aspect, and
    eager JAX compiled (and kept) a program for every new shape, ~3 MB and 0.1-0.8 s each.
  """
  xp = np if isinstance(maps, np.ndarray) else jnp
  maps = xp.asarray(maps, xp.float32)
  B, H, W = maps.shape
  h, w = window_size((H, W), aspect, scale)
  mass = window_mass(maps, (h, w)).reshape(B, -1)                   # [B, P]
  ny, nx = H - h + 1, W - w + 1
  yy, xx = xp.meshgrid(xp.arange(ny), xp.arange(nx), indexing='ij')
  dist = ((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2).reshape(-1)
  # Near-ties (flat maps, round-off) go to the most central window.
  tol = 1e-5 * xp.abs(maps).sum(axis=(1, 2), keepdims=True)[:, :, 0] + 1e-12
  best = mass.max(axis=1, keepdims=True)
  idx = xp.argmin(xp.where(mass >= best - tol, dist[None], xp.inf), axis=1)
  y0, x0 = idx // nx, idx % nx
  return xp.stack([y0, x0, y0 + h, x0 + w], axis=1).astype(xp.int32)


def scale_box(box: Sequence[int] | np.ndarray, from_hw: tuple[int, int],
              to_hw: tuple[int, int]) -> np.ndarray:
  """Boxes `[..., 4]` on a `from_hw` grid → `to_hw` pixels (starts floored, ends ceiled), clipped
  to `to_hw` and at least one pixel wide and high."""
  b = np.asarray(box, np.float64)
  sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
  out = b * np.array([sy, sx, sy, sx])
  hw = np.array(to_hw[:2])
  start = np.clip(np.floor(out[..., :2] + 1e-9), 0, hw - 1)
  end = np.clip(np.maximum(np.ceil(out[..., 2:] - 1e-9), start + 1), 1, hw)
  return np.concatenate([start, end], axis=-1).astype(np.int32)


def exact_window(box: Sequence[int] | np.ndarray, hw: tuple[int, int],
                 size: tuple[int, int]) -> np.ndarray:
  """A `size` (h, w) window inside `hw`, centred where `box` (y0, x0, y1, x1) is centred
  (moved inside the image where it would stick out): an `aspect_crop` window found on a coarse
  grid, made exactly its aspect in the image's own pixels (scaling it up rounds each side on
  its own: a 1:1 crop of a 6000x4000 photo came out 3997x4000)."""
  y0, x0, y1, x1 = (float(v) for v in box)
  h, w = min(size[0], hw[0]), min(size[1], hw[1])
  top = int(np.clip(round((y0 + y1 - h) / 2), 0, hw[0] - h))
  left = int(np.clip(round((x0 + x1 - w) / 2), 0, hw[1] - w))
  return np.asarray([top, left, top + h, left + w], np.int32)


def box_grid(orig_hw: tuple[int, int], limit: int = BOX_RESOLUTION,
             min_side: int = 0) -> tuple[int, int]:
  """(H', W') with the original aspect and longest side <= limit, never enlarged.

  min_side: unless that leaves the short side under min(min_side, its own): then that short
  side, within limit² pixels (a 40x20000 strip at limit 512 would be 1x512, one row; with
  min_side 64 it is 23x11397).
  """
  h, w = orig_hw
  s = min(1.0, limit / max(h, w))
  short, long = min(h, w), max(h, w)
  if min_side and round(short * s) < min(short, min_side):
    s = min(1.0, min_side / short, math.sqrt(limit * limit / (short * long)))
    new_short = max(1, round(short * s))
    new_long = max(1, min(round(long * s), limit * limit // new_short))
    return (new_short, new_long) if h <= w else (new_long, new_short)
  return max(1, round(h * s)), max(1, round(w * s))


def resize_maps(maps: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of f32 `[..., h, w]` maps to `[..., H, W]` on the host (PIL, per map).

  For maps already off the device, at one image's own aspect: `cam.upsample` is the jit-able
  resize, which would compile again for every new image shape.
  """
  maps = np.asarray(maps, np.float32)
  lead = maps.shape[:-2]
  flat = maps.reshape((-1,) + maps.shape[-2:])
  out = [np.asarray(Image.fromarray(m).resize((hw[1], hw[0]), Image.BILINEAR)) for m in flat]
  out = np.stack(out) if out else np.zeros((0,) + tuple(hw), np.float32)
  return out.reshape(lead + tuple(hw))


def without_empty(boxes: dict[str, Any], empty: dict[str, bool]) -> dict[str, Any]:
  """`boxes` ('aesthetic', maybe 'attribute', 'average', 'crop') less those of empty maps:
  an empty map has no box (never a silent full frame) and no crop; 'average' is then the other
  map's box, and goes with both. The one rule for predict, the API and per_image.csv."""
  out = dict(boxes)
  if 'average' in out and (empty.get('aesthetic') or empty.get('attribute')):
    out['average'] = out['attribute' if empty.get('aesthetic') else 'aesthetic']
  for name, is_empty in empty.items():
    if is_empty:
      out.pop(name, None)
  if empty.get('aesthetic'):
    out.pop('crop', None)
    if empty.get('attribute', True):
      out.pop('average', None)
  return out


def image_boxes(aesthetic: np.ndarray, attribute: np.ndarray | None, orig_hw: tuple[int, int],
                threshold: float = 0.2, aspect: str | float | None = None,
                limit: int = BOX_RESOLUTION) -> dict[str, Any]:
  """Raw maps of ONE image → its normalised maps in the original aspect and its boxes.

  The model sees the image squashed to S² (aspect not kept, as in the paper), so each map is
  min-max normalised, resized to `box_grid(orig_hw, limit)` (the original aspect), boxed there
  and the boxes are scaled to the original pixels.

  Args:
    aesthetic: raw map `[h, w]` of the aesthetic target.
    attribute: raw map `[h, w]` of the attribute (top tag) target, or None (VGG16).
    orig_hw: (H, W) of the original image; boxes come out in its pixels.
    threshold: `boxes` threshold (fraction of each map's maximum).
    aspect: when given, also the `aspect_crop` window of this W:H on the aesthetic map.
  Returns:
    `aesthetic_map` f32 `[H', W']` in [0, 1], `attribute_map` (None without `attribute`),
    `empty`: {'aesthetic'(, 'attribute'): bool} (see `empty_maps`), and `boxes`: i32 `[4]`
    each, 'aesthetic', with `attribute` also 'attribute' and 'average' (paper §4.4.3), with
    `aspect` also 'crop'. An empty map gives no box (and no crop); 'average' is then the
    other map's box.
  """
  # At most an eighth of the limit: the minimum is for strips, not for a small limit.
  grid = box_grid(orig_hw, limit, min(BOX_MIN_SIDE, limit // 8))
  aes = resize_maps(cam.normalize(np.asarray(aesthetic)[None], 'per_image'), grid)  # [1,H',W']
  grid_boxes = {'aesthetic': boxes_np(aes, threshold)}
  attr = None
  if attribute is not None:
    attr = resize_maps(cam.normalize(np.asarray(attribute)[None], 'per_image'), grid)
    grid_boxes['attribute'] = boxes_np(attr, threshold)
    grid_boxes['average'] = np.asarray(average_boxes(grid_boxes['aesthetic'],
                                                     grid_boxes['attribute']))
  if aspect:
    grid_boxes['crop'] = aspect_crop(aes, aspect)
  empty = {'aesthetic': bool(empty_maps(np.asarray(aesthetic)))}
  if attribute is not None:
    empty['attribute'] = bool(empty_maps(np.asarray(attribute)))
  grid_boxes = without_empty(grid_boxes, empty)
  boxes = {k: scale_box(v[0], grid, orig_hw) for k, v in grid_boxes.items()}
  if 'crop' in boxes:
    boxes['crop'] = exact_window(boxes['crop'], orig_hw, window_size(orig_hw, aspect))
  return {'aesthetic_map': aes[0], 'attribute_map': None if attr is None else attr[0],
          'empty': empty, 'boxes': boxes}


def save_crops(images: Sequence[np.ndarray] | np.ndarray, boxes_: np.ndarray,
               paths: Sequence[str | os.PathLike]) -> list[str]:
  """Writes `images[i][y0:y1, x0:x1]` to `paths[i]` (format from the suffix; atomic).

  Args:
    images: uint8 `[H,W,3]` arrays (a list: sizes may differ) or one `[B,H,W,3]` array; float
      images in [0, 1] are converted.
    boxes_: i32 `[B, 4]` in each image's own pixels (see `scale_box`).
    paths: B output files; parent folders are created.
  """
  boxes_ = np.asarray(boxes_)
  if not len(images) == len(boxes_) == len(paths):
    raise ValueError(f'save_crops: {len(images)} images, {len(boxes_)} boxes, {len(paths)} paths')
  written = []
  for img, (y0, x0, y1, x1), path in zip(images, boxes_, paths):
    img = np.asarray(img)
    if img.dtype != np.uint8:
      img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    region = img[max(0, y0):y1, max(0, x0):x1]
    if region.size == 0:
      raise ValueError(f'save_crops: empty box {(y0, x0, y1, x1)} for {path}')
    path = os.fspath(path)
    ext = os.path.splitext(path)[1] or '.png'
    buf = io.BytesIO()
    Image.fromarray(region).save(buf, format=Image.registered_extensions().get(ext.lower(), 'PNG'))
    io_lib.atomic_write_bytes(path, buf.getvalue())
    written.append(path)
  return written
