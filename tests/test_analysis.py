"""Intensity study statistics against scipy and on data with a known relation."""
import numpy as np
import pytest
from scipy import stats

from aesthetics_jax.evaluation import streaming
from aesthetics_jax.evaluation import study
from aesthetics_jax.evaluation.evaluators import intensity as intensity_eval


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  s = rng.normal(5.4, 0.9, 400)
  x = 0.3 + 0.05 * (s - 5.4) + rng.normal(0, 0.05, 400)  # known positive relation
  return x, s


def test_correlations_match_scipy(data):
  x, s = data
  r = study.pearson_with_ci(x, s, num_bootstrap=300, seed=1)
  ref = stats.pearsonr(x, s)
  assert r['r'] == pytest.approx(ref[0], abs=1e-12) and r['p'] == pytest.approx(ref[1], rel=1e-9)
  assert r['ci_low'] < r['r'] < r['ci_high'] and r['n'] == 400
  rho = study.spearman_with_ci(x, s, num_bootstrap=300, seed=1)
  ref = stats.spearmanr(x, s)
  assert rho['r'] == pytest.approx(ref[0], abs=1e-12) and rho['p'] == pytest.approx(ref[1], rel=1e-9)
  # Seeded: same seed → same CI; different seed → different CI.
  assert study.pearson_with_ci(x, s, 300, seed=1) == r
  assert study.pearson_with_ci(x, s, 300, seed=2)['ci_low'] != r['ci_low']
  # Bootstrap CI width is close to the Fisher-z interval's.
  z = np.arctanh(r['r'])
  lo, hi = np.tanh(z - 1.96 / np.sqrt(397)), np.tanh(z + 1.96 / np.sqrt(397))
  assert abs((r['ci_high'] - r['ci_low']) - (hi - lo)) < 0.03
  assert np.isnan(study.pearson_with_ci([1, 1, 1, 1], [1, 2, 3, 4])['r'])


def test_extremes_strengthen_a_relation_visible_only_at_the_tails():
  rng = np.random.default_rng(3)
  s = rng.uniform(2, 9, 2000)
  x = np.where((s < 4.5) | (s > 6.5), s, 5.5) + rng.normal(0, 1.0, s.size)
  c = study.correlations(x, s, num_bootstrap=100, seed=0)
  ext = study.extreme_mask(s)
  np.testing.assert_allclose(c['extreme']['pearson']['r'], stats.pearsonr(x[ext], s[ext])[0])
  assert c['extreme']['pearson']['n'] == ext.sum()
  assert c['extreme']['pearson']['r'] > c['all']['pearson']['r'] > 0.5


def test_split_point_classifier_known_threshold():
  rng = np.random.default_rng(4)
  x_tr, x_te = rng.uniform(0, 1, 500), rng.uniform(0, 1, 300)
  y_tr, y_te = x_tr > 0.37, x_te > 0.37
  sp = study.split_point_classifier(x_tr, y_tr, x_te, y_te)
  assert abs(sp['threshold'] - 0.37) < 0.01
  assert sp['train_accuracy'] == 1.0 and sp['test_accuracy'] > 0.98 and sp['direction'] == 1
  # Brute force over all candidate thresholds agrees.
  cands = np.concatenate([[x_tr.min() - 1], x_tr])
  best = max(study.split_point_accuracy(x_tr, y_tr, t) for t in cands)
  assert study.split_point(x_tr, y_tr)['accuracy'] == best
  # Reversed relation: direction 1 is bad, 'auto' finds -1.
  auto = study.split_point(x_tr, ~y_tr, 'auto')
  assert auto['direction'] == -1 and auto['accuracy'] == 1.0
  # No information → at best the majority rate.
  y = np.array([1, 1, 1, 0])
  sp = study.split_point(np.zeros(4), y)
  assert sp['accuracy'] == 0.75 and study.split_point_accuracy(np.zeros(4), y, sp['threshold']) == 0.75


