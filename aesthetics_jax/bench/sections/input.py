"""--what=input: decode + resize (+ crop) images/s, 1 worker vs all, threads vs processes,
draft on/off; the end-to-end `train_batches` pipeline; whether it keeps the model fed; and
our `train_batches` / `eval_batches` against google's grain doing the same work
(`bench/grain_ref.py`, when grain is installed), batches checked identical.

Without `data_dir` the images are synthetic AVA-like JPEGs (about 500x350, quality 90)
generated in memory.
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import math
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from aesthetics_jax import models
from aesthetics_jax import cpu_backend
from aesthetics_jax import parallel
from aesthetics_jax.bench import grain_ref, synthetic, timing, workloads
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.configs import default as default_config
from aesthetics_jax.data import dataset
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import resized_store
from aesthetics_jax.train import feature_cache

# One work item: (JPEG bytes, position in the batch, resize side, crop side).
Item = tuple[bytes, int, int, int]


def _real_jpegs(data_dir: str, subset: str, n: int) -> list[bytes]:
  src = dataset.load_sources(data_dir, subset)['train']
  return [bytes(src[i]['image']) for i in range(min(n, len(src)))]


# Module-level (picklable) so that a process pool can run them.
def _train_one(item: Item) -> np.ndarray:
  """One train image as the pipeline makes it: decode (with draft), resize, random crop (the
  mirror is left to the device)."""
  data, j, rs, s = item
  crop, _ = preprocess.train_crop_np(data, rs, s, np.random.default_rng(j), True)
  return np.ascontiguousarray(crop)


def _train_full_decode(item: Item) -> np.ndarray:
  """The same without the draft() fast path: full-resolution decode, then resize/crop."""
  data, j, rs, s = item
  crop, _ = preprocess.train_crop_np(decoder.decode_image(data), rs, s,
                                     np.random.default_rng(j), True)
  return np.ascontiguousarray(crop)


def _eval_full_decode(item: Item) -> np.ndarray:
  data, _, _, s = item
  return preprocess.preprocess_eval_np(decoder.decode_image(data), s)


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
  if opts.grain:
    res['grain'] = _vs_grain(datas, opts)
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
  it = ip.train_batches(records, config, parallel.train_mesh())
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


FED_TARGET = 0.95  # the performance issue's: the model fed keeps >= 95% of its alone rate


def _vs_model(opts: Options, per_worker_ips: float) -> dict[str, Any]:
  """Model images/s (inference features, in-memory batches) vs the same model fed by
  `train_batches`, interleaved: in the first epoch (every image decoded and resized) and in
  later epochs (the resized images in `pipeline.ResizedCache`, only cropped), and, when grain
  is installed, fed by grain's formulations of `opts.grain_modes` (no cache); workers
  needed = model images/s / one worker's decode images/s.

  A block times `opts.fed_batches` batches of `opts.fed_batch_size` images (10: long against
  the batches a pipeline holds ready when a block starts). The pipelines work ahead
  (`input.prefetch` batches queued, one more in hand), so a fed block first consumes that
  many untimed, and after it an untimed pause lets its pipeline finish refilling: work a
  pipeline did after its block can neither speed up its next block nor slow down the
  others. (With 3-batch blocks and no pause, running the decode threads at the lowest CPU
  priority looked like 0.80 -> 0.94 for the first epoch; it had only moved decoding out of
  the timed windows. Measured this way, priority changes nothing: decoding costs the model
  the CPU it takes.)

  Every fed block runs between two blocks of the model alone (`timing.bracketed`) and is
  judged against their mean: this 2-core machine's speed drifts by 10-25% over minutes, and
  a fed block paired with one alone block several blocks away in the round kept that drift
  (per-round ratios 0.83-1.23 in run AJ). The fed / alone figures are medians of per-round
  ratios over `opts.fed_rounds` rounds (or `opts.repeats` if more); the ratio of the series'
  medians is kept as `*_of_medians`. A control is timed the same way: the model fed ready
  device batches through the same loop (`ready_over_alone`, 1 but for noise), which shows
  what difference the measurement can resolve.
  """
  s, b = opts.image_size, opts.fed_batch_size
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  variables = workloads.device_variables(model, s)
  fwd = workloads.forward_fn(model, opts.chunk_size(), num_shards=parallel.train_mesh().size)
  x = jax.device_put(np.random.default_rng(0).random((b, s, s, 3), np.float32))
  pool = synthetic.synthetic_jpegs(32, seed=5)
  epoch = 4  # batches per epoch of the source below
  nb = opts.fed_batches
  defaults = default_config.get_config().input
  ahead = int(defaults.prefetch) + 1

  def settle_for(held: int) -> float:  # one worker redoes what a pipeline holds, twice over
    return min(5.0, 2 * held * b / per_worker_ips) if per_worker_ips > 0 else 1.0

  def feeder(make: Callable[[Any], Any], cache_mb: float, untimed: int):
    config = workloads.train_input_config(b, opts.resize_size, s, opts.all_workers(),
                                          resized_cache_mb=cache_mb)
    it = make(config)
    # Warm: compile; with the cache, one whole epoch so that every row is cached.
    for _ in range(epoch if cache_mb else 1):
      jax.block_until_ready(fwd(variables, next(it)['image']))

    def fed() -> float:
      for _ in range(untimed):  # made while other blocks ran: not this block's work
        jax.block_until_ready(fwd(variables, next(it)['image']))
      t0 = time.perf_counter()
      for _ in range(nb):
        out = fwd(variables, next(it)['image'])
      jax.block_until_ready(out)
      return time.perf_counter() - t0
    return it, fed

  def alone() -> float:
    t0 = time.perf_counter()
    for _ in range(nb):
      out = fwd(variables, x)
    jax.block_until_ready(out)
    return time.perf_counter() - t0

  source = workloads.SyntheticSource(epoch * b, pool)
  mesh = parallel.train_mesh()
  ours = lambda config: ip.train_batches(source, config, mesh)
  # The same rows prepared decoded and resized (what aesthetics-prepare-data stores):
  # cropped, not decoded, in every epoch the first included.
  prepared = _prepared(source, opts.resize_size)
  # google's grain feeding the same model (no cache: a first epoch), when installed. Its
  # worker processes each hold `prefetch` batches and one in hand.
  grain_modes = ([m for m in grain_ref.MODES if m in opts.grain_modes]
                 if opts.grain and grain_ref.unavailable() is None else [])
  held = {'first': ahead, 'later': ahead, 'prepared': ahead}
  held.update({f'grain_{m}': ahead if m == 'threads' else opts.all_workers() * ahead + 1
               for m in grain_modes})

  def ready(config) -> Iterator[dict[str, jax.Array]]:  # the control: nothing to make
    del config
    while True:
      yield {'image': x}
  feeders: dict[str, tuple[Any, Callable[[], float]]] = {}
  try:
    feeders['first'] = feeder(ours, 0, held['first'])  # every image decoded: the first epoch
    feeders['later'] = feeder(ours, defaults.resized_cache_mb, held['later'])
    feeders['prepared'] = feeder(lambda config: ip.train_batches(prepared, config, mesh), 0,
                                 held['prepared'])
    feeders['ready'] = feeder(ready, 0, ahead)
    for mode in grain_modes:
      feeders[f'grain_{mode}'] = feeder(
          lambda config, m=mode: grain_ref.train_batches(source, config, mesh, mode=m), 0,
          held[f'grain_{mode}'])
    settle = {k: settle_for(h) for k, h in held.items()}
    timed_runs = timing.bracketed(alone, {k: f for k, (_, f) in feeders.items()},
                                  items=nb * b, repeats=max(opts.fed_rounds, opts.repeats),
                                  warmup=opts.warmup, self_timed=True, settle_after=settle)
  finally:
    for it, _ in feeders.values():
      it.close()
  runs = dict(timed_runs['runs'])
  runs['model'] = runs.pop('reference')
  over = {k: timing.summarize_rounds(v) for k, v in timed_runs['over_reference'].items()}
  alone_r, fed_r, later_r = runs['model'], runs['first'], runs['later']
  model_ips = alone_r['items_per_s']['median']
  first_rounds, later_rounds, control = over['first'], over['later'], over['ready']
  prepared_r, prepared_rounds = runs['prepared'], over['prepared']
  need = math.ceil(model_ips / per_worker_ips) if per_worker_ips > 0 else None
  cpus = cpu_backend.host_cpu_count()
  print(f'  model alone {timing.fmt_rate(alone_r)}; fed by train_batches, first epoch '
        f'(decoding) {timing.fmt_rate(fed_r)}, later epochs (resized cache) '
        f'{timing.fmt_rate(later_r)}, any epoch from the prepared resized store '
        f'{timing.fmt_rate(prepared_r)}; fed / alone round by round: first epoch '
        f'{_rounds(first_rounds)}, later {_rounds(later_rounds)}, prepared store '
        f'{_rounds(prepared_rounds)}; control (ready batches '
        f'through the same loop) {_rounds(control)}; one decode worker '
        f'{per_worker_ips:.1f} img/s -> '
        f'{need} workers keep up (this machine has {cpus} cores, shared with the model)',
        flush=True)
  return {'model': alone_r, 'model_fed_by_train_batches': fed_r,
          'model_fed_later_epochs': later_r, 'batches_per_block': nb,
          'untimed_batches_per_block': ahead, 'settle_s': settle,
          'model_fed_ready_batches': runs['ready'], 'ready_over_alone': control['median'],
          'ready_over_alone_per_round': control,
          'decode_images_per_s_per_worker': per_worker_ips,
          'workers_needed_to_feed_model': need, 'cpu_count': cpus,
          'fed_over_alone': first_rounds['median'],
          'fed_later_epochs_over_alone': later_rounds['median'],
          'fed_over_alone_per_round': first_rounds,
          'fed_later_epochs_over_alone_per_round': later_rounds,
          'fed_over_alone_of_medians': fed_r['items_per_s']['median'] / model_ips,
          'fed_later_epochs_over_alone_of_medians': later_r['items_per_s']['median'] / model_ips,
          'model_fed_prepared_store': prepared_r,
          'fed_prepared_store_over_alone': prepared_rounds['median'],
          'fed_prepared_store_over_alone_per_round': prepared_rounds,
          'feature_cache': _vs_feature_cache(opts, model, variables),
          'grain': _vs_grain_fed(runs, over, grain_modes, fed_r, held)}


def _prepared(source, resize_size: int) -> resized_store.WithResized:
  """`source` with its rows prepared decoded and resized (`resized_store.build`, as
  aesthetics-prepare-data makes them; in a temporary file, mapped after it is removed)."""
  with tempfile.TemporaryDirectory(prefix='bench_resized_') as d:
    f = resized_store.build(source, resize_size, Path(d) / 'store.npy', progress=False)
    return resized_store.WithResized(source, np.load(f, mmap_mode='r'))


def _vs_grain_fed(runs: dict[str, Any], over: dict[str, Any], modes: list[str],
                  ours: dict[str, Any], held: dict[str, int]) -> dict[str, Any]:
  """The model fed by grain (each of `modes`) over alone (`over`: bracketed per-round
  figures) and ours-fed / grain-fed, round by round: what decides the pipeline when the
  decoding shares the cores with the model."""
  out: dict[str, Any] = {'modes': modes}
  for mode in modes:
    theirs = runs[f'grain_{mode}']
    over_alone = over[f'grain_{mode}']
    ours_vs = timing.summarize_rounds(_paired(theirs, ours))
    out[mode] = {'run': theirs, 'fed_over_alone_per_round': over_alone,
                 'fed_over_alone': over_alone['median'], 'ours_over_grain_per_round': ours_vs,
                 'ours_over_grain': ours_vs['median'],
                 'untimed_batches_per_block': held[f'grain_{mode}']}
    print(f'  model fed by grain ({mode}): {timing.fmt_rate(theirs)}; fed / alone '
          f'{_rounds(over_alone)}; fed by ours / fed by grain {_rounds(ours_vs)}', flush=True)
  return out


def _paired(alone: dict[str, Any], fed: dict[str, Any]) -> list[float]:
  """Fed images/s over alone images/s, round by round."""
  return [(fed['items'] / f) / (alone['items'] / a)
          for a, f in zip(alone['each_s'], fed['each_s'])]


def _vs_feature_cache(opts: Options, model, variables) -> dict[str, Any]:
  """The default training path of the frozen-encoder configs: the feature-cache build
  (`feature_cache.encode_rows`: each row decoded and resized once for its K train views, the
  next batch decoded while the encoder runs) against the same encode function on in-memory
  batches of as many views, interleaved, for each K of `opts.fed_cache_views`. A build call
  is whole (its pool starts and ends in it), so nothing runs outside the timed windows."""
  s, rs, b, n = opts.image_size, opts.resize_size, opts.fed_batch_size, opts.fed_cache_rows
  mesh = parallel.train_mesh()  # the feature cache is built on training's mesh
  encode = feature_cache.make_encode_fn(model, 'none', cacheable=True, num_shards=mesh.size)
  source = workloads.SyntheticSource(n, synthetic.synthetic_jpegs(32, seed=6))
  dim = tuple(feature_cache.view_shape(model, s))
  x = jax.device_put(np.random.default_rng(0).integers(0, 256, (b, s, s, 3), np.uint8))
  flip = jax.device_put(np.zeros(b, bool))
  prepared = _prepared(source, rs)
  fns, items = {}, {}
  for k in opts.fed_cache_views:
    outs = [np.zeros((n, *dim), np.float32) for _ in range(k)]
    image_fn = feature_cache.train_views_fn(rs, s, 0, k, True)
    fns[f'build_{k}'] = functools.partial(
        feature_cache.encode_rows, encode, variables, image_fn, source, np.arange(n), mesh, b,
        s, outs, 'feature cache', False)
    # The rows prepared decoded and resized (aesthetics-prepare-data's store): cropped.
    fns[f'prepared_{k}'] = functools.partial(
        feature_cache.encode_rows, encode, variables,
        feature_cache.train_views_fn(rs, s, 0, k, True, prepared.resized), prepared,
        np.arange(n), mesh, b, s, outs, 'feature cache', False)
    calls = -(-n // b) * k

    def alone(calls: int = calls) -> None:
      for _ in range(calls):
        out = encode(variables, x, flip)
      jax.block_until_ready(out)
    fns[f'alone_{k}'] = alone
    items[f'build_{k}'] = items[f'alone_{k}'] = items[f'prepared_{k}'] = calls * b
  runs = timing.interleaved(fns, items=items, repeats=max(opts.fed_rounds, opts.repeats),
                            warmup=opts.warmup)
  out: dict[str, Any] = {'rows': n, 'runs': runs}
  for k in opts.fed_cache_views:
    rounds = timing.summarize_rounds(_paired(runs[f'alone_{k}'], runs[f'build_{k}']))
    out[f'views_{k}_over_alone'] = rounds['median']
    out[f'views_{k}_over_alone_per_round'] = rounds
    prep = timing.summarize_rounds(_paired(runs[f'alone_{k}'], runs[f'prepared_{k}']))
    out[f'views_{k}_prepared_over_alone'] = prep['median']
    out[f'views_{k}_prepared_over_alone_per_round'] = prep
    print(f'  feature-cache build, K={k} views a decode: encoder '
          f'{timing.fmt_rate(runs[f"build_{k}"], "views/s")} fed, '
          f'{timing.fmt_rate(runs[f"alone_{k}"], "views/s")} alone; fed / alone round by round '
          f'{_rounds(rounds)}; from the prepared resized store '
          f'{timing.fmt_rate(runs[f"prepared_{k}"], "views/s")}, fed / alone {_rounds(prep)}',
          flush=True)
  return out


def _rounds(r: dict[str, Any]) -> str:
  """'median (95% interval lo-hi; rounds min-max)' of a `timing.summarize_rounds`."""
  lo, hi = r['ci95']
  return (f"{r['median']:.3f} (95% interval {lo:.3f}-{hi:.3f}; rounds {r['min']:.3f}-"
          f"{r['max']:.3f})")


def _interval(r: dict[str, Any]) -> str:
  """', 95% interval lo-hi' when `r` has one (JSONs before it was recorded have not)."""
  return f", 95% interval {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}" if 'ci95' in r else ''


def _digest(batch: ip.Batch) -> str:
  """sha1 of a batch's arrays (keys sorted): equal digests = bit-identical batches."""
  h = hashlib.sha1()
  for k, v in sorted(jax.device_get(batch).items()):
    h.update(k.encode())
    h.update(np.ascontiguousarray(v).tobytes())
  return h.hexdigest()


