r"""Throughput benchmarks.

  python -m launch.benchmark --what=input [--json=F] [--data_dir=D --subset=style]
  python -m launch.benchmark --what=model [--model_batch_size=32 --model_archs=mobilenet_v2]

Without --data_dir the input benchmark runs on synthetic AVA-like JPEGs (about 500x350,
quality 90) generated in memory. Every figure is the median (and min-max) over --repeats
timed runs after --warmup untimed ones.

Adding a section: write `def bench_<name>() -> dict` returning JSON-able results (use
`measure()` for timings), decorate it with `@register('<name>')`; `--what=<name>` then runs
it and the common writer adds machine info and versions.
"""
from __future__ import annotations

import concurrent.futures
import importlib.metadata
import io
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

FLAGS = flags.FLAGS
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


def cpu_count() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


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
      'python': sys.version.split()[0], 'cpu_count': cpu_count(),
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
  doc = {'machine': machine_info(),
         'flags': {k: FLAGS[k].value for k in ('what', 'data_dir', 'subset', 'num_images',
                                               'repeats', 'warmup', 'workers')},
         'results': results}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(doc, f, indent=2, default=str)
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# --what=input
# ---------------------------------------------------------------------------------------


def synthetic_jpegs(n: int, seed: int = 0, scale: float = 1.0) -> list[bytes]:
  """AVA-like JPEGs: about 500x350 (landscape and portrait; sides x `scale`), quality 90,
  photo-like texture."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    w, h = (500, 333 + int(rng.integers(0, 40))) if i % 3 else (333, 500)
    w, h = int(w * scale), int(h * scale)
    # smooth colour field + mid-frequency detail + sensor-like noise: realistic file sizes
    coarse = rng.random((h // 32 + 2, w // 32 + 2, 3)) * 255
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h),
                                                                    Image.Resampling.BICUBIC),
                     np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    img += 25 * np.sin(xx / rng.uniform(3, 12) + yy / rng.uniform(3, 12))[..., None]
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, 'JPEG', quality=90)
    out.append(buf.getvalue())
  return out


def _real_jpegs(n: int) -> list[bytes]:
  from aesthetics_jax import dataset  # pylint: disable=import-outside-toplevel
  src = dataset.load_sources(FLAGS.data_dir, FLAGS.subset)['train']
  return [bytes(src[i]['image']) for i in range(min(n, len(src)))]


def _train_one(args) -> Any:
  """One train image (decode with draft, resize, random crop); picklable for processes."""
  from aesthetics_jax import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  data, j, rs, s = args
  return ip.preprocess_train_np(data, rs, s, ip.augment_rng(0, 0, j), random_flip=True)


def _train_full_decode(args) -> Any:
  """The same without the draft() fast path: full-resolution decode, then resize/crop."""
  from aesthetics_jax import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  data, j, rs, s = args
  return ip.preprocess_train_np(ip.decode_image(data), rs, s, ip.augment_rng(0, 0, j), True)


def _eval_full_decode(args) -> Any:
  from aesthetics_jax import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  data, _, _, s = args
  return ip.preprocess_eval_np(ip.decode_image(data), s)


def _eval_one(args) -> Any:
  from aesthetics_jax import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  data, _, _, s = args
  return ip.preprocess_eval_np(data, s)


@register('input')
def bench_input() -> dict[str, Any]:
  """Decode + resize (+ crop) images/s: 1 worker vs all, threads vs processes, draft on/off;
  plus the end-to-end train_batches pipeline (incl. device transfer + float conversion)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import input_pipeline as ip  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  datas = _real_jpegs(FLAGS.num_images) if FLAGS.data_dir else synthetic_jpegs(FLAGS.num_images)
  source = 'real:' + FLAGS.data_dir if FLAGS.data_dir else 'synthetic ~500x350 q90'
  sizes = [len(d) for d in datas]
  n_all = FLAGS.workers or cpu_count()
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
  mesh = ip.make_mesh()
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
  return res