def test_intensities_both_normalisations():
  maps = np.stack([np.full((4, 4), 2.0), np.zeros((4, 4))])
  maps[0, 0, 0] = 4.0
  maps[1, :2] = 1.0
  out = study.intensities(maps)
  np.testing.assert_allclose(out['per_image'], [1 / 16, 0.5], atol=1e-6)
  np.testing.assert_allclose(out['global'], [(15 * 0.5 + 1) / 16, 8 * 0.25 / 16], atol=1e-6)
  np.testing.assert_allclose(study.intensities(maps, (0.0, 8.0))['global'],
                             maps.mean(axis=(1, 2)) / 8, atol=1e-6)


def test_bucket_mean_maps_and_streaming():
  rng = np.random.default_rng(5)
  maps = rng.random((30, 3, 3))
  scores = rng.uniform(1, 10, 30)
  mean, count, sums = study.bucket_mean_maps(maps, scores)
  b = study.score_buckets(scores)
  for k in range(10):
    if count[k]:
      np.testing.assert_allclose(mean[k], maps[b == k].mean(0))
    else:
      assert np.isnan(mean[k]).all()
  assert count.sum() == 30
  _, _, part = study.bucket_mean_maps(maps[:10], scores[:10])
  mean2, count2, _ = study.bucket_mean_maps(maps[10:], scores[10:], sums=part)
  np.testing.assert_allclose(np.nan_to_num(mean2), np.nan_to_num(mean))
  np.testing.assert_array_equal(count2, count)
  np.testing.assert_array_equal(study.score_buckets([1.0, 4.49, 4.5, 9.9, 10]), [0, 3, 4, 9, 9])


def test_score_groups_partition_the_scores_at_their_bounds():
  """4.5 and 6.5 (the score-weighting band's ends) each land in exactly one group: "mid"."""
  scores = np.array([1.0, 4.49, 4.5, 5.0, 6.5, 6.51, 10.0])
  maps = np.arange(scores.size, dtype=np.float64)[:, None, None, None] * np.ones((1, 10, 2, 2))
  total, count = streaming._group_sums(maps, scores, None)  # what `collect` sums per group
  np.testing.assert_array_equal(count, [2, 3, 2])
  assert count.sum() == scores.size                          # nothing dropped, nothing twice
  np.testing.assert_array_equal(total[:, 0, 0, 0], [0 + 1, 2 + 3 + 4, 5 + 6])
  # The labels name the bounds each group applies.
  for (label, lo, hi), inside in zip(streaming.SCORE_GROUPS, ([4.49], [4.5, 6.5], [6.51])):
    assert all(streaming.score_group(np.array(inside)) == streaming.SCORE_GROUPS.index(
        (label, lo, hi)))
  assert [g[0] for g in streaming.SCORE_GROUPS] == ['low (< 4.5)', 'mid (4.5 to 6.5)',
                                                    'high (> 6.5)']


def test_accuracy_ci_and_summarize(data):
  lo, hi = study.accuracy_ci(np.r_[np.ones(80), np.zeros(20)], np.ones(100), 500, seed=0)
  assert lo < 0.8 < hi and hi - lo < 0.2
  x, s = data
  m = study.summarize({'per_image': x, 'global': x * 2}, s, {'per_image': x, 'global': x * 2},
                         s, num_bootstrap=50)
  assert m['cam_intensity_pearson_all_per_image'] == pytest.approx(stats.pearsonr(x, s)[0])
  assert m['cam_intensity_pearson_all_global'] == pytest.approx(m['cam_intensity_pearson_all_per_image'])
  assert m['split_point_accuracy_per_image'] > 0.7


def _summary(raw_mean, raw_min, raw_max, scores):
  """A streamed split of N images with the given raw-map statistics (per-image unused here)."""
  n = len(raw_mean)
  return streaming.SplitSummary(
      pred={}, true={'mean_score': np.asarray(scores, np.float64)},
      maps={'intensity': np.full(n, 0.5), 'raw_mean': np.asarray(raw_mean, np.float64),
            'raw_min': np.asarray(raw_min, np.float64), 'raw_max': np.asarray(raw_max, np.float64)})


