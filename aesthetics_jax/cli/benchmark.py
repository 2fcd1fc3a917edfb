r"""Benchmark suite: JAX vs PyTorch in the same run, interleaved (`aesthetics-benchmark`, or
`python -m launch.benchmark` from a checkout).

  python -m launch.benchmark --what=all --reference=torch --json=F      # 34-65 min, 2-core CPU
  python -m launch.benchmark --what=all --quick --json=F                # a few minutes
  python -m launch.benchmark --what=model|cam|study|recipe|input|scaling [...]
  python -m launch.benchmark --json=F     # --what=model: the encoders' forward vs PyTorch's

Every PyTorch figure is the best of the formulations a competent user would try
(`bench/formulations.py`, --torch_formulations): NCHW / channels_last, chunks of 1/2/4/8
images, inference_mode / no_grad, torch.compile (guarded: a failure is recorded as
'failed: <reason>'; compile time apart); the JSON lists every formulation with its figures
and names the best, and the summary ratios use that best. torch runs with XLA's thread count
(--threads); the JSON's machine block records CPU model (family / model number and the
microarchitecture they name), flags, MHz, thread counts, XLA flags and versions.

Sections (`aesthetics_jax/bench/sections/`): `model` (MobileNetV2 / VGG16 forward, depthwise
shift vs conv, whole batch vs micro-batched, float32 vs bfloat16 with its error, torchvision
on identical weights), `cam` (Grad-CAM one target and all 10 buckets vs the faster of
pytorch-grad-cam and a hand-written batched torch Grad-CAM, maps compared, peak RSS in child
processes), `study` (the whole per-image study vs the faster of looping pytorch-grad-cam and
the hand-written torch Grad-CAM), `recipe` (the paper's 50-epoch frozen MobileNetV2 recipe
with the feature cache vs a plain PyTorch loop, extrapolated to 8,900 images), `input` (decode
workers, pipeline vs model images/s, our pipeline vs google's grain doing the same work),
`scaling` (streamed evaluation, time and peak RSS vs images). `--reference=torch` needs the
optional torch extra (torch, torchvision, grad-cam); without it the JAX figures alone are
reported; the grain comparison needs the optional bench extra (else skipped). Reference runs
and ours alternate within every repeat; figures are the median (and min-max) over --repeats
timed runs after --warmup untimed ones, first-call (compile) time apart. The run ends with a
summary table of ratios vs targets.

Without --data_dir the input benchmark runs on synthetic AVA-like JPEGs (about 500x350,
quality 90) generated in memory.

Adding a section: a module in aesthetics_jax/bench/sections/ with `run(opts) -> dict`
(JSON-able results; `bench.timing` for timings) and `summary(result) -> list[Row]`, a field
in `sections.Options` and a flag below for each new setting, and an entry in SECTIONS.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import sys
import time
from typing import Any, NoReturn

from absl import flags
from absl import logging

from aesthetics_jax import compile_cache, cpu_backend, io
from aesthetics_jax.bench import sections
from aesthetics_jax.cli import common
from aesthetics_jax.train import config_checks  # JAX-free: the config's enumerations
from aesthetics_jax.train import stop as stop_lib

# Section name -> module of aesthetics_jax.bench.sections, imported when it runs: they load JAX,
# Flax and the trainer (~4 s), which a mistyped flag should not wait for.
SECTIONS = ('model', 'cam', 'study', 'recipe', 'input', 'scaling')
TARGETS = {  # the performance issue's targets (2-core CPU, after warm-up): ours / reference
    'mobilenet_v2_forward_vs_best_torch': 1.2,
    'vgg16_forward_vs_best_torch': 1.0,
    # Grad-CAM and study: against the faster of pytorch-grad-cam and hand-written torch.
    'gradcam_one_target_vs_best_torch': 3.0,
    'gradcam_10_buckets_vs_best_torch': 20.0,
    'gradcam_peak_memory_torch_over_ours': 3.0,
    'study_vs_best_torch': 25.0,
    'recipe_8900_vs_best_pytorch': 30.0,
}

FLAGS = flags.FLAGS
_BEFORE = frozenset(FLAGS)  # absl's and imported libraries' flags: not reported
_D = sections.Options()     # flag defaults
flags.DEFINE_list('what', ['model'], f'Sections to run (comma separated): all or '
                  f'{",".join(SECTIONS)}. Default: model (MobileNetV2 / VGG16 forward, with '
                  'PyTorch side by side when --reference allows).')
flags.DEFINE_string('json', None, 'Write results (with machine info) to this JSON file. '
                    'Stopped (Ctrl-C, SIGTERM), the finished sections are written, marked '
                    '"interrupted": true; if the file cannot be written at the end, the JSON '
                    'goes to stdout (exit 1).')
flags.DEFINE_string('reference', 'auto', "'torch': time the PyTorch equivalents in the same "
                    "run (needs torch, torchvision, grad-cam); 'none'; 'auto' = torch if "
                    'it imports.')
flags.DEFINE_bool('quick', False, 'A few minutes in all: fewer repeats and warm-up calls, '
                  'smaller image counts (figures are noisier; the JSON says so).')
flags.DEFINE_integer('repeats', _D.repeats, 'Timed runs per measurement (median reported).',
                     lower_bound=1)
flags.DEFINE_integer('warmup', _D.warmup, 'Untimed runs before timing.', lower_bound=0)
flags.DEFINE_integer('threads', _D.threads, 'torch intra-op threads; 0 = one per CPU core '
                     "(XLA's count).", lower_bound=0)
flags.DEFINE_enum('torch_formulations', _D.torch_formulations, ['all', 'fast'],
                  "PyTorch formulations timed; every ratio is against the fastest: 'all' = "
                  'NCHW / channels_last x whole batch / chunks of 1,2,4,8 x inference_mode / '
                  "no_grad, + torch.compile (default, max-autotune-no-cudagraphs); 'fast' = "
                  'both layouts, whole batch and our --chunk, eager (--quick).')
flags.DEFINE_float('torch_compile_timeout', _D.torch_compile_timeout, 'Seconds per '
                   "torch.compile before it is recorded as 'failed: ...' (not fatal).")
flags.DEFINE_integer('chunk', _D.chunk, 'Images per micro-batch inside jitted inference '
                     'steps (aesthetics_jax.parallel); -1 = per backend (2 on CPU, off '
                     'elsewhere).', lower_bound=-1)
flags.DEFINE_integer('workers', _D.workers, "'All workers' count; 0 = one per CPU core.",
                     lower_bound=0)
flags.DEFINE_integer('image_size', _D.image_size, 'Crop side (train) / resize side (eval).',
                     lower_bound=config_checks.MIN_IMAGE_SIZE)
flags.DEFINE_integer('resize_size', _D.resize_size, 'Train resize side (then random crop).',
                     lower_bound=config_checks.MIN_IMAGE_SIZE)
# --what=input
flags.DEFINE_string('data_dir', _D.data_dir, '--what=input: prepared TFDS data_dir; '
                    'synthetic JPEGs if unset.')
flags.DEFINE_string('subset', _D.subset, "--what=input: dataset config with --data_dir, "
                    "'style' | 'all'.")
flags.DEFINE_integer('num_images', _D.num_images, '--what=input: images per timed run.',
                     lower_bound=1)
flags.DEFINE_integer('batch_size', _D.batch_size, '--what=input: global batch size of the '
                     'end-to-end pipeline run.', lower_bound=1)
flags.DEFINE_bool('processes', _D.processes, '--what=input: also time a process pool (vs '
                  'threads).')
flags.DEFINE_bool('input_vs_model', _D.input_vs_model, '--what=input: also time the model '
                  'fed by the pipeline and say how many decode workers keep up with it.')
flags.DEFINE_integer('fed_rounds', _D.fed_rounds, '--what=input: rounds of the model alone '
                     'vs fed by the pipeline (or --repeats, if more); the ratio is the median '
                     'per-round ratio.', lower_bound=1)
flags.DEFINE_integer('fed_cache_rows', _D.fed_cache_rows, '--what=input (with '
                     '--input_vs_model): rows of each timed feature-cache build (the default '
                     'training path of the frozen-encoder configs) against the encoder alone.')
flags.DEFINE_list('fed_cache_views', [str(n) for n in _D.fed_cache_views], '--what=input: the '
                  'train views K of those builds (one decode and resize per row for K views).')
flags.register_validator('fed_cache_views', lambda v: bool(v) and all(
    n.isdigit() and int(n) > 0 for n in v), '--fed_cache_views: positive integers, e.g. 4,1')
flags.register_validator('fed_cache_rows', lambda v: v > 0, '--fed_cache_rows: > 0')
flags.DEFINE_integer('fed_batch_size', _D.fed_batch_size, '--what=input (with '
                     '--input_vs_model): the global batch of the model fed by the pipeline and '
                     'of those builds (a multiple of the device count).', lower_bound=1)
flags.DEFINE_integer('fed_batches', _D.fed_batches, '--what=input (with --input_vs_model): '
                     'batches a timed block runs (long against the 3 a pipeline holds ready, '
                     'which run untimed).', lower_bound=1)
flags.DEFINE_bool('grain', _D.grain, "--what=input: also time google's grain doing the "
                  "same work (threads and processes; needs the optional extra: pip install "
                  "-e '.[bench]'; skipped if grain does not import).")
flags.DEFINE_list('grain_workers', [str(n) for n in _D.grain_workers], '--what=input: worker '
                  'counts of the grain comparison; 0 = one per CPU core.')
flags.register_validator('grain_workers', lambda v: all(n.isdigit() for n in v),
                         '--grain_workers: integers >= 0, e.g. 1,2,0 (0 = one per CPU core)')
flags.DEFINE_list('grain_modes', list(_D.grain_modes), "--what=input: grain formulations "
                  "timed: 'threads' (ReadOptions threads), 'processes' (mp_prefetch workers).")
# --what=model
flags.DEFINE_integer('model_batch_size', _D.model_batch_size, '--what=model: forward batch '
                     'size.', lower_bound=1)
flags.DEFINE_list('model_archs', list(_D.model_archs), "--what=model: 'mobilenet_v2', "
                  "'vgg16'.")
flags.DEFINE_list('model_dtypes', list(_D.model_dtypes), "--what=model: 'float32', "
                  "'bfloat16'.")
flags.DEFINE_list('model_depthwise', list(_D.model_depthwise), '--what=model: MobileNetV2 '
                  'depthwise implementations to time.')
flags.DEFINE_bool('profile', _D.profile, '--what=model: per-op times (jax.profiler trace) '
                  'of our default float32 forward of each model and the alternative it beat '
                  '(MobileNetV2: whole batch; VGG16: direct convs).')
flags.DEFINE_integer('confirm_repeats', _D.confirm_repeats, '--what=model,cam: rounds of '
                     "ours head to head with each of torch's two fastest formulations of the "
                     "screening (one with --torch_formulations=fast; the screening's figure is "
                     'biased upwards: the best of many noisy medians); the ratio is the lower '
                     'median per-round ratio. 0 = the screening ratio.', lower_bound=0)
flags.DEFINE_bool('placement', _D.placement, '--what=model,cam: before each head-to-head '
                  "call, the round-trip latency between two of this process's CPUs (a VM's "
                  'vCPUs on one L3 or not), and the ratio over near and far rounds apart.')
# --what=cam, study
flags.DEFINE_integer('cam_batch_size', _D.cam_batch_size, '--what=cam,study: images per '
                     'Grad-CAM call.', lower_bound=1)
flags.DEFINE_integer('cam_warmup', _D.cam_warmup, "--what=cam: untimed calls first "
                     "(pytorch-grad-cam's first calls are 2-6x slower).", lower_bound=0)
flags.DEFINE_integer('study_images', _D.study_images, '--what=study: test images in the '
                     'timed study.', lower_bound=1)
flags.DEFINE_bool('peak_memory', _D.peak_memory, '--what=cam: peak RSS in fresh child '
                  'processes.')
# --what=recipe
flags.DEFINE_integer('recipe_images', _D.recipe_images, '--what=recipe: training images '
                     'actually run.', lower_bound=1)
flags.DEFINE_integer('recipe_test_images', _D.recipe_test_images, '--what=recipe: test '
                     'images actually run.', lower_bound=1)
flags.DEFINE_float('recipe_epochs', _D.recipe_epochs, '--what=recipe: epochs (the paper: '
                   '50).')
flags.DEFINE_integer('recipe_views', _D.recipe_views, '--what=recipe: cached train views K '
                     '(config cache.num_train_views).', lower_bound=1)
flags.DEFINE_integer('torch_epochs', _D.torch_epochs, '--what=recipe: epochs of the PyTorch '
                     'loop actually run (every epoch costs the same; extrapolated to '
                     '--recipe_epochs).', lower_bound=1)
flags.DEFINE_integer('extrapolate_train', _D.extrapolate_train, '--what=recipe: train '
                     'images extrapolated to.', lower_bound=1)
flags.DEFINE_integer('extrapolate_test', _D.extrapolate_test, '--what=recipe: test images '
                     'extrapolated to.', lower_bound=1)
# --what=scaling
flags.DEFINE_list('scaling_sizes', [str(n) for n in _D.scaling_sizes], '--what=scaling: '
                  'images per streamed evaluation (one child process each).')
flags.DEFINE_integer('scaling_trace_images', _D.scaling_trace_images, '--what=scaling: '
                     'images streamed by one more child that reads its resident memory '
                     'after every batch (the judged figures, over its second half); 0 = none.',
                     lower_bound=0)
flags.DEFINE_string('malloc_arena_max', _D.malloc_arena_max, '--what=scaling: '
                    "MALLOC_ARENA_MAX for the child processes ('' = glibc's default).")
flags.register_validator('scaling_sizes', lambda v: all(n.isdigit() and int(n) > 0 for n in v),
                         '--scaling_sizes: positive integers, e.g. 500,1000')
flags.register_validator('grain_modes', lambda v: set(v) <= set(sections.GRAIN_MODES),
                         "--grain_modes: 'threads' and/or 'processes'")
# NaN passes absl's bounds: an explicit finite check (a NaN timeout or epoch count ran on).
for _name in ('torch_compile_timeout', 'recipe_epochs'):
  flags.register_validator(_name, lambda v: math.isfinite(v) and v > 0,
                           f'--{_name}: a positive number')
flags.register_validator('reference', lambda v: v in ('auto', 'torch', 'none'),
                         "--reference: use 'torch', 'none' or 'auto'")
# glibc reads it as a number: 'abc' ran the whole suite and the scaling children ignored it.
flags.register_validator('malloc_arena_max', lambda v: v == '' or (v.isdigit() and int(v) > 0),
                         "--malloc_arena_max: a positive integer, or '' for glibc's default")
_OURS = frozenset(FLAGS) - _BEFORE


class UsageError(Exception):
  """A one-line user error: printed without a traceback, exit status 1."""


def user_error(message: str) -> NoReturn:
  """Prints `message` as one line and exits with status 1."""
  print(f'launch.benchmark: {message}', file=sys.stderr)
  sys.exit(1)


def section(name: str):
  """The module that runs section `name` (`run(opts)`, `summary(results)`)."""
  return importlib.import_module(f'aesthetics_jax.bench.sections.{name}')


def resolve_reference(reference: str) -> str:
  """'torch' or 'none' for --reference; 'auto' says why when PyTorch is not usable."""
  if reference == 'none':
    return 'none'
  from aesthetics_jax.bench import torch_ref  # pylint: disable=import-outside-toplevel
  why = torch_ref.unavailable()
  if why is None:
    return 'torch'
  if reference == 'torch':
    raise UsageError(f'--reference=torch: PyTorch does not import ({why}); '
                     f'{torch_ref.INSTALL} (or pass --reference=none)')
  print(f'reference: PyTorch comparisons skipped, JAX figures only ({why}; '
        f'{torch_ref.INSTALL} adds them)', flush=True)
  return 'none'


# List flags whose items come from a fixed set (a wrong one was a traceback minutes in).
_CHOICES = {'model_archs': config_checks.ENUMERATIONS['model.arch'],
            'model_dtypes': config_checks.ENUMERATIONS['model.dtype'],
            'model_depthwise': config_checks.ENUMERATIONS['model.depthwise'],
            'grain_modes': sections.GRAIN_MODES}


def _check_choices() -> None:
  """Exits 2 with one line naming a list flag's unknown item and the choices."""
  for name, allowed in _CHOICES.items():
    bad = [v for v in FLAGS[name].value if v not in allowed]
    if bad or not FLAGS[name].value:
      common.usage_error('benchmark', f'--{name}={",".join(FLAGS[name].value)}: use some of '
                         f'{",".join(allowed)}')