# ---------------------------------------------------------------------------------------
# --what=model  (models owner)
# ---------------------------------------------------------------------------------------
flags.DEFINE_integer('model_batch_size', 32, '--what=model: forward batch size.')
flags.DEFINE_list('model_archs', ['mobilenet_v2'], "--what=model: 'mobilenet_v2', 'vgg16'.")
flags.DEFINE_list('model_dtypes', ['float32'], "--what=model: 'float32', 'bfloat16'.")


def _model_variables(model, size: int):
  """model.init's structure filled by numpy (jit of init compiles threefry for long)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(0)
  def fill(path, s):
    name = path[-1].key
    if name in ('scale', 'var'):
      return np.ones(s.shape, np.float32)
    std = np.sqrt(2 / np.prod(s.shape[:-1])) if name == 'kernel' else 0.01
    return (rng.normal(size=s.shape) * std).astype(np.float32)
  return jax.device_put(jax.tree_util.tree_map_with_path(fill, shapes))


@register('model')
def bench_model() -> dict[str, Any]:
  """Eval-mode forward (features + heads) images/s at --image_size, batch --model_batch_size:
  MobileNetV2 with depthwise 'conv' vs 'shift', and torchvision (NCHW and channels_last,
  all cores) side by side when torch is installed."""
  import jax  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel

  b, s = FLAGS.model_batch_size, FLAGS.image_size
  x = jax.device_put(np.random.default_rng(0).uniform(size=(b, s, s, 3)).astype(np.float32))
  res: dict[str, Any] = {'batch_size': b, 'image_size': s, 'backend': jax.default_backend(),
                         'runs': {}}
  for arch in FLAGS.model_archs:
    impls = ('conv', 'shift') if arch == 'mobilenet_v2' else ('conv',)
    for dtype in FLAGS.model_dtypes:
      for impl in impls:
        cfg = ml_collections.ConfigDict({'arch': arch, 'depthwise': impl, 'dtype': dtype})
        model = models.create_model(cfg)
        variables = _model_variables(model, s)
        fwd = jax.jit(model.apply)
        t0 = time.perf_counter()
        jax.block_until_ready(fwd(variables, x))
        compile_s = time.perf_counter() - t0
        name = f'jax_{arch}_{dtype}_{impl}'
        res['runs'][name] = dict(
            measure(lambda: jax.block_until_ready(fwd(variables, x)), items=b),
            first_call_s=compile_s)
        print(f'  {name:40s} {res["runs"][name]["items_per_s"]["median"]:8.1f} images/s',
              flush=True)
  if _version('torch') is None:
    res['torch'] = 'not installed'
    return res
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(cpu_count())
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
  for arch in FLAGS.model_archs:
    tm = getattr(torchvision.models, arch)(weights=None).eval()
    for layout in ('contiguous', 'channels_last'):
      fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
      m, xi = tm.to(memory_format=fmt), xt.contiguous(memory_format=fmt)
      def run(m=m, xi=xi):
        with torch.inference_mode():
          m(xi)
      name = f'torch_{arch}_float32_{layout}'
      res['runs'][name] = dict(measure(run, items=b), threads=torch.get_num_threads())
      print(f'  {name:40s} {res["runs"][name]["items_per_s"]["median"]:8.1f} images/s',
            flush=True)
  return res


def main(argv):
  del argv
  unknown = [w for w in FLAGS.what if w not in BENCHMARKS]
  if unknown:
    print(f'launch.benchmark: unknown --what={",".join(unknown)}; choose from '
          f'{",".join(sorted(BENCHMARKS))}', file=sys.stderr)
    sys.exit(1)
  from aesthetics_jax import ava, input_pipeline  # pylint: disable=import-outside-toplevel
  results = {}
  try:
    for w in FLAGS.what:
      print(f'[{w}]', flush=True)
      results[w] = BENCHMARKS[w]()
  except (input_pipeline.InputError, ava.AvaError, FileNotFoundError) as e:
    print(f'launch.benchmark: {e}', file=sys.stderr)
    sys.exit(1)
  if FLAGS.json:
    write_json(FLAGS.json, results)
    print(f'wrote {FLAGS.json}')
  else:
    print(json.dumps(results, indent=2, default=str))


if __name__ == '__main__':
  app.run(main)
