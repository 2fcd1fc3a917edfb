"""How far two computations of the same thing are apart: CAM maps (ours vs pytorch-grad-cam)
and model outputs (bfloat16 vs float32). Speed figures are only worth quoting beside these."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from aesthetics_jax.models import outputs as outputs_lib


def maps(expected: np.ndarray, got: np.ndarray) -> dict[str, float]:
  """max |diff| and the minimum per-map Pearson correlation of two [..., H, W] stacks.

  A constant map correlates 1 with an equal constant map, else 0; `all_zero_maps` counts the
  expected maps that are all zero (a match on many of those says little); when every one is,
  `not_judged` says so (nothing was compared: 'max |diff| 0, min corr 1' read as a pass).
  """
  e = np.asarray(expected, np.float64).reshape(-1, *np.shape(expected)[-2:])
  g = np.asarray(got, np.float64).reshape(e.shape)
  corrs = []
  for a, b in zip(e, g):
    if a.std() == 0 or b.std() == 0:
      corrs.append(1.0 if np.abs(a - b).max() <= 5e-4 else 0.0)
    else:
      corrs.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
  out = {'max_abs_diff': float(np.abs(e - g).max()), 'min_corr': float(min(corrs)),
         'maps': int(e.shape[0]), 'all_zero_maps': int(sum(a.max() == 0 for a in e))}
  if out['all_zero_maps'] == out['maps']:
    out['not_judged'] = f"all {out['maps']} maps zero: nothing compared"
  return out


def line(agree: Mapping[str, Any]) -> str:
  """'max |diff| ..., min corr ... over N maps', or 'not judged (...)' when all are zero."""
  if 'not_judged' in agree:
    return f"not judged ({agree['not_judged']})"
  return (f"max |diff| {agree['max_abs_diff']:.2e}, min corr {agree['min_corr']:.6f} over "
          f"{agree['maps']} maps")


def outputs(ref: Mapping[str, Any], out: Mapping[str, Any], arch: str) -> dict[str, float]:
  """Head outputs `out` (e.g. bfloat16) against `ref` (float32) on the same inputs: label
  agreement and max |diff| of the predictions and logits ([B, ...] host arrays)."""
  p, q = outputs_lib.predict_outputs(ref, arch), outputs_lib.predict_outputs(out, arch)
  a = {'label_agreement': float(np.mean(np.asarray(p['label_pred']) ==
                                        np.asarray(q['label_pred'])))}
  if arch == 'mobilenet_v2':
    a['mean_score_max_abs_diff'] = float(np.abs(p['mean_score'] - q['mean_score']).max())
    a['distribution_max_abs_diff'] = float(np.abs(p['distribution'] - q['distribution']).max())
    a['score_logits_max_abs_diff'] = float(np.abs(ref['score_logits'] -
                                                  out['score_logits']).max())
  else:
    a['logit_max_abs_diff'] = float(np.abs(ref['logit'] - out['logit']).max())
    a['logit_max_abs'] = float(np.abs(ref['logit']).max())
    a['p_high_max_abs_diff'] = float(np.abs(p['p_high'] - q['p_high']).max())
  return a
