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

Baselines on the same images: the centre pixel (`pointing_game_centre_baseline`) and a uniform
map (`mask_mass_area_baseline`: the mask's area share). 95% bootstrap intervals are given for
each method's pointing game and for its margin over the centre baseline (paired by image).
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

from aesthetics_jax import cpu_backend, models, parallel
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import inference
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import faithfulness as faith_lib

# Per-method values not repeated as flat `<key>_<method>` metrics.json keys.
NOT_FLAT = ('seconds', 'pointing_game_ci', 'margin_over_centre_ci', 'num_images')


def load_masks(masks_dir: str, image_ids: Sequence[int], size: int) -> np.ndarray | None:
  """Region masks `<masks_dir>/<id>.png` (any size; > 127 = inside) resized (nearest) to S²
  → bool [N,S,S]; None without a masks folder (real AVA). A missing file = no region."""
  d = Path(masks_dir) if masks_dir else None
  if d is None or not d.is_dir():
    return None
  out = np.zeros((len(image_ids), size, size), bool)
  for i, image_id in enumerate(image_ids):
    p = d / f'{int(image_id)}.png'
    if p.is_file():
      # The images' decoder (size caps, EXIF orientation); a mask too is user-supplied input.
      mask = preprocess.decode(preprocess.read_file(p), max_side=4 * size, what=str(p)).image
      out[i] = np.asarray(Image.fromarray(mask).convert('L').resize((size, size),
                                                                     Image.NEAREST)) > 127
  return out


def _bootstrap_ci(x: np.ndarray, samples: int, seed: int) -> list[float]:
  """95% percentile interval of the mean of x [N] (resampling images)."""
  if x.size == 0 or samples <= 0:
    return [float('nan'), float('nan')]
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, x.size, (samples, x.size))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def make_maps(model, arch: str, layers: Sequence[str] = ()):
  """`maps(methods, variables, x [B,S,S,3] model input) -> {method: (low, aesthetic) f32
  [B,h,w]}`.

  Jitted in two parts, as `faithfulness.make_step`: the encoder up to the CAM layer (compiled
  once, run ONCE per batch for all `methods`) and the head's vjp with each method's formula
  (small).
  """
  targets = cam.targets_for(arch, ('low', 'aesthetic'))
  layers = models.resolve_layers(model, layers)

  features = inference.features_until_fn(model, layers[0])

  @functools.partial(jax.jit, static_argnames=('method',),
                     compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def maps_fn(variables, feats, x, method):
    _, maps = inference.layer_maps(model, variables, layers, method, feats, x, targets)
    return maps[:, 0], maps[:, 1]

  def maps(methods, variables, x):
    feats = features(variables, x)
    return {m: maps_fn(variables, feats, x, method=m) for m in methods}
  return maps


def _method_arrays(maps_of, methods: Sequence[str], variables, source, n: int,
                   masks_dir: str, image_size: int, normalize: str, batch_size: int, mesh,
                   threshold: float) -> dict[str, dict[str, np.ndarray]]:
  """{method: arrays} over the first n of `source` (batches of `batch_size`, the last one
  padded; images decoded and encoded once per batch for all `methods`). Arrays, per image:
  `hit`, `hit_upsampled`, `centre_hit`, `valid`, `aesthetic_hit` bool [n]; `mass`, `area`,
  `box_iou` f32 [n]; `flat` bool [n] (the low map has no positive value)."""
  sharding = parallel.data_sharding(mesh)
  parts: dict[str, list] = {m: [] for m in methods}
  for start in range(0, n, batch_size):
    idx = range(start, min(n, start + batch_size))
    x = np.stack([preprocess.preprocess_eval_np(source[i]['image'], image_size) for i in idx])
    masks = load_masks(masks_dir, [int(source[i]['image_id']) for i in idx],
                                  image_size)
    xp, b = parallel.pad_to_multiple(x, batch_size)
    xj = preprocess.to_model_input(jax.device_put(xp, sharding), normalize)
    for method, (low, aes) in maps_of(methods, variables, xj).items():
      low, aes = np.asarray(low)[:b], np.asarray(aes)[:b]
      p = jax.device_get(faith_lib.pointing_game(low, masks))
      mm = jax.device_get(faith_lib.mask_mass(low, masks))
      parts[method].append({
          'hit': p['hit'], 'hit_upsampled': p['hit_upsampled'], 'centre_hit': p['centre_hit'],
          'valid': p['valid'], 'mass': mm['mass'], 'area': mm['area'],
          'aesthetic_hit': jax.device_get(faith_lib.pointing_game(aes, masks))['hit'],
          'box_iou': faith_lib.box_iou(low, masks, threshold),
          'flat': low.reshape(len(low), -1).max(axis=1) <= 0})
  return {m: {k: np.concatenate([np.asarray(q[k]) for q in ps]) for k in ps[0]}
          for m, ps in parts.items()}


def _summarize(a: dict[str, np.ndarray], bootstrap_samples: int, seed: int) -> dict[str, Any]:
  valid = a['valid']
  s = faith_lib.summarize(pointing=a, mass=a)
  hit = a['hit'][valid].astype(np.float64)
  margin = hit - a['centre_hit'][valid].astype(np.float64)
  s['pointing_game_aesthetic_target'] = (float(a['aesthetic_hit'][valid].mean())
                                         if valid.any() else float('nan'))
  s['pointing_game_ci'] = _bootstrap_ci(hit, bootstrap_samples, seed)
  s['margin_over_centre'] = float(margin.mean()) if margin.size else float('nan')
  s['margin_over_centre_ci'] = _bootstrap_ci(margin, bootstrap_samples, seed)
  s['flat_low_maps'] = int(a['flat'][valid].sum())
  s['num_images'], s['num_defective'] = int(valid.size), int(valid.sum())
  return s


def run(model, variables, source: Sequence, mesh, *, arch: str, image_size: int,
        normalize: str = 'none', methods: Sequence[str] = ('gradcam',), num_images: int = 0,
        scorecam_images: int = 16, batch_size: int = 32, masks_dir: str = '',
        layers: Sequence[str] = (), box_threshold: float = 0.2, bootstrap_samples: int = 1000,
        seed: int = 0) -> dict[str, Any]:
  """Localisation of each of `methods` on the first `num_images` (0 = all) images of `source`.

  Returns `localization: {method: {pointing_game (+ _upsampled, _aesthetic_target, _ci),
  margin_over_centre (+ _ci), mask_mass, box_iou, flat_low_maps, num_images, num_defective,
  seconds}}`, `pointing_game_centre_baseline`, `mask_mass_area_baseline` (on the images of the
  method run on the most images), `localization_num_images`, `localization_num_defective`,
  `localization_masks`, and flat `<key>_<method>` copies of the scalars; {} without masks.
  """
  n = len(source) if int(num_images) <= 0 else min(int(num_images), len(source))
  if n <= 0 or not methods or load_masks(masks_dir, [], 1) is None:
    return {}
  ndev = mesh.devices.size
  round_up = lambda b: max(ndev, (b + ndev - 1) // ndev * ndev)  # noqa: E731
  maps_of = make_maps(model, arch, layers)
  per_method: dict[str, dict[str, Any]] = {}
  baselines: dict[int, tuple[float, float]] = {}
  # One pass over the images for every method that covers all n of them (they share the
  # decode and the encoder); ScoreCAM, on its first `scorecam_images` only, gets its own.
  groups: dict[int, list[str]] = {}
  for method in methods:
    m_n = min(n, int(scorecam_images)) if method == 'scorecam' else n
    if m_n > 0:
      groups.setdefault(m_n, []).append(method)
  for m_n, group in tqdm(sorted(groups.items(), reverse=True), desc='localization',
                         leave=False):
    t = time.time()
    arrays = _method_arrays(maps_of, group, variables, source, m_n, masks_dir, image_size,
                            normalize, round_up(min(batch_size, m_n)), mesh, box_threshold)
    seconds = round(time.time() - t, 1)
    for method in group:
      s = _summarize(arrays[method], bootstrap_samples, seed)
      baselines.setdefault(m_n, (s.pop('pointing_game_centre'), s.pop('mask_area')))
      s.pop('pointing_game_centre', None)
      s.pop('mask_area', None)
      s['seconds'] = seconds  # of the pass shared by the group
      per_method[method] = s
  per_method = {m: per_method[m] for m in methods if m in per_method}
  if not per_method:
    return {}
  centre, area = baselines[max(baselines)]
  out = {'localization': per_method, 'localization_num_images': n,
         'localization_num_defective': max(s['num_defective'] for s in per_method.values()),
         'localization_masks': masks_dir,
         'pointing_game_centre_baseline': centre, 'mask_mass_area_baseline': area}
  for method, vals in per_method.items():  # flat copies for grep / dashboards
    out.update({f'{k}_{method}': v for k, v in vals.items() if k not in NOT_FLAT})
  return out
