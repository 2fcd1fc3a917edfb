"""--what=cam: Grad-CAM images/s for one target and all 10 score buckets (MobileNetV2,
10-way head), ours vs two PyTorch references on identical weights, both warmed up; maps
compared; peak RSS of each in a fresh child process.

The references: pytorch-grad-cam (GradCAM, target_layers=[model.features[-1]]; one forward
and backward pass per target) in its fastest formulation (`bench.formulations.gradcam`:
NCHW / channels_last x whole batch / chunks; gradients are needed, so no inference_mode), and
Grad-CAM written by hand in torch as a competent user writes it for many targets
(`torch_models.handwritten_gradcam`: one forward of the features under no_grad, the T targets'
gradients at A in one `autograd.grad(is_grads_batched=True)` call, or T calls), in its
fastest formulation (`formulations.handwritten_gradcam`; with 'all' also its features'
forward under `torch.compile`). Each ratio is against the FASTER of
the two; each reference's own ratio is recorded ('<ratio>_by_reference') and printed in the
summary, the maps of both are judged against ours.
The 10-bucket run times the fastest one-target formulations again (pytorch-grad-cam: 10
one-target calls; hand-written: one call for all 10, gradients batched and looped).
As in --what=model, each reference's fastest formulations of each screening then run
`--confirm_repeats` rounds head to head with ours (`timing.confirm`) and each ratio is the
lowest of those rounds' medians: a 3-repeat screening median fell into a slow phase of the
shared machine in run AP (ours 107 img/s, 102.7-182.6), and its winner's figure is the best of
many noisy medians.
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
# Run-name families of the references: the library, and Grad-CAM written by hand in torch.
LIB, HW, REFERENCES = formulations.LIB, formulations.HANDWRITTEN, formulations.GRADCAM_REFERENCES
HANDWRITTEN_FIRST_CALL_S = formulations.FIRST_CALL_TIMEOUT_S  # then failed, not timed


def _torch_fns(tms, xs, forms, target_lists, prefix: str) -> dict[str, Any]:
  """{run name: callable} of pytorch-grad-cam per formulation (GradCAM objects per layout)."""
  fns = {}
  for f in forms:
    obj, x = tms[f.layout][1], xs[f.layout]
    fns[prefix + f.name] = (lambda o=obj, xi=x, c=f.chunk:
                            torch_ref.gradcam_maps(o, xi, target_lists, c))
  return fns


def _handwritten_fns(plain, xs, forms, ks: list[int], size: int, prefix: str,
                     failed: dict[str, Any], compiled: dict | None = None,
                     compile_s: dict[str, float] | None = None,
                     compile_timeout_s: float = formulations.COMPILE_TIMEOUT_S
                     ) -> dict[str, Any]:
  """{run name: callable -> maps [B,T,S,S]} of the hand-written torch Grad-CAM per
  formulation, each called once first (guarded): one that raises (is_grads_batched on a
  model whose ops have no batching rule) or runs past HANDWRITTEN_FIRST_CALL_S
  (`compile_timeout_s` for a compiled one: that call compiles) goes to `failed` instead, and
  the other formulations are timed. compiled: the compiled features per (model, mode),
  shared by the section's runs (`torch_ref.torch_features`); compile_s: gets the compile +
  first-call seconds of the compiled formulations."""
  fns = {}
  for f in forms:
    m = plain[f.layout]
    feats = torch_ref.torch_features(m, f.compile, compiled) if f.compile else None
    fns[prefix + f.name] = (f, lambda m=m, xi=xs[f.layout], f=f, feats=feats:
                            torch_ref.handwritten_gradcam(
                                m, xi, torch_ref.class_targets(ks), size, f.chunk, f.grads,
                                f.grad, feats))
  ran, secs = formulations.first_calls(fns, failed, HANDWRITTEN_FIRST_CALL_S, compile_timeout_s,
                                       torch_ref.reset_compiler)
  if compile_s is not None:
    compile_s.update(secs)
  return ran


def best_of_references(res: dict[str, Any], what: str, ours: str, key: str) -> str | None:
  """Screening figures of both references for `what` ('one_target' | '10_buckets'), from
  res['runs']: res['torch'][what] (pytorch-grad-cam's formulations) and
  res['torch']['handwritten_' + what]; `res[key]` = ours over the FASTEST run of either;
  res[key + '_by_reference'] = {family: ours over its fastest run}, res[key +
  '_reference_runs'] = {family: that run}. Returns the fastest run's name (None when no
  reference ran)."""
  runs, best_runs = res['runs'], {}
  for fam in (LIB, HW):
    rep = formulations.report(runs, f'{fam}_{what}_')
    res['torch']['handwritten_' + what if fam == HW else what] = rep
    if rep['best'] is not None:
      best_runs[fam] = f'{fam}_{what}_{rep["best"]}'
  if not best_runs:
    return None
  res[key + '_by_reference'] = {fam: timing.ratio(runs[ours], runs[r])
                                for fam, r in best_runs.items()}
  res[key + '_reference_runs'] = best_runs
  best = formulations.best({r: runs[r] for r in best_runs.values()})
  res[key] = timing.ratio(runs[ours], runs[best])
  return best


def candidates(res: dict[str, Any], what: str, k: int) -> list[str]:
  """The `k` fastest runs of each reference for `what`, fastest first over both: each is
  re-measured head to head (`timing.confirm`), so the ratio is against the faster of the two
  references and each reference's own figure is confirmed too."""
  names = [f'{fam}_{what}_{n}' for fam in (LIB, HW) for n in formulations.top(
      res['torch']['handwritten_' + what if fam == HW else what]['tried'], k)]
  return sorted(names, key=lambda n: -res['runs'][n]['items_per_s']['median'])


