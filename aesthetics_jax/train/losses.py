"""Per-sample losses and their weighted mean.

All losses return per-sample values `[B]`; `weighted_mean(l, w) = Σ w·l / Σ w` reduces them.
Padding rows (eval `mask == 0`) and images without tags simply get weight 0.
"""
import jax
import jax.numpy as jnp

from aesthetics_jax.train import metrics


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Σ w·l / Σ w over `[B]`; 0 (with zero gradient) when all weights are 0."""
  values = jnp.asarray(values, jnp.float32)
  weights = jnp.asarray(weights, jnp.float32)
  total = jnp.sum(weights)
  # Where-guarded so an all-padding batch gives 0, not NaN (0/0).
  safe_total = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, jnp.sum(weights * values) / safe_total, 0.0)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Numerically stable BCE on logits.

  Args:
    logits: `[B]` raw logits z.
    labels: `[B]` targets y in [0, 1] (int or float).
  Returns:
    `[B]` = -y log σ(z) - (1-y) log(1-σ(z)) = max(z,0) - y z + log1p(exp(-|z|)).
  """
  z = jnp.asarray(logits, jnp.float32)
  y = jnp.asarray(labels, jnp.float32)
  return jnp.maximum(z, 0.0) - y * z + jnp.log1p(jnp.exp(-jnp.abs(z)))


def _safe_pow(x: jax.Array, p: float) -> jax.Array:
  """x**p for x >= 0 with value 0 and gradient 0 at x == 0 (no inf/NaN for p < 1)."""
  positive = x > 0
  safe_x = jnp.where(positive, x, 1.0)
  return jnp.where(positive, safe_x ** p, 0.0)


def emd(probs: jax.Array, targets: jax.Array, r: float = 2.0) -> jax.Array:
  """Earth mover's distance between 10-bucket distributions (NIMA).

  EMD(p, q) = ((1/N) Σ_k |CDF_p(k) - CDF_q(k)|^r)^(1/r).

  Args:
    probs: `[B, N]` predicted distribution (e.g. softmax of score logits).
    targets: `[B, N]` normalised vote histogram.
    r: the norm's exponent (NIMA: 2).
  Returns:
    `[B]` per-sample EMD; exactly 0 with finite (zero) gradient for identical inputs.
  """
  probs = jnp.asarray(probs, jnp.float32)
  targets = jnp.asarray(targets, jnp.float32)
  chex_shape_check(probs, targets)
  diff = jnp.abs(jnp.cumsum(probs, axis=-1) - jnp.cumsum(targets, axis=-1))
  if r <= metrics.SCALE_EMD_ABOVE_R:
    return _safe_pow(jnp.mean(_safe_pow(diff, r), axis=-1), 1.0 / r)
  # Scaled by the row's largest gap (the norm is homogeneous): unscaled, gaps^r underflowed
  # to 0 in float32 for a large r (loss.emd_r=1000: a loss of 0 and no gradient, silently).
  top = jnp.max(diff, axis=-1, keepdims=True)
  inner = jnp.mean(_safe_pow(diff / jnp.where(top > 0, top, 1.0), r), axis=-1)
  return top[..., 0] * _safe_pow(inner, 1.0 / r)


def emd_from_logits(logits: jax.Array, targets: jax.Array, r: float = 2.0) -> jax.Array:
  """`emd(softmax(logits), targets, r)`; logits `[B, N]` → `[B]`."""
  return emd(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1), targets, r)


def soft_cross_entropy(logits: jax.Array, soft_labels: jax.Array) -> jax.Array:
  """Cross-entropy of a softmax over `[B, T]` logits against soft labels `[B, T]` → `[B]`.

  Rows whose soft labels sum to 0 (no tag) give 0; give them weight 0 via `has_label`.
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  q = jnp.asarray(soft_labels, jnp.float32)
  return -jnp.sum(q * logp, axis=-1)


def has_label(soft_labels: jax.Array) -> jax.Array:
  """`[B, T]` soft labels → `[B]` f32, 1 where the image has at least one tag."""
  return (jnp.sum(soft_labels, axis=-1) > 0).astype(jnp.float32)


def chex_shape_check(a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f'expected two [B, N] arrays of equal shape, got {a.shape} and {b.shape}')


def model_loss(outputs: dict, batch: dict, arch: str, emd_r: float = 2.0,
               tag_weight: float = 1.0) -> tuple[jax.Array, dict]:
  """The training objective for either architecture.

  Args:
    outputs: VGG `{'logit': [B]}` or MobileNetV2 `{'score_logits': [B,10], 'tag_logits': [B,66]}`.
    batch: needs `weight [B]` and `mask [B]` (optional) plus `label [B]` (VGG) or
      `distribution [B,10]` and `tags [B,66]` (MobileNetV2).
    arch: 'vgg16' | 'mobilenet_v2'.
  Returns:
    (scalar loss, dict of scalar parts).
  """
  w = jnp.asarray(batch['weight'], jnp.float32)
  if 'mask' in batch:
    w = w * jnp.asarray(batch['mask'], jnp.float32)
  if arch == 'vgg16':
    loss = weighted_mean(binary_cross_entropy(outputs['logit'], batch['label']), w)
    return loss, {'bce': loss}
  if arch == 'mobilenet_v2':
    emd_loss = weighted_mean(emd_from_logits(outputs['score_logits'], batch['distribution'],
                                             emd_r), w)
    tag_loss = weighted_mean(soft_cross_entropy(outputs['tag_logits'], batch['tags']),
                             w * has_label(batch['tags']))
    return emd_loss + tag_weight * tag_loss, {'emd': emd_loss, 'tag_ce': tag_loss}
  raise ValueError(f'unknown model.arch {arch!r}: use mobilenet_v2 or vgg16')
