"""--what=study: the whole per-image study on `study_images` test images — aesthetic map,
10 bucket maps, top attribute map, boxes (aesthetic, attribute, average) and mean intensity;
ours in one jitted pass per batch vs pytorch-grad-cam looped over the same 12 targets, in
its fastest formulation: every `bench.formulations.gradcam` formulation is screened on one
batch (one target), the fastest are timed on the whole study, the ratio uses the best.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from aesthetics_jax import models
from aesthetics_jax.bench import agreement, formulations, timing, torch_ref, workloads
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.explain import cam

THRESHOLD = 0.2  # box threshold on the normalised maps


def _screen(opts: Options, tms, x_np: np.ndarray, b: int, chunk: int,
            dev: str) -> dict[str, Any]:
  """One-target pytorch-grad-cam on the first study batch, every formulation twice after a
  warm-up call (the study is 12 such calls per batch, too slow to time every formulation)."""
  fns = {}
  for f in formulations.gradcam(opts.torch_formulations, b, chunk):
    obj = tms[f.layout][1]
    x = torch_ref.to_nchw(x_np[:b], f.layout == 'channels_last').to(dev)
    fns[f.name] = (lambda o=obj, xi=x, c=f.chunk: torch_ref.gradcam_maps(
        o, xi, [[torch_ref.class_target(0)] * b], c))
  runs = timing.interleaved(fns, items=b, repeats=2, warmup=1)
  print('  screening (pytorch-grad-cam, one target, first batch):', flush=True)
  timing.print_runs(runs)
  return runs


def run(opts: Options) -> dict[str, Any]:
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
  b, s, chunk = opts.cam_batch_size, opts.image_size, opts.chunk_size()
  n = max(b, opts.study_images // b * b)
  x_np = workloads.photos(n, s, seed=2)
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  dev = torch_ref.device() if opts.torch else None  # the GPU's when JAX and torch see one
  # tms: layout -> (torch model, its GradCAM object)
  variables, tms = torch_ref.gradcam_references(model, s, 76, dev)
  # Sharded over all devices (on CPU one per core, `cpu_backend`), as the commands run it.
  variables, *xs = workloads.place(variables, *[x_np[i:i + b] for i in range(0, n, b)])
  step = workloads.make_study_step(model, 'mobilenet_v2', s, THRESHOLD, chunk)

  def ours():
    return [jax.device_get(step(variables, xi)) for xi in xs]
  fns = {'jax_study': ours}
  res: dict[str, Any] = {'num_images': n, 'batch_size': b, 'image_size': s, 'chunk': chunk,
                         'jax_devices': len(xs[0].sharding.device_set),
                         'targets': list(cam.target_names('mobilenet_v2',
                                                          workloads.STUDY_TARGETS))}
  if opts.torch:
    screen = _screen(opts, tms, x_np, b, chunk, dev)
    keep = formulations.top(screen, formulations.TOP_K[opts.torch_formulations])
    by_name = {f.name: f for f in formulations.gradcam(opts.torch_formulations, b, chunk)}
    for name in keep:
      f = by_name[name]
      tm, obj = tms[f.layout]
      txs = [torch_ref.to_nchw(x_np[i:i + b], f.layout == 'channels_last').to(dev)
             for i in range(0, n, b)]
      fns[f'pytorch_grad_cam_study_looped_{name}'] = (
          lambda tm=tm, obj=obj, txs=txs, c=f.chunk: [
              torch_ref.study_batch(tm, obj, t, THRESHOLD, c) for t in txs])
    res['torch'] = {'device': dev, 'screening': screen,
                    'screening_best': formulations.best(screen),
                    'selection': f'the {len(keep)} fastest formulations of the screening '
                                 '(one-target pytorch-grad-cam on the first batch)',
                    'not_tried': formulations.GRADCAM_NOT_TRIED}
  runs = timing.interleaved(fns, items=n, repeats=max(1, opts.repeats - 1), warmup=1)
  timing.print_runs(runs)
  res['runs'] = runs
  if opts.torch:
    rep = formulations.report(runs, 'pytorch_grad_cam_study_looped_')
    res['torch'].update(rep)
    best = res['torch_best'] = rep['best']
    res['ratio'] = timing.ratio(runs['jax_study'],
                                runs[f'pytorch_grad_cam_study_looped_{best}'])
    print(f'  best pytorch-grad-cam study formulation: {best}', flush=True)
    # Agreement of the aesthetic (mean-score) map and of the boxes.
    tm, obj = tms['contiguous']
    aes_step = workloads.make_cam_step(
        model, cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag')), chunk, s)
    ours_maps = np.asarray(aes_step(variables, xs[0]))
    theirs = torch_ref.study_batch(tm, obj, torch_ref.to_nchw(x_np[:b], False).to(dev),
                                   THRESHOLD)
    res['aesthetic_maps_agree'] = agreement.maps(theirs['aesthetic'], ours_maps[:, 0])
    res['attribute_maps_agree'] = agreement.maps(theirs['attribute'], ours_maps[:, 1])
    got = jax.device_get(step(variables, xs[0]))[1]  # the timed step's own boxes
    for k in ('aesthetic', 'attribute'):
      res[f'box_{k}_equal_fraction'] = float(np.mean(np.all(
          np.asarray(got[f'box_{k}']) == theirs[f'box_{k}'], axis=1)))
    print(f"  aesthetic maps vs pytorch-grad-cam: {res['aesthetic_maps_agree']}; top-tag "
          f"maps: {res['attribute_maps_agree']}; boxes equal for "
          f"{res['box_aesthetic_equal_fraction']:.0%} (aesthetic) and "
          f"{res['box_attribute_equal_fraction']:.0%} (attribute) of images", flush=True)
    for _, o in tms.values():
      o.__exit__(None, None, None)
  return res


# Boxes threshold maps that agree to ~1e-4: a cell at the threshold may flip one now and then;
# a study computing other maps or boxes agrees on few images.
BOX_EQUAL_TARGET = 0.9


def summary(result: dict[str, Any]) -> list[Row]:
  if 'ratio' not in result:
    return []
  rows = [Row('study_vs_looped_pytorch_grad_cam', result['ratio'],
              f'{result["num_images"]} images, 12 maps + boxes each, vs best torch '
              f'{result.get("torch_best")}')]
  # The speed is only worth quoting beside these (printed and stored before, never judged).
  maps = [result[k] for k in ('aesthetic_maps_agree', 'attribute_maps_agree') if k in result]
  if maps:
    empty = all(m.get('all_zero_maps', 0) == m['maps'] for m in maps)  # nothing compared
    rows.append(Row('study_maps_max_abs_diff',
                    None if empty else max(m['max_abs_diff'] for m in maps),
                    f'aesthetic{" and top-tag" if len(maps) > 1 else ""} maps of the first '
                    f'batch vs pytorch-grad-cam, min corr '
                    f'{min(m["min_corr"] for m in maps):.6f}'
                    + ('; every map zero: nothing compared' if empty else ''),
                    target=5e-4, better='lower'))
  boxes = {k: result[f'box_{k}_equal_fraction'] for k in ('aesthetic', 'attribute')
           if f'box_{k}_equal_fraction' in result}
  if boxes:
    rows.append(Row('study_boxes_equal_fraction', min(boxes.values()),
                    'images of the first batch whose boxes equal those from pytorch-grad-cam\'s '
                    'maps (' + ', '.join(f'{k} {v:.0%}' for k, v in boxes.items()) + ')',
                    target=BOX_EQUAL_TARGET))
  return rows
