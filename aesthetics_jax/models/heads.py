"""Heads on the encoder's feature map A [B, h, w, C] (the Grad-CAM layer).

Each head starts with a parameter-free average pool; everything after it is trainable. A frozen
encoder's feature cache stores the pooled form (`model.cache_features`), which the heads also
accept, so training on the cache equals training on full maps (dropout comes after the pool in
both).

`MobileNetV2Heads`: global average pool → aesthetic (dropout → Dense 10 score buckets) and
attribute (Dense 66 tags) heads; optionally torchvision's ImageNet classifier (parity checks).
`VGGHead`: torchvision's classifier — adaptive average pool to P×P, flatten, fc6 → ReLU →
dropout → fc7 → ReLU → dropout — then a new Dense giving one logit (or ImageNet's fc8).
Flattening is NHWC; the converter permutes torch's NCHW-ordered fc6 rows to match.
"""
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision nn.Linear init in mobilenet_v2 / vgg: N(0, 0.01), zero bias.
DENSE_INIT = nn.initializers.normal(0.01)


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] averaging weights of torch's AdaptiveAvgPool (bins floor(i*n/m)..ceil((i+1)*n/m))."""
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, out_size: int) -> jax.Array:
  """torch `AdaptiveAvgPool2d(out_size)` on NHWC: [B, h, w, C] → [B, P, P, C].

  Separable because each bin is a rectangle; 2x2 → 7x7 replicates like torch. Identity (and
  skipped) when h = w = P, e.g. VGG16 at 224 px.
  """
  _, h, w, _ = x.shape
  if h == out_size and w == out_size:
    return x
  mh = jnp.asarray(adaptive_pool_matrix(h, out_size), x.dtype)
  mw = jnp.asarray(adaptive_pool_matrix(w, out_size), x.dtype)
  return jnp.einsum('bhwc,ih,jw->bijc', x, mh, mw)


def global_avg_pool(a: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """MobileNetV2's pool: [B, h, w, C] → [B, C] (mean in `dtype`)."""
  return jnp.mean(a.astype(dtype), axis=(1, 2))


class MobileNetV2Heads(nn.Module):
  """A [B, h, w, C] → {'score_logits' [B, 10], 'tag_logits' [B, 66]} (+ 'imagenet_logits').

  Also takes the already pooled A as [B, C] (the feature cache's form).
  """
  num_buckets: int = 10
  num_tags: int = 66
  dropout: float = 0.5
  imagenet_classes: int = 0   # >0 adds torchvision's `classifier.1` (parity checks only)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    chex.assert_rank(a, {2, 4})
    # [B, C]: pooled by the feature cache (global_avg_pool), the same op as here.
    pooled = global_avg_pool(a, self.dtype) if a.ndim == 4 else a.astype(self.dtype)
    dense = lambda n, name: nn.Dense(n, kernel_init=DENSE_INIT, dtype=self.dtype,
                                     param_dtype=jnp.float32, name=name)
    # Dropout on the aesthetic branch only (the attribute head is a plain Dense).
    score = dense(self.num_buckets, 'score')(
        nn.Dropout(self.dropout, deterministic=not train)(pooled))
    out = {'score_logits': score.astype(jnp.float32),
           'tag_logits': dense(self.num_tags, 'tags')(pooled).astype(jnp.float32)}
    if self.imagenet_classes:
      out['imagenet_logits'] = dense(self.imagenet_classes, 'classifier')(pooled).astype(
          jnp.float32)
    return out


class VGGHead(nn.Module):
  """A [B, h, w, C] → {'logit' [B]} (binary high/low), or {'imagenet_logits' [B, 1000]}.

  A [B, P, P, C] (the feature cache's form, `adaptive_avg_pool(A, P)`) skips the pool.
  """
  fc_dim: int = 4096
  pool_size: int = 7
  dropout: float = 0.5
  imagenet_classes: int = 0   # >0: torchvision's fc8 instead of the new binary logit
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    chex.assert_rank(a, 4)
    x = adaptive_avg_pool(a.astype(self.dtype), self.pool_size)
    x = x.reshape(x.shape[0], -1)  # NHWC flatten; fc6 rows are permuted by the converter
    dense = lambda n, name: nn.Dense(n, kernel_init=DENSE_INIT, dtype=self.dtype,
                                     param_dtype=jnp.float32, name=name)
    for name in ('fc6', 'fc7'):
      x = nn.relu(dense(self.fc_dim, name)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.imagenet_classes:
      return {'imagenet_logits': dense(self.imagenet_classes, 'fc8')(x).astype(jnp.float32)}
    return {'logit': dense(1, 'logit')(x)[:, 0].astype(jnp.float32)}