def _check_threads(threads: int) -> None:
  """Exits 2 when --threads exceeds the CPUs this process may use: more threads than cores
  times contention, not the formulations; --threads=100000 was oneDNN's 'could not create a
  primitive' traceback after the first section's setup."""
  cores = cpu_backend.host_cpu_count()
  if threads > cores:
    common.usage_error('benchmark', f'--threads={threads}: this process may use {cores} CPUs; '
                       f'pass at most {cores}, or 0 for one per CPU core')


def _check_data_dir(data_dir: str, subset: str) -> None:
  """Exits 2 unless --data_dir holds the prepared --subset: with --what=all the input section
  found it missing after half an hour of the others."""
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  if '://' not in data_dir and not dataset.is_prepared(data_dir, subset):
    common.usage_error('benchmark', dataset.unprepared_line(data_dir, subset,
                                                            f'--data_dir={data_dir}')
                       + ', or leave --data_dir unset for synthetic JPEGs')


def options_from_flags() -> sections.Options:
  """Options from the flags, --quick values applied to the flags not given."""
  values: dict[str, Any] = {}
  for f in dataclasses.fields(sections.Options):
    given = FLAGS[f.name].present
    v = sections.QUICK[f.name] if FLAGS.quick and f.name in sections.QUICK and not given \
        else FLAGS[f.name].value
    values[f.name] = tuple(v) if isinstance(v, list) else v
  values['scaling_sizes'] = tuple(int(n) for n in values['scaling_sizes'])
  values['grain_workers'] = tuple(int(n) for n in values['grain_workers'])
  values['fed_cache_views'] = tuple(int(n) for n in values['fed_cache_views'])
  values['reference'] = resolve_reference(FLAGS.reference)
  return sections.Options(**values)


