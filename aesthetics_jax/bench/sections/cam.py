"""--what=cam: Grad-CAM images/s for one target and all 10 score buckets (MobileNetV2,
10-way head), ours vs pytorch-grad-cam (GradCAM, target_layers=[model.features[-1]]) on
identical weights, both warmed up; maps compared; peak RSS of each in a fresh child process.

The reference is the fastest pytorch-grad-cam formulation (`bench.formulations.gradcam`:
NCHW / channels_last x whole batch / chunks; gradients are needed, so no inference_mode).
The 10-bucket run times the fastest one-target formulations again (10 one-target calls).
As in --what=model, each screening's two fastest formulations then run `--confirm_repeats`
rounds head to head with ours (`timing.confirm`) and each ratio is the lower of those rounds'
medians: a 3-repeat screening median fell into a slow phase of the shared machine in run AP
(ours 107 img/s, 102.7-182.6), and its winner's figure is the best of many noisy medians.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from aesthetics_jax import models
from aesthetics_jax.bench import (agreement, formulations, memory, placement, timing, torch_ref,
                                  workloads)
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.explain import cam

TARGET_BUCKET = 9  # the one target: bucket 10 (the highest score)


def _torch_fns(tms, xs, forms, target_lists, prefix: str) -> dict[str, Any]:
  """{run name: callable} of pytorch-grad-cam per formulation (GradCAM objects per layout)."""
  fns = {}
  for f in forms:
    obj, x = tms[f.layout][1], xs[f.layout]
    fns[prefix + f.name] = (lambda o=obj, xi=x, c=f.chunk:
                            torch_ref.gradcam_maps(o, xi, target_lists, c))
  return fns


def run(opts: Options) -> dict[str, Any]:
  # The CPUs' placement is read only before head-to-head calls (`timing.confirm`).
  with placement.probe(opts.torch and opts.placement and opts.confirm_repeats > 0) as probe:
    return _run(opts, probe)


def _run(opts: Options, probe: Callable[[], float | None] | None) -> dict[str, Any]:
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
  b, s, chunk, k = opts.cam_batch_size, opts.image_size, opts.chunk_size(), TARGET_BUCKET
  x_np = workloads.photos(b, s, seed=1)
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  dev = torch_ref.device() if opts.torch else None  # the GPU's when JAX and torch see one
  # tms: layout -> (torch model, its GradCAM object); xs: layout -> the batch there.
  variables, tms = torch_ref.gradcam_references(model, s, 10, dev)
  # Sharded over all devices (on CPU one per core, `cpu_backend`), as the commands run it.
  variables, x = workloads.place(variables, x_np)
  xs = {layout: torch_ref.to_nchw(x_np, layout == 'channels_last').to(dev) for layout in tms}
  one = workloads.make_cam_step(model, workloads.bucket_target(k), chunk, s)
  all10 = workloads.make_cam_step(model, cam.targets_for('mobilenet_v2', 'bucket'), chunk, s)
  res: dict[str, Any] = {'batch_size': b, 'image_size': s, 'chunk': chunk, 'target_bucket': k,
                         'warmup_calls': opts.cam_warmup, 'runs': {},
                         'jax_devices': len(x.sharding.device_set)}
  if opts.torch:
    res['torch_device'] = dev
  # One target: every formulation, interleaved with ours.
  forms = formulations.gradcam(opts.torch_formulations, b, chunk) if opts.torch else []
  by_name = {f.name: f for f in forms}
  fns = {'jax_gradcam_one_target': lambda: np.asarray(one(variables, x))}
  tl1 = [[torch_ref.class_target(k)] * b] if opts.torch else []
  fns.update(_torch_fns(tms, xs, forms, tl1, 'pytorch_grad_cam_one_target_'))
  runs = timing.interleaved(fns, items=b, repeats=opts.repeats, warmup=opts.cam_warmup)
  res['runs'].update(runs)
  timing.print_runs(runs)
  best = None
  if opts.torch:
    one_rep = formulations.report(runs, 'pytorch_grad_cam_one_target_')
    best = one_rep['best']
    res['torch'] = {'one_target': one_rep, 'not_tried': formulations.GRADCAM_NOT_TRIED}
    res['ratio_one_target'] = timing.ratio(runs['jax_gradcam_one_target'],
                                           runs[f'pytorch_grad_cam_one_target_{best}'])
    print(f'  best pytorch-grad-cam formulation (one target): {best}', flush=True)
    # The screening's fastest few, each head to head; the one ours beats least is kept.
    kept = timing.confirm(res, 'one_target', 'ratio_one_target', fns, 'jax_gradcam_one_target',
                          [f'pytorch_grad_cam_one_target_{n}' for n in formulations.top(
                              one_rep['tried'], formulations.TOP_K[opts.torch_formulations])],
                          items=b, repeats=opts.confirm_repeats, label='one target',
                          placement=probe)
    best = kept.removeprefix('pytorch_grad_cam_one_target_') if kept else best
  # 10 buckets = 10 one-target calls: the fastest one-target formulations, timed again.
  fns = {'jax_gradcam_10_buckets': lambda: np.asarray(all10(variables, x))}
  tl10 = [[torch_ref.class_target(j)] * b for j in range(10)] if opts.torch else []
  if opts.torch:
    keep = formulations.top(one_rep['tried'], formulations.TOP_K[opts.torch_formulations])
    fns.update(_torch_fns(tms, xs, [by_name[n] for n in keep], tl10,
                          'pytorch_grad_cam_10_buckets_'))
  runs = timing.interleaved(fns, items=b, repeats=opts.repeats, warmup=1)
  res['runs'].update(runs)
  timing.print_runs(runs)
  if opts.torch:
    ten = formulations.report(runs, 'pytorch_grad_cam_10_buckets_')
    ten['selection'] = (f'the {len(keep)} fastest one-target formulations (10 buckets = 10 '
                        'one-target calls)')
    res['torch']['10_buckets'] = ten
    res['torch_best_10_buckets'] = ten['best']
    res['ratio_10_buckets'] = timing.ratio(runs['jax_gradcam_10_buckets'],
                                           runs[f'pytorch_grad_cam_10_buckets_{ten["best"]}'])
    kept = timing.confirm(res, '10_buckets', 'ratio_10_buckets', fns, 'jax_gradcam_10_buckets',
                          [f'pytorch_grad_cam_10_buckets_{n}' for n in formulations.top(
                              ten['tried'], formulations.TOP_K[opts.torch_formulations])],
                          items=b, repeats=opts.confirm_repeats, label='10 buckets',
                          placement=probe)
    if kept:
      res['torch_best_10_buckets'] = kept.removeprefix('pytorch_grad_cam_10_buckets_')
    # The maps must agree (pytorch-grad-cam: per-map min-max, cv2 resize, min-max again).
    ours = np.asarray(all10(variables, x))                                  # [B,10,S,S]
    theirs = np.stack(torch_ref.gradcam_maps(tms['contiguous'][1], xs['contiguous'], tl10), 1)
    agree = res['maps_agree'] = agreement.maps(theirs, ours)
    print(f'  maps vs pytorch-grad-cam (all 10 buckets): max |diff| {agree["max_abs_diff"]:.2e},'
          f' min corr {agree["min_corr"]:.6f} over {agree["maps"]} maps', flush=True)
    for _, o in tms.values():
      o.__exit__(None, None, None)
  res['torch_fastest_formulation'] = best
  if opts.peak_memory:
    res['peak_memory'] = _peak_memory(opts, b, s, chunk, by_name.get(best))
    mem = res['peak_memory']
    if opts.torch and all('peak_rss_mb' in mem[n] for n in ('jax_all', 'pytorch_grad_cam_all')):
      res['peak_memory_torch_over_ours'] = (mem['pytorch_grad_cam_all']['peak_rss_mb']
                                            / mem['jax_all']['peak_rss_mb'])
  return res


def _peak_memory(opts: Options, b: int, s: int, chunk: int,
                 torch_f: formulations.Formulation | None) -> dict[str, Any]:
  """Peak RSS of ours and (with torch) pytorch-grad-cam in its fastest formulation, one and
  all targets, each in a fresh child process."""
  jobs = {f'jax_{t}': ('aesthetics_jax.bench.workloads:cam_setup',
                       dict(batch=b, size=s, targets=t, chunk=chunk)) for t in ('one', 'all')}
  if opts.torch:
    jobs.update({f'pytorch_grad_cam_{t}': (
        'aesthetics_jax.bench.torch_models:gradcam_setup',
        dict(batch=b, size=s, targets=t, channels_last=torch_f.layout == 'channels_last',
             chunk=torch_f.chunk, threads=opts.torch_threads())) for t in ('one', 'all')})
  mem = {}
  for name, (target, kw) in jobs.items():
    mem[name] = memory.measure_in_child(target, kw, warmup=1, repeats=1)
    print(f'  peak RSS {name:28s} {mem[name].get("peak_rss_mb", float("nan")):8.0f} MB '
          f'(workload {mem[name].get("workload_mb") or float("nan"):.0f} MB) '
          f'{mem[name].get("error", "")}', flush=True)
  return mem


def summary(result: dict[str, Any]) -> list[Row]:
  rows = []
  b, best = result['batch_size'], result.get('torch_fastest_formulation')
  if 'ratio_one_target' in result:
    rows.append(Row('gradcam_one_target_vs_pytorch_grad_cam', result['ratio_one_target'],
                    f'batch {b}, vs best torch {best}'
                    + timing.confirmation_note(result, 'one_target', 'ratio_one_target')))
  if 'ratio_10_buckets' in result:
    rows.append(Row('gradcam_10_buckets_vs_pytorch_grad_cam', result['ratio_10_buckets'],
                    f'batch {b}, vs best torch {result.get("torch_best_10_buckets")}'
                    + timing.confirmation_note(result, '10_buckets', 'ratio_10_buckets')))
  if 'maps_agree' in result:
    agree = result['maps_agree']
    # All-zero maps on both sides agree whatever the code computes (e.g. a 1x1 feature grid
    # at 32 px): then nothing was compared, and the row says so instead of 'yes'.
    empty = agree.get('all_zero_maps', 0) == agree['maps']
    rows.append(Row('gradcam_maps_max_abs_diff', None if empty else agree['max_abs_diff'],
                    f'min corr {agree["min_corr"]:.6f} (target >= 0.9999)'
                    + (f'; all {agree["maps"]} maps zero: nothing compared' if empty else ''),
                    target=5e-4, better='lower'))
  if 'peak_memory_torch_over_ours' in result:
    mem = result['peak_memory']
    rows.append(Row('gradcam_peak_memory_torch_over_ours',
                    result['peak_memory_torch_over_ours'],
                    f"{mem['jax_all']['peak_rss_mb']:.0f} MB vs "
                    f"{mem['pytorch_grad_cam_all']['peak_rss_mb']:.0f} MB peak RSS (10 buckets)"))
  return rows
