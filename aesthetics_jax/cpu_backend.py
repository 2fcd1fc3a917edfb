"""XLA:CPU settings every command applies before JAX starts its backends (`configure`).

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: XLA:CPU hands each
convolution to YNNPACK by default, and MobileNetV2's convolutions (the 3-channel stem, 1x1
convs on 2-image chunks) run slowly there. Measured on a 2-core Xeon CPU (AVX512, AMX), one
setting at a time in fresh processes, batch 32:
- MobileNetV2 224-px forward (the feature cache's encode function): 70 -> 168 img/s;
- MobileNetV2 full training step at 112 px (the demo config): 90 -> 100 img/s;
- VGG16 training step at 80 px: 203 -> 233 img/s; VGG16 224-px forward 6.3 -> 5.4 img/s.
Turning all of YNNPACK off instead (`=`, empty) made the MobileNetV2 training step 2.8x
slower.

`--xla_force_host_platform_device_count=<cores>` (one CPU device per core, at most
`MAX_CPU_DEVICES`): inference and explanations shard each batch over the devices
(`parallel.make_mesh`), so each core runs its own images start to finish. With one device,
XLA splits every op over both cores and hands data between them at each op; how much that
costs depends on where the hypervisor put the two vCPUs. Measured on a 2-core EPYC VM
(MobileNetV2 Grad-CAM step, batch 32, 224 px, img/s; docs/benchmarks/
2026-12-04-cpu-2core-epyc-zen4-placement-probe.*): vCPUs sharing a cache ('near', ~50 ns core
to core) 217 with one device, 218 with two; 'far' (320-1,500 ns) 99 with one, 225 with two.
Training keeps one device per process (`parallel.train_mesh`): two cost it ~10% and the
feature-cache head steps 6x (a cross-device all-reduce per tiny step); a computation on one
of the devices still uses every core (MobileNetV2 forward 211 img/s either way).

`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (`reexec_with_malloc_tunable`, glibc >= 2.35 only):
XLA:CPU mallocs its temporaries for every execution, and glibc serves a large one with a fresh
mmap whose 4 KB pages all fault on first touch (and are zeroed) every step. With the tunable,
malloc asks for transparent huge pages (`madvise`), 512x fewer faults. glibc reads tunables only
at start-up, so a command re-executes itself once, before any JAX work, with the variable
set. Measured (same machine, fresh processes, batch 32): VGG16 paper-head step over cached
features 388 -> 247 ms (its fc6 gradient is a 411 MB temporary); MobileNetV2 224-px forward
138 -> 170 img/s; VGG16 forward 5.0 -> 5.2 img/s; peak RSS +3%. It also bounds a long
stream's memory: the study streamed over 16,000 images stayed at 797 MB from image 3,488 on
with the tunable and crept 720 -> 882 MB without it (bench --what=scaling's traced child).

A setting the user already put in XLA_FLAGS (or GLIBC_TUNABLES) wins (a device count set
there also trains on every device);
`AESTHETICS_JAX_CPU_DEFAULTS=0` applies none. Other backends (GPU/TPU) ignore the XLA flag.
Library users who want the same call `aesthetics_jax.cpu_backend.configure()` before their
first JAX computation, and start Python with the tunable in the environment.
"""
from __future__ import annotations

import os
import sys

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_VALUE = '-individual_convolution'
OPT_OUT = 'AESTHETICS_JAX_CPU_DEFAULTS'
MALLOC_TUNABLE = 'glibc.malloc.hugetlb'
MALLOC_VALUE = '1'
DEVICES_FLAG = '--xla_force_host_platform_device_count'
MAX_CPU_DEVICES = 8
# Set by `configure` to the device count it added: tells `devices_added` (training's mesh) that
# the count is ours, in this process and in the children it starts.
DEVICES_ADDED = 'AESTHETICS_JAX_CPU_DEVICES_ADDED'


def env_off(name: str) -> bool:
  """True if environment variable `name` says off (0, false, no, off); unset means on."""
  return os.environ.get(name, '1').strip().lower() in ('0', 'false', 'no', 'off')


def _opted_out() -> bool:
  return env_off(OPT_OUT)


def append_missing(xla_flags: str, flags: tuple[str, ...]) -> str:
  """`xla_flags` with each `--name=value` of `flags` appended unless `--name` is set there."""
  parts = xla_flags.split()
  for flag in flags:
    if not any(p.split('=')[0] == flag.split('=')[0] for p in parts):
      parts.append(flag)
  return ' '.join(parts)


