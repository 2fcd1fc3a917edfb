"""Sampling tests: balanced / per-epoch row draws, loss weights, metadata read once."""
import numpy as np
import pytest

from aesthetics_jax import parallel
from aesthetics_jax.data import pipeline
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import sampling
from source_fixture import CountingSource, make_source, take, tiny_config


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


def test_balanced_sampler_on_3_to_1_data():
  labels = np.array([0 if i % 4 == 0 else 1 for i in range(400)])  # 300 high, 100 low
  cdf = np.cumsum(sampling.balanced_probabilities(labels))
  idx = np.concatenate([sampling.train_indices(s, 400, 64, seed=3, cdf=cdf) for s in range(300)])
  frac_high = labels[idx].mean()
  assert abs(frac_high - 0.5) < 0.02, frac_high
  assert len(np.unique(idx)) > 390  # with replacement, but covers the data
  # deterministic in (seed, step); different steps/seeds differ
  np.testing.assert_array_equal(sampling.train_indices(7, 400, 64, 3, cdf),
                                sampling.train_indices(7, 400, 64, 3, cdf))
  assert not np.array_equal(sampling.train_indices(7, 400, 64, 3, cdf),
                            sampling.train_indices(8, 400, 64, 3, cdf))
  # unbalanced: uniform, each epoch a permutation (B does not divide N)
  idx = np.concatenate([sampling.train_indices(s, 50, 8, seed=1) for s in range(25)])  # 4 epochs
  for e in range(4):
    np.testing.assert_array_equal(np.sort(idx[e * 50:(e + 1) * 50]), np.arange(50))
  assert labels[idx].mean() != 0.5  # sanity: no balancing without cdf


def test_sample_weights_exact():
  mean = np.array([4.2, 6.5, 6.6, 4.5, 4.49, 5.0], np.float32)
  labels = np.array([0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(sampling.sample_weights(mean, labels, 'none'), np.ones(6))
  np.testing.assert_array_equal(sampling.sample_weights(mean, labels, 'score', 7.0, (4.5, 6.5)),
                                [7, 1, 7, 1, 7, 1])
  np.testing.assert_array_equal(sampling.sample_weights(mean, labels, 'score', 3.0, (4.0, 6.0)),
                                [1, 3, 3, 1, 1, 1])
  # class: w = N / (C * N_c); 3:1 data → high 4/(2*3) = 2/3, low 4/(2*1) = 2; mean 1
  w = sampling.sample_weights(np.zeros(4), np.array([1, 1, 1, 0]), 'class')
  np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0], rtol=1e-6)
  assert abs(w.mean() - 1.0) < 1e-6
  w = sampling.sample_weights(np.zeros(2), np.array([0, 1]), 'class', class_counts=[25, 75])
  np.testing.assert_allclose(w, [2.0, 2 / 3], rtol=1e-6)
  with pytest.raises(preprocess.InputError, match='weighting'):
    sampling.sample_weights(mean, labels, 'bogus')


def test_metadata_read_once_and_cached(tmp_path, mesh):
  src = CountingSource(make_source(8))
  c = tiny_config(prefetch=0, resized_cache_mb=0)  # every drawn row read (no resized cache)
  meta = sampling.read_metadata(src, tmp_path / 'meta.npz')
  assert src.reads == 8
  assert sampling.read_metadata(src) is meta and src.reads == 8
  take(pipeline.train_batches(src, c, mesh), 2)
  assert src.reads == 8 + 2 * 8  # only the batch rows' records are read again
  loaded = sampling.Metadata.load(tmp_path / 'meta.npz')
  np.testing.assert_array_equal(loaded.image_id, meta.image_id)
  np.testing.assert_array_equal(loaded.label, meta.label)
  np.testing.assert_allclose(loaded.tag_soft, meta.tag_soft)
  src2 = CountingSource(make_source(8))
  sampling.read_metadata(src2, tmp_path / 'meta.npz')  # precomputed path: no record reads
  assert src2.reads == 0


def _paper_split() -> sampling.Metadata:
  """The paper's training split: 6,405 high (mean 7) / 2,495 low (mean 3) rows."""
  n_high, n_low = 6405, 2495
  votes = np.zeros((n_high + n_low, 10), np.int32)
  votes[:n_high, 6] = 10
  votes[n_high:, 2] = 10
  return sampling.Metadata.from_arrays(np.arange(len(votes)), votes,
                                       np.zeros((len(votes), 2), np.int32))


def _loss_share_of_low(meta: sampling.Metadata, config) -> float:
  """Share of the loss mass the low class carries over one sampled epoch of `config`."""
  weights = pipeline.loss_weights(meta, config)
  cdf = (np.cumsum(sampling.balanced_probabilities(meta.label))
         if config.input.balanced else None)
  n, b = len(meta), int(config.batch_size)
  idx = np.concatenate([sampling.train_indices(s, n, b, int(config.seed), cdf)
                        for s in range(n // b)])
  w, low = weights[idx], meta.label[idx] == 0
  return float(w[low].sum() / w.sum())


def test_vgg16_class_weighting_is_the_sampler_not_a_second_loss_weight():
  """`vgg16_binary:class`: the paper's 1/N_c is the balanced sampler's weight; with 1/N_c
  loss weights on top the low class carried ~72% of the loss, now each class half."""
  from aesthetics_jax.configs import vgg16_binary
  meta = _paper_split()
  c = vgg16_binary.get_config('class')
  assert c.input.balanced
  assert abs(_loss_share_of_low(meta, c) - 0.5) < 0.03
  # The same weights from what the trainer calls (train_batches and the feature cache).
  weights, cdf = pipeline.train_sampling(meta, c)
  np.testing.assert_array_equal(weights, np.ones(len(meta)))
  np.testing.assert_allclose(cdf, np.cumsum(sampling.balanced_probabilities(meta.label)))
  # The paper's other weighting: x7 outside 4.5..6.5, on top of balanced sampling.
  s = vgg16_binary.get_config('score')
  assert s.input.balanced and set(pipeline.train_sampling(meta, s)[0]) == {7.0}
  # 1/N_c as a loss weight is still there, for unbalanced sampling: also half the loss.
  u = vgg16_binary.get_config('class')
  u.input.balanced, u.input.weighting = False, 'class'
  assert abs(_loss_share_of_low(meta, u) - 0.5) < 0.03


def test_class_loss_weights_with_balanced_sampling_are_refused(mesh):
  c = tiny_config(weighting='class', balanced=True)
  for call in (lambda: sampling.check_weighting(True, 'class'),
               lambda: pipeline.train_sampling(_paper_split(), c),
               lambda: next(pipeline.train_batches(make_source(8), c, mesh))):
    with pytest.raises(preprocess.InputError, match=r'counts 1/N_c twice') as e:
      call()
    assert '\n' not in str(e.value)
  sampling.check_weighting(False, 'class')   # unbalanced: 1/N_c as a loss weight is fine
  sampling.check_weighting(True, 'score')