def _confirmed_by_reference(res: dict[str, Any], what: str, key: str) -> None:
  """After `timing.confirm`: per family, the lowest head-to-head ratio among its re-measured
  runs and that run (into `best_of_references`' two dicts; the screening's stay where a
  family had no run re-measured)."""
  conf = res.get('confirmation', {}).get(what)
  if not conf:
    return
  cands = conf.get('candidates', {conf['torch_run']: conf['ratio']})
  for fam in (LIB, HW):
    mine = {n: r for n, r in cands.items() if n.startswith(fam + '_')}
    if mine:
      run_ = min(mine, key=mine.get)
      res[key + '_by_reference'][fam] = mine[run_]
      res[key + '_reference_runs'][fam] = run_


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
  # tms: layout -> (torch model, its GradCAM object); plain: layout -> a hook-free copy (the
  # hand-written Grad-CAM's); xs: layout -> the batch there.
  variables, tms, plain = torch_ref.gradcam_references(model, s, 10, dev)
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
  top_k = formulations.TOP_K[opts.torch_formulations]
  # One target: every formulation of both references, interleaved with ours.
  forms = formulations.gradcam(opts.torch_formulations, b, chunk) if opts.torch else []
  hw_forms = (formulations.handwritten_gradcam(opts.torch_formulations, b, chunk)
              if opts.torch else [])
  by_name = {f.name: f for f in forms}
  failed: dict[str, Any] = {}
  # The hand-written formulations' compiled features (one per layout and mode), shared by the
  # one-target and 10-bucket runs; compile_s: their compile + first call, recorded apart.
  compiled: dict = {}
  compile_s: dict[str, float] = {}
  fns = {'jax_gradcam_one_target': lambda: np.asarray(one(variables, x))}
  tl1 = [[torch_ref.class_target(k)] * b] if opts.torch else []
  fns.update(_torch_fns(tms, xs, forms, tl1, f'{LIB}_one_target_'))
  fns.update(_handwritten_fns(plain, xs, hw_forms, [k], s, f'{HW}_one_target_', failed,
                              compiled, compile_s, opts.torch_compile_timeout))
  runs = timing.interleaved(fns, items=b, repeats=opts.repeats, warmup=opts.cam_warmup)
  for name in set(compile_s) & set(runs):
    runs[name]['compile_s'] = compile_s[name]
  runs.update(failed)
  res['runs'].update(runs)
  timing.print_runs(runs)
  best = None
  if opts.torch:
    res['torch'] = {'not_tried': formulations.GRADCAM_NOT_TRIED,
                    'handwritten_not_tried': formulations.HANDWRITTEN_NOT_TRIED}
    best_run = best_of_references(res, 'one_target', 'jax_gradcam_one_target',
                                  'ratio_one_target')
    print(f'  fastest torch reference (one target): {best_run}', flush=True)
    # Each reference's fastest few, head to head; the one ours beats least is kept.
    cands = candidates(res, 'one_target', top_k)
    kept = timing.confirm(res, 'one_target', 'ratio_one_target', fns, 'jax_gradcam_one_target',
                          cands, items=b, repeats=opts.confirm_repeats if cands else 0,
                          label='one target', placement=probe)
    _confirmed_by_reference(res, 'one_target', 'ratio_one_target')
    res['torch_best_run'] = {'one_target': kept or best_run}
    # pytorch-grad-cam's fastest formulation (its peak memory below).
    best = res.get('ratio_one_target_reference_runs', {}).get(LIB, '').removeprefix(
        f'{LIB}_one_target_') or None
  # 10 buckets: pytorch-grad-cam = 10 one-target calls (its fastest one-target formulations,
  # timed again); hand-written = one call for all 10 (its fastest one-target formulations,
  # with the gradients batched and looped).
  fns = {'jax_gradcam_10_buckets': lambda: np.asarray(all10(variables, x))}
  tl10 = [[torch_ref.class_target(j)] * b for j in range(10)] if opts.torch else []
  failed = {}
  if opts.torch:
    keep = formulations.top(res['torch']['one_target']['tried'], top_k)
    fns.update(_torch_fns(tms, xs, [by_name[n] for n in keep], tl10, f'{LIB}_10_buckets_'))
    hw_keep = formulations.with_grads(
        formulations.top(res['torch']['handwritten_one_target']['tried'], top_k), hw_forms)
    fns.update(_handwritten_fns(plain, xs, hw_keep, list(range(10)), s, f'{HW}_10_buckets_',
                                failed, compiled, compile_s, opts.torch_compile_timeout))
  runs = timing.interleaved(fns, items=b, repeats=opts.repeats, warmup=1)
  for name in set(compile_s) & set(runs):  # features compiled above: a first call, mostly
    runs[name]['compile_s'] = compile_s[name]
  runs.update(failed)
  res['runs'].update(runs)
  timing.print_runs(runs)
  if opts.torch:
    best_run = best_of_references(res, '10_buckets', 'jax_gradcam_10_buckets',
                                  'ratio_10_buckets')
    ten = res['torch']['10_buckets']
    ten['selection'] = (f'the {len(keep)} fastest one-target formulations (10 buckets = 10 '
                        'one-target calls)')
    res['torch']['handwritten_10_buckets']['selection'] = (
        f'the {top_k} fastest one-target formulations, gradients batched and looped')
    cands = candidates(res, '10_buckets', top_k)
    kept = timing.confirm(res, '10_buckets', 'ratio_10_buckets', fns, 'jax_gradcam_10_buckets',
                          cands, items=b, repeats=opts.confirm_repeats if cands else 0,
                          label='10 buckets', placement=probe)
    _confirmed_by_reference(res, '10_buckets', 'ratio_10_buckets')
    res['torch_best_run']['10_buckets'] = kept or best_run
    res['torch_best_10_buckets'] = res.get('ratio_10_buckets_reference_runs', {}).get(
        LIB, '').removeprefix(f'{LIB}_10_buckets_') or None  # pytorch-grad-cam's
    # The maps must agree (pytorch-grad-cam: per-map min-max, cv2 resize, min-max again).
    ours = np.asarray(all10(variables, x))                                  # [B,10,S,S]
    theirs = np.stack(torch_ref.gradcam_maps(tms['contiguous'][1], xs['contiguous'], tl10), 1)
    agree = res['maps_agree'] = agreement.maps(theirs, ours)
    print(f'  maps vs pytorch-grad-cam (all 10 buckets): {agreement.line(agree)}', flush=True)
    # And every timed hand-written formulation's maps (the worst is judged).
    hw = {n.removeprefix(f'{HW}_10_buckets_'): agreement.maps(fns[n](), ours)
          for n in fns if n.startswith(f'{HW}_10_buckets_')}
    if hw:
      worst = max(hw, key=lambda n: hw[n]['max_abs_diff'])
      res['handwritten_maps_agree'] = {**hw[worst], 'worst_formulation': worst, 'by_run': hw}
      print(f'  maps vs hand-written torch (all 10 buckets, worst of {len(hw)}: {worst}): '
            f'{agreement.line(hw[worst])}', flush=True)
    for _, o in tms.values():
      o.__exit__(None, None, None)
  res['torch_fastest_formulation'] = best
  if opts.peak_memory:
    hw_run = res.get('ratio_10_buckets_reference_runs', {}).get(HW, '')
    hw_f = {f'{HW}_10_buckets_{f.name}': f for f in (hw_keep if opts.torch else [])}.get(hw_run)
    res['peak_memory'] = _peak_memory(opts, b, s, chunk, by_name.get(best), hw_f)
    mem = res['peak_memory']
    torch_all = {n: mem[n]['peak_rss_mb'] for n in (f'{LIB}_all', f'{HW}_all')
                 if 'peak_rss_mb' in mem.get(n, {})}
    if opts.torch and torch_all and 'peak_rss_mb' in mem['jax_all']:
      # Against the leaner reference: a user short of memory writes it by hand.
      lean = res['peak_memory_torch_run'] = min(torch_all, key=torch_all.get)
      res['peak_memory_torch_over_ours'] = torch_all[lean] / mem['jax_all']['peak_rss_mb']
  return res


