r"""Evaluates a trained checkpoint: metrics, CAM study, faithfulness, figures and HTML report.

  python -m launch.evaluate --workdir=W [--step=N]

Writes W/eval/metrics.json, W/eval/per_image.csv, W/eval/figures/*.png, W/eval/report.html
and prints the report's path. A missing checkpoint / dataset prints one line on stderr and
exits 1.
"""
import json
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
flags.mark_flags_as_required(['workdir'])

SUMMARY_KEYS = ('num_test_images', 'binary_accuracy', 'majority_rate', 'lcc_mean', 'srcc_mean',
                'emd', 'attribute_top1', 'cam_intensity_pearson_all',
                'cam_intensity_pearson_extreme', 'split_point_accuracy',
                'pointing_game_centre_baseline')


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  from aesthetics_jax.evaluation import run as eval_run  # after flag parsing: importing JAX is slow
  try:
    m = eval_run.evaluate(_WORKDIR.value, _STEP.value)
  except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
    print(f'evaluate: {e}'.splitlines()[0], file=sys.stderr)
    sys.exit(1)
  print(json.dumps({k: m.get(k) for k in SUMMARY_KEYS if k in m}))
  print(f'{_WORKDIR.value.rstrip("/")}/{eval_run.EVAL_DIR}/report.html')


if __name__ == '__main__':
  app.run(main)
