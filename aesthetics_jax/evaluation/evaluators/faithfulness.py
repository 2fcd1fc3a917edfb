"""Faithfulness of each CAM method on the first test images (`explain/faithfulness.py`).

Per method, on the model's own input grid:
  * deletion / insertion of the AESTHETIC target's map, scored by that target;
  * pointing game and mask mass of the LOW target's map (the negated aesthetic score: what makes
    the image worse) on images with a demo defect mask — the masks mark what made the image bad,
    while the aesthetic target's positive gradients point at what makes it good; the aesthetic
    map's pointing game is reported beside it;
  * Spearman between the aesthetic maps of the trained and of a re-initialised head.
Real AVA has no masks: the pointing game and mask mass are then left out. ScoreCAM re-runs the
whole model once per feature channel (twice: trained and random head), so it gets fewer images
(`scorecam_images`) to cost about as much as the other methods together.
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

from aesthetics_jax import models, parallel
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import inference
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import faithfulness as faith_lib

# Per-method values not repeated as flat `<key>_<method>` metrics.json keys.
NOT_FLAT = ('num_images', 'num_defective', 'seconds', 'flat_low_maps', 'baseline_gap',
            'deletion_curve', 'insertion_curve')


def make_step(model, arch: str, steps: int, layers: Sequence[str] = ()):
  """`step(method, variables, random_head_params, x [B,S,S,3], masks [B,S,S]) -> arrays [B,..]`.

  layers: the CAM layers (`config.eval.cam_layers`; () = the encoder's output), as
  `inference.make_forward` takes them, so the study and the faithfulness checks see one map.

  Returns `deletion`, `insertion` (`curve [B,K+1]` raw, `auc [B]`), `pointing`
  (`faithfulness.pointing_game` of the low map), `mass` (`mask_mass` of the low map),
  `aesthetic_hit [B]` (pointing game of the aesthetic map), `maps`, `low_maps`, `random_maps`
  `[B,h,w]`. Jitted in three parts so that the costly compilations are shared by all methods:
  the encoder (once), the maps (head vjp; per method, small — ScoreCAM includes the model)
  and the perturbation curves (B·(K+1) forward passes; once).
  """
  both = cam.targets_for(arch, ('aesthetic', 'low'))
  aes = cam.targets_for(arch, ('aesthetic',))
  layers = models.resolve_layers(model, layers)

  @jax.jit
  def features(variables, x):
    return model.apply(variables, x, layers[0], method='features_until')

  @functools.partial(jax.jit, static_argnames=('method',))
  def maps_fn(variables, random_head, feats, x, method):
    _, maps2 = inference.layer_maps(model, variables, layers, method, feats, x, both)
    rvars = dict(variables, params=dict(variables['params'], head=random_head))
    _, rmaps = inference.layer_maps(model, rvars, layers, method, feats, x, aes)
    return maps2[:, 0], maps2[:, 1], rmaps[:, 0]

  @jax.jit
  def perturb(variables, x, maps):
    score_fn = lambda im: aes(model.apply(variables, im))[:, 0]  # noqa: E731
    dele = faith_lib.deletion(score_fn, x, maps, steps)
    ins = faith_lib.insertion(score_fn, x, maps, steps)
    return {'deletion': {'curve': dele['curve'], 'auc': dele['auc']},
            'insertion': {'curve': ins['curve'], 'auc': ins['auc']}}

  def step(method, variables, random_head, x, masks):
    feats = features(variables, x)
    maps, low, rmaps = maps_fn(variables, random_head, feats, x, method=method)
    return {**perturb(variables, x, maps), 'pointing': faith_lib.pointing_game(low, masks),
            'mass': faith_lib.mask_mass(low, masks),
            'aesthetic_hit': faith_lib.pointing_game(maps, masks)['hit'],
            'maps': maps, 'low_maps': low, 'random_maps': rmaps}

  return step


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


def _apply(step, method: str, variables, random_head, images: np.ndarray, masks: np.ndarray,
           mesh, normalize: str, batch_size: int) -> dict[str, Any]:
  """`step` over images [n,S,S,3] in batches of `batch_size` (the last one padded); the
  outputs of the n real rows, concatenated."""
  sharding = parallel.data_sharding(mesh)
  outs = []
  for start in range(0, images.shape[0], batch_size):
    x, n = parallel.pad_to_multiple(images[start:start + batch_size], batch_size)
    mk, _ = parallel.pad_to_multiple(masks[start:start + batch_size], batch_size)
    xj = preprocess.to_model_input(jax.device_put(x, sharding), normalize)
    out = jax.device_get(step(method, variables, random_head, xj, jax.device_put(mk, sharding)))
    outs.append(jax.tree.map(lambda v, n=n: np.asarray(v)[:n], out))
  return jax.tree.map(lambda *v: np.concatenate(v), *outs)


def _summarize(a: dict[str, Any], have_masks: bool, masks: np.ndarray,
               threshold: float) -> dict[str, Any]:
  """One method's numbers: `faithfulness.summarize` (+ the low map's box IoU with the mask),
  the aesthetic-target pointing game, the normalised mean curves and the image counts."""
  if have_masks:
    a['pointing'] = dict(a['pointing'], box_iou=faith_lib.box_iou(a['low_maps'], masks,
                                                                  threshold))
  s = faith_lib.summarize(a['deletion'], a['insertion'], a['pointing'] if have_masks else None,
                          a['mass'] if have_masks else None,
                          faith_lib.randomization_check(a['maps'], a['random_maps']))
  valid = a['pointing']['valid'] & have_masks
  if have_masks:
    s['pointing_game_aesthetic_target'] = (float(a['aesthetic_hit'][valid].mean())
                                           if valid.any() else float('nan'))
    s['flat_low_maps'] = int((a['low_maps'].reshape(len(valid), -1).max(1) <= 0).sum())
  for mode in ('deletion', 'insertion'):
    s[f'{mode}_curve'] = faith_lib.mean_curve(a[mode]['curve'], mode)[1].tolist()
  s['num_images'], s['num_defective'] = int(valid.size), int(valid.sum())
  return s


def run(model, variables, source: Sequence, mesh, *, arch: str, image_size: int,
        normalize: str = 'none', methods: Sequence[str] = ('gradcam',), num_images: int = 64,
        steps: int = 16, scorecam_images: int = 16, batch_size: int = 32, masks_dir: str = '',
        seed: int = 0, layers: Sequence[str] = (), box_threshold: float = 0.2
        ) -> dict[str, Any]:
  """Faithfulness of each of `methods` on the first `num_images` images of `source`.

  Returns `faithfulness: {method: {deletion_auc, insertion_auc (+ _per_image_mean),
  deletion_curve, insertion_curve [K+1], baseline_gap, pointing_game (+ _upsampled,
  _aesthetic_target), box_iou (the low map's box vs the mask's bounding box), mask_mass,
  flat_low_maps, randomization_spearman, num_images, num_defective, seconds}}`, flat `<key>_<method>` copies of the scalars, the centre-point and
  uniform-map baselines (of the method run on the most images) and the counts; {} when there
  is nothing to run.
  """
  n = min(int(num_images), len(source))
  if n <= 0 or not methods:
    return {}
  ndev = mesh.devices.size
  round_up = lambda b: max(ndev, (b + ndev - 1) // ndev * ndev)  # noqa: E731
  masks = load_masks(masks_dir, [int(source[i]['image_id']) for i in range(n)], image_size)
  have_masks = masks is not None
  if masks is None:
    masks = np.zeros((n, image_size, image_size), bool)
  # Preprocessed once for all methods (n images at S², a few MB at most).
  images = np.stack([preprocess.preprocess_eval_np(source[i]['image'], image_size)
                     for i in range(n)])
  random_head = faith_lib.randomized_params(variables['params']['head'],
                                            jax.random.PRNGKey(int(seed) + 1))
  step = make_step(model, arch, steps, layers)
  per_method, baselines = {}, {}
  for method in tqdm(methods, desc='faithfulness', leave=False):
    t = time.time()
    m_n = min(n, int(scorecam_images)) if method == 'scorecam' else n
    # ScoreCAM's few images in a batch of their own (a padded full batch would multiply its
    # per-channel forward passes); the other methods share one batch shape.
    m_bs = round_up(m_n) if method == 'scorecam' else round_up(min(batch_size, n))
    a = _apply(step, method, variables, random_head, images[:m_n], masks[:m_n], mesh,
               normalize, m_bs)
    s = _summarize(a, have_masks, masks[:m_n], box_threshold)
    baselines.setdefault(m_n, (s.pop('pointing_game_centre', np.nan),
                               s.pop('mask_area', np.nan)))
    s['seconds'] = round(time.time() - t, 1)
    per_method[method] = s
  centre, area = baselines[max(baselines)]
  out = {'faithfulness': per_method, 'faithfulness_num_images': n,
         'faithfulness_num_defective': max(s['num_defective'] for s in per_method.values()),
         'faithfulness_steps': steps,
         'pointing_game_centre_baseline': centre if have_masks else float('nan'),
         'mask_mass_area_baseline': area if have_masks else float('nan'),
         'faithfulness_masks': masks_dir if have_masks else 'none'}
  for method, vals in per_method.items():  # flat copies for grep / dashboards
    out.update({f'{k}_{method}': v for k, v in vals.items() if k not in NOT_FLAT})
  return out
