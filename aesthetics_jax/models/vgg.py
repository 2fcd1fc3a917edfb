"""VGG16 encoder, layer for layer torchvision's `vgg16().features` (NHWC).

Module names are `features_<i>` with torchvision's Sequential index of each conv, so the
converter maps `features.<i>.weight` ↔ `encoder/features_<i>/kernel` directly.
A CAM layer is named by its torchvision path: `features.<i>` for every conv (before its ReLU),
ReLU (`features.22`, `features.29`) and max-pool (`features.30` is the encoder's output). A
conv's CAM weighs its ReLU'd output, as pytorch-grad-cam's on torchvision's VGG16, whose
`ReLU(inplace=True)` overwrites the tensor its hook recorded (`RECTIFIED_LAYERS`).
`width_mult` scales every conv's channels (from-scratch demo models, e.g. 0.125 → 8..64).
`conv3x3` picks each conv's algorithm (`uses_winograd`): the direct convolution, or Winograd
F(2x2, 3x3) (models/winograd.py), by default on CPU for convs with ≥ 256 output channels
(blocks 3-5 at full width); both read the same `kernel` and `bias`, so checkpoints and the
torchvision converter are unchanged.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aesthetics_jax.models import winograd

# torchvision cfg 'D'; 'M' = 2x2 max-pool, stride 2.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
             512, 512, 512, 'M')
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
CONV3X3_IMPLEMENTATIONS = ('auto', 'direct', 'winograd')
# 'auto' uses Winograd on CPU from this many output channels: measured in one process on 2
# AVX-512 cores (batch 32 in chunks of 2), Winograd for blocks 3-5 made the whole forward
# 1.24-1.5x faster, adding block 2 (128 channels) lost a third of that gain.
WINOGRAD_MIN_CHANNELS = 256


def sequence() -> tuple[tuple[int, str, int], ...]:
  """torchvision's `features` Sequential: (index, 'conv' | 'relu' | 'pool', cfg channels)."""
  out, idx = [], 0
  for v in VGG16_CFG:
    if v == 'M':
      out.append((idx, 'pool', 0))
      idx += 1
    else:
      out += [(idx, 'conv', v), (idx + 1, 'relu', 0)]
      idx += 2
  return tuple(out)


# torchvision module paths of `model.features`: features.0 (conv) ... features.30 (last pool).
LAYERS = tuple(f'features.{i}' for i, _, _ in sequence())


def scaled_channels(c: int, width_mult: float) -> int:
  return max(1, int(round(c * width_mult)))


def conv_layers(width_mult: float = 1.0):
  """[(torch Sequential index, out channels)] of the 13 convs."""
  layers, idx = [], 0
  for v in VGG16_CFG:
    if v == 'M':
      idx += 1
    else:
      layers.append((idx, scaled_channels(v, width_mult)))
      idx += 2  # conv, ReLU
  return layers


def uses_winograd(impl: str, out_channels: int) -> bool:
  """Whether a conv with `out_channels` runs Winograd under `config.model.conv3x3=impl`
  ('auto': on the CPU backend from WINOGRAD_MIN_CHANNELS; decided at trace time)."""
  if impl not in CONV3X3_IMPLEMENTATIONS:
    raise ValueError(f'config.model.conv3x3={impl!r}: use one of {CONV3X3_IMPLEMENTATIONS}')
  if impl == 'auto':
    return jax.default_backend() == 'cpu' and out_channels >= WINOGRAD_MIN_CHANNELS
  return impl == 'winograd'


def with_winograd_kernels(variables: dict, impl: str, width_mult: float = 1.0) -> dict:
  """`variables` plus a 'winograd' collection holding `winograd.kernel_transform` of every
  Winograd conv's kernel, which `WinogradConv3x3` then reads instead of transforming its
  kernel at each call: a chunked loop (`parallel.features_fn`) transforms them once."""
  enc = variables.get('params', {}).get('encoder', {})
  kernels = {}
  for idx, channels in conv_layers(width_mult):
    name = f'features_{idx}'
    if name in enc and uses_winograd(impl, channels):
      kernels[name] = {'u': winograd.kernel_transform(enc[name]['kernel'])}
  if not kernels:
    return variables
  return {**variables, 'winograd': {'encoder': kernels}}


class WinogradConv3x3(nn.Module):
  """`nn.Conv(features, (3, 3), padding=1)` by Winograd F(2x2, 3x3): the same params
  (`kernel` [3, 3, C, O] float32, `bias` [O]) and initialisers, so it replaces it freely."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', CONV_INIT, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    if self.has_variable('winograd', 'u'):  # precomputed by `with_winograd_kernels`
      u = self.get_variable('winograd', 'u')
    else:
      u = winograd.kernel_transform(kernel)
    x = x.astype(self.dtype)
    return winograd.conv3x3(x, u.astype(self.dtype)) + bias.astype(self.dtype)


def out_channels(width_mult: float = 1.0) -> int:
  return scaled_channels(512, width_mult)


class VGG16Encoder(nn.Module):
  """[B, H, W, 3] → [B, H/32, W/32, 512*width_mult] (after the last max-pool; 7x7x512 at 224).

  `after`/`until` (torchvision indices, -1 = the input, 30 = the last pool) run only the
  modules `after < i <= until`: the input is then the activation after module `after`.
  """
  width_mult: float = 1.0
  dtype: Any = jnp.float32
  conv3x3: str = 'auto'   # CONV3X3_IMPLEMENTATIONS; see `uses_winograd`

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, after: int = -1,
               until: int = len(LAYERS) - 1) -> jax.Array:
    del train  # no BN, no dropout in the features
    x = x.astype(self.dtype)
    for idx, kind, channels in sequence():
      if not after < idx <= until:
        continue
      if kind == 'pool':
        # torch MaxPool2d(2, 2): floor mode, no padding.
        x = nn.max_pool(x, (2, 2), (2, 2), padding='VALID')
      elif kind == 'relu':
        x = nn.relu(x)
      elif uses_winograd(self.conv3x3, out := scaled_channels(channels, self.width_mult)):
        x = WinogradConv3x3(out, self.dtype, name=f'features_{idx}')(x)
      else:
        x = nn.Conv(out, (3, 3),
                    padding=((1, 1), (1, 1)), kernel_init=CONV_INIT, dtype=self.dtype,
                    param_dtype=jnp.float32, name=f'features_{idx}')(x)
    return x
