"""The intensity study (paper Table 1, Figures 7-8): does a map's mean intensity track the score?

Host-side numpy/scipy on per-image summaries (a few thousand numbers), so no jit here.
* `mean_intensity`, `intensities`: mean map value under per-image and dataset-global min-max
  normalisation (the paper does not say which it used; we report both).
* `pearson_with_ci`, `spearman_with_ci`, `correlations`: coefficients with scipy p-values and
  seeded percentile-bootstrap 95% CIs, on all images and on the extremes (< 4.5 or > 6.5).
* `split_point`, `split_point_accuracy`, `split_point_classifier`: "intensity above a threshold
  → high", threshold fitted on one split, accuracy measured on another.
* `accuracy_ci`: bootstrap CI of a classification accuracy.
* `bucket_mean_maps`: mean map per true score bucket (Figure 8); `map_concentration`: per-image
  map entropy by score (is a mid-range image's map more diffuse?).
Faithfulness metrics live in `explain/faithfulness.py` (its `rank_correlation` is the row-wise
Spearman of the bootstrap here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from aesthetics_jax.explain import faithfulness

EXTREME_BAND = (4.5, 6.5)


# ----------------------------------------------------------------------------------------------
# Intensities.


def mean_intensity(maps) -> np.ndarray:
  """Mean over the last two (spatial) axes: `[..., H, W] -> [...]` (f64)."""
  return np.asarray(maps, np.float64).mean(axis=(-2, -1))


def intensities(raw_maps, stats: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
  """Mean intensity of raw (ReLU'd, unnormalised) maps `[N, H, W]` under both normalisations.

  'per_image': pytorch-grad-cam's min-max per map. 'global': `(m - lo) / (hi - lo)` clipped to
  [0, 1], with `stats=(lo, hi)` (default: min and max over these maps; pass
  `cam.global_stats` accumulated over the whole dataset when streaming).
  """
  m = np.asarray(raw_maps, np.float64)
  lo_i = m.min(axis=(-2, -1), keepdims=True)
  per = (m - lo_i) / (1e-7 + (m - lo_i).max(axis=(-2, -1), keepdims=True))
  lo, hi = (float(m.min()), float(m.max())) if stats is None else map(float, stats)
  glob = np.clip((m - lo) / (hi - lo + 1e-7), 0.0, 1.0)
  return {'per_image': mean_intensity(per), 'global': mean_intensity(glob)}


# ----------------------------------------------------------------------------------------------
# Correlations with bootstrap CIs.


def _percentile_ci(samples, alpha: float = 0.05) -> list[float] | None:
  """Percentile (1-alpha) interval `[low, high]` of the finite bootstrap `samples`; None when
  there are none."""
  b = np.asarray(samples, np.float64).ravel()
  b = b[np.isfinite(b)]
  if not b.size:
    return None
  return [float(np.percentile(b, 100 * alpha / 2)), float(np.percentile(b, 100 * (1 - alpha / 2)))]


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Pearson r of each row pair of `[R, N]` arrays (NaN where a row is constant)."""
  xc = x - x.mean(axis=1, keepdims=True)
  yc = y - y.mean(axis=1, keepdims=True)
  den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(den > 0, (xc * yc).sum(axis=1) / den, np.nan)


def _with_ci(kind: str, x, y, num_bootstrap: int, seed: int, alpha: float) -> dict[str, Any]:
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  if x.shape != y.shape:
    raise ValueError(f'{kind}: x and y differ in length ({x.size} vs {y.size})')
  n = int(x.size)
  nan = float('nan')
  out = {'r': nan, 'p': nan, 'ci_low': nan, 'ci_high': nan, 'n': n}
  if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return out  # undefined: too few points or a constant variable
  from scipy import stats as sstats  # pylint: disable=C0415 (~0.55 s to import: when used)
  res = (sstats.pearsonr if kind == 'pearson' else sstats.spearmanr)(x, y)
  out['r'], out['p'] = float(res[0]), float(res[1])
  if num_bootstrap > 0:
    idx = np.random.default_rng(seed).integers(0, n, size=(num_bootstrap, n))
    rowwise = _rowwise_pearson if kind == 'pearson' else faithfulness.rank_correlation
    boot = rowwise(x[idx], y[idx])
    boot = boot[np.isfinite(boot)]
    if boot.size:
      out['ci_low'] = float(np.percentile(boot, 100 * alpha / 2))
      out['ci_high'] = float(np.percentile(boot, 100 * (1 - alpha / 2)))
  return out


def pearson_with_ci(x, y, num_bootstrap: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict[str, Any]:
  """Pearson r, two-sided p-value (scipy) and percentile-bootstrap (1-alpha) CI.

  Returns `{'r', 'p', 'ci_low', 'ci_high', 'n'}`; NaN where undefined (n < 3, constant input).
  The bootstrap resamples (x, y) pairs with `np.random.default_rng(seed)`: same seed, same CI.
  """
  return _with_ci('pearson', x, y, num_bootstrap, seed, alpha)


def spearman_with_ci(x, y, num_bootstrap: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, Any]:
  """Spearman rho (as 'r'), p-value and bootstrap CI; same contract as `pearson_with_ci`."""
  return _with_ci('spearman', x, y, num_bootstrap, seed, alpha)


def extreme_mask(scores, band: tuple[float, float] = EXTREME_BAND) -> np.ndarray:
  """Images with mean score < band[0] or > band[1] (the paper's extremes)."""
  s = np.asarray(scores, np.float64)
  return (s < band[0]) | (s > band[1])


def correlations(intensity, scores, band: tuple[float, float] = EXTREME_BAND,
                 num_bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
  """Table 1: `{'all'|'extreme'|'low_tail'|'high_tail': {'pearson': {...}, 'spearman':
  {...}}}` of intensity vs score. The tails (score < band[0], > band[1]) are the extremes'
  two groups: the extremes' r mixes the gap between the groups' mean intensities with any
  trend within them, which the tails' own r separate."""
  x = np.asarray(intensity, np.float64)
  s = np.asarray(scores, np.float64)
  out = {}
  for name, sel in (('all', np.ones(s.shape, bool)), ('extreme', extreme_mask(s, band)),
                    ('low_tail', s < band[0]), ('high_tail', s > band[1])):
    out[name] = {'pearson': pearson_with_ci(x[sel], s[sel], num_bootstrap, seed),
                 'spearman': spearman_with_ci(x[sel], s[sel], num_bootstrap, seed)}
  return out


def accuracy_ci(pred, true, num_bootstrap: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> list[float]:
  """Percentile-bootstrap (1-alpha) CI `[low, high]` of `mean(pred == true)`."""
  correct = (np.asarray(pred).ravel() == np.asarray(true).ravel()).astype(np.float64)
  if correct.size == 0 or num_bootstrap <= 0:
    return [float('nan'), float('nan')]
  idx = np.random.default_rng(seed).integers(0, correct.size, (num_bootstrap, correct.size))
  acc = correct[idx].mean(axis=1)
  return [float(np.percentile(acc, 100 * alpha / 2)),
          float(np.percentile(acc, 100 * (1 - alpha / 2)))]


# ----------------------------------------------------------------------------------------------
# Split-point classifier.


def split_point_accuracy(x, labels, threshold: float, direction: int = 1) -> float:
  """Accuracy of "high iff x > threshold" (direction 1) or "high iff x < threshold" (-1)."""
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(labels).ravel().astype(bool)
  if x.size == 0:
    return float('nan')
  pred = x > threshold if direction >= 0 else x < threshold
  return float((pred == y).mean())


def _best_split(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """Best threshold for "high iff x > t" over all distinct cuts (vectorised cumsums)."""
  order = np.argsort(x, kind='stable')
  xs, ys = x[order], y[order]
  n = xs.size
  # Cut after position i-1 (i = 0..n): first i predicted low, the rest high.
  low_correct = np.concatenate([[0], np.cumsum(~ys)])
  high_correct = ys.sum() - np.concatenate([[0], np.cumsum(ys)])
  acc = (low_correct + high_correct) / n
  valid = np.ones(n + 1, bool)
  valid[1:n] = xs[1:] > xs[:-1]  # only cut between distinct values
  i = int(np.argmax(np.where(valid, acc, -1.0)))
  if i == 0:
    t = xs[0] - 1.0
  elif i == n:
    t = xs[-1]
  else:
    t = 0.5 * (xs[i - 1] + xs[i])
  return float(t), float(acc[i])


def split_point(x, labels, direction: int | str = 1) -> dict[str, Any]:
  """Fits the threshold that maximises accuracy on (x, labels).

  Args:
    x: `[N]` mean map intensities; labels: `[N]` 1 = high, 0 = low.
    direction: 1 (paper: above → high), -1 (below → high) or 'auto' (the better of both).
  Returns: `{'threshold', 'accuracy' (on the fit data), 'direction', 'n'}`.
  """
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(labels).ravel().astype(bool)
  if x.size == 0:
    raise ValueError('split_point: no fit data (0 images)')
  dirs = (1, -1) if direction == 'auto' else (int(direction),)
  best = None
  for d in dirs:
    t, acc = _best_split(d * x, y)
    cand = {'threshold': d * t, 'accuracy': acc, 'direction': d, 'n': int(x.size)}
    if best is None or acc > best['accuracy']:
      best = cand
  return best


def split_point_classifier(train_x, train_labels, test_x, test_labels,
                           direction: int | str = 1, num_bootstrap: int = 1000,
                           seed: int = 0) -> dict[str, Any]:
  """Threshold fitted on the training split, accuracy on both splits, and what tells a rule
  from the majority class: on AVA-like data (~72% high) always answering "high" scores ~72%.

  Returns `{'threshold', 'direction', 'train_accuracy', 'test_accuracy', 'n_train', 'n_test',
  'test_accuracy_ci', 'predicted_high' (share of test images called high),
  'balanced_accuracy' (mean of the two classes' recalls; 0.5 for any one-class rule),
  'majority_rate' (of the test split), 'gain' (test accuracy minus the majority rate) and
  'gain_ci' (paired bootstrap over test images), 'degenerate' (True when the fitted rule
  calls every fit image one class: no threshold beat the majority class there, and
  'threshold' is a stand-in outside the data)}`.
  """
  fit = split_point(train_x, train_labels, direction)
  t, d = fit['threshold'], fit['direction']
  x_fit = np.asarray(train_x, np.float64).ravel()
  fit_pred = x_fit > t if d >= 0 else x_fit < t
  x = np.asarray(test_x, np.float64).ravel()
  y = np.asarray(test_labels).ravel().astype(bool)
  pred = x > t if d >= 0 else x < t
  correct = (pred == y).astype(np.float64)
  majority = bool(y.mean() >= 0.5) if y.size else True
  base = (y == majority).astype(np.float64)
  recalls = [float((pred[y == c] == c).mean()) for c in (True, False) if (y == c).any()]
  out = {'threshold': t, 'direction': d, 'train_accuracy': fit['accuracy'],
         'test_accuracy': float(correct.mean()) if x.size else float('nan'),
         'n_train': fit['n'],
         'n_test': int(x.size), 'test_accuracy_ci': accuracy_ci(pred, y, num_bootstrap, seed),
         'predicted_high': float(pred.mean()) if x.size else float('nan'),
         'balanced_accuracy': float(np.mean(recalls)) if recalls else float('nan'),
         'majority_rate': float(base.mean()) if x.size else float('nan'),
         'gain': float((correct - base).mean()) if x.size else float('nan'),
         'gain_ci': [float('nan'), float('nan')],
         'degenerate': bool(fit_pred.all() or not fit_pred.any())}
  if x.size and num_bootstrap > 0:
    idx = np.random.default_rng(seed).integers(0, x.size, (num_bootstrap, x.size))
    gains = (correct - base)[idx].mean(axis=1)
    out['gain_ci'] = [float(np.percentile(gains, 2.5)), float(np.percentile(gains, 97.5))]
  return out


# ----------------------------------------------------------------------------------------------
# Figure 8: mean maps per true score bucket.


def score_buckets(scores, num_buckets: int = 10) -> np.ndarray:
  """Bucket index 0..num_buckets-1 of mean scores: the nearest integer score (1..10) minus 1."""
  s = np.asarray(scores, np.float64)
  return (np.clip(np.floor(s + 0.5), 1, num_buckets) - 1).astype(np.int64)


def bucket_mean_maps(maps, scores, num_buckets: int = 10,
                     sums: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
  """Mean (normalised) map per true score bucket.

  Args:
    maps: `[N, H, W]`; scores: `[N]` true mean scores (bucket = nearest integer score).
    sums: running `(sum [K,H,W], count [K])` from a previous batch, to stream over a dataset.
  Returns: `(mean [K,H,W] (NaN where a bucket is empty), count [K], (sum, count))`.
  """
  m = np.asarray(maps, np.float64)
  b = score_buckets(scores, num_buckets)
  if sums is None:
    total = np.zeros((num_buckets,) + m.shape[1:], np.float64)
    count = np.zeros(num_buckets, np.int64)
  else:
    total, count = np.array(sums[0], np.float64), np.array(sums[1], np.int64)
  np.add.at(total, b, m)
  count += np.bincount(b, minlength=num_buckets)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean = total / count[:, None, None]
  return mean, count, (total, count)


# Differences of group means that `map_concentration` reports, (name, group a, group b): a - b.
CONCENTRATION_CONTRASTS = (('mid_minus_extremes', 'mid', 'extremes'),
                           ('low_tail_minus_mid', 'low_tail', 'mid'),
                           ('high_tail_minus_mid', 'high_tail', 'mid'))


def _concentration_groups(s: np.ndarray, band: tuple[float, float]) -> tuple[list, np.ndarray]:
  """Group names and f64 masks `[G, n]`: mid / extremes / low_tail / high_tail, then the ten
  true score buckets."""
  sel = {'mid': ~extreme_mask(s, band), 'extremes': extreme_mask(s, band),
         'low_tail': s < band[0], 'high_tail': s > band[1]}
  buckets = score_buckets(s)
  sel.update({f'bucket:{k + 1}': buckets == k for k in range(10)})
  return list(sel), np.stack(list(sel.values())).astype(np.float64)


def _group_means(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """x `[..., n]`, masks `[G, ..., n]` → means `[G, ...]` (NaN for an empty group)."""
  with np.errstate(invalid='ignore', divide='ignore'):
    return (x * masks).sum(-1) / masks.sum(-1)


def _contrasts(means: np.ndarray, names: list) -> dict[str, np.ndarray]:
  return {c: means[names.index(a)] - means[names.index(b)]
          for c, a, b in CONCENTRATION_CONTRASTS}


def partial_spearman(x, y, z, num_bootstrap: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, Any]:
  """Spearman correlation of x and y with z held fixed (the partial correlation of the ranks),
  with a percentile-bootstrap CI: `{'r', 'ci': [low, high] | None}` (r NaN when undefined)."""
  x, y, z = (np.asarray(v, np.float64).ravel() for v in (x, y, z))

  def partial(a, b, c):  # rows [R, n] -> [R]
    rab, rac, rbc = (faithfulness.rank_correlation(u, v) for u, v in ((a, b), (a, c), (b, c)))
    with np.errstate(invalid='ignore', divide='ignore'):
      return (rab - rac * rbc) / np.sqrt((1 - rac ** 2) * (1 - rbc ** 2))

  if x.size < 4:
    return {'r': float('nan'), 'ci': None}
  r = float(partial(x[None], y[None], z[None])[0])
  ci = None
  if num_bootstrap > 0 and np.isfinite(r):
    idx = np.random.default_rng(seed).integers(0, x.size, (num_bootstrap, x.size))
    ci = _percentile_ci(partial(x[idx], y[idx], z[idx]), alpha)
  return {'r': r, 'ci': ci}


def map_concentration(entropy, scores, band: tuple[float, float] = EXTREME_BAND,
                      num_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05,
                      control=None, predicted=None) -> dict[str, Any]:
  """Are the maps of mid-range images more diffuse than those at the extremes (the paper's
  reading of Figure 8)? Per-image map entropy (`cam.map_entropy`: 0 one cell, 1 uniform)
  against the true mean score.

  An AVERAGE map (Figure 8) is diffuse also when sharp maps point at different places, so the
  question is asked of each image's own map. Empty maps (NaN entropy) are left out and counted.

  control: the same images' entropies under another model (the untrained one), in the same
    order: adds `margin_over_control` (+ `_ci`), this model's `mid_minus_extremes` minus the
    control's, paired by image (images with a finite entropy under both).
  predicted: the model's predicted score per image: adds `spearman_given_predicted` (+ `_ci`),
    the partial Spearman correlation of entropy and true score with the prediction held fixed.
    A map of a low prediction has few positive cells, so entropy tends to follow the
    prediction; this says whether it tracks the true score beyond it.
  Returns: `{'mid'|'extremes'|'low_tail'|'high_tail': {'mean', 'ci', 'n'}}` (mid: band[0] <=
  score <= band[1]); the `CONCENTRATION_CONTRASTS` (+ `_ci`): `mid_minus_extremes` > 0 with its
  interval above 0 supports the reading, and the tails' differences from the mid-range say
  whether the extremes go one way; `per_bucket` / `per_bucket_ci` / `per_bucket_n` (true score
  bucket 1..10, None where empty), `spearman` (+ `_ci`: entropy against the true score: a
  trend, where the groups would show a peak), `n_maps`, `n_empty`. Intervals: percentile
  bootstrap over images, one set of resamples for every figure, so a difference is paired
  with its parts.
  """
  x = np.asarray(entropy, np.float64).ravel()
  s = np.asarray(scores, np.float64).ravel()
  ok = np.isfinite(x)
  names, masks = _concentration_groups(s[ok], band)
  point = _group_means(x[ok], masks)
  rng = np.random.default_rng(seed)
  n = int(ok.sum())
  if num_bootstrap > 0 and n:
    idx = rng.integers(0, n, (num_bootstrap, n))
    boot = _group_means(x[ok][idx], masks[:, idx])                      # [G, R]
  else:
    boot = np.full((len(names), 0), np.nan)

  def ci(b):
    return _percentile_ci(b, alpha)

  def num(v):
    return float(v) if np.isfinite(v) else None

  out: dict[str, Any] = {}
  for g, name in enumerate(names[:4]):
    k = int(masks[g].sum())
    out[name] = {'mean': num(point[g]), 'ci': ci(boot[g]) if k else None, 'n': k}
  boot_c = _contrasts(boot, names)
  for c, v in _contrasts(point, names).items():
    out[c] = num(v)
    out[c + '_ci'] = ci(boot_c[c]) if np.isfinite(v) else None
  out['per_bucket'] = [num(v) for v in point[4:]]
  out['per_bucket_ci'] = [ci(boot[4 + k]) if masks[4 + k].any() else None for k in range(10)]
  out['per_bucket_n'] = [int(m.sum()) for m in masks[4:]]
  out['n_maps'], out['n_empty'] = n, int((~ok).sum())
  rho = spearman_with_ci(x[ok], s[ok], num_bootstrap, seed, alpha)
  out['spearman'] = num(rho['r'])
  out['spearman_ci'] = [rho['ci_low'], rho['ci_high']] if np.isfinite(rho['ci_low']) else None
  if predicted is not None:
    z = np.asarray(predicted, np.float64).ravel()
    if z.shape != x.shape:
      raise ValueError(f'map_concentration: predicted has {z.size} scores, not {x.size}')
    part = partial_spearman(x[ok], s[ok], z[ok], num_bootstrap, seed, alpha)
    out['spearman_given_predicted'] = num(part['r'])
    out['spearman_given_predicted_ci'] = part['ci']
  if control is not None:
    xc = np.asarray(control, np.float64).ravel()
    if xc.shape != x.shape:
      raise ValueError(f'map_concentration: control has {xc.size} entropies, not {x.size}')
    both = ok & np.isfinite(xc)
    names_b, masks_b = _concentration_groups(s[both], band)

    def margin(a, b):
      return (_contrasts(a, names_b)['mid_minus_extremes']
              - _contrasts(b, names_b)['mid_minus_extremes'])

    m = margin(_group_means(x[both], masks_b), _group_means(xc[both], masks_b))
    out['margin_over_control'] = num(m)
    out['margin_over_control_ci'] = None
    nb = int(both.sum())
    if num_bootstrap > 0 and nb and np.isfinite(m):
      idx = rng.integers(0, nb, (num_bootstrap, nb))
      out['margin_over_control_ci'] = ci(margin(_group_means(x[both][idx], masks_b[:, idx]),
                                                _group_means(xc[both][idx], masks_b[:, idx])))
  return out


def summarize(intensity_by_norm: dict[str, np.ndarray], scores, fit_intensity_by_norm=None,
              fit_scores=None, num_bootstrap: int = 1000, seed: int = 0,
              band: tuple[float, float] = EXTREME_BAND) -> dict[str, Any]:
  """Flat metrics for metrics.json: for each normalisation N in the given dict,
  `cam_intensity_{pearson,spearman}_{all,extreme,low_tail,high_tail}_N` (+ `_p`, `_ci`) and,
  when fit data is given, `split_point_threshold_N`, `split_point_fit_accuracy_N`,
  `split_point_accuracy_N` (+ `_ci`) and `split_point_{predicted_high, balanced_accuracy, gain,
  gain_ci, degenerate}_N` (`split_point_classifier`; labels: mean score > 5)."""
  out: dict[str, Any] = {}
  s = np.asarray(scores, np.float64)
  for norm, x in intensity_by_norm.items():
    c = correlations(x, s, band, num_bootstrap, seed)
    for sub, d in c.items():
      for kind, r in d.items():
        key = f'cam_intensity_{kind}_{sub}_{norm}'
        out[key], out[key + '_p'] = r['r'], r['p']
        out[key + '_ci'] = [r['ci_low'], r['ci_high']]
    if fit_intensity_by_norm is not None:
      sp = split_point_classifier(fit_intensity_by_norm[norm], np.asarray(fit_scores) > 5, x,
                                  s > 5, num_bootstrap=num_bootstrap, seed=seed)
      out[f'split_point_threshold_{norm}'] = sp['threshold']
      out[f'split_point_fit_accuracy_{norm}'] = sp['train_accuracy']
      out[f'split_point_accuracy_{norm}'] = sp['test_accuracy']
      out[f'split_point_accuracy_{norm}_ci'] = sp['test_accuracy_ci']
      for k in ('predicted_high', 'balanced_accuracy', 'gain', 'gain_ci', 'degenerate'):
        out[f'split_point_{k}_{norm}'] = sp[k]
  return out
