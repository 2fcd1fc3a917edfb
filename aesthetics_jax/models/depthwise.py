"""3x3 depthwise convolution with two interchangeable implementations.

'conv'  : `lax.conv_general_dilated(feature_group_count=C)` — fast on GPU/TPU.
'shift' : 9 shifted multiply-adds over one padded copy — XLA:CPU runs grouped convs
          slowly (MobileNetV2 ~10 img/s vs ~50 img/s with 'shift', measured on 2 cores).
'auto'  : 'shift' on the CPU backend, 'conv' elsewhere (decided at trace time), unless
          AESTHETICS_JAX_DEPTHWISE_AUTO names one of the two. The test suite sets 'conv'
          (tests/conftest.py): 'shift' runs faster but its 9 slices per layer cost tiny test
          models twice the trace and compile time; tests/test_models.py checks that the two agree.

Both read the same parameter `kernel` of shape [3, 3, 1, C] (torch's (C,1,3,3) transposed
HWIO), so checkpoints move freely between them.
"""
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ('auto', 'conv', 'shift')
AUTO_ENV = 'AESTHETICS_JAX_DEPTHWISE_AUTO'


def resolve_impl(impl: str) -> str:
  """'auto' → $AESTHETICS_JAX_DEPTHWISE_AUTO if set, else 'shift' on CPU and 'conv' on
  accelerators; validates the name."""
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"config.model.depthwise={impl!r}: use one of {IMPLEMENTATIONS}")
  if impl == 'auto':
    forced = os.environ.get(AUTO_ENV, '').strip()
    if forced:
      if forced not in ('conv', 'shift'):
        raise ValueError(f"{AUTO_ENV}={forced!r}: use 'conv' or 'shift', or unset it")
      return forced
    return 'shift' if jax.default_backend() == 'cpu' else 'conv'
  return impl


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
  """Depthwise 3x3 conv, symmetric padding 1 (as torch), no bias.

  Args:
    x: [B, H, W, C].
    kernel: [3, 3, 1, C].
    stride: 1 or 2.
    impl: 'conv' | 'shift' | 'auto'.
  Returns:
    [B, (H-1)//stride+1, (W-1)//stride+1, C].
  """
  impl = resolve_impl(impl)
  c = x.shape[-1]
  if kernel.shape != (3, 3, 1, c):
    raise ValueError(f'depthwise kernel shape {kernel.shape} != (3, 3, 1, {c})')
  if impl == 'conv':
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)
  b, h, w, _ = x.shape
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  k = kernel[:, :, 0, :]  # [3, 3, C]
  out = None
  for i in range(3):
    for j in range(3):
      # Window (i, j) of every output pixel: rows i, i+s, ..., i+s*(ho-1).
      win = lax.slice(xp, (0, i, j, 0),
                      (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                      (1, stride, stride, 1))
      term = win * k[i, j]
      out = term if out is None else out + term
  return out


class DepthwiseConv3x3(nn.Module):
  """Bias-free 3x3 depthwise conv; param `kernel` [3, 3, 1, C]."""
  stride: int = 1
  impl: str = 'auto'
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (3, 3, 1, c), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return depthwise_conv(x, kernel, self.stride, self.impl)
