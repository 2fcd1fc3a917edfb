"""Model outputs → predictions: what training, evaluation and prediction report."""
import jax
import jax.numpy as jnp


def predict_outputs(outputs: dict, arch: str) -> dict:
  """Model outputs → predictions (jit-able).

  mobilenet_v2: `distribution [B,10]` (softmax), `mean_score [B]` (expected score 1..10),
    `p_high [B]` (mass on buckets 6..10), `label_pred [B]` (mean_score > 5),
    `tag_probs [B,66]`.
  vgg16: `p_high [B]` (sigmoid), `label_pred [B]` (logit > 0).
  """
  if arch == 'vgg16':
    logit = outputs['logit'].astype(jnp.float32)
    return {'p_high': jax.nn.sigmoid(logit), 'label_pred': (logit > 0).astype(jnp.int32)}
  if arch == 'mobilenet_v2':
    dist = jax.nn.softmax(outputs['score_logits'].astype(jnp.float32), axis=-1)
    buckets = jnp.arange(1, dist.shape[-1] + 1, dtype=jnp.float32)
    mean = dist @ buckets
    return {'distribution': dist, 'mean_score': mean,
            'p_high': jnp.sum(jnp.where(buckets > 5, dist, 0.0), axis=-1),
            'label_pred': (mean > 5).astype(jnp.int32),
            'tag_probs': jax.nn.softmax(outputs['tag_logits'].astype(jnp.float32), axis=-1)}
  raise ValueError(f'unknown config.model.arch {arch!r}; use mobilenet_v2 or vgg16')
