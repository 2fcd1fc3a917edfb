"""Is a map faithful to the model? Deletion/insertion AUC, pointing game, mask mass and the
model-randomisation sanity check.

* Deletion / insertion (Petsiuk et al., RISE 2018): pixels are ranked by saliency; in `steps`
  equal steps the top fraction is replaced by a baseline (deletion) or copied from the image into
  the baseline (insertion), and the model's target score is evaluated on every step in one
  batched call. Curves are normalised as `(s - s_baseline) / (s_image - s_baseline)` (deletion
  runs 1 → 0, insertion 0 → 1) and integrated by the trapezoid rule over the deleted / inserted
  fraction in [0, 1]. Deletion: lower is better; insertion: higher is better. The headline AUC
  (`mean_curve`, `summarize`) normalises the MEAN raw curve of a set of images: per image, the
  normaliser explodes when an image scores about the same as its baseline.
* Pointing game (Zhang et al. 2016): does the map's maximum fall inside the ground-truth mask?
  The maximum is taken at the map's own resolution and the centre of its cell is tested (an
  upsampled coarse map puts its maximum in a corner: edge clamping, raster-order ties); the
  upsampled-argmax variant is reported beside it. The centre-pixel baseline answers the same
  question for a map that always points at the image centre.
* Mask mass: fraction of the map's mass inside the mask (chance level = mask area fraction).
* Randomisation check (Adebayo et al. 2018): Spearman rank correlation, per image, between the
  maps of the trained head and of a re-initialised head; low = the map depends on the model.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop

ScoreFn = Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Baselines.


def gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur of `[B,H,W,C]` (edge-replicated borders, kernel radius 3 sigma)."""
  images = jnp.asarray(images, jnp.float32)
  r = max(1, int(np.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k = jnp.asarray(k / k.sum(), jnp.float32)
  x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode='edge')
  H, W = images.shape[1:3]
  # Shifted sums: cheap for the small radii used here and exact in float32.
  x = sum(k[i] * x[:, i:i + H] for i in range(2 * r + 1))
  return sum(k[i] * x[:, :, i:i + W] for i in range(2 * r + 1))


def baseline_images(images: jax.Array, kind: str | jax.Array = 'blur',
                    sigma: float | None = None) -> jax.Array:
  """Baseline for deletion/insertion: 'blur' (Gaussian, default sigma = 5 px at 224 px),
  'mean' (each image's per-channel mean), 'zero', or an explicit array `[B,H,W,C]`."""
  images = jnp.asarray(images, jnp.float32)
  if not isinstance(kind, str):
    return jnp.broadcast_to(jnp.asarray(kind, jnp.float32), images.shape)
  if kind == 'blur':
    return gaussian_blur(images, sigma if sigma else 5.0 * max(images.shape[1:3]) / 224)
  if kind == 'mean':
    return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
  if kind == 'zero':
    return jnp.zeros_like(images)
  raise ValueError(f"faithfulness baseline {kind!r}: use 'blur', 'mean', 'zero' or an array")


# ----------------------------------------------------------------------------------------------
# Deletion / insertion.


def _to_image_grid(maps: jax.Array, hw: tuple[int, int]) -> jax.Array:
  maps = jnp.asarray(maps, jnp.float32)
  return maps if maps.shape[1:] == tuple(hw) else cam.upsample(maps, hw)


def saliency_ranks(maps: jax.Array) -> jax.Array:
  """Rank of every pixel, 0 = most salient (ties: raster order). `[B,H,W] -> i32 [B,H*W]`."""
  B = maps.shape[0]
  order = jnp.argsort(-maps.reshape(B, -1), axis=1, stable=True)
  return jnp.argsort(order, axis=1).astype(jnp.int32)


def trapezoid_auc(curves: jax.Array) -> jax.Array:
  """Area under `[..., K+1]` curves sampled at equal steps over [0, 1]."""
  k = curves.shape[-1] - 1
  return (curves[..., 1:] + curves[..., :-1]).sum(axis=-1) / (2 * k)


def perturbation_curves(score_fn: ScoreFn, images: jax.Array, maps: jax.Array,
                        mode: str = 'deletion', steps: int = 16,
                        baseline: str | jax.Array = 'blur',
                        steps_per_call: int | None = None) -> dict[str, jax.Array]:
  """Deletion or insertion curves of a batch. jit-able (mode, steps, baseline kind static).

  Args:
    score_fn: images `[N,H,W,C]` -> target scores `[N]` (the model and target composed).
    images: f32 `[B,H,W,C]`.
    maps: `[B,h,w]` saliency (upsampled bilinearly to `H,W` if smaller).
    mode: 'deletion' (most salient pixels → baseline first) or 'insertion' (baseline, most
      salient pixels restored first).
    steps: K; the curve has K+1 points at fractions 0, 1/K, ..., 1 of the pixels.
    steps_per_call: curve points scored per `score_fn` call (None = all K+1: one call on
      B*(K+1) images); lower it to bound memory at full resolution.
  Returns: `curve [B,K+1]` (raw scores), `normalized [B,K+1]`, `auc [B]` (normalised curve),
    `auc_raw [B]`, `fractions [K+1]`.
  """
  if mode not in ('deletion', 'insertion'):
    raise ValueError(f"perturbation mode {mode!r}: use 'deletion' or 'insertion'")
  images = jnp.asarray(images, jnp.float32)
  chex.assert_rank(images, 4)
  B, H, W, _ = images.shape
  ranks = saliency_ranks(_to_image_grid(maps, (H, W))).reshape(B, H, W, 1)
  base = baseline_images(images, baseline)
  src, dst = (base, images) if mode == 'deletion' else (images, base)
  counts = jnp.round(jnp.linspace(0.0, H * W, steps + 1)).astype(jnp.int32)

  def score_step(n):  # the n most salient pixels come from `src`, the rest from `dst`
    return score_fn(jnp.where(ranks < n, src, dst)).astype(jnp.float32)

  curve = jax.lax.map(score_step, counts, batch_size=steps_per_call or steps + 1).T  # [B, K+1]
  full = curve[:, 0] if mode == 'deletion' else curve[:, -1]
  empty = curve[:, -1] if mode == 'deletion' else curve[:, 0]
  den = full - empty
  den = jnp.where(jnp.abs(den) < 1e-12, jnp.nan, den)  # undefined if the baseline scores the same
  normalized = (curve - empty[:, None]) / den[:, None]
  return {'curve': curve, 'normalized': normalized, 'auc': trapezoid_auc(normalized),
          'auc_raw': trapezoid_auc(curve), 'fractions': counts / (H * W)}


def deletion(score_fn: ScoreFn, images, maps, steps: int = 16, baseline='blur',
             steps_per_call: int | None = None) -> dict[str, jax.Array]:
  """Deletion curves and AUC (lower = more faithful); see `perturbation_curves`."""
  return perturbation_curves(score_fn, images, maps, 'deletion', steps, baseline, steps_per_call)


def insertion(score_fn: ScoreFn, images, maps, steps: int = 16, baseline='blur',
              steps_per_call: int | None = None) -> dict[str, jax.Array]:
  """Insertion curves and AUC (higher = more faithful); see `perturbation_curves`."""
  return perturbation_curves(score_fn, images, maps, 'insertion', steps, baseline,
                             steps_per_call)


def random_maps(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform noise maps: the chance-level reference for deletion/insertion."""
  return jax.random.uniform(key, shape, jnp.float32)


# ----------------------------------------------------------------------------------------------
# Ground-truth masks.


@jax.jit  # op by op it compiled ~20 small programs per batch shape (~1.5 s on 2 cores)
def pointing_game(maps: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
  """Maximum-in-mask per image, two ways, and the centre-pixel baseline.

  Args:
    maps: `[B,h,w]` saliency; masks: `[B,H,W]` bool/0-1 (`h <= H`, `w <= W`).
  Returns: bool `[B]` each:
    `hit`: the centre of the map's argmax CELL lies in the mask; a map that points nowhere
      (`crop.empty_maps`: no positive value, or constant, as a 1x1 grid) misses;
    `hit_upsampled`: the argmax of the map upsampled bilinearly to `H,W` lies in the mask (a
      map that points nowhere misses here too: its argmax was pixel (0, 0));
    `centre_hit`: the image's centre pixel lies in the mask;
    `valid`: the mask is not empty (average the hits over valid images only);
    and `peak_cell` i32 `[B]`: the argmax cell's flat index in `[h, w]`, `points` bool `[B]`:
    the map points somewhere (the explorer draws the peak the hit is judged at).
  """
  masks = jnp.asarray(masks) > 0
  maps = jnp.asarray(maps, jnp.float32)
  B, H, W = masks.shape
  h, w = maps.shape[1:]
  flat_masks = masks.reshape(B, -1)
  cells = maps.reshape(B, -1)
  idx = jnp.argmax(cells, axis=1)
  y = jnp.minimum(((idx // w + 0.5) * (H / h)).astype(jnp.int32), H - 1)
  x = jnp.minimum(((idx % w + 0.5) * (W / w)).astype(jnp.int32), W - 1)
  # A constant map's argmax is its first cell: credit for where the raster starts.
  points = ~crop.empty_maps(maps)
  hit = masks[jnp.arange(B), y, x] & points
  up = jnp.argmax(_to_image_grid(maps, (H, W)).reshape(B, -1), axis=1)
  hit_up = jnp.take_along_axis(flat_masks, up[:, None], axis=1)[:, 0] & points
  return {'hit': hit, 'hit_upsampled': hit_up, 'centre_hit': masks[:, H // 2, W // 2],
          'valid': flat_masks.any(axis=1), 'peak_cell': idx, 'points': points}


def box_iou(maps, masks, threshold: float = 0.2) -> np.ndarray:
  """IoU of each map's suggested box with its mask's bounding box (host numpy).

  The box is `crop.boxes_np` of the map min-max normalised and upsampled to the mask's grid,
  as the suggested crops are made; an empty map (`crop.empty_maps`) has no box: IoU 0.
  maps `[B,h,w]`, masks `[B,H,W]` → f32 `[B]` (NaN where the mask is empty).
  """
  maps = np.asarray(maps, np.float32)
  masks = np.asarray(masks) > 0
  up = np.asarray(_box_grid(maps, masks.shape[1:]))
  return box_iou_of_grid(up, crop.empty_maps(maps), masks, threshold)


def _box_grid(maps: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """The grid the boxes are drawn on: maps `[B,h,w]` min-max scaled per map and upsampled to
  `hw` → `[B,H,W]`."""
  return _to_image_grid(cam.normalize(jnp.asarray(maps), 'per_image'), hw)


def box_iou_of_grid(grid: np.ndarray, empty: np.ndarray, masks: np.ndarray,
                    threshold: float = 0.2) -> np.ndarray:
  """`box_iou` from its device part: grid `[B,H,W]` (`_box_grid`), empty bool `[B]`
  (`crop.empty_maps` of the raw maps), masks bool `[B,H,W]` → f32 `[B]`."""
  masks = np.asarray(masks) > 0
  B = masks.shape[0]
  boxes = crop.boxes_np(np.asarray(grid, np.float32), threshold)
  empty = np.asarray(empty)
  out = np.full((B,), np.nan, np.float32)
  for i in range(B):
    ys, xs = np.nonzero(masks[i])
    if ys.size == 0:
      continue
    if empty[i]:
      out[i] = 0.0
      continue
    out[i] = _iou(boxes[i], (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
  return out


def _iou(b: Sequence[float], m: Sequence[float]) -> float:
  """IoU of two (y0, x0, y1, x1) boxes, end-exclusive."""
  ih = max(0.0, min(b[2], m[2]) - max(b[0], m[0]))
  iw = max(0.0, min(b[3], m[3]) - max(b[1], m[1]))
  inter = ih * iw
  union = (b[2] - b[0]) * (b[3] - b[1]) + (m[2] - m[0]) * (m[3] - m[1]) - inter
  return float(inter / union)


def fixed_box_iou(masks, box: tuple[float, float, float, float]) -> np.ndarray:
  """IoU of one fixed box, `(y0, x0, y1, x1)` as fractions of each mask's grid, with each
  mask's bounding box: what a map's box has to beat (the full frame `(0, 0, 1, 1)`, a centred
  box `(.25, .25, .75, .75)`). masks `[B,H,W]` → f32 `[B]` (NaN where the mask is empty)."""
  masks = np.asarray(masks) > 0
  B, H, W = masks.shape
  fixed = (box[0] * H, box[1] * W, box[2] * H, box[3] * W)
  out = np.full((B,), np.nan, np.float32)
  for i in range(B):
    ys, xs = np.nonzero(masks[i])
    if ys.size:
      out[i] = _iou(fixed, (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
  return out


@jax.jit
def mask_mass(maps: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
  """Fraction of (non-negative) map mass inside each mask, and the mask's area fraction
  (what a uniform map would get). `maps [B,h,w]`, `masks [B,H,W]` → `mass [B]`, `area [B]`,
  `valid [B]` (the mask is not empty)."""
  masks = jnp.asarray(masks) > 0
  B, H, W = masks.shape
  m = jnp.maximum(_to_image_grid(maps, (H, W)), 0.0)
  inside = (m * masks).sum(axis=(1, 2))
  total = m.sum(axis=(1, 2))
  return {'mass': jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), jnp.nan),
          'area': masks.mean(axis=(1, 2)), 'valid': masks.any(axis=(1, 2))}


@jax.jit
def localization_arrays(maps: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
  """`pointing_game`, `mask_mass` (`mass`, `area`) and the box grid (`grid` `[B,H,W]`,
  `empty` `[B]`; finish with `box_iou_of_grid`) of one batch in ONE compiled call.

  maps `[B,h,w]`, masks bool `[B,H,W]`. Run op by op, the three compiled ~45 small programs
  per batch shape: ~3 s of a demo MobileNetV2 evaluation's localisation on 2 cores.
  """
  masks = jnp.asarray(masks) > 0
  p = pointing_game(maps, masks)
  mm = mask_mass(maps, masks)
  return {**p, 'mass': mm['mass'], 'area': mm['area'],
          'grid': _box_grid(maps, masks.shape[1:]), 'empty': crop.empty_maps(maps)}


# ----------------------------------------------------------------------------------------------
# Model randomisation.


def rank_correlation(maps_a, maps_b) -> np.ndarray:
  """Spearman correlation of each row pair: `[B, ...]` x `[B, ...]` → `[B]` (e.g. two map
  batches `[B,h,w]`; NaN where a row is constant)."""
  a = np.asarray(maps_a, np.float64).reshape(len(maps_a), -1)
  b = np.asarray(maps_b, np.float64).reshape(len(maps_b), -1)
  from scipy import stats as sstats  # pylint: disable=C0415 (~0.55 s to import: when used)
  ra, rb = sstats.rankdata(a, axis=1), sstats.rankdata(b, axis=1)
  ra -= ra.mean(axis=1, keepdims=True)
  rb -= rb.mean(axis=1, keepdims=True)
  den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(den > 0, (ra * rb).sum(axis=1) / den, np.nan)


def randomized_params(params: Any, key: jax.Array) -> Any:
  """Re-initialised copy of a head's parameters (flax defaults): kernels (ndim >= 2) lecun
  normal, `scale` leaves ones, other leaves (biases) zeros. Use with the same `head_fn`."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, max(1, len(leaves)))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    leaf = jnp.asarray(leaf)
    name = str(getattr(path[-1], 'key', path[-1])) if path else ''
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      out.append((jax.random.normal(k, leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype))
    elif name == 'scale':
      out.append(jnp.ones_like(leaf))
    else:
      out.append(jnp.zeros_like(leaf))
  return jax.tree_util.tree_unflatten(treedef, out)


def randomization_check(maps_trained, maps_random) -> dict[str, Any]:
  """Per-image Spearman between trained-head and random-head maps, with its mean and median."""
  rho = rank_correlation(maps_trained, maps_random)
  finite = rho[np.isfinite(rho)]
  return {'spearman': rho,
          'mean': float(finite.mean()) if finite.size else float('nan'),
          'median': float(np.median(finite)) if finite.size else float('nan')}


def mean_curve(curves, mode: str) -> tuple[float, np.ndarray]:
  """AUC of the normalised MEAN curve: raw curves `[B,K+1]` → `(auc, normalised curve [K+1])`.

  The mean raw curve is normalised by its own image and baseline scores (the first and last
  points); NaN when they coincide. Averaging before normalising keeps one image whose score
  barely changes from dominating the mean, as its per-image normalisation would.
  """
  if mode not in ('deletion', 'insertion'):
    raise ValueError(f"mean_curve mode {mode!r}: use 'deletion' or 'insertion'")
  c = np.nanmean(np.asarray(curves, np.float64), axis=0)
  full, empty = (c[0], c[-1]) if mode == 'deletion' else (c[-1], c[0])
  den = full - empty
  if not np.isfinite(den) or abs(den) < 1e-12:
    return float('nan'), np.full_like(c, np.nan)
  norm = (c - empty) / den
  return float(np.asarray(trapezoid_auc(norm))), norm


def summarize(deletion: Mapping[str, Any] | None = None,
              insertion: Mapping[str, Any] | None = None, pointing: Mapping | None = None,
              mass: Mapping | None = None, randomization: Mapping | None = None,
              prefix: str = '') -> dict[str, float]:
  """The headline numbers of one map method for metrics.json (NaNs skipped).

  Args:
    deletion, insertion: `deletion` / `insertion` outputs (`curve [B,K+1]` raw, `auc [B]`).
    pointing: `pointing_game` output, optionally with `box_iou [B]` (`box_iou`); mass:
      `mask_mass` output (images with an empty mask are skipped); randomization:
      `randomization_check` output.
  Returns (each key with `prefix`): `deletion_auc`, `insertion_auc` (`mean_curve`),
    `deletion_auc_per_image_mean`, `insertion_auc_per_image_mean`, `baseline_gap` (mean image
    score minus mean baseline score: the normaliser of both curves; small gaps push the AUCs
    out of [0, 1]); `pointing_game` (cell centre), `pointing_game_upsampled`,
    `pointing_game_centre`, `box_iou`; `mask_mass`, `mask_area`; `randomization_spearman`.
  """
  def mean(x, sel=None):
    x = np.asarray(x, np.float64)
    if sel is not None:
      x = x[np.asarray(sel, bool)]
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float('nan')

  out = {}
  for mode, res in (('deletion', deletion), ('insertion', insertion)):
    if res is not None:
      out[f'{prefix}{mode}_auc'] = mean_curve(res['curve'], mode)[0]
      out[f'{prefix}{mode}_auc_per_image_mean'] = mean(res['auc'])
  if deletion is not None:
    c = np.nanmean(np.asarray(deletion['curve'], np.float64), axis=0)
    out[f'{prefix}baseline_gap'] = float(c[0] - c[-1])
  if pointing is not None:
    out[f'{prefix}pointing_game'] = mean(pointing['hit'], pointing['valid'])
    out[f'{prefix}pointing_game_upsampled'] = mean(pointing['hit_upsampled'], pointing['valid'])
    out[f'{prefix}pointing_game_centre'] = mean(pointing['centre_hit'], pointing['valid'])
    if 'box_iou' in pointing:
      out[f'{prefix}box_iou'] = mean(pointing['box_iou'], pointing['valid'])
  if mass is not None:
    out[f'{prefix}mask_mass'] = mean(mass['mass'], mass['valid'])
    out[f'{prefix}mask_area'] = mean(mass['area'], mass['valid'])
  if randomization is not None:
    out[f'{prefix}randomization_spearman'] = mean(randomization['spearman'])
  return out
