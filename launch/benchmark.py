r"""Benchmark suite: JAX vs PyTorch in the same run, interleaved.

  python -m launch.benchmark --what=all --reference=torch --json=F      # ~15 min, 2-core CPU
  python -m launch.benchmark --what=all --quick --json=F                # a few minutes
  python -m launch.benchmark --what=model|cam|study|recipe|input|scaling [...]

Sections: `model` (MobileNetV2 / VGG16 forward, depthwise shift vs conv, whole batch vs
micro-batched, float32 vs bfloat16 with its error, torchvision NCHW / channels_last on
identical weights), `cam` (Grad-CAM one target and all 10 buckets vs pytorch-grad-cam, maps
compared, peak RSS in child processes), `study` (the whole per-image study vs looping
pytorch-grad-cam), `recipe` (the paper's 50-epoch frozen MobileNetV2 recipe with the feature
cache vs a plain PyTorch loop, extrapolated to 8,900 images), `input` (decode workers,
pipeline vs model images/s), `scaling` (streamed evaluation, time and peak RSS vs images).
`--reference=torch` needs the optional torch extra (torch, torchvision, grad-cam); without it
the JAX figures alone are reported. Reference runs and ours alternate within every repeat;
figures are the median (and min-max) over --repeats timed runs after --warmup untimed ones,
first-call (compile) time apart. The run ends with a summary table of ratios vs targets.

Without --data_dir the input benchmark runs on synthetic AVA-like JPEGs (about 500x350,
quality 90) generated in memory.

Adding a section: write `def bench_<name>() -> dict` returning JSON-able results (use
`measure()` or `aesthetics_jax.bench.timing.interleaved` for timings), decorate it with
`@register('<name>')`; `--what=<name>` then runs it and the common writer adds machine info
and versions.
"""
from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from absl import app, flags

from aesthetics_jax.bench.synthetic import synthetic_jpegs
from aesthetics_jax import parallel
from aesthetics_jax.models import outputs as outputs_lib

FLAGS = flags.FLAGS
_ABSL_FLAGS = frozenset(FLAGS)  # defined before ours: not reported
flags.DEFINE_list('what', ['input'], 'Benchmarks to run (comma separated): see BENCHMARKS.')
flags.DEFINE_string('json', None, 'Write results (with machine info) to this JSON file.')
flags.DEFINE_string('data_dir', None, 'Prepared TFDS data_dir; synthetic JPEGs if unset.')
flags.DEFINE_string('subset', 'style', "Dataset config with --data_dir: 'style' | 'all'.")
flags.DEFINE_integer('num_images', 192, 'Images per timed run.')
flags.DEFINE_integer('repeats', 3, 'Timed runs per measurement (median reported).')
flags.DEFINE_integer('warmup', 1, 'Untimed runs before timing.')
flags.DEFINE_integer('workers', 0, "'All workers' count; 0 = one per CPU core.")
flags.DEFINE_integer('resize_size', 256, 'Train resize side (then random crop).')
flags.DEFINE_integer('image_size', 224, 'Crop side (train) / resize side (eval).')
flags.DEFINE_integer('batch_size', 64, 'Global batch size for the end-to-end pipeline run.')
flags.DEFINE_bool('processes', True, 'Also time a process pool (vs threads).')

BENCHMARKS: dict[str, Callable[[], dict]] = {}


def register(name: str):
  """Decorator: adds a benchmark function to BENCHMARKS under `name`."""
  def deco(fn):
    BENCHMARKS[name] = fn
    return fn
  return deco


