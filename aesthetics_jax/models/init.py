"""The one variable initialiser: `model.init`'s tree and distributions, filled by numpy.

Used by training from scratch, benchmarks and tests alike. `jax.jit(model.init)` compiles
threefry for every random kernel (~24 s for MobileNetV2 on 2 busy CPU cores, 2-11 s for the
demo models); `eval_shape` traces the structure at no compile cost and numpy fills it.
"""
from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def abstract_variables(model: nn.Module, image_size: int = 224) -> dict:
  """ShapeDtypeStruct tree `{'params': ..., 'batch_stats': ...}` of `model.init` (no compute);
  'batch_stats' is `{}` for models without BatchNorm. A fresh tree on every call (callers may
  edit it); the trace behind it is made once per (model, image_size) in a process."""
  try:
    shapes = _traced_variables(model, int(image_size))
  except TypeError:  # an unhashable model attribute: trace every time
    shapes = _traced_variables.__wrapped__(model, int(image_size))
  return jax.tree.map(lambda s: s, shapes)


# Memoised: tracing MobileNetV2's init takes ~1 s on 2 CPU cores and one training run asked
# for it up to five times (fresh init, restore, the feature cache's layout, inference). Linen
# modules hash and compare by their attributes, so equal models share the entry.
@functools.lru_cache(maxsize=16)
def _traced_variables(model: nn.Module, image_size: int) -> dict:
  rng = jax.random.key(0)
  shapes = jax.eval_shape(lambda: model.init({'params': rng, 'dropout': rng},
                                             jnp.zeros((1, image_size, image_size, 3)),
                                             train=False))
  shapes = flax.core.unfreeze(shapes)
  shapes.setdefault('batch_stats', {})
  return shapes


def init_variables(model: nn.Module, seed: int = 0, image_size: int = 224) -> dict:
  """`model.init` without XLA: same structure and distributions, filled by numpy.

  `jax.jit(model.init)` compiles threefry for every random kernel (~24 s for MobileNetV2 on
  2 busy CPU cores); this takes ~0.1 s (VGG16's 138M parameters: a few seconds). The modules'
  initializers are torchvision's, so: conv kernels (4-D) N(0, 2/fan_out) with fan_out =
  kh*kw*out (kaiming_normal, mode='fan_out'; depthwise too), Dense kernels N(0, 0.01²),
  biases and BN means 0, BN scales and variances 1.

  Returns host numpy variables `{'params': ..., 'batch_stats': ...}` ({} for VGG).
  """
  shapes = abstract_variables(model, image_size)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'kernel' and len(s.shape) == 4:
      std = np.sqrt(2.0 / (np.prod(s.shape[:-2]) * s.shape[-1]))
    elif name == 'kernel':
      std = 0.01
    else:
      return (np.ones if name in ('scale', 'var') else np.zeros)(s.shape, s.dtype)
    return (rng.standard_normal(s.shape, np.float32) * np.float32(std)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def starting_variables(model: nn.Module, config) -> dict:
  """The variables training starts from: `init_variables(model, config.seed)`, then the encoder
  of `config.model.init_weights` when set (ImageNet; the new heads keep their init). Host
  numpy. Raises `pretrained.PretrainedError` (one line) for a missing or mismatched file."""
  variables = init_variables(model, int(config.seed), int(config.input.image_size))
  path = str(config.model.init_weights)
  if not path:
    return variables
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  # Default dont_load keeps the new aesthetic / tag / binary outputs (and drops ImageNet's
  # 1000-way classifier); VGG's fc6/fc7 come from ImageNet as in torchvision.
  loaded = pretrained.load_pretrained(variables, path, arch=str(config.model.arch))
  return jax.device_get(flax.core.unfreeze(loaded))
