"""XLA:CPU settings every command applies before JAX starts its backends (`configure`).

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: XLA:CPU hands each
convolution to YNNPACK by default, and MobileNetV2's convolutions (the 3-channel stem, 1x1
convs on 2-image chunks) run slowly there. Measured on a 2-core Xeon CPU (AVX512, AMX), one
setting at a time in fresh processes, batch 32:
- MobileNetV2 224-px forward (the feature cache's encode function): 70 -> 168 img/s;
- MobileNetV2 full training step at 112 px (the demo config): 90 -> 100 img/s;
- VGG16 training step at 80 px: 203 -> 233 img/s; VGG16 224-px forward 6.3 -> 5.4 img/s.
Turning all of YNNPACK off instead (`=`, empty) made the MobileNetV2 training step 2.8x
slower. One CPU device per core (`--xla_force_host_platform_device_count=2`) ran that forward
at 197 img/s but cost training ~10% and the feature-cache head steps 6x (a cross-device
all-reduce per tiny step), so the device count is left alone.

A setting the user already put in XLA_FLAGS wins; `AESTHETICS_JAX_CPU_DEFAULTS=0` applies none.
Other backends (GPU/TPU) ignore the flag. Library users who want the same call
`aesthetics_jax.cpu_backend.configure()` before their first JAX computation.
"""
from __future__ import annotations

import os

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_VALUE = '-individual_convolution'
OPT_OUT = 'AESTHETICS_JAX_CPU_DEFAULTS'


def flags_with_defaults(xla_flags: str) -> str:
  """`xla_flags` with our setting appended unless the user has set that flag."""
  parts = xla_flags.split()
  if not any(p.startswith(YNN_FLAG) for p in parts):
    parts.append(f'{YNN_FLAG}={YNN_VALUE}')
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
