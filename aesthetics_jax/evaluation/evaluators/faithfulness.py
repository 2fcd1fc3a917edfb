"""Faithfulness of each CAM method on the first test images (`explain/faithfulness.py`).

Per method, on the model's own input grid:
  * deletion / insertion of the AESTHETIC target's map, scored by that target;
  * Spearman between the aesthetic maps of the trained and of a re-initialised head.
The curves cost K+1 forward passes per image, so they run on the first `num_images` test
images; whether the maps point at annotated regions (pointing game, mask mass, box IoU) is
measured on every masked test image by `evaluators/localization.py`. ScoreCAM re-runs the whole
model once per feature channel (twice: trained and random head), so it gets fewer images
(`scorecam_images`) to cost about as much as the other methods together.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from aesthetics_jax import cpu_backend, memory_fit, models, parallel
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import forward
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import faithfulness as faith_lib

# Per-method values not repeated as flat `<key>_<method>` metrics.json keys.
NOT_FLAT = ('num_images', 'seconds', 'baseline_gap', 'deletion_curve', 'insertion_curve')


def make_step(model, arch: str, steps: int, layers: Sequence[str] = (),
              num_shards: int | None = None):
  """`step(methods, variables, random_head_params, x [B,S,S,3]) -> {method: arrays [B,..]}`;
  `num_shards`: devices the batch is sharded over (default: all).

  layers: the CAM layers (`config.eval.cam_layers`; () = the encoder's output), as
  `forward.make_forward` takes them, so the study and the faithfulness checks see one map.

  Returns per method `deletion`, `insertion` (`curve [B,K+1]` raw, `auc [B]`), `maps`,
  `random_maps` `[B,h,w]` (the aesthetic target's, of the trained and of the re-initialised
  head). Jitted in three parts so that the costly compilations are shared: the encoder
  (once), the maps of all `methods` (one vjp shared by the gradient methods, for each head;
  ScoreCAM includes the model) and the perturbation curves (B·(K+1) forward passes; once).
  """
  aes = cam.targets_for(arch, ('aesthetic',))
  layers = models.resolve_layers(model, layers)

  features = forward.features_until_fn(model, layers[0])
  n = jax.device_count() if num_shards is None else int(num_shards)

  @functools.partial(jax.jit, static_argnames=('methods',),
                     compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def maps_fn(variables, random_head, feats, x, methods):
    _, maps = forward.layer_maps_many(model, variables, layers, methods, feats, x, aes, n)
    rvars = dict(variables, params=dict(variables['params'], head=random_head))
    _, rmaps = forward.layer_maps_many(model, rvars, layers, methods, feats, x, aes, n)
    return {m: (maps[m][:, 0], rmaps[m][:, 0]) for m in methods}

  # The B*(K+1) perturbed images are scored one curve point at a time, the encoder `chunk`
  # images at a time on CPU (parallel.default_chunk: small batches keep the CPU's caches
  # warm; measured ~2x at 224 px); elsewhere all points in one call.
  chunk = parallel.default_chunk()
  encoder = parallel.features_fn(model, chunk, num_shards=n)
  per_call = 1 if chunk > 0 else None

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model))
  def perturb(variables, x, maps):
    score_fn = lambda im: aes(model.apply(  # noqa: E731
        variables, encoder(variables, im), method='head'))[:, 0]
    dele = faith_lib.deletion(score_fn, x, maps, steps, steps_per_call=per_call)
    ins = faith_lib.insertion(score_fn, x, maps, steps, steps_per_call=per_call)
    return {'deletion': {'curve': dele['curve'], 'auc': dele['auc']},
            'insertion': {'curve': ins['curve'], 'auc': ins['auc']}}

  def step(methods, variables, random_head, x):
    # Activations too large for the machine: one line before each part's first batch.
    fit = functools.partial(memory_fit.call, flag='config.eval.batch_size', batch=x.shape[0])
    feats = fit(features, variables, x)
    both = fit(maps_fn, variables, random_head, feats, x, methods=tuple(methods))
    return {m: {**fit(perturb, variables, x, maps), 'maps': maps, 'random_maps': rmaps}
            for m, (maps, rmaps) in both.items()}

  step.perturb = perturb  # the curves of any maps: the random-order control's
  return step


def _batched(fn, images: np.ndarray, mesh, normalize: str, batch_size: int,
             extra: np.ndarray | None = None) -> Any:
  """`fn(model input, extra rows or None)` over images [n,S,S,3] (and `extra` [n,...], sharded
  as the images) in batches of `batch_size` (the last one padded): the outputs of the n real
  rows, concatenated."""
  sharding = parallel.data_sharding(mesh)
  outs = []
  for start in range(0, images.shape[0], batch_size):
    x, n = parallel.pad_to_multiple(images[start:start + batch_size], batch_size)
    xj = preprocess.to_model_input(jax.device_put(x, sharding), normalize)
    e = None if extra is None else jax.device_put(
        parallel.pad_to_multiple(extra[start:start + batch_size], batch_size)[0], sharding)
    out = jax.device_get(fn(xj, e))
    outs.append(jax.tree.map(lambda v, n=n: np.asarray(v)[:n], out))
  return jax.tree.map(lambda *v: np.concatenate(v), *outs)


def _auc_ci(curves: np.ndarray, mode: str, seed: int, num_bootstrap: int = 1000
            ) -> list[float]:
  """95% bootstrap interval (images resampled) of `mean_curve`'s AUC: on 16-64 images the
  methods' AUCs differ by less than their spread, which a bare number hides."""
  n = len(curves)
  idx = np.random.default_rng(seed).integers(0, n, (num_bootstrap, n))
  # `mean_curve` of every resample at once: mean curve, normalised by its own end points.
  c = np.nanmean(curves[idx], axis=1)                                     # [R, K+1]
  full, empty = (c[:, 0], c[:, -1]) if mode == 'deletion' else (c[:, -1], c[:, 0])
  den = full - empty
  # A resample whose image and baseline score alike has no AUC (`mean_curve`'s NaN): left
  # out before dividing, since x/0 then inf + -inf printed numpy RuntimeWarnings in evaluate.
  ok = np.isfinite(den) & (np.abs(den) >= 1e-12)
  norm = (c[ok] - empty[ok, None]) / den[ok, None]
  aucs = np.asarray(faith_lib.trapezoid_auc(norm)).reshape(-1)
  aucs = aucs[np.isfinite(aucs)]
  return ([float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))] if aucs.size
          else [float('nan'), float('nan')])


