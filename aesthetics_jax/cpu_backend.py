"""XLA:CPU settings every command applies before JAX starts its backends (`configure`).

Measured on a 2-core Xeon CPU (AVX512, AMX), one setting at a time in fresh processes
(forward: the feature cache's encode function; training: the demo configs' train step):

- `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: XLA:CPU hands each
  convolution to YNNPACK by default; MobileNetV2's convolutions (a 3-channel stem and 1x1
  convs on small chunks) run 2.4x faster without that (224 px forward, batch 32: 70 -> 168
  img/s), its full training step 1.1x (90 -> 100 img/s at 112 px), VGG16's head step 1.15x.
  Turning all of YNNPACK off instead made MobileNetV2's training step 2.8x slower.
- `--xla_force_host_platform_device_count=N` (N = the CPU cores this process may use, a power
  of two, at most 8): a single CPU device kept ~1.35 of 2 cores busy on our chunked
  inference; one device per core, with the batch sharded over them as on accelerators, runs
  the 224 px MobileNetV2 forward at 197 img/s instead of 168 (VGG16 6.4 vs 5.4) and leaves
  training unchanged.

A setting the user already put in XLA_FLAGS wins; `AESTHETICS_JAX_CPU_DEFAULTS=0` applies none.
Other backends (GPU/TPU) ignore both flags. Library users who want the same call
`aesthetics_jax.cpu_backend.configure()` before their first JAX computation.
"""
from __future__ import annotations

import os

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_VALUE = '-individual_convolution'
DEVICES_FLAG = '--xla_force_host_platform_device_count'
MAX_DEVICES = 8
OPT_OUT = 'AESTHETICS_JAX_CPU_DEFAULTS'


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # not Linux
    return os.cpu_count() or 1


def default_devices(cores: int | None = None) -> int:
  """The largest power of two <= min(cores, MAX_DEVICES): it divides every batch size that is
  a multiple of 8."""
  cores = usable_cores() if cores is None else cores
  n = 1
  while n * 2 <= min(max(1, cores), MAX_DEVICES):
    n *= 2
  return n


def flags_with_defaults(xla_flags: str, cores: int | None = None) -> str:
  """`xla_flags` with our two settings appended where the user has not set them."""
  parts = xla_flags.split()
  if not any(p.startswith(YNN_FLAG) for p in parts):
    parts.append(f'{YNN_FLAG}={YNN_VALUE}')
  if not any(p.startswith(DEVICES_FLAG) for p in parts):
    parts.append(f'{DEVICES_FLAG}={default_devices(cores)}')
  return ' '.join(parts)


def backends_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def configure() -> bool:
  """Adds the settings to XLA_FLAGS if JAX has not started its backends; True if applied."""
  if os.environ.get(OPT_OUT, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return False
  if backends_started():  # XLA read its flags already: changing them now does nothing
    return False
  os.environ['XLA_FLAGS'] = flags_with_defaults(os.environ.get('XLA_FLAGS', ''))
  return True