def test_global_split_point_uses_the_training_scale_on_test(monkeypatch):
  # Training maps span raw [0, 10]; the test maps only [0, 4]. The fitted threshold 0.5 means
  # raw 5 in the training scale: every test image (raw mean <= 3.5) is below it → "low", so
  # half are right. Rescaling the test by its own max (4) would call the last two "high".
  fit = _summary([1, 2, 3, 7, 8, 9], [0] * 6, [10] * 6, [4, 4, 4, 6, 6, 6])
  test = _summary([1, 2, 3, 3.5], [0] * 4, [4] * 4, [4, 4, 6, 6])
  monkeypatch.setattr(streaming, 'collect', lambda *a, **k: fit)
  out = intensity_eval.run(None, None, None, None, [], test, fit_images=6, bootstrap_samples=0)
  assert out['split_point_threshold_global'] == pytest.approx(0.5)
  assert out['split_point_fit_accuracy_global'] == 1.0
  assert out['split_point_accuracy_global'] == 0.5
  g = out['global_normalisation']
  assert (g['min'], g['max'], g['test_max']) == (0.0, 10.0, 4.0)
  np.testing.assert_allclose(streaming.intensities(test, (g['min'], g['max']))['global'],
                             [0.1, 0.2, 0.3, 0.35])


def test_split_point_reports_what_tells_it_from_the_majority_class():
  """Table 1's split point read 75.3% beside the paper's 49.7% while calling 96% of the test
  images high (+2.0 pp over always answering "high", CI across 0): the classifier now reports
  the share it calls high, balanced accuracy, the gain over the majority rate with its CI,
  and whether the fitted rule is degenerate (one class for every fit image)."""
  rng = np.random.default_rng(5)
  y_tr, y_te = rng.uniform(0, 1, 400) < 0.73, rng.uniform(0, 1, 300) < 0.73
  # Intensity unrelated to the label: the best fit rule is "always high".
  sp = study.split_point_classifier(np.zeros(400), y_tr, rng.uniform(0, 1, 300), y_te)
  assert sp['degenerate'] and sp['predicted_high'] == 1.0
  assert sp['balanced_accuracy'] == 0.5
  assert sp['test_accuracy'] == pytest.approx(sp['majority_rate']) and sp['gain'] == 0.0
  # A real rule: well above the majority rate, the interval clear of 0.
  x_tr = y_tr + rng.normal(0, 0.4, 400)
  x_te = y_te + rng.normal(0, 0.4, 300)
  sp = study.split_point_classifier(x_tr, y_tr, x_te, y_te, num_bootstrap=500)
  assert not sp['degenerate'] and 0 < sp['predicted_high'] < 1
  assert sp['gain'] == pytest.approx(sp['test_accuracy'] - sp['majority_rate'])
  assert 0 < sp['gain_ci'][0] <= sp['gain'] <= sp['gain_ci'][1]
  lo, hi = sp['test_accuracy_ci']
  assert lo <= sp['test_accuracy'] <= hi
  pred = x_te > sp['threshold']
  want = (np.mean(pred[y_te]) + np.mean(~pred[~y_te])) / 2
  assert sp['balanced_accuracy'] == pytest.approx(want)
  # summarize carries them into metrics.json, and the tails' own correlations.
  m = study.summarize({'per_image': x_te}, np.where(y_te, 7.0, 3.0) + rng.normal(0, 0.1, 300),
                      {'per_image': x_tr}, np.where(y_tr, 7.0, 3.0), num_bootstrap=50)
  for k in ('split_point_gain_per_image', 'split_point_gain_ci_per_image',
            'split_point_degenerate_per_image', 'split_point_accuracy_per_image_ci',
            'cam_intensity_pearson_low_tail_per_image',
            'cam_intensity_pearson_high_tail_per_image'):
    assert k in m, k