def _peak_memory(opts: Options, b: int, s: int, chunk: int,
                 torch_f: formulations.Formulation | None,
                 hw_f: formulations.Formulation | None = None) -> dict[str, Any]:
  """Peak RSS of ours and (with torch) pytorch-grad-cam in its fastest formulation and the
  hand-written torch Grad-CAM in its (`hw_f`), one and all targets, each in a fresh child
  process."""
  jobs = {f'jax_{t}': ('aesthetics_jax.bench.workloads:cam_setup',
                       dict(batch=b, size=s, targets=t, chunk=chunk)) for t in ('one', 'all')}
  if opts.torch and torch_f is not None:
    jobs.update({f'{LIB}_{t}': (
        'aesthetics_jax.bench.torch_models:gradcam_setup',
        dict(batch=b, size=s, targets=t, channels_last=torch_f.layout == 'channels_last',
             chunk=torch_f.chunk, threads=opts.torch_threads())) for t in ('one', 'all')})
  if opts.torch and hw_f is not None:
    jobs.update({f'{HW}_{t}': (
        'aesthetics_jax.bench.torch_models:handwritten_setup',
        dict(batch=b, size=s, targets=t, channels_last=hw_f.layout == 'channels_last',
             chunk=hw_f.chunk, grads=hw_f.grads, grad_mode=hw_f.grad,
             compile_mode=hw_f.compile, threads=opts.torch_threads())) for t in ('one', 'all')})
  mem = {}
  for name, (target, kw) in jobs.items():
    mem[name] = memory.measure_in_child(target, kw, warmup=1, repeats=1)
    print(f'  peak RSS {name:28s} {mem[name].get("peak_rss_mb", float("nan")):8.0f} MB '
          f'(workload {mem[name].get("workload_mb") or float("nan"):.0f} MB) '
          f'{mem[name].get("error", "")}', flush=True)
  return mem


