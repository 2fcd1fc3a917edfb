"""--what=input: decode + resize (+ crop) images/s, 1 worker vs all, threads vs processes,
draft on/off; the end-to-end `train_batches` pipeline; and whether it keeps the model fed.

Without `data_dir` the images are synthetic AVA-like JPEGs (about 500x350, quality 90)
generated in memory.
"""
from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from aesthetics_jax import models
from aesthetics_jax import parallel
from aesthetics_jax.bench import synthetic, timing, workloads
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.data import dataset
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.data import preprocess

# One work item: (JPEG bytes, position in the batch, resize side, crop side).
Item = tuple[bytes, int, int, int]


def _real_jpegs(data_dir: str, subset: str, n: int) -> list[bytes]:
  src = dataset.load_sources(data_dir, subset)['train']
  return [bytes(src[i]['image']) for i in range(min(n, len(src)))]


# Module-level (picklable) so that a process pool can run them.
def _train_one(item: Item) -> np.ndarray:
  """One train image: decode (with draft), resize, random crop."""
  data, j, rs, s = item
  return preprocess.preprocess_train_np(data, rs, s, preprocess.augment_rng(0, 0, j), random_flip=True)


def _train_full_decode(item: Item) -> np.ndarray:
  """The same without the draft() fast path: full-resolution decode, then resize/crop."""
  data, j, rs, s = item
  return preprocess.preprocess_train_np(preprocess.decode_image(data), rs, s, preprocess.augment_rng(0, 0, j), True)


def _eval_full_decode(item: Item) -> np.ndarray:
  data, _, _, s = item
  return preprocess.preprocess_eval_np(preprocess.decode_image(data), s)


def _eval_one(item: Item) -> np.ndarray:
  data, _, _, s = item
  return preprocess.preprocess_eval_np(data, s)


