"""Losses vs plain-numpy references, edge cases and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aesthetics_jax.train import losses


def np_bce(z, y):
  p = 1 / (1 + np.exp(-z.astype(np.float64)))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_emd(p, q, r):
  d = np.abs(np.cumsum(p, -1) - np.cumsum(q, -1)).astype(np.float64)
  return np.mean(d ** r, -1) ** (1 / r)


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_bce_matches_numpy_and_is_stable():
  rng = np.random.default_rng(0)
  z = rng.normal(0, 3, 64).astype(np.float32)
  y = rng.integers(0, 2, 64)
  np.testing.assert_allclose(losses.binary_cross_entropy(z, y), np_bce(z, y), rtol=1e-5,
                             atol=1e-6)
  # Extreme logits: finite, and ≈ |z| when wrong, ≈ 0 when right.
  big = jnp.array([1e4, -1e4, 1e4, -1e4])
  out = losses.binary_cross_entropy(big, jnp.array([0, 1, 1, 0]))
  np.testing.assert_allclose(out, [1e4, 1e4, 0, 0], atol=1e-3)
  g = jax.grad(lambda z: losses.binary_cross_entropy(z, jnp.array([0, 1, 1, 0])).sum())(big)
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize('r', [1.0, 2.0, 3.0])
def test_emd_matches_numpy(r):
  rng = np.random.default_rng(1)
  p = np_softmax(rng.normal(size=(16, 10)))
  q = np_softmax(rng.normal(size=(16, 10)) * 2)
  np.testing.assert_allclose(losses.emd(p, q, r), np_emd(p, q, r), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.emd_from_logits(np.log(p), q, r), np_emd(p, q, r),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('r', [100.0, 1000.0, 1e6])
def test_emd_of_a_large_r_is_near_the_largest_gap(r):
  """--config.loss.emd_r=1000 trained on a loss of 0 with no gradient (gaps^r underflowed in
  float32; at r=100 the value was a third of the right one) and the evaluation's emd said 0.
  The r-norm lies between N^(-1/r) and 1 times the largest CDF gap."""
  from aesthetics_jax.train import metrics
  rng = np.random.default_rng(1)
  p = np_softmax(rng.normal(size=(16, 10)))
  q = np_softmax(rng.normal(size=(16, 10)) * 2)
  top = np.abs(np.cumsum(p, -1) - np.cumsum(q, -1)).max(-1)
  e = np.asarray(losses.emd(p.astype(np.float32), q.astype(np.float32), r))
  assert np.all(e <= top * (1 + 1e-5)) and np.all(e >= top * 10 ** (-1 / r) * (1 - 1e-5))
  assert top.mean() * 10 ** (-1 / r) <= metrics.emd(p, q, r) <= top.mean()
  g = jax.grad(lambda z: losses.emd_from_logits(z, q, r).sum())(jnp.log(jnp.asarray(p)))
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3


@pytest.mark.parametrize('r', [0.5, 1.0, 2.0])
def test_emd_identical_is_zero_with_finite_grads(r):
  q = np.eye(10, dtype=np.float32)[[0, 4, 9]]  # one-hot targets
  logits = jnp.log(jnp.asarray(q) * 0.99 + 0.001)
  assert np.all(np.asarray(losses.emd(q, q, r)) == 0)
  g = jax.grad(lambda p: losses.emd(p, q, r).sum())(jnp.asarray(q))
  assert np.all(np.isfinite(g))
  g2 = jax.grad(lambda z: losses.emd_from_logits(z, q, r).sum())(logits)
  assert np.all(np.isfinite(g2)) and np.any(g2 != 0)
  # One-hot vs one-hot at distance k buckets: CDFs differ in k positions by 1.
  p = np.eye(10, dtype=np.float32)[[3]]
  t = np.eye(10, dtype=np.float32)[[6]]
  np.testing.assert_allclose(losses.emd(p, t, r), [(3 / 10) ** (1 / r)], rtol=1e-6)


def test_soft_cross_entropy_and_no_tag_rows():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(6, 66)).astype(np.float32)
  q = np.zeros((6, 66), np.float32)
  q[0, 3] = 1
  q[1, [5, 9]] = 0.5
  q[2, 65] = 1  # rows 3..5: no tag
  ref = -(q * np.log(np_softmax(z.astype(np.float64)))).sum(-1)
  np.testing.assert_allclose(losses.soft_cross_entropy(z, q), ref, rtol=1e-5)
  np.testing.assert_array_equal(losses.has_label(q), [1, 1, 1, 0, 0, 0])
  w = np.array([1, 2, 3, 4, 5, 6], np.float32)
  got = losses.weighted_mean(losses.soft_cross_entropy(z, q), w * losses.has_label(q))
  np.testing.assert_allclose(got, (ref[:3] * w[:3]).sum() / w[:3].sum(), rtol=1e-5)


def test_weighted_mean_and_zero_weights():
  v = jnp.array([1.0, 2.0, 4.0])
  np.testing.assert_allclose(losses.weighted_mean(v, jnp.array([1.0, 1.0, 2.0])), 11 / 4)
  assert float(losses.weighted_mean(v, jnp.zeros(3))) == 0.0
  g = jax.grad(lambda v: losses.weighted_mean(v, jnp.zeros(3)))(v)
  assert np.all(np.isfinite(g))


def test_model_loss_both_archs_and_padding():
  rng = np.random.default_rng(3)
  b = 4
  dist = np_softmax(rng.normal(size=(b, 10))).astype(np.float32)
  tags = np.zeros((b, 66), np.float32)
  tags[0, 1] = 1
  tags[1, [2, 3]] = 0.5
  batch = {'label': np.array([0, 1, 1, 0]), 'distribution': dist, 'tags': tags,
           'weight': np.array([1, 7, 1, 1], np.float32), 'mask': np.array([1, 1, 1, 0.])}
  logit = rng.normal(size=b).astype(np.float32)
  loss, parts = losses.model_loss({'logit': logit}, batch, 'vgg16')
  w = np.array([1, 7, 1, 0])
  np.testing.assert_allclose(loss, (np_bce(logit, batch['label']) * w).sum() / w.sum(),
                             rtol=1e-5)
  sl = rng.normal(size=(b, 10)).astype(np.float32)
  tl = rng.normal(size=(b, 66)).astype(np.float32)
  loss, parts = losses.model_loss({'score_logits': sl, 'tag_logits': tl}, batch,
                                  'mobilenet_v2', emd_r=2.0, tag_weight=0.5)
  e = (np_emd(np_softmax(sl), dist, 2) * w).sum() / w.sum()
  tw = w * np.array([1, 1, 0, 0])
  t = (-(tags * np.log(np_softmax(tl.astype(np.float64)))).sum(-1) * tw).sum() / tw.sum()
  np.testing.assert_allclose([parts['emd'], parts['tag_ce'], loss], [e, t, e + 0.5 * t],
                             rtol=1e-5)
  with pytest.raises(ValueError, match='arch'):
    losses.model_loss({'logit': logit}, batch, 'resnet')