def cpu_devices(cores: int) -> int:
  """CPU devices `configure` asks for on `cores` cores: one per core, at most
  `MAX_CPU_DEVICES` (measured on 2 cores; beyond 8 a batch of 32 would leave each device
  fewer images than a micro-batch)."""
  return max(1, min(int(cores), MAX_CPU_DEVICES))


def flags_with_defaults(xla_flags: str, cores: int = 1) -> str:
  """`xla_flags` with our settings appended unless the user has set that flag: YNNPACK's, and
  with `cores` >= 2 one CPU device per core."""
  ours = [f'{YNN_FLAG}={YNN_VALUE}']
  if cpu_devices(cores) > 1:
    ours.append(f'{DEVICES_FLAG}={cpu_devices(cores)}')
  return append_missing(xla_flags, tuple(ours))


def _device_flag(xla_flags: str) -> str | None:
  """The value of `DEVICES_FLAG` in `xla_flags` (the last one, as XLA reads them), or None."""
  values = [p.split('=', 1)[1] for p in xla_flags.split() if p.startswith(DEVICES_FLAG + '=')]
  return values[-1] if values else None


# The most CPU devices a command starts with when the user sets the count in XLA_FLAGS: JAX's
# start grows with it.
MAX_USER_CPU_DEVICES = 4096


def device_flag_problem(xla_flags: str | None = None) -> str | None:
  """One line if XLA_FLAGS sets a CPU device count XLA cannot use (0, negative, not a whole
  number): 0 ended every command in a RuntimeError traceback ('Could not determine
  process_index'), -1 in one about vector::reserve, 'eight' or 2.5 in XLA's list of all its
  flags. None when the count is usable or not set."""
  value = _device_flag(os.environ.get('XLA_FLAGS', '') if xla_flags is None else xla_flags)
  if value is None:
    return None
  try:
    if 1 <= int(value) <= MAX_USER_CPU_DEVICES:
      return None
    if int(value) > MAX_USER_CPU_DEVICES:  # each costs memory: 100,000 were killed at 22 GB
      return (f'XLA_FLAGS: {DEVICES_FLAG}={value}: at most {MAX_USER_CPU_DEVICES} CPU devices '
              '(4,096 take ~0.6 GB and 8 s to start; 100,000 ran out of memory before any '
              'work), or leave it out (one per core)')
  except ValueError:
    pass
  return (f'XLA_FLAGS: {DEVICES_FLAG}={value}: pass a whole number of CPU devices, 1 or more '
          f'(e.g. {DEVICES_FLAG}=8), or leave it out (one per core)')


def devices_added() -> bool:
  """True if this process's CPU devices are `configure`'s one per core (set by it here or in
  the parent that started this process), not a count the user chose in XLA_FLAGS."""
  added = os.environ.get(DEVICES_ADDED, '')
  return bool(added) and _device_flag(os.environ.get('XLA_FLAGS', '')) == added


def backends_started() -> bool:
  if 'jax' not in sys.modules:  # not even imported: importing it to ask would cost seconds
    return False
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def configure() -> bool:
  """Adds the settings to XLA_FLAGS if JAX has not started its backends; True if applied."""
  if _opted_out():
    return False
  if backends_started():  # XLA read its flags already: changing them now does nothing
    return False
  before = os.environ.get('XLA_FLAGS', '')
  after = os.environ['XLA_FLAGS'] = flags_with_defaults(before, host_cpu_count())
  if _device_flag(before) is None and _device_flag(after) is not None:
    os.environ[DEVICES_ADDED] = _device_flag(after)  # children inherit both
  return True


def host_cpu_count() -> int:
  """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset), >= 1."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # no sched_getaffinity (macOS, Windows)
    return max(1, os.cpu_count() or 1)


def physical_memory() -> int | None:
  """Bytes of RAM this machine has (None where the OS does not say)."""
  try:
    return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (OSError, ValueError):
    return None


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library when it is glibc, else None (musl, macOS, Windows)."""
  try:
    name, version = os.confstr('CS_GNU_LIBC_VERSION').split()
  except (AttributeError, ValueError, OSError):
    return None
  if name != 'glibc':
    return None
  try:
    major, minor = (int(x) for x in version.split('.')[:2])
  except ValueError:
    return None
  return major, minor


