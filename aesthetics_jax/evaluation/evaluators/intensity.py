"""The intensity study: does the mean of a map track the score? (paper Table 1, Figures 7-8)

Correlations of the test maps' mean intensity with the true mean score (all images and the
extremes, bootstrap CIs) under per-image and dataset-global normalisation, and the split-point
classifier "intensity above t → high" with t fitted on the first `fit_images` TRAINING images
(streamed with the same jitted functions as the test pass, eval preprocessing) and scored on
the test split. The global normalisation's scale (min/max of the raw maps) is fitted on those
same training maps and applied to both splits (`global_normalisation` in metrics.json). Unsuffixed keys repeat the per-image normalisation's.

Control: the same study of the maps of the variables training started from
(`intensity_untrained` in metrics.json). An intensity that tracks the score before any
training comes from the images (brightness, contrast, clutter), not from what the model
learned: the trained model's correlation means something only by its margin over it. The same
holds for Figure 8's "diffuse at mid-range scores" (`map_concentration`, per-image map entropy):
images of extreme scores may simply be simpler.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from aesthetics_jax.evaluation import streaming
from aesthetics_jax.evaluation import study


# Maps whose largest value is below this are distorted by per-image normalisation's 1e-7
# (by 1% or more): the report says so.
TINY_MAPS = 1e-5


def _table1(test: streaming.SplitSummary, fit: streaming.SplitSummary, bootstrap_samples: int,
            seed: int, band: tuple[float, float]) -> tuple[dict[str, Any], tuple[float, float]]:
  """`study.summarize` of a test and a fit split's maps; and the global scale it used."""
  # One global scale for both splits, fitted with the threshold on the training maps: a test
  # split rescaled by its own min/max would move the threshold (and its accuracy) with it.
  scale = streaming.global_range(fit)
  return study.summarize(
      streaming.intensities(test, scale), test.true['mean_score'],
      streaming.intensities(fit, scale), fit.true['mean_score'],
      num_bootstrap=bootstrap_samples, seed=seed, band=band), scale


