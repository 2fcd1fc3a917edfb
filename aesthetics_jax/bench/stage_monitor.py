"""Wall time, peak memory and disk of one stage of a long job (aesthetics-paper-run).

`with StageMonitor() as m: ...` then `m.result()`:
  seconds          wall time;
  peak_rss_mb      this process's peak resident memory during the stage: the kernel's
                   high-water mark, reset at the start (`/proc/self/clear_refs`, Linux >= 4.0;
                   elsewhere `ru_maxrss`, the peak since the process started: `hwm_reset` False);
  peak_children_mb the largest summed RSS of its long-lived descendants (pool workers),
                   sampled every `interval` seconds (psutil when installed, else /proc);
  peak_total_mb    the two added: an upper bound of the whole job's peak.
`disk_mb(paths)` is the space the files under `paths` take (allocated blocks).
"""
from __future__ import annotations

import os
from pathlib import Path
import resource
import threading
import time
from typing import Any, Iterable


def status_mb(field: str, pid: int | str = 'self', file: str = 'status') -> float | None:
  """`field` (VmRSS, VmHWM, ...) of /proc/<pid>/status in MB (or of another `file` in the same
  'Name:  N kB' format, e.g. smaps_rollup's AnonHugePages); None where there is none."""
  try:
    with open(f'/proc/{pid}/{file}') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) / 1024.0
  except (OSError, ValueError, IndexError):
    pass
  return None


def reset_hwm() -> bool:
  """Resets this process's VmHWM (Linux >= 4.0); False where it cannot."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _descendants_rss() -> dict[int, float]:
  """{pid: RSS MB} of every descendant process ({} where neither psutil nor /proc is there)."""
  try:
    import psutil  # pylint: disable=import-outside-toplevel
    out = {}
    for p in psutil.Process().children(recursive=True):
      try:
        out[p.pid] = p.memory_info().rss / 2**20
      except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return out
  except ImportError:
    pass
  parent: dict[int, int] = {}
  try:
    for d in os.listdir('/proc'):
      if d.isdigit():
        try:
          with open(f'/proc/{d}/stat') as f:
            parent[int(d)] = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
          pass
  except OSError:
    return {}
  mine, frontier = set(), {os.getpid()}
  while frontier:
    frontier = {p for p, pp in parent.items() if pp in frontier} - mine
    mine |= frontier
  return {p: status_mb('VmRSS', p) or 0.0 for p in mine}


class StageMonitor:
  """Context manager measuring one stage (module docstring)."""

  def __init__(self, interval: float = 0.5):
    self.interval = interval
    self._stop = threading.Event()
    self._children_peak = 0.0
    self._thread: threading.Thread | None = None
    self._t0 = self._t1 = 0.0
    self._hwm_reset = False
    self._peak_self = None

  def _sample(self) -> None:
    # Only children seen in two consecutive samples count: a fork about to exec a helper
    # (`uname`, `ldconfig`) briefly shows the whole parent's pages as its RSS.
    seen: set[int] = set()
    while not self._stop.wait(self.interval):
      now = _descendants_rss()
      total = sum(mb for pid, mb in now.items() if pid in seen)
      self._children_peak = max(self._children_peak, total)
      seen = set(now)

  def __enter__(self) -> 'StageMonitor':
    self._hwm_reset = reset_hwm()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    self._t0 = time.perf_counter()
    return self

  def __exit__(self, *exc) -> None:
    self._t1 = time.perf_counter()
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    hwm = status_mb('VmHWM')
    self._peak_self = hwm if hwm is not None else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)

  def result(self) -> dict[str, Any]:
    peak_self = float(self._peak_self or 0.0)
    return {'seconds': round(self._t1 - self._t0, 1), 'peak_rss_mb': round(peak_self, 1),
            'peak_children_mb': round(self._children_peak, 1),
            'peak_total_mb': round(peak_self + self._children_peak, 1),
            'hwm_reset': self._hwm_reset}


def disk_mb(paths: Iterable[str | os.PathLike]) -> float:
  """MB allocated to the files under `paths` (files or folders; missing ones count 0)."""
  total = 0
  for p in paths:
    p = Path(p)
    if p.is_file():
      total += p.stat().st_blocks * 512
      continue
    for root, _, files in os.walk(p):
      for name in files:
        try:
          total += os.lstat(os.path.join(root, name)).st_blocks * 512
        except OSError:
          pass
  return round(total / 2**20, 1)
