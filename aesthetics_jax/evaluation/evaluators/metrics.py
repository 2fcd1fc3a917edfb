"""Prediction metrics of the test pass: `train.metrics.compute` plus a bootstrap CI of accuracy."""
from __future__ import annotations

from typing import Any

from aesthetics_jax.evaluation import streaming
from aesthetics_jax.evaluation import study
from aesthetics_jax.train import metrics as metrics_lib


def run(test: streaming.SplitSummary, *, emd_r: float = 2.0, bootstrap_samples: int = 1000,
        seed: int = 0) -> dict[str, Any]:
  """`num_test_images`, `binary_accuracy` (+ `_ci`), `majority_rate`, `lcc_mean`, `srcc_mean`
  and, when the model predicts them, `emd`, `attribute_top1`, `attribute_top5`."""
  out = metrics_lib.compute(test.pred, test.true, emd_r)
  out['binary_accuracy_ci'] = study.accuracy_ci(test.pred['label_pred'], test.true['label'],
                                                bootstrap_samples, seed)
  return out