def summary_rows(rows: list[sections.Row]) -> list[dict[str, Any]]:
  """JSON rows: the target (explicit, else TARGETS[name]) and whether it is met."""
  out = []
  for r in rows:
    target = TARGETS.get(r.name) if r.target is None else r.target
    met = None
    if r.value is not None and target is not None:
      met = bool(r.value >= target) if r.better == 'higher' else bool(r.value <= target)
    out.append({'name': r.name, 'value': r.value, 'target': target, 'met': met,
                'detail': r.detail})
  return out


def print_summary(rows: list[dict[str, Any]], warnings: list[str] = ()) -> None:
  for w in warnings:  # only here, beside the table they qualify (they were printed twice)
    print(w)
  if not rows:
    return
  print('\nsummary (ours vs reference; target met?)')
  print(f"  {'figure':46s} {'value':>10s} {'target':>9s}  met   detail")
  for r in rows:
    v = '-' if r['value'] is None else (f"{r['value']:.3g}" if abs(r['value']) < 1e4 else
                                        f"{r['value']:.0f}")
    t = '-' if r['target'] is None else f"{r['target']:.3g}"
    met = {True: 'yes', False: 'NO', None: '-'}[r['met']]
    print(f"  {r['name']:46s} {v:>10s} {t:>9s}  {met:4s}  {r['detail']}")


