r"""The localisation control: does the explanation path find a region when the answer is known?

  aesthetics-control --workdir=W [--seeds=0,1,2,3,4] [--config.KEY=VALUE ...] [--smoke]
                                                      (python -m launch.control in a checkout)

Stages (each skipped on a rerun when its output is complete):
  data      W/ava: images whose label is low exactly when a small checkerboard patch is present
            (data/control.py; 256 train + 64 test of 48 px, 12-px patch), the patch masks in
            W/ava/defect_masks; the dataset in W/tfds.
  train     one tiny VGG per seed in W/seed_<S> (configs/control.py; --config.KEY=VALUE
            changes it, e.g. --config.num_train_steps=300).
  evaluate  each model's low-target maps of every method in config.eval.cam_methods at
            config.eval.cam_layers, scored against the patch masks (pointing game, box IoU,
            mask mass), in one evaluation with its two controls (eval.localization_controls):
            the maps of the variables the seed's training started from (a patch that draws
            untrained maps is merely conspicuous), and the NEGATIVE control, the trained maps
            scored against another image's patch (a path that scores well by itself: a
            centre bias, a resize offset, a mask that always matches, scores well there too).
  table     W/control.json and W/control.md (printed): each seed and method, and each method's
            worst seed. One seed can fool a method (README, "Explanations"): run several.
--smoke: tiny data and 2 steps (for tests; a smoke model learns nothing); a --config.KEY,
--num_train or --num_test given with it still applies. Errors are one line on stderr (exit 1;
a bad flag, a busy workdir, or one whose seeds or data other flags made, exits 2). Ctrl-C
exits 130, SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) 143, with one line:
training checkpoints the step in flight and names it, other stages stop as on Ctrl-C; rerun
the same command to continue.
"""
from __future__ import annotations

import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from aesthetics_jax.cli import common
from aesthetics_jax.cli import config_args
from aesthetics_jax.cli import control_study
from aesthetics_jax.configs import control as control_config

MAX_IMAGES = 100_000  # per split; the control's defaults are 256 / 64
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of the whole control.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'],
                           'Training seeds (config.seed), one model each.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny data and 2 steps (tests).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 256, 'Training images.')
_NUM_TEST = flags.DEFINE_integer('num_test', 64, 'Test images (about half carry the patch).')
_DECOYS = flags.DEFINE_bool('decoys', True, 'One or two finer checkerboards in every image, '
                            'more conspicuous than the cause (data/control.py); --nodecoys: '
                            'the cause alone, which untrained maps find too.')
flags.mark_flags_as_required(['workdir'])
_CONFIG = None  # --config: defined in run_cli, once argv's --config.KEY overrides are checked


def main(argv):
  if len(argv) > 1:
    common.usage_error('control', f'unexpected arguments {argv[1:]}; use --flag=value')
  common.check_outputs('control', folders={'workdir': _WORKDIR.value}, local_only=True)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    common.usage_error('control', f'--seeds={",".join(_SEEDS.value)}: pass integers, e.g. 0,1,2')
  if any(s < 0 for s in seeds):  # config.seed: before the data is made, not after
    common.usage_error('control', f'--seeds={",".join(_SEEDS.value)}: seeds are integers >= 0')
  from aesthetics_jax.train import config_checks  # pylint: disable=import-outside-toplevel
  for s in seeds:  # too large for JAX's keys: a traceback in the train stage, after the data
    if config_checks.value_problem('seed', s):
      common.usage_error('control', f'--seeds={",".join(_SEEDS.value)}: seed {s} is too '
                         f'large; seeds are integers from 0 to {config_checks.MAX_SEED}')
  if not seeds:  # was exit 1 after the data stage (no model to evaluate)
    common.usage_error('control', '--seeds= is empty: pass one or more seeds, e.g. 0,1,2')
  if len(set(seeds)) < len(seeds):  # one workdir per seed: a repeat would count it twice
    common.usage_error('control', f'--seeds={",".join(_SEEDS.value)}: each seed once, '
                       f'e.g. {",".join(str(s) for s in dict.fromkeys(seeds))}')
  for name, v in (('num_train', _NUM_TRAIN.value), ('num_test', _NUM_TEST.value)):
    if v < 8:
      common.usage_error('control', f'--{name}={v}: pass 8 or more')
    if v > MAX_IMAGES:  # a typo (10**12) wrote images until the disk was full
      common.usage_error('control', f'--{name}={v}: pass at most {MAX_IMAGES} (the control '
                         'needs a few hundred; each image is a file of its own)')
  # Warnings are for the user (as train's); INFO is orbax's and JAX's chatter.
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  n_train, n_test = _NUM_TRAIN.value, _NUM_TEST.value
  if _SMOKE.value:  # then the user's own --config.KEY and sizes again: they win over smoke's
    config = control_config.apply_smoke(
        config, keep=config_flags.get_override_values(flags.FLAGS['config']))
    n_train = _NUM_TRAIN.value if flags.FLAGS['num_train'].present else (
        control_study.SMOKE_SIZES[0])
    n_test = _NUM_TEST.value if flags.FLAGS['num_test'].present else (
        control_study.SMOKE_SIZES[1])
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train.errors import TrainingError  # pylint: disable=C0415
  try:  # a --config value that cannot train: before the data stage, not after it (exit 1)
    config_checks.check(config)
  except config_checks.ConfigError as e:
    common.usage_error('control', e)
  if not tuple(config.eval.cam_methods):  # a KeyError traceback once the first seed trained
    common.usage_error('control', 'config.eval.cam_methods=() is empty: the control scores '
                       "each method's maps; pass one or more, e.g. "
                       "--config.eval.cam_methods=\"('gradcam',)\"")
  # SIGTERM killed the control at once (exit -15, no line), losing the steps since the last
  # checkpoint: now the step in flight is checkpointed, or it stops as Ctrl-C does; 143.
  stop = common.stop_on_sigterm()
  try:
    result = control_study.run_control(_WORKDIR.value, config, seeds, n_train, n_test,
                                       _DECOYS.value, stop)
  except (control_study.ControlError, ava.AvaError, TrainingError, ValueError,
          FileNotFoundError, OSError) as e:
    common.fail('control', common.storage_line(e, _WORKDIR.value) or e, common.exit_code(e))
  print(control_study.table(result), end='')


def run_cli() -> None:
  """`aesthetics-control`: --config.KEY=VALUE checked (one line, exit 2) before absl parses."""
  global _CONFIG  # pylint: disable=global-statement
  config_args.check(sys.argv, 'control', config_is='configs/control.py')
  _CONFIG = config_flags.DEFINE_config_dict(
      'config', control_config.get_config(),
      'The control config (configs/control.py); change keys with --config.KEY=VALUE.')
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