def run(forward: streaming.ForwardFn, summarize, variables, batches: streaming.BatchesFn,
        train_source: Sequence, test: streaming.SplitSummary, *, fit_images: int = 1024,
        bootstrap_samples: int = 1000, seed: int = 0,
        band: tuple[float, float] = study.EXTREME_BAND, untrained_variables=None,
        test_source: Sequence = (), max_test: int = 0) -> dict[str, Any]:
  """Table 1 keys (`study.summarize`, suffixed `_per_image` / `_global`, unsuffixed copies of
  per_image), `cam_intensity_n_{all,extreme,low_tail,high_tail}`, `split_point_fit(_n)`,
  `global_normalisation`, `map_concentration` (`study.map_concentration`: per-image map
  entropy by score; `map_concentration_untrained` its control)
  and the image counts behind the Figure 8 panels.

  untrained_variables: the variables training started from; with `test_source` (the first
  `max_test` images, 0 = all, as `test`) the whole study is repeated on their maps (one more
  pass over the test images and the fit images) into `intensity_untrained` (the same
  `study.summarize` keys).
  """
  fit = streaming.collect(forward, summarize, variables, batches, train_source, fit_images,
                          keep_maps=False, desc='fit split point')
  control = None
  scores = test.true['mean_score']
  table, scale = _table1(test, fit, bootstrap_samples, seed, band)
  out: dict[str, Any] = dict(table)
  out['cam_intensity_n_all'] = int(scores.size)
  out['cam_intensity_n_extreme'] = int(study.extreme_mask(scores, band).sum())
  out['cam_intensity_n_low_tail'] = int((scores < band[0]).sum())
  out['cam_intensity_n_high_tail'] = int((scores > band[1]).sum())
  out['split_point_fit_n'] = fit.num_images
  for k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme',
            'split_point_threshold', 'split_point_accuracy'):
    out[k] = out[f'{k}_per_image']
  for k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme'):
    out[k + '_ci'] = out[f'{k}_per_image_ci']
  out['split_point_fit'] = (f'the first {fit.num_images} training-split images '
                            '(eval preprocessing; global normalisation with the training maps\' '
                            'min/max, applied to the test maps too)')
  lo, hi = streaming.global_range(test)
  out['global_normalisation'] = {
      'min': scale[0], 'max': scale[1], 'fitted_on': 'split-point fit (training) maps',
      'applied_to': ['fit', 'test'], 'test_min': lo, 'test_max': hi}
  if 0 < hi < TINY_MAPS:
    out['tiny_maps_warning'] = (
        f'the test maps peak at {hi:.2g}, near the 1e-7 that per-image min-max normalisation '
        '(pytorch-grad-cam\'s scale_cam_image) adds to its denominator: per-image intensities '
        'and boxes shrink with each map\'s size; read the global-normalisation column')
  if test.score_maps is not None:
    out['score_bucket_counts'] = [int(c) for c in test.score_maps[1]]
  if test.bucket_maps is not None:
    out['bucket_map_counts'] = [int(c) for c in test.bucket_maps[1]]
  if untrained_variables is not None and len(test_source):
    rescaled = _Rescaled(summarize)
    u_test = streaming.collect(forward, rescaled, untrained_variables, batches, test_source,
                               max_test, keep_maps=False, desc='untrained test')
    u_fit = streaming.collect(forward, rescaled, untrained_variables, batches, train_source,
                              fit_images, keep_maps=False, desc='untrained fit')
    out['intensity_untrained'] = _table1(u_test, u_fit, bootstrap_samples, seed, band)[0]
    out['intensity_untrained']['map_rescale'] = rescaled.factor
    control = u_test
  if 'entropy' in test.maps:  # summaries made by `streaming.make_summarize` have it
    out.update(_concentration(test, control, band, bootstrap_samples, seed))
  return out


def _concentration(test: streaming.SplitSummary, control: streaming.SplitSummary | None,
                   band: tuple[float, float], bootstrap_samples: int,
                   seed: int) -> dict[str, Any]:
  """`map_concentration` of the test maps, with its margin over the untrained maps of the same
  images (`margin_over_untrained`), and `map_concentration_untrained`."""
  scores = test.true['mean_score']
  same = (control is not None and 'entropy' in control.maps and np.array_equal(
      control.true['image_id'], test.true['image_id']))
  predicted = test.pred['mean_score'] if 'mean_score' in test.pred else test.pred.get('p_high')
  c = study.map_concentration(test.maps['entropy'], scores, band, bootstrap_samples, seed,
                              control=control.maps['entropy'] if same else None,
                              predicted=predicted)
  out = {'map_concentration': c}
  if same:
    c['margin_over_untrained'] = c.pop('margin_over_control')
    c['margin_over_untrained_ci'] = c.pop('margin_over_control_ci')
    out['map_concentration_untrained'] = study.map_concentration(
        control.maps['entropy'], scores, band, bootstrap_samples, seed)
  return out


class _Rescaled:
  """`summarize` of the maps times one constant: the inverse of the first batch's largest
  aesthetic-map value (kept for every later batch).

  An untrained head's maps are tiny (measured on the demo models: peaks of 5e-13 to 7e-6),
  near or below the 1e-7 that pytorch-grad-cam's per-image min-max adds to its denominator,
  which then shrinks each map by its own size and turns the per-image intensity into the raw
  one. Scaled to about 1 they normalise as the trained maps do; the global normalisation and
  every correlation under it are unchanged by a constant factor.
  """

  def __init__(self, summarize):
    self.summarize, self.factor = summarize, None

  def __call__(self, maps):
    if self.factor is None:
      peak = float(jax.device_get(maps[:, 0].max()))
      self.factor = 1.0 / peak if peak > 0 else 1.0
    return self.summarize(maps * self.factor)