def _steady(make: Callable[[], Any], warm: int, timed: int,
            digests: list[str] | None) -> tuple[float, float]:
  """(seconds to the first batch, seconds of `timed` batches after `warm` ones) of a fresh
  iterator, closed after. Batches `warm`.. are timed once the pipeline runs at steady state
  (workers started, as many batches in flight at the end as at the start), so start-up
  and look-ahead buffers do not count; `digests` (if given) collects the warm batches'."""
  t0 = time.perf_counter()
  it = make()
  try:
    for i in range(warm):
      b = next(it)
      b['image'].block_until_ready()
      if i == 0:
        first = time.perf_counter() - t0
      if digests is not None:
        digests.append(_digest(b))
    t1 = time.perf_counter()
    for _ in range(timed):
      b = next(it)
      b['image'].block_until_ready()
    return first, time.perf_counter() - t1
  finally:
    it.close()


def _vs_grain(datas: list[bytes], opts: Options) -> dict[str, Any]:
  """Our `train_batches` / `eval_batches` vs grain's thread (ReadOptions) and process
  (mp_prefetch) formulations of the same work, at each worker count of `opts.grain_workers`.

  Every run is a fresh iterator, closed after (so no variant's workers run while another is
  timed), timing `num_images // batch_size` (>= 2) batches after 2 x workers + 1 warm ones
  (start-up, and the look-ahead a worker process that started first has built, are not
  timed); variants alternate within each round. The first round's (untimed if warmup >= 1)
  warm batches of every variant are hashed and compared with ours at the fewest workers:
  like for like only if bit-identical.
  """
  why = grain_ref.unavailable()
  if why is not None:
    print(f'  grain: skipped ({why}; {grain_ref.INSTALL} adds it)', flush=True)
    return {'skipped': why}
  b, rs, s = opts.batch_size, opts.resize_size, opts.image_size
  workers = sorted({w if w > 0 else opts.all_workers() for w in opts.grain_workers})
  modes = [m for m in grain_ref.MODES if m in opts.grain_modes]
  timed = max(2, opts.num_images // b)
  # One source for both: the eval pass must cover the warm and timed batches.
  src = workloads.SyntheticSource((2 * max(workers) + 1 + timed) * b, datas)
  mesh = parallel.train_mesh()
  variants: dict[str, tuple[Callable[[], Any], int]] = {}
  for w in workers:
    tc = workloads.train_input_config(b, rs, s, w)
    tc.input.random_flip = True  # flips too must match
    ec = workloads.eval_config(s, b, w)
    for what, ours, theirs, cfg in (('train', ip.train_batches, grain_ref.train_batches, tc),
                                    ('eval', ip.eval_batches, grain_ref.eval_batches, ec)):
      variants[f'{what}_{w}_workers/ours'] = (lambda f=ours, c=cfg: f(src, c, mesh),
                                              2 * w + 1)
      for mode in modes:
        variants[f'{what}_{w}_workers/grain_{mode}'] = (
            lambda f=theirs, c=cfg, m=mode: f(src, c, mesh, mode=m), 2 * w + 1)
  names = list(variants)
  first: dict[str, list[float]] = {k: [] for k in names}
  secs: dict[str, list[float]] = {k: [] for k in names}
  digests: dict[str, list[str]] = {k: [] for k in names}
  for r in range(opts.warmup + opts.repeats):
    for k in (names if r % 2 == 0 else names[::-1]):
      make, warm = variants[k]
      f, t = _steady(make, warm, timed, digests[k] if r == 0 else None)
      if r >= opts.warmup:
        first[k].append(f)
        secs[k].append(t)
  out: dict[str, Any] = {'grain_version': grain_ref.version(), 'workers': workers,
                         'modes': modes, 'timed_batches': timed, 'batch_size': b, 'runs': {}}
  for k in names:
    config, variant = k.split('/')
    ref = digests[f'{config.split("_")[0]}_{workers[0]}_workers/ours']
    n = min(len(ref), len(digests[k]))
    r = {'items': timed * b, 'repeats': opts.repeats, 'seconds': timing.summarize(secs[k]),
         'items_per_s': timing.summarize([timed * b / t for t in secs[k]]),
         'first_batch_s': timing.summarize(first[k]),
         'identical_to_ours': digests[k][:n] == ref[:n], 'batches_compared': n}
    out['runs'].setdefault(config, {})[variant] = r
    ips = r['items_per_s']
    print(f'  {k:38s} {ips["median"]:8.1f} images/s ({ips["min"]:.1f}-{ips["max"]:.1f}) '
          f'first batch {r["first_batch_s"]["median"]:.1f} s, identical to ours: '
          f'{r["identical_to_ours"]}', flush=True)
  for config, runs in out['runs'].items():
    ours = runs['ours']['items_per_s']['median']
    for variant in (v for v in runs if v != 'ours'):
      runs[variant]['vs_ours'] = runs[variant]['items_per_s']['median'] / ours
      # Round by round (the two ran back to back, under the same load): grain / ours.
      paired = [a / b for a, b in zip(secs[f'{config}/ours'], secs[f'{config}/{variant}'])]
      v = runs[variant]['vs_ours_paired'] = timing.summarize(paired)
      print(f'  {config}: {variant} / ours images/s, round by round: median '
            f'{v["median"]:.3f} ({v["min"]:.3f}-{v["max"]:.3f})', flush=True)
  return out


def summary(result: dict[str, Any]) -> list[Row]:
  """The model fed by the training pipeline over the model alone (first epoch: decoding;
  later epochs: the resized-image cache) and the encoder fed by the feature-cache build, each
  against the 0.95 target; with grain timed, ours / grain's faster formulation per
  configuration (> 1: ours faster)."""
  rows = []
  vs = result.get('vs_model')
  if vs:  # the model fed by the training pipeline over the model alone
    rows.append(Row('model_fed_by_pipeline_first_epoch_over_alone', vs['fed_over_alone'],
                    'MobileNetV2 forward, every image decoded and resized (online mode); '
                    'median of per-round ratios' + _interval(
                        vs.get('fed_over_alone_per_round', {})), target=FED_TARGET))
    if 'fed_later_epochs_over_alone' in vs:
      rows.append(Row('model_fed_by_pipeline_later_epochs_over_alone',
                      vs['fed_later_epochs_over_alone'],
                      'MobileNetV2 forward, resized images cached (pipeline.ResizedCache); '
                      'median of per-round ratios' + _interval(
                          vs.get('fed_later_epochs_over_alone_per_round', {})),
                      target=FED_TARGET))
    if 'fed_prepared_store_over_alone' in vs:
      rows.append(Row('model_fed_by_pipeline_prepared_store_over_alone',
                      vs['fed_prepared_store_over_alone'],
                      'MobileNetV2 forward, any epoch the first included, the images prepared '
                      'decoded and resized (aesthetics-prepare-data --resized_sizes); median '
                      'of per-round ratios' + _interval(
                          vs.get('fed_prepared_store_over_alone_per_round', {})),
                      target=FED_TARGET))
    if 'ready_over_alone' in vs:  # the control: what the rows above can resolve
      rows.append(Row('model_fed_ready_batches_over_alone', vs['ready_over_alone'],
                      'control: MobileNetV2 forward fed ready device batches through the same '
                      'loop, 1 but for noise; median of per-round ratios' + _interval(
                          vs['ready_over_alone_per_round'])))
    cache = vs.get('feature_cache', {})
    for key in sorted((k for k in cache if k.endswith('_over_alone')),
                      key=lambda k: (-int(k.split('_')[1]), k)):
      k, store = int(key.split('_')[1]), '_prepared_' in key
      rows.append(Row(f'encoder_fed_by_feature_cache_build_{"prepared_" if store else ""}'
                      f'k{k}_over_alone', cache[key],
                      'MobileNetV2 encoder in the feature-cache build (the frozen configs\' '
                      'training path), ' + (f'{k} view(s) cropped from the prepared resized '
                                            'images' if store else
                                            f'one decode per {k} view(s)')
                      + '; median of per-round ratios'
                      + _interval(cache.get(key + '_per_round', {})), target=FED_TARGET))
    fed_grain = vs.get('grain', {})
    for mode in fed_grain.get('modes', []):
      rows.append(Row(f'model_fed_by_ours_vs_grain_{mode}', fed_grain[mode]['ours_over_grain'],
                      f'MobileNetV2 forward fed by our train_batches / by grain ({mode}), '
                      'first epoch, round by round' + _interval(
                          fed_grain[mode]['ours_over_grain_per_round'])))
  for config, runs in result.get('grain', {}).get('runs', {}).items():
    grains = [v for v in runs if v != 'ours']
    if not grains:
      continue
    best = max(grains, key=lambda m: runs[m]['items_per_s']['median'])
    rows.append(Row(f'input_{config}_ours_vs_grain',
                    runs['ours']['items_per_s']['median']
                    / runs[best]['items_per_s']['median'],
                    f'ours vs {best} images/s (medians)'))
  return rows
