"""Do the maps point at what made an image bad? Pointing game, mask mass and box IoU of the
LOW target's map (the negated aesthetic score) over EVERY test image that has a region mask.

Masks come from the dataset's metadata (the demo generator's `defect_masks/`) or
`--masks_dir`; real AVA has none and this evaluator then returns {}. The methods share one
pass over the images: each batch is decoded and encoded up to the CAM layer once, then each
method runs one vjp of the rest of the network (the low and the aesthetic targets share it),
so the whole test split costs about one evaluation pass; ScoreCAM, which re-runs the model
once per feature channel, gets the first `scorecam_images` images only, in a pass of its own.
The deletion/insertion curves, which cost K+1 forward passes per image, stay on a subset
(`evaluators/faithfulness.py`).

Baselines on the same images: the centre pixel (`pointing_game_centre_baseline`), a uniform
map (`mask_mass_area_baseline`: the mask's area share) and two fixed boxes for box IoU
(`box_iou_full_frame_baseline`, `box_iou_centre_box_baseline`: the centred box of half the
sides). Controls, in the same pass: the maps of
the model before training (a conspicuous region draws untrained maps too) and the trained maps
against another image's region (a spatial prior scores there as well). 95% bootstrap intervals
are given for each method's pointing game and for its margins over the centre baseline and
over the untrained model (paired by image).
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from aesthetics_jax import cpu_backend, memory_fit, models, parallel
from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import forward
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import faithfulness as faith_lib

# Per-method values not repeated as flat `<key>_<method>` metrics.json keys.
# Fixed boxes (fractions of the grid, (y0, x0, y1, x1)) whose IoU a map's box has to beat.
FULL_FRAME = (0.0, 0.0, 1.0, 1.0)
CENTRE_BOX = (0.25, 0.25, 0.75, 0.75)
NOT_FLAT = ('seconds', 'pointing_game_ci', 'margin_over_centre_ci', 'margin_over_untrained_ci',
            'num_images')


def load_masks(masks_dir: str, image_ids: Sequence[int], size: int,
               errors: dict[str, str] | None = None) -> np.ndarray | None:
  """Region masks `<masks_dir>/<id>.png` (any size; > 127 = inside) resized (nearest) to S²
  → bool [N,S,S]; None without a masks folder (real AVA). A missing file = no region; so is
  an unreadable one, its one-line reason put in `errors` ({path: reason}; raised without)."""
  d = Path(masks_dir) if masks_dir else None
  if d is None or not d.is_dir():
    return None
  out = np.zeros((len(image_ids), size, size), bool)
  for i, image_id in enumerate(image_ids):
    p = d / f'{int(image_id)}.png'
    if p.is_file():
      # The images' decoder (size caps, EXIF orientation); a mask too is user-supplied input.
      try:
        mask = decoder.decode(decoder.read_file(p), max_side=4 * size, what=str(p),
                              srgb=False).image
      except (preprocess.InputError, OSError) as e:
        if errors is None:
          raise
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        errors[str(p)] = why if str(p) in why else f'{p}: {why}'
        continue
      out[i] = np.asarray(Image.fromarray(mask).convert('L').resize((size, size),
                                                                     Image.NEAREST)) > 127
  return out


def matching_masks(masks_dir: str, image_ids: Sequence[int]) -> int:
  """How many of `image_ids` have a `<id>.png` in `masks_dir`."""
  d = Path(masks_dir)
  return sum((d / f'{int(i)}.png').is_file() for i in image_ids)


# Fewer images give no interval: resampling 2 images that both hit gave [1.000, 1.000], which
# read as certain (ScoreCAM, scored on the first few images, then 'beat' every other method).
MIN_CI_IMAGES = 10


def _bootstrap_ci(x: np.ndarray, samples: int, seed: int) -> list[float]:
  """95% percentile interval of the mean of x [N] (resampling images); NaNs under
  MIN_CI_IMAGES images."""
  if x.size < MIN_CI_IMAGES or samples <= 0:
    return [float('nan'), float('nan')]
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, x.size, (samples, x.size))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def make_maps(model, arch: str, layers: Sequence[str] = ()):
  """`maps(methods, variables, x [B,S,S,3] model input) -> {method: (low, aesthetic) f32
  [B,h,w]}`.

  Jitted in two parts, as `faithfulness.make_step`: the encoder up to the CAM layer (compiled
  once, run ONCE per batch for all `methods`) and the rest of the network with one vjp shared
  by every gradient method (`forward.layer_maps_many`; one compilation for all `methods`).
  """
  targets = cam.targets_for(arch, ('low', 'aesthetic'))
  layers = models.resolve_layers(model, layers)

  features = forward.features_until_fn(model, layers[0])

  @functools.partial(jax.jit, static_argnames=('methods',),
                     compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def maps_fn(variables, feats, x, methods):
    _, maps = forward.layer_maps_many(model, variables, layers, methods, feats, x, targets)
    return {m: (v[:, 0], v[:, 1]) for m, v in maps.items()}

  def maps(methods, variables, x):
    # Activations too large for the machine: one line before each part's first batch.
    fit = functools.partial(memory_fit.call, flag='config.eval.batch_size', batch=x.shape[0])
    return fit(maps_fn, variables, fit(features, variables, x), x, methods=tuple(methods))
  return maps


def _derangement(valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Index map p [B] for the negative control: the images with a region (`valid` bool [B])
  take each other's regions along one random cycle (no image keeps its own); the others, and
  a lone image with a region, keep their own index (`p[i] == i`: left out of the control)."""
  p = np.arange(valid.size)
  idx = np.flatnonzero(valid)
  if idx.size >= 2:
    cycle = idx[rng.permutation(idx.size)]
    p[cycle] = np.roll(cycle, 1)
  return p