def machine_info(opts: sections.Options) -> dict[str, Any]:
  """`machine.info()` plus, with the torch reference, torch's threads / oneDNN / SIMD level."""
  from aesthetics_jax.bench import machine, torch_ref  # pylint: disable=import-outside-toplevel
  info = machine.info()
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
    info['torch_runtime'] = torch_ref.runtime_info()
  return info


def print_threads(info: dict[str, Any]) -> None:
  """One line: the thread counts each framework runs with (they must match)."""
  t = info.get('torch_runtime', {})
  torch_part = (f", torch {t['num_threads']} (interop {t['num_interop_threads']}, "
                f"{t.get('cpu_capability', '?')})" if t else '')
  arch = f", {info['cpu_microarchitecture']}," if info.get('cpu_microarchitecture') else ''
  print(f"threads: XLA {info['xla_intra_op_threads']}{torch_part}; XLA_FLAGS "
        f"{info['xla_flags'] or '(none)'}; {info.get('cpu_model', '?')}{arch} "
        f"{info.get('cpu_mhz', 0):.0f} MHz", flush=True)


# The sections whose PyTorch reference is the best of `--torch_formulations`.
FORMULATION_SECTIONS = ('model', 'cam', 'study', 'recipe')


def formulations_warning(what: list[str], opts: sections.Options) -> str | None:
  """One line for the summary when its ratios are not against PyTorch's best: the 'fast' set
  (--quick's) tries neither torch.compile nor chunks other than ours, and in the full runs
  torch's fastest was compiled (MobileNetV2) or chunked by 4-8 (VGG16, pytorch-grad-cam)."""
  if not opts.torch or opts.torch_formulations != 'fast':
    return None
  if not set(what) & set(FORMULATION_SECTIONS):
    return None
  return ("NOTE: --torch_formulations=fast: the ratios are against PyTorch's fastest eager "
          'formulation of whole batch or our chunk, not its best (torch.compile and chunks '
          'of 1-8 not tried); rerun with --torch_formulations=all for figures to quote')


