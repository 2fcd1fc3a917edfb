"""--what=model: eval-mode forward (features + heads) images/s.

MobileNetV2 (depthwise 'shift' vs 'conv', whole batch vs micro-batched) and VGG16 (the
default convs, Winograd on CPU, and the direct ones, in float32), float32 and bfloat16 (with its error against float32), interleaved with torchvision on identical
weights when the reference is torch: every formulation of `bench.formulations.forward`
(NCHW / channels_last, chunks of 1/2/4/8 images, inference_mode / no_grad, torch.compile)
is timed (the screening), then our default forward runs head to head with each of its two
fastest (`--confirm_repeats` rounds each, `timing.confirm`): the headline ratio is the lower of
those re-measurements' median per-round ratios, free of the screening winner's upward bias and
of a lucky screening.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from aesthetics_jax import models
from aesthetics_jax.bench import (agreement, formulations, placement, profile, timing, torch_ref,
                                  workloads)
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.configs.default import ARCHS

GPU_TARGET_IMAGES_PER_S = 20000.0  # bfloat16 MobileNetV2 on one GPU


def _default_run(arch: str, chunk: int) -> str:
  """The run name of our default inference path: float32, the backend's depthwise,
  micro-batched as `parallel.default_chunk` says."""
  impl = '' if arch == 'vgg16' else '_' + models.resolve_impl('auto')
  return f'jax_{arch}_float32{impl}' + (f'_chunk{chunk}' if chunk else '_batch')


def _profile_runs(arch: str, chunk: int) -> list[str]:
  """The runs whose per-op profile is recorded: our default, and the alternative it beat
  (MobileNetV2: the whole batch at once; VGG16: direct convs instead of Winograd)."""
  ours = _default_run(arch, chunk)
  other = (ours.replace('_float32', '_float32_direct') if arch == 'vgg16'
           else ours.rsplit('_chunk', 1)[0] + '_batch')
  return [ours, other]


def _torch_models(arch: str, device: str):
  """(NCHW, channels_last) torchvision models with the same seeded weights, on `device`."""
  if arch == 'vgg16':
    pair = torch_ref.vgg16(seed=0), torch_ref.vgg16(seed=0, channels_last=True)
  else:
    n = 10 + 66  # score buckets + tags: our two heads side by side
    pair = (torch_ref.mobilenet_v2(n, seed=0),
            torch_ref.mobilenet_v2(n, seed=0, channels_last=True))
  return tuple(m.to(device) for m in pair)


# max |ours - torch| / max |torch| of the outputs that a float32 run may show on CPU (seen:
# ~1e-5); a run that computes something else (weights read wrong, chunks mixed up) is O(1).
# On CUDA both sides use TF32, whose error on MobileNetV2 is not measured: reported only.
OUTPUT_REL_TOL = {'cpu': 1e-3}


def _flat_outputs(out: dict[str, Any], arch: str) -> np.ndarray:
  """Our head outputs laid out as the torch model's: [B, 10 + 66] or VGG16's [B, 1]."""
  return (np.concatenate([out['score_logits'], out['tag_logits']], -1)
          if arch == 'mobilenet_v2' else np.asarray(out['logit'])[:, None])


def vs_torch(outs: dict[str, Any], t_out: np.ndarray, arch: str) -> dict[str, Any]:
  """Every float32 run's outputs (its own first call, the jitted function that is timed)
  against torch's: {'float32_vs_torch_max_abs_diff', '..._max_rel_diff' (over the runs),
  '..._worst_run', '..._rel_diff_by_run'}. Only the first run was compared before, so the
  headline (micro-batched) run could have computed anything."""
  scale = float(np.abs(t_out).max()) or 1.0
  absd = {n: float(np.abs(_flat_outputs(o, arch) - t_out).max())
          for n, o in outs.items() if 'float32' in n}
  worst = max(absd, key=absd.get)
  return {'float32_vs_torch_max_abs_diff': absd[worst],
          'float32_vs_torch_max_rel_diff': absd[worst] / scale,
          'float32_vs_torch_worst_run': worst,
          'float32_vs_torch_rel_diff_by_run': {n: d / scale for n, d in absd.items()}}


def _best_jax(runs: dict[str, Any], arch: str, dtype: str) -> str | None:
  """The name of our fastest `dtype` run of `arch` (None if there is none)."""
  names = [n for n in runs if n.startswith(f'jax_{arch}_{dtype}')]
  return max(names, key=lambda n: runs[n]['items_per_s']['median']) if names else None


def chunk_skip_reason(batch: int, chunk: int, devices: int) -> str | None:
  """Why `chunk` does not micro-batch `batch` images over `devices` (None when it does):
  `parallel.map_batch` then runs the whole batch, and a `_chunk` row timed it again as if it
  were another formulation."""
  step = chunk * devices
  if chunk <= 0 or (batch > step and batch % step == 0):
    return None
  return (f'--chunk={chunk}: no _chunk rows timed: {batch} images over {devices} device(s) '
          f'are not micro-batched (that needs a multiple of chunk x devices = {step}, above '
          'it); our step runs the whole batch')


def run(opts: Options) -> dict[str, Any]:
  # The CPUs' placement is read only before head-to-head calls (`timing.confirm`).
  with placement.probe(opts.torch and opts.placement and opts.confirm_repeats > 0) as probe:
    return _run(opts, probe)


def _run(opts: Options, probe: Callable[[], float | None] | None) -> dict[str, Any]:
  device = 'cpu'
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
    device = torch_ref.device()
  b, s, chunk = opts.model_batch_size, opts.image_size, opts.chunk_size()
  x_np = workloads.photos(b, s)
  # Sharded over all devices (on CPU one per core, `cpu_backend`), as the commands run it.
  _, x = workloads.place(None, x_np)
  res: dict[str, Any] = {'batch_size': b, 'image_size': s, 'backend': jax.default_backend(),
                         'jax_devices': len(x.sharding.device_set),
                         'chunk': chunk, 'reference': opts.reference, 'runs': {},
                         'accuracy': {}, 'torch_device': device if opts.torch else None}
  if res['jax_devices'] < jax.device_count():  # `place`: an odd batch went to one device
    res['devices_note'] = (f'--model_batch_size={b} does not split over '
                           f'{jax.device_count()} devices: ours runs on '
                           f"{res['jax_devices']} (pass a multiple of {jax.device_count()})")
    print(f"  {res['devices_note']}", flush=True)
  # Our rows' chunk; torch's formulations keep --chunk (a chunk of the batch is real there).
  ours_chunk = chunk
  if (why := chunk_skip_reason(b, chunk, jax.device_count())) is not None:
    res['chunk'], res['chunk_skipped'], ours_chunk = 0, why, 0
    print(f'  {why}', flush=True)
  for arch in opts.model_archs:
    tm, tm_cl = _torch_models(arch, device) if opts.torch else (None, None)
    fns, outs, compile_s, jitted = {}, {}, {}, {}
    # MobileNetV2: the depthwise implementations; VGG16: its default convs ('-') and, in
    # float32, the direct ones, to show what Winograd buys.
    impls = list(opts.model_depthwise) if arch == 'mobilenet_v2' else ['-', 'direct']
    variables = None
    for dtype in opts.model_dtypes:
      # bfloat16 with one depthwise only: the backend's default if it is timed in float32,
      # else the first asked for (its float32 run is the reference of its error).
      bf16_impl = models.resolve_impl('auto')
      bf16_impl = bf16_impl if bf16_impl in impls else impls[0]
      if dtype != 'float32':
        dtype_impls = [bf16_impl] if arch == 'mobilenet_v2' else ['-']
      else:
        dtype_impls = impls
      for impl in dtype_impls:
        model = models.create_model(workloads.model_config(
            arch, impl if arch == 'mobilenet_v2' else 'auto', dtype,
            conv3x3='direct' if impl == 'direct' else 'auto'))
        if variables is None:
          variables = workloads.place(torch_ref.variables(model, arch, s, tm), x_np)[0]
        both = ours_chunk and dtype == 'float32' and impl != 'direct'
        for c in ([0, ours_chunk] if both else [ours_chunk]):
          fwd = workloads.forward_fn(model, c, what='outputs')
          name = f'jax_{arch}_{dtype}' + (f'_{impl}' if impl != '-' else '') + (
              f'_chunk{c}' if c else '_batch')
          fns[name] = lambda f=fwd: jax.block_until_ready(f(variables, x))
          jitted[name] = fwd
          t0 = time.perf_counter()
          outs[name] = jax.device_get(fwd(variables, x))
          compile_s[name] = time.perf_counter() - t0
    failed: dict[str, Any] = {}
    torch_compile_s: dict[str, float] = {}
    if opts.torch:
      tmodels = {'contiguous': tm, 'channels_last': tm_cl}
      tfns = {f'torch_{arch}_{f.autocast or "float32"}_{f.name}':
              (f, torch_ref.formulation_fn(tmodels[f.layout], x_np, f, 'all'))
              for f in formulations.forward(opts.torch_formulations, b, chunk, device == 'cuda')}
      # Each called once, guarded (a compiled one's call is compile + first run, timed apart;
      # a failure is recorded with its first_call_s and the rest go on); steady state below.
      ran, torch_compile_s = formulations.first_calls(
          tfns, failed, formulations.FIRST_CALL_TIMEOUT_S, opts.torch_compile_timeout,
          reset=torch_ref.reset_compiler)
      fns.update(ran)
    runs = timing.interleaved(fns, items=b, repeats=opts.repeats, warmup=opts.warmup)
    if opts.profile:  # where the time goes, per XLA op
      prof = res.setdefault('profile', {})
      for name in [n for n in _profile_runs(arch, ours_chunk) if n in jitted]:
        names = profile.op_names(jitted[name].lower(variables, x).compile().as_text())
        prof[name] = profile.top_ops(fns[name], calls=2, n=8, names=names)
        print(f'  profile {name} (ms per call):\n' + '\n'.join(
            f"      {o['ms_per_call']:7.1f}  {o['share']:4.0%}  {o['op']:22s} {o['source']}"
            for o in prof[name][:6]), flush=True)
    for name, c in compile_s.items():  # JAX's first call (compile + run) happened above
      runs[name]['first_call_s'] = c
    for name, c in torch_compile_s.items():  # torch.compile + its first run, apart
      runs[name]['compile_s'] = c
    runs.update(failed)
    res['runs'].update(runs)
    timing.print_runs(runs)
    # bfloat16 vs float32 (same weights, same micro-batching), and float32 vs torch.
    acc = res['accuracy'][arch] = {}
    for name, out in outs.items():
      ref = outs.get(name.replace('bfloat16', 'float32'))
      if 'bfloat16' in name and ref is not None:  # without a float32 run, no agreement
        acc[name] = agreement.outputs(ref, out, arch)
        print(f'  {name} vs float32: {acc[name]}', flush=True)
    has_f32 = any('float32' in n for n in outs)  # the head-to-head is float32 vs float32
    if opts.torch and has_f32:
      t_out = torch_ref.forward_fn(tm, x_np, False, 'all')()[0].float().cpu().numpy()
      acc.update(vs_torch(outs, t_out, arch))
      print(f'  {arch} float32 vs torch: max |diff| of outputs '
            f'{acc["float32_vs_torch_max_abs_diff"]:.2e} (relative '
            f'{acc["float32_vs_torch_max_rel_diff"]:.1e}, worst '
            f'{acc["float32_vs_torch_worst_run"]})', flush=True)
      # The headline figure: our default inference path against the fastest torch
      # formulation (and, for reference, against the two eager whole-batch layouts).
      report = res.setdefault('torch', {})[arch] = formulations.report(
          runs, f'torch_{arch}_float32_')
      ours_name = _default_run(arch, ours_chunk)
      if ours_name not in runs:  # e.g. --model_depthwise without the default: our fastest
        ours_name = _best_jax(runs, arch, 'float32')
      res[f'{arch}_ours_run'] = ours_name
      if report['best'] is not None:
        best_name = f'torch_{arch}_float32_{report["best"]}'
        screening = timing.ratio(runs[ours_name], runs[best_name])
        res[f'{arch}_ratio_vs_best_torch'] = screening
        for layout in formulations.LAYOUTS:  # informational: each eager whole-batch layout
          name = f'torch_{arch}_float32_{layout}_batch_inference_mode'
          if 'items_per_s' in runs.get(name, {}):  # not when it failed (recorded above)
            res[f'{arch}_ratio_vs_torch_{layout}'] = timing.ratio(runs[ours_name], runs[name])
        print(f'  {arch}: best torch formulation {report["best"]} '
              f'({report["best_items_per_s"]:.1f} img/s); {ours_name} / best = '
              f'{screening:.2f} (screening)', flush=True)
        # The screening's fastest few (its medians of 3 calls are noisy), each head to head.
        top = [f'torch_{arch}_float32_{n}' for n in formulations.top(
            report['tried'], formulations.TOP_K[opts.torch_formulations])]
        timing.confirm(res, arch, f'{arch}_ratio_vs_best_torch', fns, ours_name, top,
                       items=b, repeats=opts.confirm_repeats, label=arch,
                       placement=probe)
    if opts.torch:  # bfloat16 (GPU): our fastest bfloat16 run vs torch's fastest autocast
      bf = formulations.report(runs, f'torch_{arch}_bfloat16_')
      ours_bf = _best_jax(runs, arch, 'bfloat16')
      if bf['best'] is not None and ours_bf is not None:
        res.setdefault('torch', {})[f'{arch}_bfloat16'] = bf
        res[f'{arch}_bfloat16_ours_run'] = ours_bf
        res[f'{arch}_bfloat16_ratio_vs_best_torch'] = timing.ratio(
            runs[ours_bf], runs[f'torch_{arch}_bfloat16_{bf["best"]}'])
        print(f'  {arch} bfloat16: best torch {bf["best"]} ({bf["best_items_per_s"]:.1f} '
              f'img/s); {ours_bf} / best = '
              f'{res[f"{arch}_bfloat16_ratio_vs_best_torch"]:.2f}', flush=True)
    del tm, tm_cl
  return res


def summary(result: dict[str, Any]) -> list[Row]:
  rows = []
  b = result['batch_size']
  if result['backend'] != 'cpu':  # GPU/TPU: an absolute target
    rows += [Row(f'{name}_images_per_s', r['items_per_s']['median'], f'batch {b}',
                 target=GPU_TARGET_IMAGES_PER_S)
             for name, r in result['runs'].items()
             if name.startswith('jax_mobilenet_v2') and 'bfloat16' in name]
  for arch in ARCHS:
    r = result.get(f'{arch}_ratio_vs_best_torch')
    if r is not None:
      best = result.get('torch', {}).get(arch, {}).get('best')
      conf = result.get('confirmation', {}).get(arch)
      if conf:  # the reference kept head to head (the screening's best or its runner-up)
        best = conf['torch_run'].removeprefix(f'torch_{arch}_float32_')
      how = timing.confirmation_note(result, arch, f'{arch}_ratio_vs_best_torch')
      rows.append(Row(f'{arch}_forward_vs_best_torch', r,
                      f'{result.get(f"{arch}_ours_run") or _default_run(arch, result["chunk"])}'
                      f' vs torch {best}, batch {b}{how}',
                      target=1.2 if arch == 'mobilenet_v2' else None))
    acc = result.get('accuracy', {}).get(arch, {})
    if 'float32_vs_torch_max_rel_diff' in acc:  # speed is only worth quoting beside this
      dev = result.get('torch_device') or 'cpu'
      rows.append(Row(f'{arch}_float32_outputs_vs_torch_max_rel_diff',
                      acc['float32_vs_torch_max_rel_diff'],
                      f'max |ours - torch| / max |torch| over '
                      f'{len(acc["float32_vs_torch_rel_diff_by_run"])} float32 runs (worst '
                      f'{acc["float32_vs_torch_worst_run"]}; {dev}'
                      + ('' if dev in OUTPUT_REL_TOL else ', TF32 on both sides: not judged')
                      + ')', target=OUTPUT_REL_TOL.get(dev), better='lower'))
    r = result.get(f'{arch}_bfloat16_ratio_vs_best_torch')
    if r is not None:
      best = result['torch'][f'{arch}_bfloat16']['best']
      rows.append(Row(f'{arch}_bfloat16_forward_vs_best_torch', r,
                      f'{result[f"{arch}_bfloat16_ours_run"]} vs torch {best} '
                      f'({result.get("torch_device")}), batch {b}'))
  return rows
