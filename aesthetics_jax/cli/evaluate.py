r"""Evaluates a trained checkpoint: metrics, CAM study, faithfulness, figures and HTML report.

  aesthetics-evaluate --workdir=W [--step=N] [--config.eval.KEY=VALUE ...]
  (python -m launch.evaluate from a checkout)

`--config.eval.*` and `--config.data.*` override the workdir's config for this evaluation
only (e.g. `--config.eval.cam_methods="('gradcam',)"`, a moved `--config.data.data_dir=`).

Writes W/eval/metrics.json, W/eval/per_image.csv, W/eval/figures/*.png, W/eval/report.html
and prints the report's path. Errors are one line on stderr: exit 2 when nothing ran (bad
flags or --config.eval values: a box threshold outside (0, 1), an unknown CAM method, a
--masks_dir that is not a folder or names no test image; a --workdir without a usable
checkpoint: missing, another model's, or damaged, named with its step and file and the
`--step` of an intact one; an unwritable W/eval; another aesthetics-evaluate of the same
workdir still running, named by its pid), 1 when the evaluation failed (a missing
dataset, non-finite model outputs: nothing is written). An unreadable mask file counts as no
region: a warning line names it, and the report lists them all.
"""
import json
import os
import sys
from pathlib import Path

from absl import flags
from absl import logging
from ml_collections import config_flags

from aesthetics_jax.cli import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_STEP = flags.DEFINE_integer(
    'step', None, 'Checkpoint step (default: the one training selected and tested: the best '
    'by config.best_metric on its periodic evaluations, else the newest).')
_MASKS_DIR = flags.DEFINE_string(
    'masks_dir', None, 'Folder of <image_id>.png region masks (white = region) for the '
    'pointing game and mask mass (default: the masks prepare_data recorded, e.g. the demo\'s '
    'defect masks). Same as --config.eval.masks_dir.')
flags.mark_flags_as_required(['workdir'])
ALLOWED = ('eval.', 'data.')

def main(argv):
  if len(argv) > 1:
    common.usage_error('evaluate', f'unexpected arguments {argv[1:]}; use --flag=value')
  if '://' not in _WORKDIR.value and not os.path.isdir(_WORKDIR.value):
    common.usage_error('evaluate', f'--workdir={_WORKDIR.value}: no such folder; pass a '
                       'training workdir (aesthetics-train writes it)')
  common.check_outputs('evaluate', folders={'workdir': _WORKDIR.value})
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  _check_eval_values(overrides)
  # Warnings are for the user (EigenCAM keeping evaluation on one device, a compilation
  # cache that cannot be created); INFO is orbax's and JAX's chatter.
  logging.set_verbosity(logging.WARNING)
  from aesthetics_jax.evaluation import run as eval_run  # after flag parsing: importing JAX is slow
  try:
    if _MASKS_DIR.value:
      overrides['eval.masks_dir'] = _MASKS_DIR.value
    m = eval_run.evaluate(_WORKDIR.value, _STEP.value, overrides=overrides)
  except eval_run.EvalConfigError as e:  # found before any image was read
    common.usage_error('evaluate', str(e))
  except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
    # A full disk said only '[Errno 28] No space left on device: <file>'.
    line = common.storage_line(e, _WORKDIR.value, 'rerun (eval/ keeps the earlier evaluation)')
    common.fail('evaluate', line or (common.out_of_memory_line(e) if common.out_of_memory(e)
                                     else e), common.exit_code(e))
  errors = m.get('localization_mask_errors') or []
  if errors:
    print(f'evaluate: warning: {len(errors)} mask file(s) could not be read, their images '
          f'scored as having no region (the report lists them); first: {errors[0]}',
          file=sys.stderr)
  if stale := _stale_combined_report(_WORKDIR.value):
    print(f'evaluate: warning: {stale}', file=sys.stderr)
  print(json.dumps(eval_run.summary(m)))
  print(f'{_WORKDIR.value.rstrip("/")}/{eval_run.EVAL_DIR}/report.html')


def _stale_combined_report(workdir: str) -> str:
  """Why the report of the job that holds `workdir` (aesthetics-demo's or paper-run's
  W/report.html, a section per model) no longer matches this evaluation, or ''. It kept the
  earlier numbers while its explorer link opened the new evaluation's explorer."""
  if '://' in workdir:
    return ''
  wd = Path(workdir).absolute()
  combined = wd.parent / 'report.html'
  try:
    linked = f'href="{wd.name}/eval/' in combined.read_text(errors='replace')
  except OSError:
    return ''
  return (f'{combined} (the report of the job this model belongs to) still shows its earlier '
          f'evaluation, and its explorer link now opens this one\'s: read {wd}/eval/report.html '
          '(rerunning the job rebuilds it, evaluating again with the job\'s own settings)'
          if linked else '')


def _check_eval_values(overrides: dict) -> None:
  """Each override the trainer's value rules cover (`config_checks.value_problem`) and the CAM
  method names, before JAX loads (a batch size of 0 took ~5 s of imports to refuse); unknown
  keys and wrong types are worded against the restored config."""
  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.explain import choices
  from aesthetics_jax.train import config_checks
  for key, value in overrides.items():
    problem = config_checks.value_problem(key, value)
    names = ([value] if key == 'eval.cam_method' else
             # not a list: a wrong type, worded after the config loads
             value if key == 'eval.cam_methods' and isinstance(value, (list, tuple)) else [])
    try:
      for name in names:
        choices.canonical_method(name)
    except ValueError as e:
      problem = problem or str(e)
    if problem:
      common.usage_error('evaluate', problem)


def run_cli() -> None:
  """`aesthetics-evaluate`: `--config.KEY`s checked before absl parses them."""
  common.run_with_overrides(
      main, __doc__, 'evaluate', ALLOWED,
      'Overrides of the restored config for this evaluation: --config.eval.KEY=VALUE, '
      '--config.data.KEY=VALUE.')


if __name__ == '__main__':
  run_cli()