def _arrays(low: np.ndarray, aes: np.ndarray | None, masks: np.ndarray, b: int,
            threshold: float) -> dict[str, np.ndarray]:
  """Per-image localisation arrays of one batch's first b images (see `_method_arrays`).

  low, aes: the padded batch's low / aesthetic maps [P,h,w] (P >= b), masks: [b,S,S]. The
  device part runs on the padded batch (masks padded empty), so one pass compiles it once.
  """
  pad = np.zeros((low.shape[0] - b,) + masks.shape[1:], bool)
  padded = np.concatenate([masks, pad]) if len(pad) else masks
  r = {k: v[:b] for k, v in jax.device_get(faith_lib.localization_arrays(low, padded)).items()}
  out = {'hit': r['hit'], 'hit_upsampled': r['hit_upsampled'], 'centre_hit': r['centre_hit'],
         'valid': r['valid'], 'mass': r['mass'], 'area': r['area'],
         'box_iou': faith_lib.box_iou_of_grid(r['grid'], r['empty'], masks, threshold),
         'box_iou_full_frame': faith_lib.fixed_box_iou(masks, FULL_FRAME),
         'box_iou_centre_box': faith_lib.fixed_box_iou(masks, CENTRE_BOX),
         'flat': ~r['points']}
  if aes is not None:
    out['aesthetic_hit'] = np.asarray(faith_lib.pointing_game(aes, padded)['hit'])[:b]
    out['same_peak'] = same_peak(low, aes)[:b]
  return out


def same_peak(low, aes) -> np.ndarray:
  """bool [B]: the low- and aesthetic-target maps `[B,h,w]` peak at the same cell, both with
  a positive peak above their lowest cell (a constant map has none). The two targets are opposite, so a method that follows the target rarely
  does; one that ignores it mostly does, and its pointing game then says where the image's
  dominant pattern is, not what makes it worse. On the demo (Xeon, 175 images with a region):
  EigenCAM 1.0 by design, VGG16's Grad-CAM++ 0.537, every other gradient method <= 0.051."""
  low, aes = (np.asarray(jax.device_get(m), np.float32) for m in (low, aes))
  flat = lambda m: m.reshape(m.shape[0], -1)  # noqa: E731
  # A constant map (a 1x1 grid) has no peak: argmax's first cell counted as a shared one.
  peaked = lambda m: flat(m).max(1) > np.maximum(flat(m).min(1), 0)  # noqa: E731
  return (flat(low).argmax(1) == flat(aes).argmax(1)) & peaked(low) & peaked(aes)