def run(opts: Options) -> dict[str, Any]:
  """Images/s of each preprocessing variant and of `train_batches` (device transfer and
  float conversion included); with `input_vs_model`, the model fed by the pipeline."""
  t0 = time.perf_counter()
  if opts.data_dir:
    datas = _real_jpegs(opts.data_dir, opts.subset, opts.num_images)
    source = 'real:' + opts.data_dir
  else:
    datas = synthetic.synthetic_jpegs(opts.num_images)
    source = 'synthetic ~500x350 q90'
  n_all = opts.all_workers()
  rs, s = opts.resize_size, opts.image_size
  items = [(d, j, rs, s) for j, d in enumerate(datas)]
  res: dict[str, Any] = {
      'source': source, 'num_images': len(datas), 'resize_size': rs, 'image_size': s,
      'mean_jpeg_kb': float(np.mean([len(d) for d in datas]) / 1024), 'all_workers': n_all,
      'large_source': 'synthetic ~1000x700 q90 (train_1000px_* runs)',
      'prepare_s': time.perf_counter() - t0, 'runs': {}}

  def threads(fn: Callable, n: int, args: Sequence[Item] = items) -> dict[str, Any]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
      return timing.measure(lambda: list(pool.map(fn, args)), items=len(args),
                            repeats=opts.repeats, warmup=opts.warmup)

  def processes(fn: Callable, n: int) -> dict[str, Any]:
    # spawn: forking a process that has started JAX's threads can deadlock.
    with multiprocessing.get_context('spawn').Pool(n) as pool:
      return timing.measure(lambda: pool.map(fn, items, chunksize=4), items=len(items),
                            repeats=opts.repeats, warmup=opts.warmup)

  plan = [('train_full_decode_1_thread', threads, _train_full_decode, 1),
          ('train_1_thread', threads, _train_one, 1),
          ('eval_1_thread', threads, _eval_one, 1),
          (f'train_{n_all}_threads', threads, _train_one, n_all),
          (f'eval_{n_all}_threads', threads, _eval_one, n_all)]
  if opts.processes and n_all > 1:
    plan.append((f'train_{n_all}_processes', processes, _train_one, n_all))
  # draft() only pays when the target is at most half the image side: show it where it
  # applies (small targets as in the demo configs, and large photos).
  small = [(d, j, s // 4, s // 4) for j, d in enumerate(datas)]
  large = [(d, j, rs, s) for j, d in enumerate(
      synthetic.synthetic_jpegs(max(8, len(datas) // 4), seed=1, scale=2.0))]
  plan += [(f'eval{s // 4}_full_decode_1_thread', threads, _eval_full_decode, 1, small),
           (f'eval{s // 4}_1_thread', threads, _eval_one, 1, small),
           ('train_1000px_full_decode_1_thread', threads, _train_full_decode, 1, large),
           ('train_1000px_1_thread', threads, _train_one, 1, large)]
  runs = res['runs']
  for name, runner, fn, n, *args in plan:
    runs[name] = dict(runner(fn, n, *args), workers=n)
    print(f'  {name:32s} {runs[name]["items_per_s"]["median"]:8.1f} images/s '
          f'({runs[name]["items_per_s"]["min"]:.1f}-{runs[name]["items_per_s"]["max"]:.1f})',
          flush=True)
  runs['train_batches_pipeline'] = _pipeline(datas, opts)
  print(f'  {"train_batches_pipeline":32s} '
        f'{runs["train_batches_pipeline"]["items_per_s"]["median"]:8.1f} images/s', flush=True)

  ips = {k: r['items_per_s']['median'] for k, r in runs.items()}
  one = ips['train_1_thread']
  res['speedup_draft_vs_full_decode'] = one / ips['train_full_decode_1_thread']
  res[f'speedup_draft_eval{s // 4}'] = (ips[f'eval{s // 4}_1_thread']
                                        / ips[f'eval{s // 4}_full_decode_1_thread'])
  res['speedup_draft_train_1000px'] = (ips['train_1000px_1_thread']
                                       / ips['train_1000px_full_decode_1_thread'])
  res['speedup_all_threads_vs_1'] = ips[f'train_{n_all}_threads'] / one
  if f'train_{n_all}_processes' in ips:
    res['faster_pool'] = ('threads' if ips[f'train_{n_all}_threads']
                          >= ips[f'train_{n_all}_processes'] else 'processes')
  if opts.input_vs_model:
    res['vs_model'] = _vs_model(opts, one)
  return res


def _pipeline(datas: list[bytes], opts: Options) -> dict[str, Any]:
  """`train_batches` end to end on an in-memory source: sampler, decode, transfer, float."""
  records = [{'image': d, 'image_id': i + 1, 'votes': np.eye(10, dtype=np.int32)[3 + i % 5],
              'tags': np.array([1 + i % 66, 0], np.int32), 'challenge_id': 0}
             for i, d in enumerate(datas)]
  b = opts.batch_size
  config = workloads.train_input_config(b, opts.resize_size, opts.image_size,
                                        opts.all_workers())
  nb = max(1, len(datas) // b)
  it = ip.train_batches(records, config, parallel.make_mesh())
  next(it)['image'].block_until_ready()  # warm-up: jit, threads, metadata

  def pipeline():
    for _ in range(nb):
      batch = next(it)
    batch['image'].block_until_ready()
  try:
    r = timing.measure(pipeline, items=nb * b, repeats=opts.repeats, warmup=0)
  finally:
    it.close()
  return dict(r, workers=opts.all_workers(), batch_size=b)


def _vs_model(opts: Options, per_worker_ips: float) -> dict[str, Any]:
  """Model images/s (inference features, in-memory batches) vs the same model fed by
  `train_batches`; workers needed = model images/s / one worker's decode images/s."""
  s, b = opts.image_size, 32
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  variables = workloads.device_variables(model, s)
  fwd = workloads.forward_fn(model, opts.chunk_size())
  x = jax.device_put(np.random.default_rng(0).random((b, s, s, 3), np.float32))
  alone = timing.interleaved({'model': lambda: jax.block_until_ready(fwd(variables, x))},
                             items=b, repeats=opts.repeats, warmup=opts.warmup)['model']
  config = workloads.train_input_config(b, opts.resize_size, s, opts.all_workers())
  pool = synthetic.synthetic_jpegs(32, seed=5)
  it = ip.train_batches(workloads.SyntheticSource(4 * b, pool), config, parallel.make_mesh())
  nb = 3

  def fed():
    for _ in range(nb):
      out = fwd(variables, next(it)['image'])
    jax.block_until_ready(out)
  try:
    jax.block_until_ready(fwd(variables, next(it)['image']))
    fed_r = timing.interleaved({'fed': fed}, items=nb * b, repeats=opts.repeats,
                               warmup=0)['fed']
  finally:
    it.close()
  model_ips = alone['items_per_s']['median']
  need = math.ceil(model_ips / per_worker_ips) if per_worker_ips > 0 else None
  cpus = parallel.host_cpu_count()
  print(f'  model alone {timing.fmt_rate(alone)}; fed by train_batches '
        f'{timing.fmt_rate(fed_r)}; one decode worker {per_worker_ips:.1f} img/s -> '
        f'{need} workers keep up (this machine has {cpus} cores, shared with the model)',
        flush=True)
  return {'model': alone, 'model_fed_by_train_batches': fed_r,
          'decode_images_per_s_per_worker': per_worker_ips,
          'workers_needed_to_feed_model': need, 'cpu_count': cpus,
          'fed_over_alone': fed_r['items_per_s']['median'] / model_ips}


def summary(result: dict[str, Any]) -> list[Row]:
  """No targets: the input figures explain the others (is decoding the bottleneck?)."""
  del result
  return []
