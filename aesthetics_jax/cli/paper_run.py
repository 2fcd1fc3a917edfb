r"""The paper's recipe at the paper's scale, in one resumable command.

  aesthetics-paper-run --workdir=W [--ava_dir=AVA] [--weights=DIR] [--archs=mobilenet_v2,vgg16]
      [--views=4] [--vgg16_views=1] [--smoke]          (python -m launch.paper_run in a checkout)

Stages (each skipped on a rerun when its output is complete, as aesthetics-demo does):
  data      without --ava_dir: paper-size synthetic AVA in W/ava (make_demo_data --size=paper:
            11,270 / 2,809 listed, 8,900 / 2,203 kept, AVA-sized JPEGs);
  weights   without --weights: stand-in ImageNet weights as torchvision .pth files in
            W/weights/torch (make_fake_weights); with --weights=DIR, DIR's `<arch>*.pth`
            (`.pt`, `.safetensors`), e.g. torchvision's mobilenet_v2-b0353104.pth and
            vgg16-397923af.pth (taken first: the paper's; several other files of one arch
            are refused), or already converted `<arch>.npz`; converted to
            W/weights/<arch>.npz;
  prepare   the TFDS dataset in W/tfds (style subset);
  train     configs mobilenet_v2_emd (frozen encoder, K = --views cached train views) and
            vgg16_binary (K = --vgg16_views) in W/<arch>, init_weights = W/weights/<arch>.npz;
  evaluate  each model (aesthetics-evaluate: metrics, CAM study, explorer) in W/<arch>/eval;
  report    W/report.html (both models), and the table of the run: wall time, images/s, peak RSS
            (this process and its children) and disk per stage, printed and written to
            W/paper_run.md and W/paper_run.json.
--smoke: tiny everything (24 + 12 images of ~60 px, the configs' `smoke` variants: 32 px,
2 steps), for tests. Without --weights, torch is needed (pip install -e '.[torch]'): the
stand-in weights are written as .pth files. Errors are one line on stderr: exit 2, before any
stage, for a bad flag, a missing input (an --ava_dir without AVA.txt, a --weights folder
without an arch's file, or one that is damaged or of another width), a --views /
--vgg16_views whose feature cache the disk cannot hold, missing torch, a busy
workdir, one run before with other flags (--seed, --views, --vgg16_views, --weights,
--ava_dir, --smoke: W/paper_run.json) or another command's (a W/ava without paper_run.json);
exit 1 for a stage that failed; 130 on Ctrl-C and 143 on SIGTERM (a scheduler's preemption,
`timeout`, `docker stop`: training checkpoints the step in flight and the line names it, other
stages stop as on Ctrl-C); rerun the same command to continue.
"""
from __future__ import annotations

from absl import flags
from absl import logging

from aesthetics_jax.cli import common
from aesthetics_jax.cli import paper_recipe

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder of the whole run.')
_AVA_DIR = flags.DEFINE_string('ava_dir', None, 'AVA root; default: synthetic AVA in W/ava.')
_WEIGHTS = flags.DEFINE_string('weights', None, 'Folder of torchvision weights (<arch>*.pth) or '
                               'converted <arch>.npz; default: stand-in weights.')
_ARCHS = flags.DEFINE_list('archs', list(paper_recipe.ARCHS), 'Models to train.')
_VIEWS = flags.DEFINE_integer('views', None, 'MobileNetV2: cached augmented train views K '
                              '(default: the config\'s, 4).')
_VGG16_VIEWS = flags.DEFINE_integer('vgg16_views', 1, 'VGG16: cached train views K.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny data, widths and 2 steps (tests).')
_SEED = flags.DEFINE_integer('seed', 0, 'Synthetic data and stand-in weights seed.')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Processes rendering synthetic images (0 = cores).')
_EVAL_SET = flags.DEFINE_multi_string(
    'eval_set', [], 'KEY=VALUE config override for the evaluations only (repeatable), e.g. '
    '--eval_set=eval.faithfulness_images=16 (VGG16 runs the whole encoder per image).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('paper_run', f'unexpected arguments {argv[1:]}; use --flag=value')
  archs = _ARCHS.value
  if not archs or set(archs) - set(paper_recipe.ARCHS) or len(set(archs)) != len(archs):
    common.usage_error('paper_run', f'--archs={",".join(archs)}: use one or both of '
                       f'{",".join(paper_recipe.ARCHS)}')
  for name, v in (('views', _VIEWS.value), ('vgg16_views', _VGG16_VIEWS.value)):
    if v is not None and v < 1:
      common.usage_error('paper_run', f'--{name}={v}: pass a positive number of views')
  for name, v in (('ava_dir', _AVA_DIR.value), ('weights', _WEIGHTS.value)):
    if v == '':  # `--ava_dir=$AVA` with AVA unset: it ran on synthetic data, or stand-ins
      common.usage_error('paper_run', f'--{name} is empty; pass a folder, or leave the flag '
                         'out for the synthetic default')
  from aesthetics_jax.cli import fake_weights  # pylint: disable=import-outside-toplevel
  lo, hi = fake_weights.LIMITS['seed']  # the data's and the stand-in weights' generators
  if not lo <= _SEED.value <= hi:  # was exit 1 (data stage) or a traceback (weights stage)
    common.usage_error('paper_run', f'--seed={_SEED.value}: pass a value from {lo} to {hi}')
  from aesthetics_jax.data import paper_size  # pylint: disable=import-outside-toplevel
  if problem := paper_size.workers_problem(_WORKERS.value):
    common.usage_error('paper_run', problem)
  try:
    eval_overrides = paper_recipe.parse_eval_set(_EVAL_SET.value)
  except paper_recipe.PaperRunError as e:
    common.usage_error('paper_run', str(e))
  common.check_outputs('paper_run', folders={'workdir': _WORKDIR.value}, local_only=True)
  # Warnings are for the user (a resume from an older checkpoint, a resized-image store that
  # cannot be used, a stale workdir lock taken over); INFO is orbax's and JAX's chatter.
  logging.set_verbosity(logging.WARNING)
  from aesthetics_jax.data import ava, demo as demo_data  # pylint: disable=C0415
  from aesthetics_jax.models import fake_imagenet, pretrained  # pylint: disable=C0415
  from aesthetics_jax.train import errors as train_errors  # pylint: disable=C0415
  # SIGTERM killed the run at once (exit -15, no line), losing the steps since the last
  # checkpoint: now the step in flight is checkpointed, or the run stops as Ctrl-C does; 143.
  stop = common.stop_on_sigterm()
  try:
    paper_recipe.run_paper(
        _WORKDIR.value, ava_dir=_AVA_DIR.value, weights=_WEIGHTS.value, archs=archs,
        views=_VIEWS.value, vgg16_views=_VGG16_VIEWS.value, smoke=_SMOKE.value,
        seed=_SEED.value, workers=_WORKERS.value,
        eval_overrides=eval_overrides, stop=stop)
  except paper_recipe.PaperRunUsageError as e:  # run_paper's checks, before any stage
    common.usage_error('paper_run', str(e))
  except (paper_recipe.PaperRunError, ava.AvaError, demo_data.DemoDataError,
          pretrained.PretrainedError, fake_imagenet.FakeWeightsError, ValueError,
          FileNotFoundError, OSError,
          train_errors.TrainingError) as e:  # a RuntimeError: was a traceback (--views=10**9)
    common.fail('paper_run', common.storage_line(e, _WORKDIR.value) or e, common.exit_code(e))


def run_cli() -> None:
  """`aesthetics-paper-run`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