def _method_arrays(maps_of, methods: Sequence[str], variables, source, n: int,
                   masks_dir: str, image_size: int, normalize: str, batch_size: int, mesh,
                   threshold: float, untrained=None, shuffle_seed: int | None = None,
                   mask_errors: dict[str, str] | None = None
                   ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """{variant: {method: arrays}} over the first n of `source` (batches of `batch_size`, the
  last one padded; images decoded once per batch, and encoded once per batch and variables
  for all `methods`). Variants: 'trained' (`variables`), 'untrained' (the maps of
  `untrained` variables, when given) and 'shuffled_masks' (the trained maps against another
  image's region: `_derangement` within each batch, drawn from `shuffle_seed`; when given).
  Arrays, per image: `hit`, `hit_upsampled`, `centre_hit`, `valid`, `aesthetic_hit`,
  `same_peak` bool [n]
  (not for 'shuffled_masks'); `mass`, `area`, `box_iou` f32 [n]; `flat` bool [n] (the low map
  has no positive value)."""
  sharding = parallel.data_sharding(mesh)
  rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
  parts: dict[str, dict[str, list]] = {}
  add = lambda variant, method, a: parts.setdefault(variant, {}).setdefault(  # noqa: E731
      method, []).append(a)
  for start in range(0, n, batch_size):
    idx = range(start, min(n, start + batch_size))
    x = np.stack([preprocess.preprocess_eval_np(source[i]['image'], image_size) for i in idx])
    masks = load_masks(masks_dir, [int(source[i]['image_id']) for i in idx], image_size,
                       mask_errors)
    xp, b = parallel.pad_to_multiple(x, batch_size)
    xj = preprocess.to_model_input(jax.device_put(xp, sharding), normalize)
    perm = None
    if rng is not None:
      perm = _derangement(masks.any(axis=(1, 2)), rng)
    for variant, v in (('trained', variables), ('untrained', untrained)):
      if v is None:
        continue
      for method, (low, aes) in maps_of(methods, v, xj).items():
        low, aes = np.asarray(low), np.asarray(aes)
        add(variant, method, _arrays(low, aes, masks, b, threshold))
        if variant == 'trained' and perm is not None:
          a = _arrays(low, None, masks[perm], b, threshold)
          a['valid'] = a['valid'] & (perm != np.arange(b))
          add('shuffled_masks', method, a)
  return {variant: {m: {k: np.concatenate([np.asarray(q[k]) for q in ps]) for k in ps[0]}
                    for m, ps in per.items()} for variant, per in parts.items()}


def _summarize(a: dict[str, np.ndarray], bootstrap_samples: int, seed: int) -> dict[str, Any]:
  valid = a['valid']
  s = faith_lib.summarize(pointing=a, mass=a)
  hit = a['hit'][valid].astype(np.float64)
  margin = hit - a['centre_hit'][valid].astype(np.float64)
  s['pointing_game_aesthetic_target'] = (float(a['aesthetic_hit'][valid].mean())
                                         if valid.any() else float('nan'))
  if 'same_peak' in a:
    s['same_peak_low_aesthetic'] = (float(a['same_peak'][valid].mean()) if valid.any()
                                    else float('nan'))
  s['pointing_game_ci'] = _bootstrap_ci(hit, bootstrap_samples, seed)
  s['margin_over_centre'] = float(margin.mean()) if margin.size else float('nan')
  s['margin_over_centre_ci'] = _bootstrap_ci(margin, bootstrap_samples, seed)
  s['flat_low_maps'] = int(a['flat'][valid].sum())
  s['num_images'], s['num_defective'] = int(valid.size), int(valid.sum())
  for k in ('box_iou_full_frame', 'box_iou_centre_box'):  # the baselines, popped by `run`
    v = a[k][valid]
    s[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float('nan')
  return s


def _control(s: dict[str, Any], trained: dict[str, np.ndarray], a: dict[str, np.ndarray],
             suffix: str, bootstrap_samples: int, seed: int) -> None:
  """Adds a control's `pointing_game_<suffix>`, `box_iou_<suffix>`, `mask_mass_<suffix>` to
  the method's summary `s`; for the untrained maps also `margin_over_untrained` (+ `_ci`),
  paired by image; for the shuffled masks `num_shuffled_masks` (the images scored)."""
  c = faith_lib.summarize(pointing=a, mass=a)
  for k in ('pointing_game', 'box_iou', 'mask_mass'):
    s[f'{k}_{suffix}'] = c[k]
  valid = a['valid']
  if suffix == 'untrained':
    margin = (trained['hit'][valid].astype(np.float64) - a['hit'][valid].astype(np.float64))
    s['margin_over_untrained'] = float(margin.mean()) if margin.size else float('nan')
    s['margin_over_untrained_ci'] = _bootstrap_ci(margin, bootstrap_samples, seed)
  else:
    s[f'num_{suffix}'] = int(valid.sum())


def run(model, variables, source: Sequence, mesh, *, arch: str, image_size: int,
        normalize: str = 'none', methods: Sequence[str] = ('gradcam',), num_images: int = 0,
        scorecam_images: int = 16, batch_size: int = 32, masks_dir: str = '',
        layers: Sequence[str] = (), box_threshold: float = 0.2, bootstrap_samples: int = 1000,
        seed: int = 0, untrained_variables=None, untrained_note: str = '',
        shuffled_masks: bool = False) -> dict[str, Any]:
  """Localisation of each of `methods` on the first `num_images` (0 = all) images of `source`.

  Two controls on the same images, each in the same pass (`_method_arrays`):
  untrained_variables: the variables training started from (`models.starting_variables`):
    their maps get `pointing_game_untrained`, `box_iou_untrained`, `mask_mass_untrained` and
    the trained maps' `margin_over_untrained` (+ `_ci`, paired by image). Maps of an
    untrained model that point too say the region is conspicuous, not that the maps follow
    what the model learned. `untrained_note` says why there are none (reported as is).
  shuffled_masks: the negative control: the trained maps scored against another image's
    region (`pointing_game_shuffled_masks`, ...; `num_shuffled_masks` images): a high score
    there is a spatial prior (regions sit in similar places), not localisation.

  Returns `localization: {method: {pointing_game (+ _upsampled, _aesthetic_target, _ci),
  margin_over_centre (+ _ci), mask_mass, box_iou, flat_low_maps, num_images, num_defective,
  seconds, and the controls' keys}}`, `pointing_game_centre_baseline`,
  `mask_mass_area_baseline` (on the images of the method run on the most images),
  `localization_num_images`, `localization_num_defective`, `localization_masks`,
  `localization_controls` ({control: what it is, or why it was skipped}),
  `localization_mask_errors` (masks that could not be read, scored as no region), and flat
  `<key>_<method>` copies of the scalars; {} without masks.
  """
  n = len(source) if int(num_images) <= 0 else min(int(num_images), len(source))
  if n <= 0 or not methods or load_masks(masks_dir, [], 1) is None:
    return {}
  ndev = mesh.devices.size
  round_up = lambda b: max(ndev, (b + ndev - 1) // ndev * ndev)  # noqa: E731
  maps_of = make_maps(model, arch, layers)
  per_method: dict[str, dict[str, Any]] = {}
  baselines: dict[int, tuple[float, float]] = {}
  mask_errors: dict[str, str] = {}
  for m_n, group in tqdm(forward.method_passes(methods, n, scorecam_images),
                         desc='localization', leave=False):
    t = time.time()
    arrays = _method_arrays(maps_of, group, variables, source, m_n, masks_dir, image_size,
                            normalize, round_up(min(batch_size, m_n)), mesh, box_threshold,
                            untrained=untrained_variables,
                            shuffle_seed=seed if shuffled_masks else None,
                            mask_errors=mask_errors)
    seconds = round(time.time() - t, 1)
    for method in group:
      trained = arrays['trained'][method]
      s = _summarize(trained, bootstrap_samples, seed)
      # Popped from every method's numbers; kept from the first method of each image count.
      baselines.setdefault(m_n, tuple(s.pop(k) for k in (
          'pointing_game_centre', 'mask_area', 'box_iou_full_frame', 'box_iou_centre_box')))
      for variant in ('untrained', 'shuffled_masks'):
        if variant in arrays:
          _control(s, trained, arrays[variant][method], variant, bootstrap_samples, seed)
      s['seconds'] = seconds  # of the pass shared by the group
      per_method[method] = s
  per_method = {m: per_method[m] for m in methods if m in per_method}
  if not per_method:
    return {}
  centre, area, full_iou, centre_iou = baselines[max(baselines)]
  controls = {}
  if untrained_variables is not None:
    controls['untrained'] = ('the maps of the variables training started from (seed init, '
                             'then the init_weights encoder if any)')
  elif untrained_note:
    controls['untrained'] = untrained_note
  if shuffled_masks:
    controls['shuffled_masks'] = ("the trained maps against another image's region (a random "
                                  'cycle among the images with one in each batch)')
  out = {'localization': per_method, 'localization_num_images': n,
         'localization_num_defective': max(s['num_defective'] for s in per_method.values()),
         'localization_masks': masks_dir, 'localization_controls': controls,
         'pointing_game_centre_baseline': centre, 'mask_mass_area_baseline': area,
         'box_iou_full_frame_baseline': full_iou, 'box_iou_centre_box_baseline': centre_iou}
  if mask_errors:  # scored as images without a region
    out['localization_mask_errors'] = [mask_errors[p] for p in sorted(mask_errors)]
  for method, vals in per_method.items():  # flat copies for grep / dashboards
    out.update({f'{k}_{method}': v for k, v in vals.items() if k not in NOT_FLAT})
  return out
