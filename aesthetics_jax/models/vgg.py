"""VGG16 encoder, layer for layer torchvision's `vgg16().features` (NHWC).

Module names are `features_<i>` with torchvision's Sequential index of each conv, so the
converter maps `features.<i>.weight` ↔ `encoder/features_<i>/kernel` directly.
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
  """[B, H, W, 3] → [B, H/32, W/32, 512*width_mult] (after the last max-pool; 7x7x512 at 224)."""
  width_mult: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no BN, no dropout in the features
    x = x.astype(self.dtype)
    idx = 0
    for v in VGG16_CFG:
      if v == 'M':
        # torch MaxPool2d(2, 2): floor mode, no padding.
        x = nn.max_pool(x, (2, 2), (2, 2), padding='VALID')
        idx += 1
      else:
        x = nn.Conv(scaled_channels(v, self.width_mult), (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=CONV_INIT, dtype=self.dtype, param_dtype=jnp.float32,
                    name=f'features_{idx}')(x)
        x = nn.relu(x)
        idx += 2
    return x
