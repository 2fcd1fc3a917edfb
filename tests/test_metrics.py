"""Eval metrics against scipy / hand-computed references (writers: tests/test_writers.py)."""
import numpy as np
import scipy.stats

from aesthetics_jax.train import metrics


def test_metrics_vs_references():
  rng = np.random.default_rng(0)
  n = 50
  true_mean = rng.normal(5.4, 0.8, n)
  pred_mean = true_mean + rng.normal(0, 0.5, n)
  np.testing.assert_allclose(metrics.lcc(pred_mean, true_mean),
                             scipy.stats.pearsonr(pred_mean, true_mean)[0], rtol=1e-10)
  ties = np.round(pred_mean)
  np.testing.assert_allclose(metrics.srcc(ties, true_mean),
                             scipy.stats.spearmanr(ties, true_mean)[0], rtol=1e-10)
  assert np.isnan(metrics.lcc(np.ones(n), true_mean))
  assert metrics.binary_accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
  p = np.full((2, 10), 0.1)
  q = np.eye(10)[[0, 9]]
  ref = np.mean([np.sqrt(np.mean((np.cumsum(p[i]) - np.cumsum(q[i])) ** 2)) for i in range(2)])
  np.testing.assert_allclose(metrics.emd(p, q), ref)


def test_tag_topk_hit_any_true_tag():
  scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],
                     [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],
                     [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
  tags = np.zeros((3, 6))
  tags[0, [3, 1]] = 0.5  # top-1 (index 1) is a true tag
  tags[1, 4] = 1         # rank 5 → top-5 hit only
  # row 2: no tag → excluded
  assert metrics.tag_topk(scores, tags, 1) == 0.5
  assert metrics.tag_topk(scores, tags, 5) == 1.0
  out = metrics.compute(
      {'label_pred': np.array([1, 0, 1]), 'mean_score': np.array([6., 4., 5.5]),
       'distribution': np.full((3, 10), 0.1), 'tag_probs': scores[:, :6]},
      {'label': np.array([1, 1, 1]), 'mean_score': np.array([6.5, 4.5, 5.2]),
       'distribution': np.full((3, 10), 0.1), 'tags': tags})
  assert out['binary_accuracy'] == 2 / 3 and out['majority_rate'] == 1.0
  assert out['emd'] == 0 and out['attribute_top1'] == 0.5 and out['num_test_images'] == 3
  vgg = metrics.compute({'label_pred': np.array([1, 0]), 'p_high': np.array([0.9, 0.2])},
                        {'label': np.array([1, 0]), 'mean_score': np.array([6., 4.])})
  assert abs(vgg['lcc_mean'] - 1.0) < 1e-12 and 'emd' not in vgg
