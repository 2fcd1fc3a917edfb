"""MobileNetV2 encoder, layer for layer torchvision's `mobilenet_v2(width_mult=...)`.

Module names mirror torchvision's `features.<i>` indices (`features_<i>`), so the weight
converter (`aesthetics_jax.models.pretrained`) is a table, and a CAM layer is named by its torchvision
path (`features.14` is the module `features_14`; `LAYERS` lists them).
Padding is explicit and symmetric ((1,1),(1,1)) like torch's padding=1; 'SAME' would pad
stride-2 convs asymmetrically and break parity.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from aesthetics_jax.models.depthwise import DepthwiseConv3x3

# torch: kaiming_normal_(mode='fan_out') for convs; BN eps 1e-5, momentum 0.1 (= flax 0.9).
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
BN_EPS = 1e-5
BN_MOMENTUM = 0.9

# (expand ratio t, channels c, repeats n, first stride s) — torchvision's table.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


# torchvision module paths of `model.features`: the stem, 17 inverted residuals, the last 1x1 conv.
LAYERS = tuple(f'features.{i}' for i in range(19))


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
  """torchvision's `_make_divisible`: round to a multiple of `divisor`, never below 90%."""
  if min_value is None:
    min_value = divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def block_specs(width_mult: float, round_nearest: int = 8):
  """Per inverted-residual block (index 1..17): (in, hidden, out, stride, expand_ratio)."""
  inp = make_divisible(32 * width_mult, round_nearest)
  specs = []
  for t, c, n, s in INVERTED_RESIDUAL_SETTING:
    out = make_divisible(c * width_mult, round_nearest)
    for i in range(n):
      stride = s if i == 0 else 1
      specs.append((inp, int(round(inp * t)), out, stride, t))
      inp = out
  return specs


def stem_channels(width_mult: float) -> int:
  return make_divisible(32 * width_mult, 8)


def last_channels(width_mult: float) -> int:
  return make_divisible(1280 * max(1.0, width_mult), 8)


class ConvBN(nn.Module):
  """Conv (no bias) → BatchNorm → optional ReLU6 (torchvision's Conv2dNormActivation)."""
  features: int
  kernel: int = 1
  stride: int = 1
  depthwise: bool = False
  act: bool = True
  depthwise_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.depthwise:
      x = DepthwiseConv3x3(stride=self.stride, impl=self.depthwise_impl, dtype=self.dtype,
                           name='conv')(x)
    else:
      p = (self.kernel - 1) // 2
      x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                  padding=((p, p), (p, p)), use_bias=False, kernel_init=CONV_INIT,
                  dtype=self.dtype, param_dtype=jnp.float32, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                     dtype=self.dtype, param_dtype=jnp.float32, name='bn')(x)
    return nn.relu6(x) if self.act else x


class InvertedResidual(nn.Module):
  """Expand 1x1 (if t != 1) → depthwise 3x3 → linear project 1x1 (+ residual)."""
  inp: int
  hidden: int
  out: int
  stride: int
  expand_ratio: int
  depthwise_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = x
    if self.expand_ratio != 1:
      y = ConvBN(self.hidden, 1, dtype=self.dtype, name='expand')(y, train)
    y = ConvBN(self.hidden, 3, self.stride, depthwise=True, depthwise_impl=self.depthwise_impl,
               dtype=self.dtype, name='depthwise')(y, train)
    y = ConvBN(self.out, 1, act=False, dtype=self.dtype, name='project')(y, train)
    if self.stride == 1 and self.inp == self.out:
      y = x + y
    return y


class MobileNetV2Encoder(nn.Module):
  """torchvision `mobilenet_v2(width_mult).features`, NHWC, or any contiguous run of it.

  [B, H, W, 3] → [B, ceil(H/32), ceil(W/32), last_channels(width_mult)] (7x7x1280 at 224).
  `after`/`until` (torchvision indices, -1 = the input, 18 = the last module) run only the
  modules `after < i <= until`: the input is then the activation after module `after`.
  """
  width_mult: float = 1.0
  depthwise_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, after: int = -1,
               until: int = len(LAYERS) - 1) -> jax.Array:
    x = x.astype(self.dtype)
    specs = block_specs(self.width_mult)
    for i in range(after + 1, until + 1):
      if i == 0:
        x = ConvBN(stem_channels(self.width_mult), 3, 2, dtype=self.dtype,
                   name='features_0')(x, train)
      elif i <= len(specs):
        inp, hidden, out, stride, t = specs[i - 1]
        x = InvertedResidual(inp, hidden, out, stride, t, self.depthwise_impl, self.dtype,
                             name=f'features_{i}')(x, train)
      else:
        x = ConvBN(last_channels(self.width_mult), 1, dtype=self.dtype,
                   name=f'features_{i}')(x, train)
    return x
