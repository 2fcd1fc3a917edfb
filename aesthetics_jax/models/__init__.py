"""Aesthetic classifiers: a torchvision-compatible encoder + task heads (flax linen, NHWC).

`create_model(config.model)` returns a module with
  `features(x [B,H,W,3], train=False) -> A [B,h,w,C]`  (torchvision `model.features(x)`),
  `head(A, train=False) -> outputs`,  `__call__(x, train=False) == head(features(x))`,
and, split at any torchvision module `L` of `model.features` ('features.14'; `model.LAYERS`):
  `features_until(x, L, train=False) -> A_L [B,h_L,w_L,C_L]` (the activation right after `L`),
  `features_between(A_L, L, M, train=False) -> A_M` (modules after L up to M, L before M),
  `rest(A_L, L, train=False) -> outputs` (the remaining encoder, then the head),
  `cache_features(A) -> C`, the part of the head before anything trainable (MobileNetV2: the
  global average pool, [B, C]; VGG16: the adaptive average pool to P×P, [B, P, P, C]), and
  `head` accepts C too: `head(cache_features(A)) == head(A)` (a frozen encoder's feature cache
  stores C, train/feature_cache.py),
so `rest(features_until(x, L), L) == __call__(x)`; `L=None` is `model.default_layer`, the
encoder's output (then `features_until == features`, `rest == head`). Activations are float32
whatever `dtype` computes in. Variables are `{'params': {'encoder', 'head'}, 'batch_stats':
{'encoder'}}`, with `'batch_stats': {}` for VGG (no BatchNorm). Dropout rng name: 'dropout'.
Outputs are float32 whatever `dtype` computes in.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import ml_collections
import jax
import jax.numpy as jnp

from aesthetics_jax.configs import default as default_config
from aesthetics_jax.models.depthwise import IMPLEMENTATIONS as DEPTHWISE_IMPLEMENTATIONS
from aesthetics_jax.models.depthwise import depthwise_conv, resolve_impl
from aesthetics_jax.models.init import abstract_variables, init_variables, starting_variables
from aesthetics_jax.models.heads import (MobileNetV2Heads, VGGHead, adaptive_avg_pool,
                                         global_avg_pool)
from aesthetics_jax.models import mobilenet_v2
from aesthetics_jax.models import vgg
from aesthetics_jax.models.mobilenet_v2 import MobileNetV2Encoder, make_divisible
from aesthetics_jax.models.vgg import VGG16Encoder

ARCHS = default_config.ARCHS
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def layer_index(layers: Sequence[str], layer: Optional[str], arch_name: str) -> int:
  """Position of torchvision module path `layer` in `layers` (None: the last); one-line
  ValueError naming the valid paths otherwise."""
  if layer is None:
    return len(layers) - 1
  if layer not in layers:
    raise ValueError(f'CAM layer {layer!r} is not a module of {arch_name} features; use one '
                     f"of {', '.join(layers)} (torchvision module paths)")
  return list(layers).index(layer)


def layer_names(layers: Sequence[str] | str | None) -> list:
  """The names a user's layer choice holds: a string split on commas, every name stripped,
  empty names skipped (in a list as in a string: predict's --cam_layers=features.14, is the
  list ['features.14', '']). [] is the caller's default (`resolve_layers`' or a checkpoint's
  config.eval.cam_layers: ['', ' '] chose neither, silently the model's last layer)."""
  if isinstance(layers, str):
    layers = layers.split(',')
  names = [p.strip() if isinstance(p, str) else p for p in layers or ()]
  return [p for p in names if p != '']


def resolve_layers(model: nn.Module, layers: Sequence[str] | str | None) -> tuple[str, ...]:
  """Validated layer names of `model`, shallowest first, duplicates dropped; empty or None
  → `(model.default_layer,)`. A string is split on commas ('features.14,features.18'); names
  are read by `layer_names` (stripped, empty ones skipped, in a list as in a string).
  """
  layers = layer_names(layers)
  if layers:
    # Any case ('Features.14'), as CAM methods and target names are read: the paths are
    # lower case, so 'FEATURES.18' names one module and was refused for its case alone.
    layers = [p.lower() if isinstance(p, str) and p.lower() in model.LAYERS else p
              for p in layers]
  if not layers:
    return (model.default_layer,)
  idx = {layer_index(model.LAYERS, name, model.ARCH): name for name in layers}
  return tuple(idx[i] for i in sorted(idx))


