"""--what=study: the whole per-image study on `study_images` test images — aesthetic map,
10 bucket maps, top attribute map, boxes (aesthetic, attribute, average) and mean intensity;
ours in one jitted pass per batch vs the faster of two PyTorch references doing the same 12
targets: pytorch-grad-cam looped over them, and the hand-written torch Grad-CAM (one forward,
the 12 targets' gradients in one call; `torch_ref.handwritten_study_batch`). Every
formulation of each is screened on one batch (one target), each one's fastest are timed on
the whole study, the ratio uses the fastest of all (each reference's own is recorded).
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
LIB, HW = formulations.LIB, formulations.HANDWRITTEN
LIB_RUN, HW_RUN = f'{LIB}_study_looped_', f'{HW}_study_'  # run-name prefixes


def _screen(opts: Options, tms, plain, x_np: np.ndarray, b: int, chunk: int, dev: str,
            compiled: dict) -> dict[str, Any]:
  """One-target pytorch-grad-cam and hand-written torch Grad-CAM on the first study batch,
  every formulation twice after a warm-up call (the study is 12 such pytorch-grad-cam calls
  per batch, too slow to time every formulation). The hand-written ones are called once
  first, guarded (`formulations.first_calls`: a compiled one compiles its features there,
  into `compiled`, and records 'compile_s'; a failure is recorded, not timed). Keys:
  '<family>_<formulation>'."""
  fns, hw, failed = {}, {}, {}
  for f in formulations.gradcam(opts.torch_formulations, b, chunk):
    obj = tms[f.layout][1]
    x = torch_ref.to_nchw(x_np[:b], f.layout == 'channels_last').to(dev)
    fns[f'{LIB}_{f.name}'] = (lambda o=obj, xi=x, c=f.chunk: torch_ref.gradcam_maps(
        o, xi, [[torch_ref.class_target(0)] * b], c))
  for f in formulations.handwritten_gradcam(opts.torch_formulations, b, chunk):
    x = torch_ref.to_nchw(x_np[:b], f.layout == 'channels_last').to(dev)
    m = plain[f.layout]
    feats = torch_ref.torch_features(m, f.compile, compiled) if f.compile else None
    hw[f'{HW}_{f.name}'] = (f, lambda m=m, xi=x, f=f, feats=feats: torch_ref.handwritten_gradcam(
        m, xi, torch_ref.class_targets([0]), xi.shape[-1], f.chunk, f.grads, f.grad, feats))
  ran, compile_s = formulations.first_calls(hw, failed, formulations.FIRST_CALL_TIMEOUT_S,
                                            opts.torch_compile_timeout,
                                            torch_ref.reset_compiler)
  fns.update(ran)
  runs = timing.interleaved(fns, items=b, repeats=2, warmup=1)
  for name, c in compile_s.items():
    runs[name]['compile_s'] = c
  runs.update(failed)
  print('  screening (one target, first batch):', flush=True)
  timing.print_runs(runs)
  return runs


def _hw_study_forms(opts: Options, screen: dict[str, Any], b: int, chunk: int
                    ) -> dict[str, formulations.Formulation]:
  """{run name: formulation} of the hand-written study runs: the screening's fastest
  formulations, the gradients batched and looped."""
  k = formulations.TOP_K[opts.torch_formulations]
  hw_forms = formulations.handwritten_gradcam(opts.torch_formulations, b, chunk)
  hw_top = formulations.top({m.removeprefix(f'{HW}_'): r for m, r in screen.items()
                             if m.startswith(f'{HW}_')}, k)
  return {HW_RUN + f.name: f for f in formulations.with_grads(hw_top, hw_forms)}


def _study_fns(opts: Options, tms, plain, screen: dict[str, Any], x_np: np.ndarray, b: int,
               n: int, chunk: int, dev: str, compiled: dict) -> dict[str, Any]:
  """{run name: callable} of the whole study per reference: the screening's fastest
  pytorch-grad-cam formulations looped over the 12 targets, and its fastest hand-written
  ones (all 12 targets' gradients in one call, batched and looped; compiled features from
  `compiled`, the screening's)."""
  k = formulations.TOP_K[opts.torch_formulations]
  lib = {f.name: f for f in formulations.gradcam(opts.torch_formulations, b, chunk)}
  fns = {}

  def batches(f):
    return [torch_ref.to_nchw(x_np[i:i + b], f.layout == 'channels_last').to(dev)
            for i in range(0, n, b)]
  for name in formulations.top({m.removeprefix(f'{LIB}_'): r for m, r in screen.items()
                                if m.startswith(f'{LIB}_')}, k):
    f = lib[name]
    tm, obj = tms[f.layout]
    fns[LIB_RUN + name] = (lambda tm=tm, obj=obj, txs=batches(f), c=f.chunk: [
        torch_ref.study_batch(tm, obj, t, THRESHOLD, c) for t in txs])
  for name, f in _hw_study_forms(opts, screen, b, chunk).items():
    m = plain[f.layout]
    feats = torch_ref.torch_features(m, f.compile, compiled) if f.compile else None
    fns[name] = (lambda m=m, txs=batches(f), f=f, feats=feats: [
        torch_ref.handwritten_study_batch(m, t, THRESHOLD, f.chunk, f.grads, f.grad, feats)
        for t in txs])
  return fns


def run(opts: Options) -> dict[str, Any]:
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
  b, s, chunk = opts.cam_batch_size, opts.image_size, opts.chunk_size()
  n = max(b, opts.study_images // b * b)
  x_np = workloads.photos(n, s, seed=2)
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  dev = torch_ref.device() if opts.torch else None  # the GPU's when JAX and torch see one
  # tms: layout -> (torch model, its GradCAM object); plain: layout -> a hook-free copy
  variables, tms, plain = torch_ref.gradcam_references(model, s, 76, dev)
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
  compiled: dict = {}  # the hand-written formulations' compiled features, compiled once
  if opts.torch:
    screen = _screen(opts, tms, plain, x_np, b, chunk, dev, compiled)
    study_fns = _study_fns(opts, tms, plain, screen, x_np, b, n, chunk, dev, compiled)
    fns.update(study_fns)
    res['torch'] = {'device': dev, 'screening': screen,
                    'screening_best': formulations.best(screen),
                    'selection': f'per reference, the {formulations.TOP_K[opts.torch_formulations]}'
                                 ' fastest formulations of the screening (one target on the '
                                 'first batch); hand-written ones with the gradients batched '
                                 'and looped',
                    'not_tried': formulations.GRADCAM_NOT_TRIED,
                    'handwritten_not_tried': formulations.HANDWRITTEN_NOT_TRIED}
  runs = timing.interleaved(fns, items=n, repeats=max(1, opts.repeats - 1), warmup=1)
  timing.print_runs(runs)
  res['runs'] = runs
  if opts.torch:
    rep = formulations.report(runs, LIB_RUN)
    res['torch'].update(rep)
    res['torch']['handwritten'] = formulations.report(runs, HW_RUN)
    res['torch_best'] = rep['best']  # pytorch-grad-cam's
    best_runs = {fam: prefix + r['best'] for fam, prefix, r in (
        (LIB, LIB_RUN, rep), (HW, HW_RUN, res['torch']['handwritten'])) if r['best']}
    res['ratio_by_reference'] = {fam: timing.ratio(runs['jax_study'], runs[r])
                                 for fam, r in best_runs.items()}
    res['reference_runs'] = best_runs
    best = res['torch_best_run'] = formulations.best({r: runs[r] for r in best_runs.values()})
    res['ratio'] = timing.ratio(runs['jax_study'], runs[best])
    print(f'  fastest torch study reference: {best}', flush=True)
    # Agreement of the aesthetic (mean-score) map and of the boxes.
    tm, obj = tms['contiguous']
    aes_step = workloads.make_cam_step(
        model, cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag')), chunk, s)
    ours_maps = np.asarray(aes_step(variables, xs[0]))
    x0 = torch_ref.to_nchw(x_np[:b], False).to(dev)
    theirs = torch_ref.study_batch(tm, obj, x0, THRESHOLD)
    res['aesthetic_maps_agree'] = agreement.maps(theirs['aesthetic'], ours_maps[:, 0])
    res['attribute_maps_agree'] = agreement.maps(theirs['attribute'], ours_maps[:, 1])
    # The hand-written maps: the eager NCHW one and every timed formulation's (compiled ones
    # included); each kind's worst is judged.
    eager = formulations.Formulation(grad='no_grad', grads='batched')
    hw_forms = {eager.name: eager, **{k.removeprefix(HW_RUN): f for k, f in
                                      _hw_study_forms(opts, screen, b, chunk).items()}}
    by_run = res['handwritten_maps_agree_by_run'] = {}
    for name, f in hw_forms.items():
      m = plain[f.layout]
      hand = torch_ref.handwritten_study_batch(
          m, torch_ref.to_nchw(x_np[:b], f.layout == 'channels_last').to(dev), THRESHOLD,
          f.chunk, f.grads, f.grad,
          torch_ref.torch_features(m, f.compile, compiled) if f.compile else None)
      by_run[name] = {k: agreement.maps(hand[k], ours_maps[:, i])
                      for i, k in enumerate(('aesthetic', 'attribute'))}
    for k in ('aesthetic', 'attribute'):
      worst = max(by_run, key=lambda n, k=k: by_run[n][k]['max_abs_diff'])
      res[f'handwritten_{k}_maps_agree'] = {**by_run[worst][k], 'worst_formulation': worst}
    got = jax.device_get(step(variables, xs[0]))[1]  # the timed step's own boxes
    for k in ('aesthetic', 'attribute'):
      res[f'box_{k}_equal_fraction'] = float(np.mean(np.all(
          np.asarray(got[f'box_{k}']) == theirs[f'box_{k}'], axis=1)))
    boxes = {k: ('not judged' if 'not_judged' in res[f'{k}_maps_agree'] else
                 f"{res[f'box_{k}_equal_fraction']:.0%}") for k in ('aesthetic', 'attribute')}
    print(f"  aesthetic maps vs pytorch-grad-cam: {agreement.line(res['aesthetic_maps_agree'])};"
          f" top-tag maps: {agreement.line(res['attribute_maps_agree'])}; boxes equal for "
          f"{boxes['aesthetic']} (aesthetic) and {boxes['attribute']} (attribute) of images",
          flush=True)
    print('  vs hand-written torch: aesthetic maps '
          f"{agreement.line(res['handwritten_aesthetic_maps_agree'])}; top-tag maps "
          f"{agreement.line(res['handwritten_attribute_maps_agree'])}", flush=True)
    for _, o in tms.values():
      o.__exit__(None, None, None)
  return res


# Boxes threshold maps that agree to ~1e-4: a cell at the threshold may flip one now and then;
# a study computing other maps or boxes agrees on few images.
BOX_EQUAL_TARGET = 0.9


def _maps_row(name: str, maps: list[dict[str, Any]], vs: str) -> Row:
  empty = all(m.get('all_zero_maps', 0) == m['maps'] for m in maps)  # nothing compared
  return Row(name, None if empty else max(m['max_abs_diff'] for m in maps),
             f'aesthetic{" and top-tag" if len(maps) > 1 else ""} maps of the first '
             f'batch vs {vs}, min corr {min(m["min_corr"] for m in maps):.6f}'
             + ('; every map zero: nothing compared' if empty else ''),
             target=5e-4, better='lower')


def summary(result: dict[str, Any]) -> list[Row]:
  if 'ratio' not in result:
    return []
  run_name = result.get('torch_best_run')
  if run_name is None:  # JSONs from before the hand-written reference: pytorch-grad-cam's
    vs = f'vs pytorch-grad-cam {result.get("torch_best")}'
  else:
    each = result.get('ratio_by_reference', {})
    vs = (f'vs {formulations.reference_of(run_name)} '
          f'{run_name.removeprefix(LIB_RUN).removeprefix(HW_RUN)}; '
          + ', '.join(f'vs {formulations.GRADCAM_REFERENCES[f]} {each[f]:.2f}' for f in (LIB, HW)
                      if f in each))
  rows = [Row('study_vs_best_torch', result['ratio'],
              f'{result["num_images"]} images, 12 maps + boxes each, {vs}')]
  # The speed is only worth quoting beside these (printed and stored before, never judged).
  for name, prefix, who in (('study_maps_max_abs_diff', '', 'pytorch-grad-cam'),
                            ('study_handwritten_maps_max_abs_diff', 'handwritten_',
                             'hand-written torch')):
    maps = [result[prefix + k] for k in ('aesthetic_maps_agree', 'attribute_maps_agree')
            if prefix + k in result]
    if maps:
      rows.append(_maps_row(name, maps, who))
  boxes = {k: result[f'box_{k}_equal_fraction'] for k in ('aesthetic', 'attribute')
           if f'box_{k}_equal_fraction' in result}
  # Boxes of all-zero maps agree whatever either side computes: those are not judged (every
  # map zero read 'study_boxes_equal_fraction 1 ... yes').
  blank = {k for k in boxes if 'not_judged' in (result.get(f'{k}_maps_agree') or {})}
  judged = [v for k, v in boxes.items() if k not in blank]
  if boxes:
    rows.append(Row('study_boxes_equal_fraction', min(judged) if judged else None,
                    'images of the first batch whose boxes equal those from pytorch-grad-cam\'s '
                    'maps (' + ', '.join(f'{k} not judged: its maps all zero' if k in blank
                                         else f'{k} {v:.0%}' for k, v in boxes.items()) + ')',
                    target=BOX_EQUAL_TARGET))
  return rows