def tunables_with_malloc(tunables: str) -> str | None:
  """GLIBC_TUNABLES with ours added; None when the user already set that tunable."""
  parts = [p for p in tunables.split(':') if p]
  if any(p.split('=')[0] == MALLOC_TUNABLE for p in parts):
    return None
  return ':'.join(parts + [f'{MALLOC_TUNABLE}={MALLOC_VALUE}'])


def reexec_with_malloc_tunable() -> None:
  """Re-executes this command once with the malloc tunable (see module doc); returns if not
  needed (set already, opted out, not glibc >= 2.35, or JAX has started)."""
  if _opted_out() or (glibc_version() or (0, 0)) < (2, 35):
    return
  tunables = tunables_with_malloc(os.environ.get('GLIBC_TUNABLES', ''))
  if tunables is None or 'jax' in sys.modules and backends_started():
    return
  previous = os.environ.get('GLIBC_TUNABLES')
  os.environ['GLIBC_TUNABLES'] = tunables  # also what breaks the loop: set on the second run
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
  except OSError:  # e.g. the interpreter replaced or no longer executable (EACCES, ENOENT):
    # the tunable only saves memory, so this run goes on without it (it was a traceback)
    if previous is None:
      del os.environ['GLIBC_TUNABLES']
    else:
      os.environ['GLIBC_TUNABLES'] = previous


# Per-executable options (`jax.jit(..., compiler_options=...)`): XLA flags are per process,
# but a DebugOptions field given at compile time applies to that one executable. VGG16's
# encoder is 13 large 3x3 convolutions; YNNPACK fuses each block's convolutions up to its
# max-pool into one op that runs them slower than XLA's own convolution emitter here, while
# MobileNetV2 and narrow VGG16s are faster with YNNPACK. Measured on the 2-core Xeon, batch
# 32, float32, each variant compiled in one process and timed interleaved (5 rounds,
# medians; outputs equal to 1e-7, maps to 7e-6):
# - full VGG16 at 224 px, forward: 7.5 (process setting) -> 9.1 img/s without YNNPACK
#   (8.4 with YNNPACK dots only); Grad-CAM step: 6.8 -> 8.3 with YNNPACK dots only
#   (8.0 without YNNPACK: the head's vjp runs faster on YNNPACK's dot);
# - width 0.25 at 80 px (a demo model): forward 187 -> 226 img/s but Grad-CAM 179 -> 122
#   without YNNPACK, so narrow models keep the process setting.
# Options are per kind of work: 'forward' (inference, the feature cache's encode step) and
# 'cam' (encoder + head vjp); everything else keeps the setting above.
_YNN = 'xla_cpu_experimental_ynn_fusion_type'
ENCODER_OPTIONS = {'vgg16': {'min_width': 1.0,
                             'forward': {_YNN: ''},
                             'cam': {_YNN: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}}}
WORKS = ('forward', 'cam')


def _user_set_ynn() -> bool:
  """True if the user's XLA_FLAGS name the YNNPACK flag with another value than ours."""
  return any(p.startswith(YNN_FLAG) and p != f'{YNN_FLAG}={YNN_VALUE}'
             for p in os.environ.get('XLA_FLAGS', '').split())


def options_key(options: dict | None) -> tuple | None:
  """`encoder_options`' result as a hashable key (for memoised jit builders); None stays."""
  return tuple(sorted(options.items())) if options else None


def encoder_options(model, work: str = 'forward') -> dict | None:
  """`compiler_options` for a jit dominated by `model`'s encoder (`jax.jit(fn,
  compiler_options=encoder_options(model, 'cam'))`): the measured faster XLA:CPU setting
  for that architecture and kind of work (`ENCODER_OPTIONS`); None on other backends, for
  other models, when the user set the YNNPACK flag themselves, or with
  AESTHETICS_JAX_CPU_DEFAULTS=0."""
  if work not in WORKS:
    raise ValueError(f'encoder_options(work={work!r}): use one of {WORKS}')
  rule = ENCODER_OPTIONS.get(getattr(model, 'ARCH', None))
  if rule is None or getattr(model, 'width_mult', 1.0) < rule['min_width']:
    return None
  if _opted_out() or _user_set_ynn():
    return None
  import jax  # pylint: disable=import-outside-toplevel
  return dict(rule[work]) if jax.default_backend() == 'cpu' else None