class _SplitEncoder(nn.Module):
  """`features_until` / `features_between` / `rest` for a model whose `_encoder(x, train,
  after, until)` runs torchvision modules `after < i <= until` of `LAYERS`."""
  ARCH = ''    # config.model.arch (set by each model)
  LAYERS = ()  # torchvision module paths, shallowest first (set by each model)
  # Layers whose torchvision output the next module, a ReLU(inplace=True), overwrites: a hook
  # on them (pytorch-grad-cam's) records the rectified tensor (`cam.compute_layers_many`).
  RECTIFIED_LAYERS = frozenset()

  @property
  def default_layer(self) -> str:
    return self.LAYERS[-1]

  def _encoder_train(self, train: bool) -> bool:
    return train

  def _index(self, layer: Optional[str]) -> int:
    return layer_index(self.LAYERS, layer, self.ARCH)

  def features_until(self, x: jax.Array, layer: Optional[str] = None,
                     train: bool = False) -> jax.Array:
    """[B, H, W, 3] → A_layer [B, h, w, C] float32, the output of torchvision module `layer`."""
    return self._encoder(x, self._encoder_train(train), until=self._index(layer)).astype(
        jnp.float32)

  def features_between(self, a: jax.Array, after: str, until: str,
                       train: bool = False) -> jax.Array:
    """A_after → A_until (float32): the modules after `after`, up to and including `until`."""
    i, j = self._index(after), self._index(until)
    if j <= i:
      raise ValueError(f'features_between: {until!r} does not come after {after!r}')
    return self._encoder(a, self._encoder_train(train), after=i, until=j).astype(jnp.float32)

  def rest(self, a: jax.Array, layer: Optional[str] = None,
           train: bool = False) -> dict[str, jax.Array]:
    """A_layer → outputs: the encoder after `layer`, then the head."""
    feats = self._encoder(a, self._encoder_train(train), after=self._index(layer))
    return self.head(feats.astype(jnp.float32), train)