def sections_asked(what: list[str]) -> list[str]:
  """--what's sections in order, each once: `--what=model,model` ran the section twice and the
  JSON kept only the second."""
  return list(SECTIONS) if 'all' in what else list(dict.fromkeys(what))


def run(what: list[str], opts: sections.Options,
        results: dict[str, Any] | None = None) -> dict[str, Any]:
  """{section: its results (with `cpu_share`), 'summary': {'rows', 'total_s', 'quick',
  'cpu_share', 'warnings'}}, filled into `results` as each section finishes: stopped
  (Ctrl-C), it holds the finished sections and their summary."""
  from aesthetics_jax.bench import machine  # pylint: disable=import-outside-toplevel
  results = {} if results is None else results
  rows: list[sections.Row] = []
  note = formulations_warning(what, opts)
  warnings: list[str] = [note] if note else []
  t_all, cpu_all = time.perf_counter(), machine.cpu_times()
  for name in what:
    print(f'[{name}]', flush=True)
    t0, cpu0 = time.perf_counter(), machine.cpu_times()
    out = section(name).run(opts)
    out['section_s'] = time.perf_counter() - t0
    out['cpu_share'] = share = machine.cpu_share(cpu0, machine.cpu_times())
    warning = machine.share_warning(share, f'--what={name}')
    if warning:  # printed with the summary
      warnings.append(warning)
    rows += section(name).summary(out)
    results.pop('summary', None)  # kept last
    results[name] = out
    results['summary'] = {'rows': summary_rows(rows), 'total_s': time.perf_counter() - t_all,
                          'quick': opts.quick,
                          'cpu_share': machine.cpu_share(cpu_all, machine.cpu_times()),
                          'warnings': list(warnings)}
  return results