def _vs(result: dict[str, Any], what: str, key: str) -> str:
  """'vs <reference> <formulation>' of the kept run (+ head to head note), then each
  reference's own ratio: '; vs pytorch-grad-cam 4.61, vs hand-written torch 1.20'."""
  run_name = result.get('torch_best_run', {}).get(what)
  if run_name is None:  # JSONs from before the hand-written reference: pytorch-grad-cam's
    name = result.get('torch_fastest_formulation' if what == 'one_target'
                      else 'torch_best_10_buckets')
    return f'vs pytorch-grad-cam {name}' + timing.confirmation_note(result, what, key)
  form = run_name.removeprefix(f'{LIB}_{what}_').removeprefix(f'{HW}_{what}_')
  each = result.get(key + '_by_reference', {})
  return (f'vs {formulations.reference_of(run_name)} {form}'
          + timing.confirmation_note(result, what, key)
          + ('; ' + ', '.join(f'vs {REFERENCES[f]} {each[f]:.2f}' for f in (LIB, HW)
                              if f in each) if each else ''))


def _agreement_row(name: str, agree: dict[str, Any], what: str) -> Row:
  # All-zero maps on both sides agree whatever the code computes (e.g. a 1x1 feature grid
  # at 32 px): then nothing was compared, and the row says so instead of 'yes'.
  empty = agree.get('all_zero_maps', 0) == agree['maps']
  return Row(name, None if empty else agree['max_abs_diff'],
             f'{what}min corr {agree["min_corr"]:.6f} (target >= 0.9999)'
             + (f'; all {agree["maps"]} maps zero: nothing compared' if empty else ''),
             target=5e-4, better='lower')


