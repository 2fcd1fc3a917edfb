"""One evaluator per job; each `run(...)` takes explicit arguments and returns a dict.

* `metrics`: accuracy, correlations, EMD and tag accuracy of the test pass, with a bootstrap CI.
* `boxes`: empty maps, distinct and full-frame boxes (does a suggested crop say anything?).
* `intensity`: the intensity study (paper Table 1, Figures 7-8) and the split-point classifier
  fitted on a streamed slice of the training split.
* `faithfulness`: deletion/insertion curves and the randomisation check per CAM method.
* `localization`: pointing game, mask mass and box IoU of each method's low-target map on every
  test image with a region mask (the demo's defects; `--masks_dir`), with the baselines.
* `figures`: the report's figures (examples, scatter plots, bucket maps, perturbation curves).
* `explorer`: every CAM method's maps, boxes and a thumbnail of every test image for the
  interactive explorer (`report/explorer.py`).

The test split is streamed once (`streaming.collect`) and its per-image arrays feed every
evaluator: the encoder and the CAMs are most of an evaluation's time.
"""
from aesthetics_jax.evaluation.evaluators import boxes
from aesthetics_jax.evaluation.evaluators import explorer
from aesthetics_jax.evaluation.evaluators import faithfulness
from aesthetics_jax.evaluation.evaluators import figures
from aesthetics_jax.evaluation.evaluators import intensity
from aesthetics_jax.evaluation.evaluators import localization
from aesthetics_jax.evaluation.evaluators import metrics

__all__ = ('boxes', 'explorer', 'faithfulness', 'figures', 'intensity', 'localization',
           'metrics')
