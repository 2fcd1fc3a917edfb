"""Faithfulness metrics on a toy model whose right answer is known: it scores only the mean
brightness of a fixed region R."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aesthetics_jax.explain import cam
from aesthetics_jax.explain import faithfulness as F

S = 16
REGION = np.zeros((S, S), bool)
REGION[3:8, 9:14] = True


def score_fn(images):  # [N,S,S,3] -> [N]
  return (images.mean(-1) * REGION).sum((1, 2)) / REGION.sum()


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  images = 0.2 + 0.1 * rng.random((3, S, S, 3)).astype(np.float32)
  images[:, REGION] += 0.6                                     # R is bright
  good = np.where(REGION, 1.0, 0.0)[None].repeat(3, 0) + 0.01 * rng.random((3, S, S))
  rand = np.asarray(F.random_maps(jax.random.key(1), (3, S, S)))
  return jnp.asarray(images), jnp.asarray(good, jnp.float32), jnp.asarray(rand)


def test_deletion_and_insertion_rank_the_right_map_first(setup):
  images, good, rand = setup
  run = jax.jit(lambda im, m, mode: F.perturbation_curves(score_fn, im, m, mode, 8, 'mean'),
                static_argnums=2)
  d_good, d_rand = run(images, good, 'deletion'), run(images, rand, 'deletion')
  i_good, i_rand = run(images, good, 'insertion'), run(images, rand, 'insertion')
  assert d_good['curve'].shape == (3, 9)
  np.testing.assert_allclose(d_good['fractions'], np.linspace(0, 1, 9), atol=1e-6)
  # Endpoints: deletion starts at the image's score and ends at the baseline's.
  np.testing.assert_allclose(d_good['curve'][:, 0], score_fn(images), rtol=1e-6)
  np.testing.assert_allclose(d_good['normalized'][:, [0, -1]], [[1, 0]] * 3, atol=1e-5)
  np.testing.assert_allclose(i_good['normalized'][:, [0, -1]], [[0, 1]] * 3, atol=1e-5)
  # R (25 of 256 px) is gone after the first step (32 px): the good curve is 0 from step 1 on.
  np.testing.assert_allclose(d_good['normalized'][:, 1:], 0, atol=1e-5)
  assert np.all(d_good['auc'] < 0.07) and np.all(d_good['auc'] < d_rand['auc'] - 0.2)
  assert np.all(i_good['auc'] > 0.93) and np.all(i_good['auc'] > i_rand['auc'] + 0.2)
  # Low-res maps are upsampled to the image grid.
  small = F.deletion(score_fn, images, jnp.asarray(good[:, ::2, ::2]), steps=8, baseline='mean')
  assert np.all(small['auc'] < d_rand['auc'])


def test_deletion_of_region_drops_score_fastest():
  # 16 maps, each pointing at one 4x4 patch: the patch overlapping R most deletes fastest.
  patches = [(y, x) for y in range(0, S, 4) for x in range(0, S, 4)]
  maps = np.zeros((16, S, S), np.float32)
  for i, (y, x) in enumerate(patches):
    maps[i, y:y + 4, x:x + 4] = 1.0
  images = jnp.full((16, S, S, 3), 0.2).at[:, REGION].set(0.9)
  auc = np.asarray(jax.jit(lambda im, m: F.deletion(score_fn, im, m, 16, 'blur'))(
      images, jnp.asarray(maps))['auc_raw'])
  overlap = np.array([REGION[y:y + 4, x:x + 4].sum() for y, x in patches])
  assert overlap[np.argmin(auc)] == overlap.max()
  assert np.corrcoef(overlap, auc)[0, 1] < -0.8


def test_steps_per_call_and_baselines(setup):
  images, good, _ = setup
  run = jax.jit(lambda im, m, k: F.insertion(score_fn, im, m, 8, 'blur', steps_per_call=k),
                static_argnums=2)
  a, b = run(images, good, None), run(images, good, 2)
  np.testing.assert_allclose(a['curve'], b['curve'], rtol=1e-6)
  blurred = F.baseline_images(images, 'blur', sigma=1.0)
  assert blurred.shape == images.shape
  np.testing.assert_allclose(blurred.mean((1, 2)), images.mean((1, 2)), atol=0.02)
  assert float(jnp.abs(blurred - images).max()) > 0.1
  const = jnp.full((1, 5, 5, 1), 0.3)
  np.testing.assert_allclose(F.gaussian_blur(const, 2.0), const, atol=1e-6)
  with pytest.raises(ValueError, match='baseline'):
    F.baseline_images(images, 'noise')


def test_pointing_game_and_mask_mass():
  masks = np.zeros((3, 8, 8), bool)
  masks[0, :4, :4] = True    # top-left
  masks[1, 3:6, 3:6] = True  # centre
  maps = np.zeros((3, 8, 8), np.float32)
  maps[0, 1, 1] = 1.0        # inside
  maps[1, 0, 7] = 1.0        # outside
  maps[2, 2, 2] = 1.0        # empty mask → invalid
  p = F.pointing_game(maps, masks)
  np.testing.assert_array_equal(p['hit'], [True, False, False])
  np.testing.assert_array_equal(p['hit_upsampled'], [True, False, False])
  np.testing.assert_array_equal(p['centre_hit'], [False, True, False])
  np.testing.assert_array_equal(p['valid'], [True, True, False])
  maps[0, 6, 6] = 3.0
  mm = F.mask_mass(maps, masks)
  np.testing.assert_allclose(mm['mass'], [0.25, 0.0, 0.0])
  np.testing.assert_allclose(mm['area'], [16 / 64, 9 / 64, 0])
  np.testing.assert_array_equal(mm['valid'], [True, True, False])
  s = F.summarize(pointing=p, mass=mm, prefix='gradcam_')
  assert s['gradcam_pointing_game'] == 0.5 and s['gradcam_pointing_game_centre'] == 0.5
  # The empty mask (image 2) counts for neither mass nor area.
  assert s['gradcam_mask_mass'] == pytest.approx(0.125)
  assert s['gradcam_mask_area'] == pytest.approx((16 / 64 + 9 / 64) / 2)


def test_localization_arrays_equal_the_separate_scores():
  # One compiled call for a batch (the localisation evaluator's): the same pointing game, mask
  # mass and box IoU as the functions on their own, a coarse map on a finer mask grid, an
  # empty mask, a map with no positive value and a constant one among the images.
  rng = np.random.default_rng(3)
  maps = rng.normal(size=(6, 4, 4)).astype(np.float32)
  maps[4] = -1.0  # points nowhere
  maps[5] = 0.5   # constant: no box
  masks = np.zeros((6, 16, 16), bool)
  for i, (y, x) in enumerate([(0, 0), (4, 8), (8, 2), (10, 10), (3, 3)]):
    masks[i, y:y + 5, x:x + 6] = True  # image 5's mask stays empty
  r = jax.device_get(F.localization_arrays(maps, masks))
  p, mm = F.pointing_game(maps, masks), F.mask_mass(maps, masks)
  for k in ('hit', 'hit_upsampled', 'centre_hit', 'valid', 'peak_cell', 'points'):
    np.testing.assert_array_equal(r[k], p[k], err_msg=k)
  np.testing.assert_allclose(r['mass'], mm['mass'], rtol=1e-6)
  np.testing.assert_allclose(r['area'], mm['area'], rtol=1e-6)
  iou = F.box_iou_of_grid(r['grid'], r['empty'], masks, 0.2)
  np.testing.assert_array_equal(iou, F.box_iou(maps, masks, 0.2))
  assert np.isnan(iou[5]) and iou[4] == 0.0 and np.isfinite(iou[:4]).all()
  assert r['empty'].tolist() == [False] * 4 + [True, True]


def test_pointing_game_tests_the_cell_centre_of_a_coarse_map():
  # A 2x2 map over 8x8 masks: its maximum is the top-left cell, centred at pixel (2, 2).
  maps = np.array([[[1.0, 0.2], [0.3, 0.1]]] * 3, np.float32)
  masks = np.zeros((3, 8, 8), bool)
  masks[0, 1:4, 1:4] = True  # covers the cell centre, not the corner
  masks[1, 0, 0] = True      # only the corner
  masks[2, 1:4, 1:4] = True
  maps[2] = -maps[2]         # nothing positive: points nowhere
  p = jax.jit(F.pointing_game)(maps, masks)
  np.testing.assert_array_equal(p['hit'], [True, False, False])
  # Upsampled, the edge-clamped maximum sits in the image corner (0, 0).
  np.testing.assert_array_equal(p['hit_upsampled'][:2], [False, True])


def test_mean_curve_auc_is_stable_where_per_image_normalisation_explodes():
  # Image 0 drops from 1 to 0; image 1 barely differs from its baseline (gap 1e-4) and
  # overshoots, so its per-image normalised AUC is huge.
  curves = np.array([[1.0, 0.5, 0.0],
                     [0.5, 0.6, 0.4999]])
  per_image = [0.5, (1 + (0.6 - 0.4999) / 1e-4) / 4 + ((0.6 - 0.4999) / 1e-4) / 4]
  auc, norm = F.mean_curve(curves, 'deletion')
  mean = curves.mean(0)
  expected = (mean - mean[-1]) / (mean[0] - mean[-1])
  np.testing.assert_allclose(norm, expected)
  assert auc == pytest.approx((expected[0] + 2 * expected[1] + expected[2]) / 4)
  assert 0 <= auc <= 1
  s = F.summarize(deletion={'curve': curves, 'auc': np.array(per_image)},
                  insertion={'curve': curves[:, ::-1], 'auc': np.array(per_image)})
  assert s['deletion_auc'] == pytest.approx(auc)
  assert s['insertion_auc'] == pytest.approx(auc)  # the same curve, read the other way
  assert np.mean(per_image) > 100
  assert s['deletion_auc_per_image_mean'] == pytest.approx(np.mean(per_image))
  assert s['baseline_gap'] == pytest.approx(mean[0] - mean[-1])
  # A baseline that scores like the image gives no normaliser.
  assert np.isnan(F.mean_curve(np.ones((2, 3)), 'insertion')[0])


def test_randomization_check_separates_model_dependent_maps():
  k = jax.random.split(jax.random.key(0), 3)
  A = jax.nn.relu(jax.random.normal(k[0], (4, 6, 6, 8)))
  params = {'dense': {'kernel': jax.random.normal(k[1], (6 * 6 * 8, 3)), 'bias': jnp.zeros(3)}}
  head = lambda p, a: a.reshape(a.shape[0], -1) @ p['dense']['kernel'] + p['dense']['bias']
  rparams = F.randomized_params(params, k[2])
  assert rparams['dense']['kernel'].shape == (288, 3)
  assert float(jnp.abs(rparams['dense']['bias']).max()) == 0
  maps = jax.jit(lambda p: cam.compute('hirescam', lambda a: head(p, a), A,
                                       lambda o: o[:, :1])[:, 0])
  m_tr, m_rand = maps(params), maps(rparams)
  rc = F.randomization_check(m_tr, m_rand)
  ref = [stats.spearmanr(np.ravel(a), np.ravel(b))[0] for a, b in zip(m_tr, m_rand)]
  np.testing.assert_allclose(rc['spearman'], ref, atol=1e-10)
  assert abs(rc['mean']) < 0.5
  # A model-independent map (EigenCAM: activations only) does not change: rho = 1.
  e = jax.jit(lambda p: cam.compute('eigencam', lambda a: head(p, a), A, lambda o: o[:, :1])[:, 0])
  np.testing.assert_allclose(F.randomization_check(e(params), e(rparams))['spearman'], 1.0)


def test_auc_intervals_are_mean_curve_auc_over_image_resamples():
  """The faithfulness AUCs' bootstrap interval is `mean_curve`'s AUC over resampled images
  (computed for all resamples at once; here against the one-at-a-time loop), and it holds
  the AUC of all images."""
  from aesthetics_jax.evaluation.evaluators import faithfulness as evaluator
  rng = np.random.default_rng(0)
  curves = np.cumsum(rng.random((16, 17)), axis=1)[:, ::-1].copy()   # falling: deletion
  for mode, c in (('deletion', curves), ('insertion', curves[:, ::-1].copy())):
    lo, hi = evaluator._auc_ci(c, mode, seed=3, num_bootstrap=400)
    idx = np.random.default_rng(3).integers(0, 16, (400, 16))
    loop = [F.mean_curve(c[i], mode)[0] for i in idx]
    np.testing.assert_allclose([lo, hi], np.percentile(loop, [2.5, 97.5]), rtol=1e-12)
    assert lo <= F.mean_curve(c, mode)[0] <= hi


def test_auc_intervals_of_a_model_whose_baseline_scores_alike_warn_nothing():
  """A model that scores an image and its baseline alike (a dead or untrained head; an
  all-zero map's evaluation) has no AUC: the interval is NaN, with no numpy RuntimeWarning
  (x/0 gave inf and -inf, whose sum printed 'invalid value encountered in add' in evaluate)."""
  import warnings
  from aesthetics_jax.evaluation.evaluators import faithfulness as evaluator
  curves = np.tile(np.array([5.0, 5.2, 4.9, 5.1, 5.0]), (6, 1))  # ends equal, middle not
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    for mode in ('deletion', 'insertion'):
      assert np.isnan(evaluator._auc_ci(curves, mode, seed=0, num_bootstrap=50)).all()


def test_pointing_game_misses_for_maps_that_point_nowhere():
  """An all-zero map (ReLU killed every gradient) 'hit' the upsampled pointing game wherever
  the mask held pixel (0, 0), its argmax; a constant positive map (a 1x1 CAM grid, a flat
  one) hit at its first cell, and was not counted as flat (`points`). Both miss now, as
  `crop.empty_maps` (what predict reports as "map": "empty") calls them empty."""
  masks = np.zeros((4, 8, 8), bool)
  masks[:, :4, :4] = True                                  # holds (0, 0) and the first cell
  maps = np.zeros((4, 2, 2), np.float32)
  maps[1] = 0.5                                            # constant
  maps[2, 0, 0] = 1.0                                      # points at the top-left cell
  maps[3, 1, 1] = 1.0                                      # points elsewhere
  p = F.pointing_game(maps, masks)
  np.testing.assert_array_equal(p['points'], [False, False, True, True])
  np.testing.assert_array_equal(p['hit'], [False, False, True, False])
  np.testing.assert_array_equal(p['hit_upsampled'], [False, False, True, False])
  one_cell = F.pointing_game(np.full((1, 1, 1), 0.3, np.float32), masks[:1] | True)
  assert not one_cell['hit'][0] and not one_cell['points'][0]