def write_json(path: str, doc: dict[str, Any]) -> bool:
  """Writes `doc` to --json; a failed write (a full disk) prints it to stdout instead, with
  one line on stderr, and returns False: it was a traceback, and the run's results lost."""
  try:
    io.atomic_write_json(path, doc, indent=2)
    return True
  except OSError as e:
    print(json.dumps(doc, indent=2, default=str), flush=True)
    print(f'benchmark: --json={path}: not written ({e.strerror or e}); the results are on '
          'stdout above', file=sys.stderr, flush=True)
    return False


def emit(results: dict[str, Any], document) -> bool:
  """The results to --json (`document()`), or to stdout without it; whether --json got them
  (`write_json` prints them to stdout when it cannot be written)."""
  if not FLAGS.json:
    print(json.dumps(results, indent=2, default=str))
    return False
  return write_json(FLAGS.json, document())


def interrupted(e: KeyboardInterrupt, what: list[str], results: dict[str, Any],
                document) -> NoReturn:
  """Ctrl-C / SIGTERM: the finished sections go to --json (or stdout), marked partial, with
  one line saying so; exit 130 / 143. Nothing resumes: a rerun starts from scratch."""
  sigterm = isinstance(e, stop_lib.Terminated)
  how = 'terminated (SIGTERM)' if sigterm else 'interrupted (Ctrl-C)'
  code = common.EXIT_TERMINATED if sigterm else common.EXIT_INTERRUPTED
  done = [w for w in what if w in results]
  missing = [w for w in what if w not in results]
  if not done:
    print(f'benchmark: {how} before any section finished; nothing written',
          file=sys.stderr, flush=True)
    sys.exit(code)
  results['summary'].update(interrupted=True, sections_done=done, sections_missing=missing)
  print_summary(results['summary']['rows'], results['summary']['warnings'])
  where = FLAGS.json if emit(results, document) else 'stdout'
  during, rest = '', ''
  if missing:  # else stopped after the last section
    left = ','.join(missing)
    during = f' during --what={missing[0]}'
    rest = f'; not finished: {left} (--what={left} runs them; nothing resumes)'
  print(f'benchmark: {how}{during}: {where} has the finished sections ({",".join(done)}), '
        f'marked "interrupted": true{rest}', file=sys.stderr, flush=True)
  sys.exit(code)


