"""What a benchmark ran on: host, accelerator, libraries and settings.

Two machines of one kind (same cloud shape, same CPU model) still differ in clock, SIMD
extensions, allocated cores, neighbours' load, thread settings and library versions;
`info()` records what explains such differences next to the figures. torch's version is
read from its package metadata: torch is never imported here.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

import jax
from PIL import features as pil_features

from aesthetics_jax import cpu_backend, environment

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'pillow', 'tensorflow-datasets',
            'torch', 'torchvision', 'grad-cam', 'grain')
# Environment variables that set thread counts, allocators or XLA behaviour.
_ENV = ('XLA_FLAGS', 'JAX_PLATFORMS', 'JAX_ENABLE_X64', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS',
        'OPENBLAS_NUM_THREADS', 'TF_NUM_INTRAOP_THREADS', 'MALLOC_ARENA_MAX', 'GLIBC_TUNABLES',
        'AESTHETICS_JAX_CPU_DEFAULTS', 'LD_PRELOAD',
        'CUDA_VISIBLE_DEVICES', 'TF_CPP_MIN_LOG_LEVEL')


def xla_threads(xla_flags: str, cpus: int) -> int:
  """Intra-op threads XLA:CPU runs with: one per schedulable core (tsl's MaxParallelism, the
  affinity mask), or 1 with --xla_cpu_multi_thread_eigen=false."""
  if '--xla_cpu_multi_thread_eigen=false' in xla_flags.replace('False', 'false'):
    return 1
  return cpus


def _memory_total_gb() -> float | None:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return None


def _threads_now() -> int | None:
  """Threads of this process now (XLA's and the input pipeline's pools included)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Threads:'):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def info() -> dict[str, Any]:
  """Host, accelerator, library versions and the settings that change speed."""
  devices = jax.devices()
  out: dict[str, Any] = {
      'hostname': platform.node(), 'platform': platform.platform(),
      'processor': platform.processor() or platform.machine(),
      'python': sys.version.split()[0], 'cpu_count': cpu_backend.host_cpu_count(),
      'host_cpu_count': os.cpu_count(),
      'load_average': list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
      'memory_total_gb': _memory_total_gb(),
      'jax_backend': jax.default_backend(), 'devices': [str(d) for d in devices],
      'device_kind': devices[0].device_kind if devices else None,
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  out.update(environment.cpuinfo())
  out['vector_isa'] = environment.vector_isa(out.get('cpu_flags'),
                                             os.environ.get('XLA_FLAGS', ''))
  out['versions'] = {p: environment.package_version(p) for p in PACKAGES}
  out['env'] = {k: os.environ[k] for k in _ENV if k in os.environ}
  out['xla_flags'] = os.environ.get('XLA_FLAGS', '')
  # Where compiled executables may come from a persistent cache (first calls then time less).
  out['jax_compilation_cache_dir'] = jax.config.jax_compilation_cache_dir or None
  out['xla_intra_op_threads'] = xla_threads(out['xla_flags'], out['cpu_count'])
  out['jax_config'] = {k: str(getattr(jax.config, k, None)) for k in (
      'jax_default_matmul_precision', 'jax_enable_x64', 'jax_platforms')}
  out['process_threads'] = _threads_now()
  out['libjpeg_turbo'] = bool(pil_features.check('libjpeg_turbo'))
  # Transparent huge pages and the C library decide how much XLA:CPU's per-step temporaries
  # cost (cpu_backend: the malloc tunable needs glibc >= 2.35 and THP not 'never').
  out['transparent_hugepage'] = _thp_mode()
  glibc = cpu_backend.glibc_version()
  out['glibc'] = '.'.join(map(str, glibc)) if glibc else None
  return out


def _thp_mode() -> str | None:
  """The bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled (Linux), else None."""
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else text.strip() or None


# -- Who else used the CPUs while we timed ---------------------------------------------------
# A figure timed beside other work is not this machine's figure, and the two frameworks do not
# suffer alike: beside a 2-core job, PyTorch's OpenMP threads (which wait for the slowest
# thread at every op) lost an order of magnitude in one run where XLA's pool lost about a
# third. So every run records
# how much CPU others took (processes outside ours, and the hypervisor's steal) and the summary
# warns when it is more than a small share.
BUSY_WARN_CORES = 0.25  # others' average use (cores) above which the summary warns


def cpu_times() -> dict[str, float] | None:
  """Monotonic wall time, system-wide busy and stolen CPU seconds (/proc/stat) and this
  process's CPU seconds (its threads and its waited-for children). None where /proc/stat is
  missing or counts other CPUs than ours (a container on a bigger host: its figures would
  be the host's)."""
  try:
    with open('/proc/stat') as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  cpus = sum(1 for line in lines if line.startswith('cpu') and line[3:4].isdigit())
  if cpus != cpu_backend.host_cpu_count() or not lines or not lines[0].startswith('cpu '):
    return None
  # user nice system idle iowait irq softirq steal [guest guest_nice] (guest is in user)
  v = [int(x) for x in lines[0].split()[1:]]
  if len(v) < 8:
    return None
  hz = os.sysconf('SC_CLK_TCK')
  t = os.times()
  return {'wall': time.monotonic(), 'busy': (v[0] + v[1] + v[2] + v[5] + v[6]) / hz,
          'steal': v[7] / hz, 'ours': t.user + t.system + t.children_user + t.children_system,
          'cpus': cpus}


def cpu_share(before: dict[str, float] | None, after: dict[str, float] | None
              ) -> dict[str, Any] | None:
  """Average cores used between two `cpu_times()`: by us, by other processes, stolen by the
  hypervisor; and whether others took enough to make the timings unreliable."""
  if before is None or after is None:
    return None
  wall = after['wall'] - before['wall']
  if wall <= 0:
    return None
  ours = (after['ours'] - before['ours']) / wall
  busy = (after['busy'] - before['busy']) / wall
  steal = (after['steal'] - before['steal']) / wall
  # jiffies vs os.times() rounding: a few hundredths of a core either way.
  others = max(0.0, busy - ours)
  return {'seconds': round(wall, 1), 'cpus': after['cpus'], 'ours_cores': round(ours, 3),
          'others_cores': round(others, 3), 'steal_cores': round(steal, 3),
          'contended': bool(others + steal > BUSY_WARN_CORES)}


def share_warning(share: dict[str, Any] | None, what: str) -> str | None:
  """One line for the summary when others (or the hypervisor) took CPU during `what`."""
  if not share or not share['contended']:
    return None
  return (f"WARNING: during {what} other processes used {share['others_cores']:.2f} and the "
          f"hypervisor stole {share['steal_cores']:.2f} of {share['cpus']} cores on average "
          f"(ours {share['ours_cores']:.2f}): the figures are not this machine's, and "
          'PyTorch slows far more than XLA under contention; rerun on a quiet machine')