def _version(pkg: str) -> str | None:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine_info() -> dict[str, Any]:
  """Host, accelerator and library versions (torch only if installed; never imported)."""
  import jax  # pylint: disable=import-outside-toplevel
  info: dict[str, Any] = {
      'hostname': platform.node(), 'platform': platform.platform(),
      'processor': platform.processor() or platform.machine(),
      'python': sys.version.split()[0], 'cpu_count': parallel.host_cpu_count(),
      'jax_backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    if names:
      info['cpu_model'] = names[0]
  except OSError:
    pass
  info['versions'] = {p: _version(p) for p in (
      'jax', 'jaxlib', 'flax', 'optax', 'numpy', 'pillow', 'tensorflow-datasets',
      'torch', 'torchvision')}
  try:
    from PIL import features  # pylint: disable=import-outside-toplevel
    info['libjpeg_turbo'] = bool(features.check('libjpeg_turbo'))
  except Exception:  # pylint: disable=broad-except
    pass
  return info


def summarize(values: list[float]) -> dict[str, float]:
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def measure(fn: Callable[[], Any], *, items: int, repeats: int | None = None,
            warmup: int | None = None) -> dict[str, Any]:
  """Times `fn()` (which processes `items` items): seconds and items/s, median and min-max."""
  repeats = FLAGS.repeats if repeats is None else repeats
  warmup = FLAGS.warmup if warmup is None else warmup
  for _ in range(warmup):
    fn()
  secs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    secs.append(time.perf_counter() - t0)
  return {'items': items, 'repeats': repeats, 'seconds': summarize(secs),
          'items_per_s': summarize([items / s for s in secs])}


def write_json(path: str | os.PathLike, results: dict[str, Any]) -> None:
  """Atomic JSON write: {'machine': ..., 'flags': ..., 'results': {section: ...}}."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  doc = {'command': 'python -m launch.benchmark ' + ' '.join(sys.argv[1:]),
         'machine': machine_info(),
         'flags': {k: FLAGS[k].value for k in FLAGS if k not in _ABSL_FLAGS},
         'results': results}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(doc, f, indent=2, default=str)
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# --what=input
# ---------------------------------------------------------------------------------------


def _real_jpegs(n: int) -> list[bytes]:
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  src = dataset.load_sources(FLAGS.data_dir, FLAGS.subset)['train']
  return [bytes(src[i]['image']) for i in range(min(n, len(src)))]


def _train_one(args) -> Any:
  """One train image (decode with draft, resize, random crop); picklable for processes."""
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  data, j, rs, s = args
  return preprocess.preprocess_train_np(data, rs, s, preprocess.augment_rng(0, 0, j),
                                        random_flip=True)


def _train_full_decode(args) -> Any:
  """The same without the draft() fast path: full-resolution decode, then resize/crop."""
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  data, j, rs, s = args
  return preprocess.preprocess_train_np(preprocess.decode_image(data), rs, s,
                                        preprocess.augment_rng(0, 0, j), True)


def _eval_full_decode(args) -> Any:
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  data, _, _, s = args
  return preprocess.preprocess_eval_np(preprocess.decode_image(data), s)


def _eval_one(args) -> Any:
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  data, _, _, s = args
  return preprocess.preprocess_eval_np(data, s)


@register('input')
def bench_input() -> dict[str, Any]:
  """Decode + resize (+ crop) images/s: 1 worker vs all, threads vs processes, draft on/off;
  plus the end-to-end train_batches pipeline (incl. device transfer + float conversion)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import pipeline as ip  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  datas = _real_jpegs(FLAGS.num_images) if FLAGS.data_dir else synthetic_jpegs(FLAGS.num_images)
  source = 'real:' + FLAGS.data_dir if FLAGS.data_dir else 'synthetic ~500x350 q90'
  sizes = [len(d) for d in datas]
  n_all = FLAGS.workers or parallel.host_cpu_count()
  rs, s = FLAGS.resize_size, FLAGS.image_size
  args = [(d, j, rs, s) for j, d in enumerate(datas)]
  res: dict[str, Any] = {
      'source': source, 'num_images': len(datas), 'resize_size': rs, 'image_size': s,
      'mean_jpeg_kb': float(np.mean(sizes) / 1024), 'all_workers': n_all,
      'large_source': 'synthetic ~1000x700 q90 (train_1000px_* runs)',
      'prepare_s': time.perf_counter() - t0, 'runs': {}}

  def threads(fn, n, args=args):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
      return measure(lambda: list(pool.map(fn, args)), items=len(args))

  def processes(fn, n):
    # spawn: forking a process that has started JAX's threads can deadlock.
    with multiprocessing.get_context('spawn').Pool(n) as pool:
      return measure(lambda: pool.map(fn, args, chunksize=4), items=len(args))

  runs = res['runs']
  plan = [('train_full_decode_1_thread', threads, _train_full_decode, 1),
          ('train_1_thread', threads, _train_one, 1),
          ('eval_1_thread', threads, _eval_one, 1),
          (f'train_{n_all}_threads', threads, _train_one, n_all),
          (f'eval_{n_all}_threads', threads, _eval_one, n_all)]
  if FLAGS.processes and n_all > 1:
    plan.append((f'train_{n_all}_processes', processes, _train_one, n_all))
  # draft() only pays when the target is at most half the image side: show it where it
  # applies (small targets as in the demo configs, and large photos).
  small = [(d, j, s // 4, s // 4) for j, d in enumerate(datas)]
  large = [(d, j, rs, s) for j, d in enumerate(synthetic_jpegs(max(8, len(datas) // 4),
                                                               seed=1, scale=2.0))]
  plan += [(f'eval{s // 4}_full_decode_1_thread', threads, _eval_full_decode, 1, small),
           (f'eval{s // 4}_1_thread', threads, _eval_one, 1, small),
           ('train_1000px_full_decode_1_thread', threads, _train_full_decode, 1, large),
           ('train_1000px_1_thread', threads, _train_one, 1, large)]
  for name, runner, fn, n, *a in plan:
    runs[name] = dict(runner(fn, n, *a), workers=n)
    print(f'  {name:32s} {runs[name]["items_per_s"]["median"]:8.1f} images/s '
          f'({runs[name]["items_per_s"]["min"]:.1f}-{runs[name]["items_per_s"]["max"]:.1f})',
          flush=True)

  # End to end: train_batches on an in-memory source (sampler, decode, transfer, to float).
  records = [{'image': d, 'image_id': i + 1, 'votes': np.eye(10, dtype=np.int32)[3 + i % 5],
              'tags': np.array([1 + i % 66, 0], np.int32), 'challenge_id': 0}
             for i, d in enumerate(datas)]
  c = default.get_config()
  c.batch_size = FLAGS.batch_size
  c.input.resize_size, c.input.image_size = rs, s
  c.input.num_workers = n_all
  mesh = parallel.make_mesh()
  nb = max(1, len(datas) // FLAGS.batch_size)
  it = ip.train_batches(records, c, mesh)
  next(it)['image'].block_until_ready()  # warm-up: jit, threads, metadata

  def pipeline():
    for _ in range(nb):
      b = next(it)
    b['image'].block_until_ready()
  runs['train_batches_pipeline'] = dict(measure(pipeline, items=nb * FLAGS.batch_size,
                                                warmup=0),
                                        workers=n_all, batch_size=FLAGS.batch_size)
  it.close()
  print(f'  {"train_batches_pipeline":32s} '
        f'{runs["train_batches_pipeline"]["items_per_s"]["median"]:8.1f} images/s', flush=True)
  one = runs['train_1_thread']['items_per_s']['median']
  res['speedup_draft_vs_full_decode'] = one / runs['train_full_decode_1_thread'][
      'items_per_s']['median']
  res[f'speedup_draft_eval{s // 4}'] = (
      runs[f'eval{s // 4}_1_thread']['items_per_s']['median']
      / runs[f'eval{s // 4}_full_decode_1_thread']['items_per_s']['median'])
  res['speedup_draft_train_1000px'] = (
      runs['train_1000px_1_thread']['items_per_s']['median']
      / runs['train_1000px_full_decode_1_thread']['items_per_s']['median'])
  res['speedup_all_threads_vs_1'] = runs[f'train_{n_all}_threads']['items_per_s'][
      'median'] / one
  if f'train_{n_all}_processes' in runs:
    res['faster_pool'] = ('threads' if runs[f'train_{n_all}_threads']['items_per_s']['median']
                          >= runs[f'train_{n_all}_processes']['items_per_s']['median']
                          else 'processes')
  if FLAGS.input_vs_model:
    res['vs_model'] = input_vs_model(one)
  return res


# ---------------------------------------------------------------------------------------
# Shared by the JAX-vs-PyTorch sections (model, cam, study, recipe, scaling)
# ---------------------------------------------------------------------------------------
flags.DEFINE_string('reference', 'auto', "'torch': time the PyTorch equivalents in the same "
                    "run (needs torch, torchvision, grad-cam); 'none'; 'auto' = torch if "
                    'installed.')
flags.DEFINE_bool('quick', False, 'A few minutes in all: fewer repeats and warm-up calls, '
                  'smaller image counts (figures are noisier; the JSON says so).')
flags.DEFINE_integer('chunk', -1, 'Images per micro-batch inside jitted inference steps '
                     '(aesthetics_jax.parallel); -1 = per backend (2 on CPU, off elsewhere).')
flags.DEFINE_bool('profile', True, '--what=model: per-op times (jax.profiler trace) of the '
                  'whole-batch and micro-batched float32 forwards.')
flags.DEFINE_integer('threads', 0, 'torch intra-op threads; 0 = one per CPU core.')
# --what=model  (section started by the models owner; flag names kept)
flags.DEFINE_integer('model_batch_size', 32, '--what=model: forward batch size.')
flags.DEFINE_list('model_archs', ['mobilenet_v2', 'vgg16'],
                  "--what=model: 'mobilenet_v2', 'vgg16'.")
flags.DEFINE_list('model_dtypes', ['float32', 'bfloat16'],
                  "--what=model: 'float32', 'bfloat16'.")
flags.DEFINE_list('model_depthwise', ['shift', 'conv'],
                  "--what=model: MobileNetV2 depthwise implementations to time.")
# --what=cam / study
flags.DEFINE_integer('cam_batch_size', 32, '--what=cam,study: images per Grad-CAM call.')
flags.DEFINE_integer('cam_warmup', 10, '--what=cam: untimed calls first (pytorch-grad-cam\'s '
                     'first calls are 2-6x slower).')
flags.DEFINE_integer('study_images', 64, '--what=study: test images in the timed study.')
flags.DEFINE_bool('peak_memory', True, 'Measure peak RSS in fresh child processes.')
# --what=recipe
flags.DEFINE_integer('recipe_images', 64, '--what=recipe: training images actually run.')
flags.DEFINE_integer('recipe_test_images', 32, '--what=recipe: test images actually run.')
flags.DEFINE_float('recipe_epochs', 50, '--what=recipe: epochs (the paper: 50).')
flags.DEFINE_integer('recipe_views', 4, '--what=recipe: cached train views K (config '
                     'cache.num_train_views).')
flags.DEFINE_integer('torch_epochs', 2, '--what=recipe: epochs of the PyTorch loop actually '
                     'run (every epoch costs the same; extrapolated to --recipe_epochs).')
flags.DEFINE_integer('extrapolate_train', 8900, '--what=recipe: train images extrapolated to.')
flags.DEFINE_integer('extrapolate_test', 2203, '--what=recipe: test images extrapolated to.')
# --what=scaling
flags.DEFINE_list('scaling_sizes', ['500', '1000', '2000', '4000'],
                  '--what=scaling: images per streamed evaluation (one child process each).')

flags.DEFINE_string('malloc_arena_max', '2', '--what=scaling: MALLOC_ARENA_MAX for the '
                    "child processes ('' = leave glibc's default).")

QUICK = dict(repeats=2, cam_warmup=3, study_images=32, recipe_images=32,
             recipe_test_images=32, torch_epochs=1, scaling_sizes=['64', '128', '256', '512'],
             model_batch_size=8)
TARGETS = {  # the targets (2-core CPU, after warm-up): ours / reference
    'mobilenet_v2_forward_vs_torch_channels_last': 1.2,
    'gradcam_one_target_vs_pytorch_grad_cam': 2.0,
    'gradcam_10_buckets_vs_pytorch_grad_cam': 15.0,
    'gradcam_peak_memory_torch_over_ours': 3.0,
    'study_vs_looped_pytorch_grad_cam': 20.0,
    'recipe_8900_vs_plain_pytorch': 30.0,
}
SUMMARY: list[dict[str, Any]] = []


def _flag(name: str):
  """Flag value, or its --quick value when --quick is set and the flag was not given."""
  if FLAGS.quick and name in QUICK and not FLAGS[name].present:
    return QUICK[name]
  return FLAGS[name].value


def _chunk() -> int:
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  return parallel.default_chunk() if FLAGS.chunk < 0 else FLAGS.chunk


def _use_torch() -> bool:
  if FLAGS.reference == 'none':
    return False
  from aesthetics_jax.bench import torch_ref  # pylint: disable=import-outside-toplevel
  ok = torch_ref.available()
  if FLAGS.reference == 'torch' and not ok:
    raise FileNotFoundError("--reference=torch needs torch, torchvision and grad-cam: "
                            "pip install -e '.[torch]' (or pass --reference=none)")
  if ok:
    torch_ref.set_threads(FLAGS.threads or parallel.host_cpu_count())
  return ok


def _note(name: str, value: float | None, detail: str = '', target: float | None = None,
          better: str = 'higher') -> None:
  """Adds a line to the closing summary table (and the JSON 'summary')."""
  target = TARGETS.get(name) if target is None else target
  met = None
  if value is not None and target is not None:
    met = bool(value >= target) if better == 'higher' else bool(value <= target)
  SUMMARY.append({'name': name, 'value': value, 'target': target, 'met': met,
                  'detail': detail})


def _print_runs(runs: dict[str, Any], names=None) -> None:
  from aesthetics_jax.bench import timing  # pylint: disable=import-outside-toplevel
  for k in names or runs:
    r = runs[k]
    print(f'  {k:46s} {timing.fmt_rate(r)}  first call {r["first_call_s"]:.1f} s', flush=True)


def _compare_maps(expected, got) -> dict[str, float]:
  """max |diff| and the minimum per-map Pearson correlation of two [..., H, W] stacks."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  e = np.asarray(expected, np.float64).reshape(-1, *np.shape(expected)[-2:])
  g = np.asarray(got, np.float64).reshape(e.shape)
  corrs = []
  for a, b in zip(e, g):
    if a.std() == 0 or b.std() == 0:
      corrs.append(1.0 if np.abs(a - b).max() <= 5e-4 else 0.0)
    else:
      corrs.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
  return {'max_abs_diff': float(np.abs(e - g).max()), 'min_corr': float(min(corrs)),
          'maps': int(e.shape[0]),
          'all_zero_maps': int(sum(a.max() == 0 for a in e))}  # a vacuous match if many


def _model_variables(model, size: int):
  """Random variables on the device (`models.init_variables`)."""
  import jax  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  return jax.device_put(models.init_variables(model, 0, size))


def _variables(arch: str, model, tmodel, size: int):
  """Our variables: the torch model's weights when there is one, else random."""
  import jax  # pylint: disable=import-outside-toplevel
  if tmodel is None:
    return _model_variables(model, size)
  from aesthetics_jax.bench import torch_ref  # pylint: disable=import-outside-toplevel
  return jax.device_put(torch_ref.flax_variables(tmodel, arch, _model_variables(model, size)))


# ---------------------------------------------------------------------------------------
# --what=model
# ---------------------------------------------------------------------------------------


@register('model')
def bench_model() -> dict[str, Any]:
  """Eval-mode forward (features + heads) images/s at --image_size, batch --model_batch_size:
  MobileNetV2 (depthwise 'shift' vs 'conv', whole batch vs micro-batched) and VGG16, float32
  and bfloat16 (with its error against float32), interleaved with torchvision (NCHW and
  channels_last) on identical weights when torch is there."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.bench import timing, torch_ref, workloads  # pylint: disable=import-outside-toplevel

  b, s = _flag('model_batch_size'), FLAGS.image_size
  chunk = _chunk()
  use_torch = _use_torch()
  x_np = workloads.photos(b, s)
  x = jax.device_put(x_np)
  res: dict[str, Any] = {'batch_size': b, 'image_size': s, 'backend': jax.default_backend(),
                         'chunk': chunk, 'reference': 'torch' if use_torch else 'none',
                         'runs': {}, 'accuracy': {}}
  for arch in FLAGS.model_archs:
    fns, outs, compile_s, jitted = {}, {}, {}, {}
    tm = tm_cl = None
    if use_torch:
      make = torch_ref.mobilenet_v2 if arch == 'mobilenet_v2' else torch_ref.vgg16
      tm = make(seed=0) if arch == 'vgg16' else make(10 + 66, seed=0)
      tm_cl = make(seed=0, channels_last=True) if arch == 'vgg16' else make(
          10 + 66, seed=0, channels_last=True)
    impls = [i for i in FLAGS.model_depthwise] if arch == 'mobilenet_v2' else ['-']
    variables = None
    for dtype in FLAGS.model_dtypes:
      # bfloat16 with the backend's default depthwise only (both are timed in float32).
      for impl in (impls if dtype == 'float32' or arch != 'mobilenet_v2' else
                   [models.resolve_impl('auto')]):
        cfg = workloads.model_config(arch, 'auto' if impl == '-' else impl, dtype)
        model = models.create_model(cfg)
        if variables is None:
          variables = _variables(arch, model, tm, s)
        chunks = [0, chunk] if chunk and dtype == 'float32' else [chunk]
        for c in chunks:
          fwd = workloads.forward_fn(model, c, what='outputs')
          name = f'jax_{arch}_{dtype}' + (f'_{impl}' if impl != '-' else '') + (
              f'_chunk{c}' if c else '_batch')
          fns[name] = lambda f=fwd: jax.block_until_ready(f(variables, x))
          jitted[name] = fwd
          t0 = time.perf_counter()
          outs[name] = jax.device_get(fwd(variables, x))
          compile_s[name] = time.perf_counter() - t0
    if use_torch:
      fns[f'torch_{arch}_float32_contiguous'] = torch_ref.forward_fn(tm, x_np, False, 'all')
      fns[f'torch_{arch}_float32_channels_last'] = torch_ref.forward_fn(tm_cl, x_np, True,
                                                                         'all')
      if chunk and arch == 'mobilenet_v2':  # informational: torch with our micro-batching
        fns[f'torch_{arch}_float32_channels_last_chunk{chunk}'] = torch_ref.forward_fn(
            tm_cl, x_np, True, 'all', chunk)
    runs = timing.interleaved(fns, items=b, repeats=_flag('repeats'), warmup=FLAGS.warmup)
    if FLAGS.profile and arch == 'mobilenet_v2':  # where the time goes, per XLA op
      from aesthetics_jax.bench import profile  # pylint: disable=import-outside-toplevel
      prof = res.setdefault('profile', {})
      for name in [k for k in fns if k.startswith('jax_') and 'float32' in k][:2]:
        names = profile.op_names(jitted[name].lower(variables, x).compile().as_text())
        prof[name] = profile.top_ops(fns[name], calls=2, n=8, names=names)
        print(f'  profile {name} (ms per call):\n' + '\n'.join(
            f"      {o['ms_per_call']:7.1f}  {o['share']:4.0%}  {o['op']:22s} {o['source']}"
            for o in prof[name][:6]), flush=True)
    for name, c in compile_s.items():  # JAX's first call (compile + run) happened above
      runs[name]['first_call_s'] = c
    res['runs'].update(runs)
    _print_runs(runs)
    # bfloat16 vs float32 (same weights, same micro-batching), and float32 vs torch.
    acc = res['accuracy'][arch] = {}
    for name, out in outs.items():
      if 'bfloat16' not in name:
        continue
      ref = outs[name.replace('bfloat16', 'float32')]
      p, q = outputs_lib.predict_outputs(ref, arch), outputs_lib.predict_outputs(out, arch)
      a = {'label_agreement': float(np.mean(np.asarray(p['label_pred']) ==
                                            np.asarray(q['label_pred'])))}
      if arch == 'mobilenet_v2':
        a['mean_score_max_abs_diff'] = float(np.abs(p['mean_score'] - q['mean_score']).max())
        a['distribution_max_abs_diff'] = float(np.abs(p['distribution'] -
                                                      q['distribution']).max())
        a['score_logits_max_abs_diff'] = float(np.abs(ref['score_logits'] -
                                                      out['score_logits']).max())
      else:
        a['logit_max_abs_diff'] = float(np.abs(ref['logit'] - out['logit']).max())
        a['logit_max_abs'] = float(np.abs(ref['logit']).max())
        a['p_high_max_abs_diff'] = float(np.abs(p['p_high'] - q['p_high']).max())
      acc[name] = a
      print(f'  {name} vs float32: {a}', flush=True)
    if use_torch:
      import torch  # pylint: disable=import-outside-toplevel
      with torch.inference_mode():
        t_out = tm(torch_ref.to_nchw(x_np, False)).numpy()
      ours = next(o for n, o in outs.items() if 'float32' in n)
      ours = (np.concatenate([ours['score_logits'], ours['tag_logits']], -1)
              if arch == 'mobilenet_v2' else ours['logit'][:, None])
      acc['float32_vs_torch_max_abs_diff'] = float(np.abs(ours - t_out).max())
      print(f'  {arch} float32 vs torch: max |diff| of outputs '
            f'{acc["float32_vs_torch_max_abs_diff"]:.2e}', flush=True)
      del tm, tm_cl
    if jax.default_backend() != 'cpu' and arch == 'mobilenet_v2':  # GPU/TPU: absolute target
      for name, r in runs.items():
        if name.startswith('jax_') and 'bfloat16' in name:
          _note(f'{name}_images_per_s', r['items_per_s']['median'], f'batch {b}',
                target=20000.0)
    # The headline figure: our default inference path (float32, depthwise per backend,
    # micro-batched) against torchvision's fastest layout.
    if use_torch:
      best_torch = max((runs[f'torch_{arch}_float32_{l}'] for l in
                        ('contiguous', 'channels_last')),
                       key=lambda r: r['items_per_s']['median'])
      default_impl = '' if arch == 'vgg16' else '_' + models.resolve_impl('auto')
      ours_name = f'jax_{arch}_float32{default_impl}' + (f'_chunk{chunk}' if chunk else
                                                        '_batch')
      if ours_name in runs:
        r = timing.ratio(runs[ours_name], runs[f'torch_{arch}_float32_channels_last'])
        res[f'{arch}_ratio_vs_torch_channels_last'] = r
        res[f'{arch}_ratio_vs_best_torch'] = timing.ratio(runs[ours_name], best_torch)
        _note(f'{arch}_forward_vs_torch_channels_last', r,
              f'{ours_name} vs torchvision channels_last, batch {b}',
              target=1.2 if arch == 'mobilenet_v2' else None)
  return res


# ---------------------------------------------------------------------------------------
# --what=cam
# ---------------------------------------------------------------------------------------


@register('cam')
def bench_cam() -> dict[str, Any]:
  """Grad-CAM images/s for one target and all 10 score buckets (MobileNetV2, 10-way head),
  ours vs pytorch-grad-cam (GradCAM, target_layers=[model.features[-1]]) on identical
  weights, both warmed up; maps compared; peak RSS of each in a fresh child process."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.explain import cam  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.bench import memory, timing, torch_ref, workloads  # pylint: disable=import-outside-toplevel

  b, s, chunk = FLAGS.cam_batch_size if not FLAGS.quick or FLAGS['cam_batch_size'].present \
      else 16, FLAGS.image_size, _chunk()
  use_torch = _use_torch()
  k = 9  # the one target: bucket 10 (the highest score)
  x_np = workloads.photos(b, s, seed=1)
  x = jax.device_put(x_np)
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  tms = {}
  if use_torch:
    tms = {layout: torch_ref.mobilenet_v2(10, seed=0, channels_last=layout == 'channels_last')
           for layout in ('contiguous', 'channels_last')}
  variables = _variables('mobilenet_v2', model, tms.get('contiguous'), s)
  one = workloads.make_cam_step(model, workloads.bucket_target(k), chunk, s)
  all10 = workloads.make_cam_step(model, cam.targets_for('mobilenet_v2', 'bucket'), chunk, s)
  res: dict[str, Any] = {'batch_size': b, 'image_size': s, 'chunk': chunk, 'target_bucket': k,
                         'warmup_calls': _flag('cam_warmup'), 'runs': {}}
  fns = {'jax_gradcam_one_target': lambda: np.asarray(one(variables, x))}
  objs, xs = {}, {}
  if use_torch:
    for layout, tm in tms.items():
      xs[layout] = torch_ref.to_nchw(x_np, layout == 'channels_last')
      objs[layout] = torch_ref.gradcam(tm)
      tl = [[torch_ref.class_target(k)] * b]
      fns[f'pytorch_grad_cam_one_target_{layout}'] = (
          lambda o=objs[layout], xi=xs[layout], tl=tl: torch_ref.gradcam_maps(o, xi, tl))
  runs = timing.interleaved(fns, items=b, repeats=_flag('repeats'),
                            warmup=_flag('cam_warmup'))
  res['runs'].update(runs)
  _print_runs(runs)
  best = None
  if use_torch:
    best = max(tms, key=lambda l: runs[f'pytorch_grad_cam_one_target_{l}']['items_per_s'][
        'median'])
    res['torch_fastest_layout'] = best
    r1 = timing.ratio(runs['jax_gradcam_one_target'], runs[f'pytorch_grad_cam_one_target_{best}'])
    res['ratio_one_target'] = r1
    _note('gradcam_one_target_vs_pytorch_grad_cam', r1, f'batch {b}, torch {best}')
  fns = {'jax_gradcam_10_buckets': lambda: np.asarray(all10(variables, x))}
  if use_torch:
    tl10 = [[torch_ref.class_target(j)] * b for j in range(10)]
    fns[f'pytorch_grad_cam_10_buckets_{best}'] = (
        lambda: torch_ref.gradcam_maps(objs[best], xs[best], tl10))
  runs = timing.interleaved(fns, items=b, repeats=_flag('repeats'), warmup=1)
  res['runs'].update(runs)
  _print_runs(runs)
  if use_torch:
    r10 = timing.ratio(runs['jax_gradcam_10_buckets'], runs[f'pytorch_grad_cam_10_buckets_{best}'])
    res['ratio_10_buckets'] = r10
    _note('gradcam_10_buckets_vs_pytorch_grad_cam', r10, f'batch {b}, torch {best}')
    # The maps must agree (pytorch-grad-cam: per-map min-max, cv2 resize, min-max again).
    ours = np.asarray(all10(variables, x))                                  # [B,10,S,S]
    theirs = np.stack(torch_ref.gradcam_maps(objs['contiguous'], xs['contiguous'], tl10), 1)
    agree = _compare_maps(theirs, ours)
    res['maps_agree'] = agree
    print(f'  maps vs pytorch-grad-cam (all 10 buckets): max |diff| {agree["max_abs_diff"]:.2e},'
          f' min corr {agree["min_corr"]:.6f} over {agree["maps"]} maps', flush=True)
    _note('gradcam_maps_max_abs_diff', agree['max_abs_diff'],
          f'min corr {agree["min_corr"]:.6f} (target >= 0.9999)', target=5e-4, better='lower')
    for o in objs.values():
      o.__exit__(None, None, None)
  if FLAGS.peak_memory:
    mem = res['peak_memory'] = {}
    jobs = {f'jax_{t}': ('aesthetics_jax.bench.workloads:cam_setup',
                         dict(batch=b, size=s, targets=t, chunk=chunk)) for t in ('one', 'all')}
    if use_torch:
      jobs.update({f'pytorch_grad_cam_{t}': (
          'aesthetics_jax.bench.torch_ref:gradcam_setup',
          dict(batch=b, size=s, targets=t, channels_last=best == 'channels_last',
               threads=FLAGS.threads or parallel.host_cpu_count())) for t in ('one', 'all')})
    for name, (target, kw) in jobs.items():
      mem[name] = memory.measure_in_child(target, kw, warmup=1, repeats=1)
      print(f'  peak RSS {name:28s} {mem[name].get("peak_rss_mb", float("nan")):8.0f} MB '
            f'(workload {mem[name].get("workload_mb") or float("nan"):.0f} MB) '
            f'{mem[name].get("error", "")}', flush=True)
    if use_torch and all('peak_rss_mb' in mem[n] for n in ('jax_all', 'pytorch_grad_cam_all')):
      r = mem['pytorch_grad_cam_all']['peak_rss_mb'] / mem['jax_all']['peak_rss_mb']
      res['peak_memory_torch_over_ours'] = r
      _note('gradcam_peak_memory_torch_over_ours', r,
            f"{mem['jax_all']['peak_rss_mb']:.0f} MB vs "
            f"{mem['pytorch_grad_cam_all']['peak_rss_mb']:.0f} MB peak RSS (10 buckets)")
  return res


# ---------------------------------------------------------------------------------------
# --what=study
# ---------------------------------------------------------------------------------------


@register('study')
def bench_study() -> dict[str, Any]:
  """The whole study on --study_images test images: aesthetic map, 10 bucket maps, top
  attribute map, boxes (aesthetic, attribute, average) and mean intensity — ours in one jitted
  pass per batch vs pytorch-grad-cam looped over the same 12 targets."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.explain import cam  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.bench import timing, torch_ref, workloads  # pylint: disable=import-outside-toplevel

  b, s, chunk = FLAGS.cam_batch_size if not FLAGS.quick or FLAGS['cam_batch_size'].present \
      else 16, FLAGS.image_size, _chunk()
  n = max(b, _flag('study_images') // b * b)
  use_torch = _use_torch()
  x_np = workloads.photos(n, s, seed=2)
  xs = [jax.device_put(x_np[i:i + b]) for i in range(0, n, b)]
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  tm = torch_ref.mobilenet_v2(76, seed=0, channels_last=True) if use_torch else None
  variables = _variables('mobilenet_v2', model, tm, s)
  step = workloads.make_study_step(model, 'mobilenet_v2', s, 0.2, chunk)

  def ours():
    return [jax.device_get(step(variables, xi)) for xi in xs]
  fns = {'jax_study': ours}
  if use_torch:
    cobj = torch_ref.gradcam(tm)
    txs = [torch_ref.to_nchw(x_np[i:i + b], True) for i in range(0, n, b)]
    fns['pytorch_grad_cam_study_looped'] = lambda: [torch_ref.study_batch(tm, cobj, t, 0.2)
                                                    for t in txs]
  runs = timing.interleaved(fns, items=n, repeats=max(1, _flag('repeats') - 1), warmup=1)
  _print_runs(runs)
  res: dict[str, Any] = {'num_images': n, 'batch_size': b, 'image_size': s, 'chunk': chunk,
                         'targets': list(cam.target_names('mobilenet_v2',
                                                          workloads.STUDY_TARGETS)),
                         'runs': runs}
  if use_torch:
    r = timing.ratio(runs['jax_study'], runs['pytorch_grad_cam_study_looped'])
    res['ratio'] = r
    _note('study_vs_looped_pytorch_grad_cam', r, f'{n} images, 12 maps + boxes each')
    # Agreement of the aesthetic (mean-score) and top-tag maps, and of the boxes.
    aes_step = workloads.make_cam_step(model, cam.targets_for('mobilenet_v2',
                                                              ('aesthetic', 'top_tag')),
                                       chunk, s)
    ours_maps = np.asarray(aes_step(variables, xs[0]))
    theirs = torch_ref.study_batch(tm, cobj, txs[0], 0.2)
    res['aesthetic_maps_agree'] = _compare_maps(theirs['aesthetic'], ours_maps[:, 0])
    got = jax.device_get(step(variables, xs[0]))[1]
    res['box_aesthetic_equal_fraction'] = float(np.mean(np.all(
        np.asarray(got['box_aesthetic']) == theirs['box_aesthetic'], axis=1)))
    print(f"  aesthetic maps vs pytorch-grad-cam: {res['aesthetic_maps_agree']}; aesthetic "
          f"boxes equal for {res['box_aesthetic_equal_fraction']:.0%} of images", flush=True)
    cobj.__exit__(None, None, None)
  return res


# ---------------------------------------------------------------------------------------
# --what=recipe
# ---------------------------------------------------------------------------------------


@register('recipe')
def bench_recipe() -> dict[str, Any]:
  """The paper's frozen MobileNetV2 recipe (EMD + tag heads, Adam 3e-6, --recipe_epochs):
  ours = feature cache (K augmented views + test view encoded once) + head steps + test
  metrics; PyTorch = a plain loop that decodes, crops and recomputes the frozen features every
  epoch. Both run on --recipe_images images; figures are extrapolated to 8,900 / 2,203."""
  import math  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import pipeline as ip  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.bench import timing, torch_ref, workloads  # pylint: disable=import-outside-toplevel

  n, m = _flag('recipe_images'), _flag('recipe_test_images')
  epochs, views, b = float(FLAGS.recipe_epochs), FLAGS.recipe_views, 32
  s, rs = FLAGS.image_size, FLAGS.resize_size
  workers = FLAGS.workers or parallel.host_cpu_count()
  use_torch = _use_torch()
  pool = workloads.jpeg_pool(32, seed=3)
  train_src = workloads.SyntheticSource(n, pool, seed=1)
  test_src = workloads.SyntheticSource(m, pool[::-1], seed=2)
  config = workloads.recipe_config(n, m, b, epochs, views, s, rs, workers)
  model = models.create_model(config.model)
  tm = torch_ref.mobilenet_v2(76, seed=0, channels_last=True) if use_torch else None
  variables = _variables('mobilenet_v2', model, tm, s)
  del tm  # the PyTorch loop runs in its own process (below), on the same seeded weights
  mesh = parallel.make_mesh()
  # Compile everything once (a tiny run): the timed runs below measure steady state.
  t0 = time.perf_counter()
  workloads.run_recipe(model, variables, workloads.SyntheticSource(b, pool), 
                       workloads.SyntheticSource(b, pool),
                       workloads.recipe_config(b, b, b, 1, 1, s, rs, workers), mesh)
  res: dict[str, Any] = {'train_images': n, 'test_images': m, 'epochs': epochs,
                         'views': views, 'batch_size': b, 'compile_s':
                         time.perf_counter() - t0, 'runs': {}}
  compile_s = res['compile_s']
  views_list = [views] + ([1] if views != 1 else [])
  configs = {k: workloads.recipe_config(n, m, b, epochs, k, s, rs, workers) for k in views_list}
  ours_runs: dict[int, list] = {k: [] for k in views_list}
  torch_runs: list[dict] = []
  t_epochs = _flag('torch_epochs')
  from aesthetics_jax.bench import memory  # pylint: disable=import-outside-toplevel
  for _ in range(max(1, _flag('repeats') - 1)):
    for k in views_list:  # ours and torch alternate
      r = workloads.run_recipe(model, variables, train_src, test_src, configs[k], mesh)
      ours_runs[k].append(r)
      print(f"  ours (K={k}): cache {r['cache_s']:.1f} s + {r['steps']} steps "
            f"{r['steps_s']:.1f} s + eval {r['eval_s']:.2f} s", flush=True)
    if use_torch:  # the plain loop in a fresh process (after one warm-up epoch there)
      c = memory.measure_in_child(
          'aesthetics_jax.bench.torch_ref:recipe_setup',
          dict(num_images=n, epochs=t_epochs, batch=b, resize_size=rs, image_size=s,
               workers=workers, threads=FLAGS.threads or parallel.host_cpu_count()),
          warmup=1, repeats=1)
      if 'error' in c:
        raise RuntimeError(c['error'])
      torch_runs.append({'epochs': t_epochs, 'seconds': c['epochs_s'], 'data_s': c['data_s'],
                         'model_s': c['model_s'], 'peak_rss_mb': c['peak_rss_mb']})
      print(f"  torch: {t_epochs} epoch(s) {torch_runs[-1]['seconds']:.1f} s "
            f"(decode+crop {torch_runs[-1]['data_s']:.1f} s)", flush=True)
  med = lambda rs_, key: float(np.median([x[key] for x in rs_]))
  nt, mt = FLAGS.extrapolate_train, FLAGS.extrapolate_test
  steps_full = math.ceil(epochs * nt / b)
  res['runs']['ours'] = {str(k): v for k, v in ours_runs.items()}
  torch_full = torch_n = None
  if torch_runs:
    res['runs']['torch'] = torch_runs
    per_img_epoch = med(torch_runs, 'seconds') / (t_epochs * n)
    model_img = med(torch_runs, 'model_s') / (t_epochs * n)
    torch_n = per_img_epoch * n * epochs + model_img * m   # + one test pass
    torch_full = per_img_epoch * nt * epochs + model_img * mt
    res['torch'] = {'seconds_per_image_epoch': per_img_epoch, 'measured_epochs': t_epochs,
                    'extrapolated_n_s': torch_n, 'extrapolated_s': torch_full,
                    'extrapolation': f'{per_img_epoch * 1e3:.1f} ms per image-epoch x {nt} x '
                                     f'{epochs:g} + {mt} test forwards'}
    print(f'  torch, extrapolated: {n} images {torch_n:.0f} s, {nt} images '
          f'{torch_full / 3600:.2f} h', flush=True)
  for k in views_list:
    o = {key: med(ours_runs[k], key) for key in ('cache_s', 'steps_s', 'eval_s', 'total_s')}
    o['steps'] = ours_runs[k][0]['steps']
    per_encode = o['cache_s'] / (n * k + m)
    per_step = o['steps_s'] / o['steps']
    full = (compile_s + per_encode * (nt * k + mt) + per_step * steps_full
            + o['eval_s'] / m * mt)
    o.update(extrapolated_s=full, total_with_compile_s=o['total_s'] + compile_s,
             extrapolation=f'compile {compile_s:.1f} s + {per_encode * 1e3:.1f} ms per encoded '
                           f'view x ({nt} x {k} + {mt}) + {steps_full} steps x '
                           f'{per_step * 1e3:.2f} ms')
    res[f'ours_views{k}'] = o
    print(f"  ours K={k}, {n} images x {epochs:g} epochs: {o['total_s']:.1f} s (+ compile "
          f'{compile_s:.1f} s); extrapolated to {nt}: {full / 60:.1f} min', flush=True)
    if torch_full is not None:
      o['ratio_n'] = torch_n / o['total_with_compile_s']
      o['ratio_8900'] = torch_full / full
      name = 'recipe_8900_vs_plain_pytorch' + ('' if k == views else f'_views{k}')
      _note(name, o['ratio_8900'], f'K={k} cached views; ours {full / 60:.1f} min vs torch '
            f'{torch_full / 60:.0f} min (extrapolated)', target=30.0)
      if k == views:
        res['ratio_8900'] = o['ratio_8900']
  return res


# ---------------------------------------------------------------------------------------
# --what=scaling
# ---------------------------------------------------------------------------------------


@register('scaling')
def bench_scaling() -> dict[str, Any]:
  """Cost growth of the streamed evaluation with all CAM targets (the study step over
  `pipeline.eval_batches` of synthetic JPEGs): time and peak RSS per size, each in a
  fresh child process. Memory must stay flat in the number of images."""
  from aesthetics_jax.bench import memory  # pylint: disable=import-outside-toplevel
  sizes = [int(v) for v in _flag('scaling_sizes')]
  s, chunk = FLAGS.image_size, _chunk()
  # glibc gives each decode thread its own malloc arena; their fragmentation made RSS creep
  # (~+150 MB over 5 passes of 256 images, bounded by the arena count) — not a leak: with 2
  # arenas RSS stays flat. The env var is recorded in the JSON.
  env = {'MALLOC_ARENA_MAX': FLAGS.malloc_arena_max} if FLAGS.malloc_arena_max else {}
  res: dict[str, Any] = {'image_size': s, 'batch_size': 32, 'chunk': chunk, 'env': env,
                         'runs': {}}
  for n in sizes:
    r = memory.measure_in_child('aesthetics_jax.bench.workloads:stream_setup',
                                dict(num_images=n, batch=32, size=s, chunk=chunk,
                                     workers=FLAGS.workers), warmup=0, repeats=1, env=env)
    res['runs'][str(n)] = r
    if 'error' in r:
      print(f'  {n:6d} images: {r["error"]}', flush=True)
      continue
    print(f"  {n:6d} images: {r['stream_s']:7.1f} s ({r['images_per_s']:.1f} img/s), peak RSS "
          f"{r['peak_rss_mb']:.0f} MB (before {r['rss_before_mb']:.0f} MB)", flush=True)
  ok = [res['runs'][str(n)] for n in sizes if 'peak_rss_mb' in res['runs'][str(n)]]
  if len(ok) >= 2:
    growth = ok[-1]['peak_rss_mb'] - ok[0]['peak_rss_mb']
    res['peak_rss_growth_mb'] = growth
    res['seconds_per_image'] = [r['stream_s'] / r['num_images'] for r in ok]
    _note('scaling_peak_rss_growth_mb', growth,
          f'{sizes[0]} -> {sizes[-1]} images; s/img '
          + ', '.join(f'{v * 1e3:.1f} ms' for v in res['seconds_per_image']),
          target=max(100.0, 0.1 * ok[0]['peak_rss_mb']), better='lower')
    # O(N) growth would at least repeat itself when N doubles; a bounded high-water mark
    # (allocator, prefetch buffers) does not.
    last = ok[-1]['peak_rss_mb'] - ok[-2]['peak_rss_mb']
    res['peak_rss_growth_last_step_mb'] = last
    _note('scaling_peak_rss_growth_last_step_mb', last,
          f'{sizes[-2]} -> {sizes[-1]} images', target=max(50.0, 0.05 * ok[0]['peak_rss_mb']),
          better='lower')
  return res


# ---------------------------------------------------------------------------------------
# --what=input, continued: is the pipeline the bottleneck?
# ---------------------------------------------------------------------------------------
flags.DEFINE_bool('input_vs_model', True, '--what=input: also time the model fed by the '
                  'pipeline and say how many decode workers keep up with it.')


def input_vs_model(per_worker_ips: float) -> dict[str, Any]:
  """Model images/s (inference features, in-memory batches) vs the same model fed by
  `train_batches`; workers needed = model images/s / one worker's decode images/s."""
  import math  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import pipeline as ip  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.bench import synthetic, timing, workloads  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel

  s, b = FLAGS.image_size, 32
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  variables = _model_variables(model, s)
  fwd = workloads.forward_fn(model, _chunk())
  x = jax.device_put(np.random.default_rng(0).random((b, s, s, 3), np.float32))
  alone = timing.interleaved({'model': lambda: jax.block_until_ready(fwd(variables, x))},
                             items=b, repeats=FLAGS.repeats, warmup=FLAGS.warmup)['model']
  c = default.get_config()
  c.batch_size = b
  c.input.resize_size, c.input.image_size = FLAGS.resize_size, s
  c.input.num_workers = FLAGS.workers or parallel.host_cpu_count()
  pool = synthetic.synthetic_jpegs(32, seed=5)
  it = ip.train_batches(workloads.SyntheticSource(4 * b, pool), c, parallel.make_mesh())
  jax.block_until_ready(fwd(variables, next(it)['image']))
  nb = 3

  def fed():
    for _ in range(nb):
      out = fwd(variables, next(it)['image'])
    jax.block_until_ready(out)
  fed_r = timing.interleaved({'fed': fed}, items=nb * b, repeats=FLAGS.repeats, warmup=0)['fed']
  it.close()
  model_ips = alone['items_per_s']['median']
  need = math.ceil(model_ips / per_worker_ips) if per_worker_ips > 0 else None
  out = {'model': alone, 'model_fed_by_train_batches': fed_r,
         'decode_images_per_s_per_worker': per_worker_ips,
         'workers_needed_to_feed_model': need, 'cpu_count': parallel.host_cpu_count(),
         'fed_over_alone': fed_r['items_per_s']['median'] / model_ips}
  print(f"  model alone {timing.fmt_rate(alone)}; fed by train_batches "
        f"{timing.fmt_rate(fed_r)}; one decode worker {per_worker_ips:.1f} img/s -> "
        f'{need} workers keep up (this machine has {parallel.host_cpu_count()} cores, '
        'shared with the model)',
        flush=True)
  return out


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
ALL = ('model', 'cam', 'study', 'recipe', 'input', 'scaling')


def print_summary() -> None:
  if not SUMMARY:
    return
  print('\nsummary (ours vs reference; target met?)')
  print(f"  {'figure':46s} {'value':>10s} {'target':>9s}  met   detail")
  for r in SUMMARY:
    v = '-' if r['value'] is None else (f"{r['value']:.3g}" if abs(r['value']) < 1e4 else
                                        f"{r['value']:.0f}")
    t = '-' if r['target'] is None else f"{r['target']:.3g}"
    met = {True: 'yes', False: 'NO', None: '-'}[r['met']]
    print(f"  {r['name']:46s} {v:>10s} {t:>9s}  {met:4s}  {r['detail']}")


def main(argv):
  del argv
  what = list(ALL) if 'all' in FLAGS.what else list(FLAGS.what)
  unknown = [w for w in what if w not in BENCHMARKS]
  if unknown:
    print(f'launch.benchmark: unknown --what={",".join(unknown)}; choose from '
          f'all,{",".join(sorted(BENCHMARKS))}', file=sys.stderr)
    sys.exit(1)
  if FLAGS.reference not in ('auto', 'torch', 'none'):
    print(f"launch.benchmark: --reference={FLAGS.reference!r}: use 'torch', 'none' or 'auto'",
          file=sys.stderr)
    sys.exit(1)
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  results: dict[str, Any] = {}
  t_all = time.perf_counter()
  try:
    for w in what:
      print(f'[{w}]', flush=True)
      t0 = time.perf_counter()
      results[w] = BENCHMARKS[w]()
      results[w]['section_s'] = time.perf_counter() - t0
  except (preprocess.InputError, ava.AvaError, FileNotFoundError) as e:
    print(f'launch.benchmark: {e}', file=sys.stderr)
    sys.exit(1)
  results['summary'] = {'rows': SUMMARY, 'total_s': time.perf_counter() - t_all,
                        'quick': FLAGS.quick}
  print_summary()
  if FLAGS.json:
    write_json(FLAGS.json, results)
    print(f'wrote {FLAGS.json}')
  else:
    print(json.dumps(results, indent=2, default=str))


if __name__ == '__main__':
  app.run(main)
