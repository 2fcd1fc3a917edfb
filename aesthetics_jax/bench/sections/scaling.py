"""--what=scaling: cost growth of the streamed evaluation with all CAM targets (the study
step over `pipeline.eval_batches` of synthetic JPEGs): time and peak RSS per size, each in a
fresh child process. Memory must stay flat in the number of images.
"""
from __future__ import annotations

from typing import Any

from aesthetics_jax.bench import memory
from aesthetics_jax.bench.sections import Options, Row

BATCH = 32


def run(opts: Options) -> dict[str, Any]:
  sizes, s, chunk = list(opts.scaling_sizes), opts.image_size, opts.chunk_size()
  # glibc gives each decode thread its own malloc arena; their fragmentation made RSS creep
  # (~+150 MB over 5 passes of 256 images, bounded by the arena count) — not a leak: with 2
  # arenas RSS stays flat. The env var is recorded in the JSON.
  env = {'MALLOC_ARENA_MAX': opts.malloc_arena_max} if opts.malloc_arena_max else {}
  res: dict[str, Any] = {'image_size': s, 'batch_size': BATCH, 'chunk': chunk, 'env': env,
                         'runs': {}}
  for n in sizes:
    r = memory.measure_in_child('aesthetics_jax.bench.workloads:stream_setup',
                                dict(num_images=n, batch=BATCH, size=s, chunk=chunk,
                                     workers=opts.workers), warmup=0, repeats=1, env=env)
    res['runs'][str(n)] = r
    if 'error' in r:
      print(f'  {n:6d} images: {r["error"]}', flush=True)
      continue
    print(f"  {n:6d} images: {r['stream_s']:7.1f} s ({r['images_per_s']:.1f} img/s), peak RSS "
          f"{r['peak_rss_mb']:.0f} MB (before {r['rss_before_mb']:.0f} MB)", flush=True)
  ok = [res['runs'][str(n)] for n in sizes if 'peak_rss_mb' in res['runs'][str(n)]]
  if len(ok) >= 2:
    res['peak_rss_growth_mb'] = ok[-1]['peak_rss_mb'] - ok[0]['peak_rss_mb']
    res['seconds_per_image'] = [r['stream_s'] / r['num_images'] for r in ok]
    # O(N) growth would at least repeat itself when N doubles; a bounded high-water mark
    # (allocator, prefetch buffers) does not.
    res['peak_rss_growth_last_step_mb'] = ok[-1]['peak_rss_mb'] - ok[-2]['peak_rss_mb']
  return res


def summary(result: dict[str, Any]) -> list[Row]:
  if 'peak_rss_growth_mb' not in result:
    return []
  ok = [(int(n), r) for n, r in result['runs'].items() if 'peak_rss_mb' in r]
  first_mb = ok[0][1]['peak_rss_mb']
  per_image = ', '.join(f'{v * 1e3:.1f} ms' for v in result['seconds_per_image'])
  return [
      Row('scaling_peak_rss_growth_mb', result['peak_rss_growth_mb'],
          f'{ok[0][0]} -> {ok[-1][0]} images; s/img {per_image}',
          target=max(100.0, 0.1 * first_mb), better='lower'),
      Row('scaling_peak_rss_growth_last_step_mb', result['peak_rss_growth_last_step_mb'],
          f'{ok[-2][0]} -> {ok[-1][0]} images', target=max(50.0, 0.05 * first_mb),
          better='lower')]
