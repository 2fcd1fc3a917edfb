r"""Peak resident memory of a workload, in a fresh child process.

tracemalloc misses native (XLA, torch, oneDNN) allocations, and a long-lived process's
high-water mark remembers everything that ran before. So each measurement runs in its own
`python -m aesthetics_jax.bench.memory` child: it builds the workload (`setup(**kwargs)`
returns a callable), runs it `warmup` times, then resets the kernel's high-water mark
(`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and runs it `repeats` more times. Reported:
  peak_rss_mb      VmHWM after the reset: the process's peak while the workload ran
                   (weights, libraries and compiled code included);
  rss_before_mb    VmRSS just before the timed runs;
  workload_mb      the difference: what the workload itself added at its peak;
  seconds          wall time of the timed runs.
Where the reset is not allowed, `ru_maxrss` (peak since start) is reported and
`hwm_reset` is False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from aesthetics_jax.bench.stage_monitor import reset_hwm, status_mb

_MARK = 'BENCH_MEMORY_RESULT '


class _MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
      'fordblks', 'keepcost')]


@functools.cache
def _mallinfo2():
  try:
    fn = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').mallinfo2
  except (OSError, AttributeError):  # not glibc, or glibc < 2.33
    return None
  fn.restype = _MallInfo2
  return fn


def malloc_mb() -> dict[str, float] | None:
  """glibc's own account of its memory (`mallinfo2`), in MB: `in_use`, the bytes handed out
  and not freed (a leak grows it), and `footprint`, what malloc holds from the kernel (heaps
  + mmapped chunks: the most its memory can ever make resident). None without glibc >= 2.33.

  Why both: VmRSS creeps when something leaks and also when the heap fragments (glibc grows
  a heap when no free hole fits a new large buffer, though the bytes in use stay flat): the
  bytes in use rise only for the first, the footprint for both. (The kernel can also raise
  VmRSS with neither moving: khugepaged collapsing a sparse 2 MB range of a THP heap.)
  """
  fn = _mallinfo2()
  if fn is None:
    return None
  m = fn()
  mb = 1 / (1 << 20)
  return {'in_use': (m.uordblks + m.hblkhd) * mb, 'footprint': (m.arena + m.hblkhd) * mb}


def measure_here(target: str, kwargs: dict[str, Any], warmup: int = 1,
                 repeats: int = 1) -> dict[str, Any]:
  """Runs the workload in THIS process (the child's body). `target` = 'module:function'."""
  mod, fn = target.split(':')
  run = getattr(importlib.import_module(mod), fn)(**kwargs)
  for _ in range(warmup):
    run()
  before = status_mb('VmRSS')
  reset = reset_hwm()
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = run()
  secs = time.perf_counter() - t0
  peak = status_mb('VmHWM') if reset else None
  if peak is None:
    reset = False
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  res = {'peak_rss_mb': peak, 'rss_before_mb': before,
         'workload_mb': None if before is None else peak - before,
         'seconds': secs, 'repeats': repeats, 'hwm_reset': reset}
  if isinstance(out, dict):  # workloads may report extra scalars / number lists (traces)
    res.update({k: v for k, v in out.items() if isinstance(v, (int, float, str, bool)) or
                (isinstance(v, list) and all(isinstance(e, (int, float)) for e in v))})
  return res


def measure_in_child(target: str, kwargs: dict[str, Any] | None = None, *, warmup: int = 1,
                     repeats: int = 1, timeout: float = 1800,
                     env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs `measure_here` in a fresh `python -m aesthetics_jax.bench.memory` process.

  Returns its result dict, or {'error': one line} if the child failed (e.g. killed for
  memory) — benchmarks report that instead of crashing.
  """
  spec = json.dumps({'target': target, 'kwargs': kwargs or {}, 'warmup': warmup,
                     'repeats': repeats})
  try:
    p = subprocess.run([sys.executable, '-m', 'aesthetics_jax.bench.memory', spec],
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
  except subprocess.TimeoutExpired:
    return {'error': f'{target}: timed out after {timeout:.0f} s'}
  for line in p.stdout.splitlines()[::-1]:
    if line.startswith(_MARK):
      return json.loads(line[len(_MARK):])
  tail = (p.stderr.strip().splitlines() or ['no output'])[-1]
  return {'error': f'{target}: child exited {p.returncode}: {tail}'}


def main(argv: list[str]) -> None:
  spec = json.loads(argv[1])
  res = measure_here(spec['target'], spec['kwargs'], spec['warmup'], spec['repeats'])
  print(_MARK + json.dumps(res), flush=True)


if __name__ == '__main__':
  main(sys.argv)