def main(argv):
  if len(argv) > 1:
    common.usage_error('benchmark', f'unexpected arguments {argv[1:]}; use --flag=value')
  # Before minutes of timing, not after: the results must have somewhere to go.
  common.check_outputs('benchmark', files={'json': FLAGS.json})
  what = sections_asked(FLAGS.what)
  unknown = [w for w in what if w not in SECTIONS]
  if not what:  # `--what=` ran nothing and exited 0
    common.usage_error('benchmark', f'--what is empty; choose from all,{",".join(SECTIONS)}')
  if unknown:  # before the sections' imports below
    common.usage_error('benchmark', f'unknown --what={",".join(unknown)}; choose from '
                       f'all,{",".join(SECTIONS)}')
  _check_choices()
  _check_threads(FLAGS.threads)
  if 'input' in what and FLAGS.data_dir:  # was found only when the input section began
    _check_data_dir(FLAGS.data_dir, FLAGS.subset)
  # The train crop (input, recipe) takes image_size of the resized image.
  if {'input', 'recipe'} & set(what) and FLAGS.resize_size < FLAGS.image_size:
    common.usage_error('benchmark', f'--resize_size={FLAGS.resize_size} is smaller than '
                       f'--image_size={FLAGS.image_size}: pass resize_size >= image_size')
  # Before JAX starts its backends: an INFO line each ("Unable to initialize backend 'tpu':
  # ... libtpu.so ...") opened every run's output, as the other commands' do not.
  logging.set_verbosity(logging.WARNING)
  # pylint: disable-next=import-outside-toplevel
  from aesthetics_jax.data import ava, preprocess  # their errors are one-line user errors
  results: dict[str, Any] = {}

  def document() -> dict[str, Any]:
    summary = results.get('summary', {})
    partial = {k: summary[k] for k in ('interrupted', 'sections_missing') if k in summary}
    return {'command': 'python -m launch.benchmark ' + ' '.join(sys.argv[1:]), **partial,
            'machine': info, 'flags': {k: FLAGS[k].value for k in sorted(_OURS)},
            'options': dataclasses.asdict(opts), 'results': results}
  try:
    opts = options_from_flags()
    info = machine_info(opts)
    print_threads(info)
    run(what, opts, results)
  except (UsageError, preprocess.InputError, ava.AvaError, FileNotFoundError) as e:
    user_error(str(e))
  except KeyboardInterrupt as e:  # and SIGTERM's Terminated
    interrupted(e, what, results, document)
  print_summary(results['summary']['rows'], results['summary']['warnings'])
  if not emit(results, document):
    if FLAGS.json:  # could not be written: on stdout instead
      sys.exit(common.EXIT_FAILED)
    return
  print(f'wrote {FLAGS.json}')


def run_cli() -> None:
  """`aesthetics-benchmark`."""
  # Compile times are part of what it reports (first calls): no persistent compilation cache
  # unless asked for (`compile_cache`; machine info records which).
  os.environ.setdefault(compile_cache.ENV, '0')
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
