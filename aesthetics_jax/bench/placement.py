"""Where the machine put our two CPUs: core-to-core round-trip latency, measured between runs.

On a cloud VM the hypervisor may place the guest's vCPUs on cores that share an L3 cache or
on cores of different dies (or sockets), and it moves them while the guest runs. Nothing in the
guest says which, and ordinary calibration (one core's speed, memory bandwidth) does not
change. It matters to XLA:CPU's fine-grained two-thread execution, where every op hands data
and work between the threads: on the 2-core AMD EPYC VMs of docs/benchmarks, our Grad-CAM step
(chunks of 2) ran at 213 img/s while a C cache-line ping-pong between the two vCPUs took
~50 ns a round trip, and at 99 img/s while it took 320-1,500 ns (probes of 2026-12-04 in
docs/benchmarks: `...-placement-probe.*`).

`CoreLatency` measures the round trip of a value bounced through shared memory between this
thread (pinned to one CPU for the measurement only) and a helper process pinned to another:
Python's own work dominates it (on that machine, beside the C figure: near 158-241 ns, median
180; far 254 ns and up, median 269-299), so a figure is read against the run's fastest
(`is_far`: over 1.5x it is far; a run spent entirely far shows no far rounds). JAX-free:
the helper process imports nothing else.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

FAR_FACTOR = 1.5  # a round trip this many times the run's fastest counts as 'far'
_GO, _BALL = 0, 8  # int64 slots, 64 bytes apart (own cache lines)
_SIZE = 4096


def _slots(fd: int) -> tuple[mmap.mmap, memoryview]:
  """The shared page (file descriptor `fd`) and its int64 view."""
  mm = mmap.mmap(fd, _SIZE)
  return mm, memoryview(mm).cast('q')  # ~3x faster to index than a numpy array


def _partner(fd: int, cpu: int) -> None:
  """The helper process: pinned to `cpu`, asleep on stdin between measurements (so it takes
  no CPU from timed work); on b'g' returns the ball as soon as it arrives until told to stop;
  on b'q' or end of input, exits."""
  os.sched_setaffinity(0, {cpu})
  mm, a = _slots(fd)
  try:
    while os.read(0, 1) == b'g':
      while a[_GO] == 1:
        if a[_BALL] == 1:
          a[_BALL] = 0
  finally:
    a.release()
    mm.close()


class CoreLatency:
  """Round-trip latency between two of this process's CPUs (ns), on demand.

  `measure()` returns None where it cannot measure (fewer than two CPUs, no
  sched_setaffinity, the helper gone). Close it (or use `probe`) to stop the helper process.
  """

  def __init__(self, batches: int = 8, trips: int = 250):
    self.batches, self.trips = batches, trips
    self._proc: subprocess.Popen | None = None
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []
    if len(cpus) < 2:
      return
    self.cpus = (cpus[0], cpus[1])
    shm_dir = '/dev/shm' if os.path.isdir('/dev/shm') else None
    fd, self._path = tempfile.mkstemp(prefix='aesthetics-placement-', dir=shm_dir)
    try:
      os.ftruncate(fd, _SIZE)
      self._mm, self._a = _slots(fd)
      # A fresh interpreter (not fork: the caller holds JAX's threads) that imports this
      # module and maps the page through the inherited descriptor. In a session of its own:
      # Ctrl-C in a terminal reached it too, and its KeyboardInterrupt traceback came before
      # the benchmark's one line (the benchmark stops it; its stdin's end, if killed).
      self._proc = subprocess.Popen([sys.executable, '-m', 'aesthetics_jax.bench.placement',
                                     str(fd), str(self.cpus[1])], stdin=subprocess.PIPE,
                                    pass_fds=(fd,), start_new_session=True)
    finally:  # both sides hold the page now: no file is left behind, even if we are killed
      os.close(fd)
      os.unlink(self._path)

  def measure(self) -> float | None:
    """ns per round trip: the fastest of `batches` batches of `trips` (interpreter noise only
    adds, so the minimum is the placement's figure)."""
    if self._proc is None or self._proc.poll() is not None:
      return None
    a, mask = self._a, os.sched_getaffinity(0)
    os.sched_setaffinity(0, {self.cpus[0]})
    try:
      a[_BALL] = 0
      a[_GO] = 1
      try:
        self._proc.stdin.write(b'g')
        self._proc.stdin.flush()
      except OSError:  # the helper is gone
        return None
      best = float('inf')
      deadline = time.monotonic() + 10.0
      for _ in range(self.batches):
        t = time.perf_counter()
        for _ in range(self.trips):
          a[_BALL] = 1
          while a[_BALL] != 0:
            if time.monotonic() > deadline:  # the helper is not answering: no figure
              return None
        best = min(best, (time.perf_counter() - t) / self.trips)
      return best * 1e9
    finally:
      a[_GO] = 0
      os.sched_setaffinity(0, mask)

  def close(self) -> None:
    if self._proc is None:
      return
    try:
      self._proc.stdin.write(b'q')
      self._proc.stdin.close()
    except OSError:
      pass
    try:
      self._proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self._proc.kill()
      self._proc.wait()
    self._proc = None
    self._a.release()
    self._mm.close()

  def __enter__(self) -> CoreLatency:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def is_far(values: list[float | None], factor: float = FAR_FACTOR) -> list[bool | None]:
  """Per value: True if over `factor` x the fastest of `values` (None stays None)."""
  known = [v for v in values if v is not None]
  if not known:
    return [None] * len(values)
  floor = min(known)
  return [None if v is None else v > factor * floor for v in values]


@contextlib.contextmanager
def probe(enabled: bool) -> Iterator[Callable[[], float | None] | None]:
  """`CoreLatency().measure` for the block (its helper process stopped after), or None."""
  if not enabled:
    yield None
    return
  cl = CoreLatency()
  try:
    yield cl.measure
  finally:
    cl.close()


if __name__ == '__main__':
  _partner(int(sys.argv[1]), int(sys.argv[2]))