class MobileNetV2Aesthetic(_SplitEncoder):
  """Two-headed MobileNetV2: {'score_logits' [B,10], 'tag_logits' [B,66]}."""
  ARCH = 'mobilenet_v2'
  LAYERS = mobilenet_v2.LAYERS
  # parallel.features_fn: blocks 0-6 (maps >= 28x28 at 224 px) `chunk` images a step, the
  # rest 4x as many. Batch 32 in one process, interleaved, 15 rounds on 2 cores: 160 -> 180
  # img/s against chunks of 2 throughout (2 then 4: 170; whole batch after block 6: 147).
  CHUNK_SPLIT = ('features.6', 4)
  width_mult: float = 1.0
  num_buckets: int = 10
  num_tags: int = 66
  dropout: float = 0.5
  depthwise: str = 'auto'
  dtype: Any = jnp.float32
  freeze_encoder: bool = False   # frozen ⇒ encoder BN always uses its running statistics
  imagenet_classes: int = 0

  def setup(self):
    # Explicit names: the method `head` would otherwise clash with the submodule's name.
    self._encoder = MobileNetV2Encoder(self.width_mult, self.depthwise, self.dtype,
                                       name='encoder')
    self._head = MobileNetV2Heads(self.num_buckets, self.num_tags, self.dropout,
                                  self.imagenet_classes, self.dtype, name='head')

  def _encoder_train(self, train: bool) -> bool:
    return train and not self.freeze_encoder

  def features(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, 3] → A [B, ceil(H/32), ceil(W/32), C] float32 (C = 1280 for width ≤ 1)."""
    return self._encoder(x, self._encoder_train(train)).astype(jnp.float32)

  def cache_features(self, a: jax.Array) -> jax.Array:
    """A [B, h, w, C] → [B, C] f32: the head's global average pool (dropout comes after it)."""
    return global_avg_pool(a, self.dtype).astype(jnp.float32)

  def head(self, a: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """A [B, h, w, C], or its pooled [B, C] (`cache_features`) → outputs."""
    return self._head(a, train)

  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    return self.head(self.features(x, train), train)


class VGG16Binary(_SplitEncoder):
  """VGG16 with torchvision's classifier and a new one-logit output: {'logit' [B]}."""
  ARCH = 'vgg16'
  LAYERS = vgg.LAYERS
  RECTIFIED_LAYERS = frozenset(f'features.{i}' for i, _ in vgg.conv_layers())
  width_mult: float = 1.0
  fc_dim: int = 4096
  pool_size: int = 7
  dropout: float = 0.5
  dtype: Any = jnp.float32
  freeze_encoder: bool = False   # VGG features have no BN: nothing changes with train
  imagenet_classes: int = 0
  conv3x3: str = 'auto'          # vgg.CONV3X3_IMPLEMENTATIONS: direct or Winograd convs

  def setup(self):
    self._encoder = VGG16Encoder(self.width_mult, self.dtype, self.conv3x3, name='encoder')
    self._head = VGGHead(self.fc_dim, self.pool_size, self.dropout, self.imagenet_classes,
                         self.dtype, name='head')

  @nn.nowrap
  def inference_variables(self, variables: dict) -> dict:
    """`variables` with the Winograd kernels precomputed (`vgg.with_winograd_kernels`): pass
    the result to `apply` in a loop over chunks, so the transform runs once per call."""
    return vgg.with_winograd_kernels(variables, self.conv3x3, self.width_mult)

  def features(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, 3] → A [B, H/32, W/32, 512*width_mult] float32."""
    return self._encoder(x, train).astype(jnp.float32)

  def cache_features(self, a: jax.Array) -> jax.Array:
    """A [B, h, w, C] → [B, P, P, C] f32: the adaptive pool before flatten → fc6 (identity at
    224 px, where h = w = P = 7); fc6 needs the whole map. A smaller map (h*w < P*P, which
    the pool would replicate) is kept as it is: the head pools it the same way."""
    if a.shape[1] * a.shape[2] < self.pool_size ** 2:
      return a.astype(jnp.float32)
    return adaptive_avg_pool(a.astype(self.dtype), self.pool_size).astype(jnp.float32)

  def head(self, a: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """A [B, h, w, C], or its pooled [B, P, P, C] (`cache_features`) → outputs."""
    return self._head(a, train)

  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    return self.head(self.features(x, train), train)


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`config.model` of configs/default.py with `overrides` (e.g. `arch='vgg16'`): the one
  place a model's settings default, for callers that build a model without a full config."""
  c = default_config.get_config().model
  c.update(overrides)
  return c


def create_model(model_config, imagenet_classes: int = 0) -> nn.Module:
  """Builds the model named by `model_config.arch` ('mobilenet_v2' | 'vgg16').

  Reads `arch, width_mult, fc_dim, num_buckets, num_tags, dropout, depthwise, conv3x3, dtype,
  freeze_encoder, vgg_pool_size` (7: torch's adaptive pool to 7x7, which replicates small
  maps; smaller values shrink fc6 for low-resolution demo models) as attributes: a
  `config.model` ConfigDict or any object with them (e.g. `models.model_config(...)`).
  `imagenet_classes > 0` adds torchvision's ImageNet classifier (parity checks only).
  """
  c = model_config  # `config.model` (every key: configs/default.py)
  if c.dtype not in _DTYPES:
    raise ValueError(f"config.model.dtype={c.dtype!r}: use one of {tuple(_DTYPES)}")
  resolve_impl(c.depthwise)  # validate early
  vgg.uses_winograd(c.conv3x3, 0)
  common = dict(width_mult=float(c.width_mult), dropout=float(c.dropout),
                dtype=_DTYPES[c.dtype], freeze_encoder=bool(c.freeze_encoder),
                imagenet_classes=imagenet_classes)
  if c.arch == 'mobilenet_v2':
    return MobileNetV2Aesthetic(num_buckets=int(c.num_buckets), num_tags=int(c.num_tags),
                                depthwise=c.depthwise, **common)
  if c.arch == 'vgg16':
    return VGG16Binary(fc_dim=int(c.fc_dim), pool_size=int(c.vgg_pool_size),
                       conv3x3=c.conv3x3, **common)
  raise ValueError(f"config.model.arch={c.arch!r}: use one of {ARCHS}")


__all__ = ['ARCHS', 'DEPTHWISE_IMPLEMENTATIONS', 'MobileNetV2Aesthetic', 'VGG16Binary',
           'adaptive_avg_pool', 'abstract_variables', 'create_model', 'model_config',
           'depthwise_conv', 'init_variables', 'layer_index', 'layer_names', 'make_divisible',
           'resolve_impl', 'resolve_layers', 'starting_variables']
