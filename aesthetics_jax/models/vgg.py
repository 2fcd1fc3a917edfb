"""VGG16 encoder, layer for layer torchvision's `vgg16().features` (NHWC).

Module names are `features_<i>` with torchvision's Sequential index of each conv, so the
converter maps `features.<i>.weight` ↔ `encoder/features_<i>/kernel` directly.
A CAM layer is named by its torchvision path: `features.<i>` for every conv (before its ReLU),
ReLU (`features.22`, `features.29`) and max-pool (`features.30` is the encoder's output).
`width_mult` scales every conv's channels (from-scratch demo models, e.g. 0.125 → 8..64).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision cfg 'D'; 'M' = 2x2 max-pool, stride 2.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
             512, 512, 512, 'M')
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


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


def out_channels(width_mult: float = 1.0) -> int:
  return scaled_channels(512, width_mult)


class VGG16Encoder(nn.Module):
  """[B, H, W, 3] → [B, H/32, W/32, 512*width_mult] (after the last max-pool; 7x7x512 at 224).

  `after`/`until` (torchvision indices, -1 = the input, 30 = the last pool) run only the
  modules `after < i <= until`: the input is then the activation after module `after`.
  """
  width_mult: float = 1.0
  dtype: Any = jnp.float32

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
      else:
        x = nn.Conv(scaled_channels(channels, self.width_mult), (3, 3),
                    padding=((1, 1), (1, 1)), kernel_init=CONV_INIT, dtype=self.dtype,
                    param_dtype=jnp.float32, name=f'features_{idx}')(x)
    return x