def _summarize(a: dict[str, Any], seed: int = 0) -> dict[str, Any]:
  """One method's numbers: `faithfulness.summarize`, the AUCs' intervals, the normalised mean
  curves, the count (`a` without maps: the random-order control, no randomisation check)."""
  s = faith_lib.summarize(
      a['deletion'], a['insertion'],
      randomization=(faith_lib.randomization_check(a['maps'], a['random_maps'])
                     if 'maps' in a else None))
  for mode in ('deletion', 'insertion'):
    curves = np.asarray(a[mode]['curve'], np.float64)
    s[f'{mode}_curve'] = faith_lib.mean_curve(curves, mode)[1].tolist()
    s[f'{mode}_auc_ci'] = _auc_ci(curves, mode, seed)
  s['num_images'] = int(len(a['deletion']['curve']))
  return s


def _random_order(step, variables, images: np.ndarray, map_hw: tuple[int, int], mesh,
                  normalize: str, batch_size: int, seed: int) -> dict[str, Any]:
  """Deletion / insertion in a random pixel order (uniform noise maps on the maps' grid): the
  chance level that a method's AUC has to beat."""
  noise = np.asarray(faith_lib.random_maps(jax.random.PRNGKey(int(seed) + 2),
                                           (images.shape[0], *map_hw)))
  return _batched(lambda xj, r: step.perturb(variables, xj, r), images, mesh, normalize,
                  batch_size, extra=noise)


def run(model, variables, source: Sequence, mesh, *, arch: str, image_size: int,
        normalize: str = 'none', methods: Sequence[str] = ('gradcam',), num_images: int = 64,
        steps: int = 16, scorecam_images: int = 16, batch_size: int = 32, seed: int = 0,
        layers: Sequence[str] = ()) -> dict[str, Any]:
  """Faithfulness of each of `methods` on the first `num_images` images of `source`.

  Returns `faithfulness: {method: {deletion_auc, insertion_auc (+ _per_image_mean, + _ci),
  deletion_curve, insertion_curve [K+1], baseline_gap, randomization_spearman, num_images,
  seconds (of the pass its group of methods shared)}}`, `faithfulness_random` (the same
  curves and AUCs in a random pixel order: chance level), flat `<key>_<method>` copies of the
  scalars and the counts; {} when there is nothing to run.
  """
  n = min(int(num_images), len(source))
  if n <= 0 or not methods:
    return {}
  ndev = mesh.devices.size
  round_up = lambda b: max(ndev, (b + ndev - 1) // ndev * ndev)  # noqa: E731
  # Preprocessed once for all methods (n images at S², a few MB at most).
  images = np.stack([preprocess.preprocess_eval_np(source[i]['image'], image_size)
                     for i in range(n)])
  random_head = faith_lib.randomized_params(variables['params']['head'],
                                            jax.random.PRNGKey(int(seed) + 1))
  step = make_step(model, arch, steps, layers, mesh.size)
  per_method, map_hw = {}, None
  # ScoreCAM's few images in a batch of their own (a padded full batch would multiply its
  # per-channel forward passes).
  for m_n, group in tqdm(forward.method_passes(methods, n, scorecam_images),
                         desc='faithfulness', leave=False):
    t = time.time()
    m_bs = round_up(m_n) if group == ['scorecam'] else round_up(min(batch_size, n))
    arrays = _batched(lambda xj, _, g=group: step(g, variables, random_head, xj),
                      images[:m_n], mesh, normalize, m_bs)
    seconds = round(time.time() - t, 1)
    for method in group:
      per_method[method] = {**_summarize(arrays[method], seed), 'seconds': seconds}
      map_hw = arrays[method]['maps'].shape[1:]
  per_method = {m: per_method[m] for m in methods if m in per_method}
  t = time.time()
  rand = _random_order(step, variables, images, map_hw, mesh, normalize,
                       round_up(min(batch_size, n)), seed)
  out = {'faithfulness': per_method, 'faithfulness_num_images': n,
         'faithfulness_steps': steps,
         'faithfulness_random': {**_summarize(rand, seed), 'seconds': round(time.time() - t, 1)}}
  for method, vals in per_method.items():  # flat copies for grep / dashboards
    out.update({f'{k}_{method}': v for k, v in vals.items() if k not in NOT_FLAT})
  return out