def test_map_concentration_groups_intervals_and_empty_maps():
  """Per-image entropy by score: group means equal numpy's, the difference's interval holds
  its point and excludes 0 only for a real gap; NaN (empty) maps are counted and left out."""
  rng = np.random.default_rng(3)
  scores = np.concatenate([rng.uniform(4.6, 6.4, 50), rng.uniform(2, 4.4, 25),
                           rng.uniform(6.6, 8.5, 25), [5.0, 3.0]])
  mid = (scores >= 4.5) & (scores <= 6.5)
  ent = np.where(mid, 0.8, 0.6) + rng.normal(0, 0.05, scores.size)
  ent[-2:] = np.nan
  c = study.map_concentration(ent, scores, num_bootstrap=300, seed=1)
  ok = np.isfinite(ent)
  assert c['n_maps'] == 100 and c['n_empty'] == 2
  assert c['mid']['n'] == 50 and c['extremes']['n'] == 50
  assert c['low_tail']['n'] == 25 and c['high_tail']['n'] == 25
  assert c['mid']['mean'] == pytest.approx(ent[ok & mid].mean())
  assert c['extremes']['mean'] == pytest.approx(ent[ok & ~mid].mean())
  d = c['mid_minus_extremes']
  assert d == pytest.approx(c['mid']['mean'] - c['extremes']['mean'])
  lo, hi = c['mid_minus_extremes_ci']
  assert 0 < lo <= d <= hi
  b = study.score_buckets(scores[ok])
  assert c['per_bucket_n'] == np.bincount(b, minlength=10).tolist()
  for k in range(10):
    if c['per_bucket_n'][k]:
      assert c['per_bucket'][k] == pytest.approx(ent[ok][b == k].mean())
      assert c['per_bucket_ci'][k][0] <= c['per_bucket'][k] <= c['per_bucket_ci'][k][1]
    else:
      assert c['per_bucket'][k] is None and c['per_bucket_ci'][k] is None
  # No gap: the interval spans 0.
  noise = np.random.default_rng(0).normal(0, 0.05, 100)  # a draw whose group means differ little
  flat = study.map_concentration(0.7 + noise, scores[:100], num_bootstrap=300)
  assert flat['mid_minus_extremes_ci'][0] < 0 < flat['mid_minus_extremes_ci'][1]
  assert c['low_tail_minus_mid'] == pytest.approx(c['low_tail']['mean'] - c['mid']['mean'])
  assert c['high_tail_minus_mid'] == pytest.approx(c['high_tail']['mean'] - c['mid']['mean'])
  assert 'margin_over_control' not in c
  # The control, paired by image: a shifted copy of the same maps has the same difference
  # (margin 0, and so is every resample's); flat control maps leave the whole difference.
  same = study.map_concentration(ent, scores, num_bootstrap=300, control=ent + 0.1)
  assert same['margin_over_control'] == pytest.approx(0, abs=1e-12)
  assert same['margin_over_control_ci'] == pytest.approx([0, 0], abs=1e-12)
  ctrl = np.full(scores.size, 0.7)
  over = study.map_concentration(ent, scores, num_bootstrap=300, control=ctrl)
  assert over['margin_over_control'] == pytest.approx(d)
  assert 0 < over['margin_over_control_ci'][0] <= d <= over['margin_over_control_ci'][1]
  # The trend and the partial correlation given a prediction that drives the entropy (about 0)
  # or is unrelated to it (about the plain one).
  assert c['spearman'] == pytest.approx(stats.spearmanr(ent[ok], scores[ok])[0])
  rng2 = np.random.default_rng(4)
  z = scores + rng2.normal(0, 0.5, scores.size)  # a prediction; entropy follows it only
  driven = study.map_concentration(0.1 * z + rng2.normal(0, 0.01, z.size), scores,
                                   num_bootstrap=300, predicted=z)
  assert driven['spearman'] > 0.5 and abs(driven['spearman_given_predicted']) < 0.15
  assert driven['spearman_given_predicted_ci'][0] < 0 < driven['spearman_given_predicted_ci'][1]
  noise = np.random.default_rng(9).normal(0, 1, scores.size)
  free = study.map_concentration(ent, scores, num_bootstrap=300, predicted=noise)
  assert free['spearman_given_predicted'] == pytest.approx(free['spearman'], abs=0.05)
  lo_, hi_ = free['spearman_given_predicted_ci']
  assert lo_ <= free['spearman_given_predicted'] <= hi_
  part = study.partial_spearman(ent[ok], scores[ok], scores[ok] + noise[ok] * 0.1, 0)
  assert part['ci'] is None and np.isfinite(part['r'])
  with pytest.raises(ValueError, match='control has 3 entropies'):
    study.map_concentration(ent, scores, control=ctrl[:3])
  # All empty: nothing to say, no crash.
  none = study.map_concentration(np.full(4, np.nan), [3, 5, 6, 8], num_bootstrap=50)
  assert none['mid']['mean'] is None and none['mid_minus_extremes_ci'] is None
  assert none['n_empty'] == 4