def summary(result: dict[str, Any]) -> list[Row]:
  """The ratios against the faster of pytorch-grad-cam and the hand-written torch Grad-CAM
  (each one's own ratio in the detail), the maps of both against ours, peak memory."""
  rows = []
  b = result['batch_size']
  if 'ratio_one_target' in result:
    rows.append(Row('gradcam_one_target_vs_best_torch', result['ratio_one_target'],
                    f'batch {b}, ' + _vs(result, 'one_target', 'ratio_one_target')))
  if 'ratio_10_buckets' in result:
    rows.append(Row('gradcam_10_buckets_vs_best_torch', result['ratio_10_buckets'],
                    f'batch {b}, ' + _vs(result, '10_buckets', 'ratio_10_buckets')))
  if 'maps_agree' in result:
    rows.append(_agreement_row('gradcam_maps_max_abs_diff', result['maps_agree'],
                               'vs pytorch-grad-cam, '))
  if 'handwritten_maps_agree' in result:
    hw = result['handwritten_maps_agree']
    rows.append(_agreement_row('gradcam_handwritten_maps_max_abs_diff', hw,
                               f'vs hand-written torch (worst: {hw["worst_formulation"]}), '))
  if 'peak_memory_torch_over_ours' in result:
    mem = result['peak_memory']
    lean = result.get('peak_memory_torch_run', f'{LIB}_all')
    rows.append(Row('gradcam_peak_memory_torch_over_ours',
                    result['peak_memory_torch_over_ours'],
                    f"{mem['jax_all']['peak_rss_mb']:.0f} MB vs "
                    f"{mem[lean]['peak_rss_mb']:.0f} MB peak RSS (10 buckets, "
                    f"{formulations.reference_of(lean)}" + ''.join(
                        f"; {REFERENCES[f]} {mem[f + '_all']['peak_rss_mb']:.0f} MB"
                        for f in (LIB, HW) if f + '_all' != lean
                        and 'peak_rss_mb' in mem.get(f + '_all', {})) + ')'))
  return rows
