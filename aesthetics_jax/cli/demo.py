r"""The main job: demo data → prepare → train both demo models → evaluate → one HTML report.

  aesthetics-demo --workdir=W [--smoke]      (python -m launch.demo from a checkout)

Layout: W/ava (demo dataset, AVA layout + defect masks), W/tfds (prepared TFDS dataset),
W/mobilenet_v2/ and W/vgg16/ (training workdirs, each with eval/), W/report.html (combined
report, printed at the end). Rerunning after an interruption resumes: every stage skips
completed work (the data marker, the prepared dataset, finished checkpoints, eval outputs
of the latest checkpoint). `--smoke`: tiny data, 2 training steps (for tests).
SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) reaches the models' processes:
each checkpoints its step in flight (an evaluation stops as on Ctrl-C); one line names the
checkpoints, exit 143 (130 on Ctrl-C); rerunning the same command continues.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from absl import flags
from absl import logging

from aesthetics_jax import environment
from aesthetics_jax.cli import common
from aesthetics_jax.cli import stages
from aesthetics_jax.configs.default import ARCHS
from aesthetics_jax.train.stop import StopRequest, Terminated

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory of the whole demo.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny data and 2 training steps (tests).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', None, 'Demo training images (default by mode).')
_NUM_TEST = flags.DEFINE_integer('num_test', None, 'Demo test images (default by mode).')
_SEED = flags.DEFINE_integer('seed', 0, 'Demo data seed.')
_PARALLEL = flags.DEFINE_bool('parallel', None, 'Train/evaluate the two models in two processes '
                              'at once (default: on, off with --smoke).')
flags.mark_flags_as_required(['workdir'])

# Full job on a quiet 2-core CPU: ~6 minutes, two processes at once (MobileNetV2 at 112 px,
# 500 steps, trains ~4 of them while VGG16 trains and evaluates beside it).
SIZES = {False: (1200, 300), True: (24, 12)}
# Full demo: ScoreCAM (one forward pass per feature channel) on a handful of images only.
# Time: the deletion/insertion curves on 16 images at 8 steps (about 70 s of the 170 s
# evaluation at 64 images x 16 steps), ScoreCAM on 4; the localisation study keeps every
# masked test image.
DEMO_EVAL = {'eval.faithfulness_scorecam_images': 4, 'eval.faithfulness_images': 16,
             'eval.faithfulness_steps': 8, 'eval.explorer_scorecam_images': 4,
             'eval.split_point_fit_images': 512}
SMOKE_EVAL = stages.SMOKE_EVAL


# Where stage lines go: the terminal's stderr, also in a child process whose sys.stderr is
# its log file (_run_arch).
_STAGE_STREAM = None


def _log(msg: str) -> None:
  print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', file=_STAGE_STREAM or sys.stderr,
        flush=True)


def demo_config(arch: str, smoke: bool):
  """The packaged config `demo:<arch>[,smoke]`, with no validation split.

  The demo evaluates once, at the end: no checkpoint is selected, so all training images
  train. Measured: the demo MobileNetV2 trained on 90% of them (the default 10% validation
  split) pointed no better than the centre (Grad-CAM 0.309 vs 0.326) where on all of them it
  reached 0.537; its localisation depends on the run (README, "Explanations").
  """
  from aesthetics_jax.configs import demo  # pylint: disable=import-outside-toplevel
  c = demo.get_config(arch + (',smoke' if smoke else ''))
  c.data.validation_fraction = 0.0
  return c


def make_data(ava_dir: Path, num_train: int, num_test: int, seed: int) -> None:
  """Generates the demo dataset (demo_data reuses a complete one with the same settings)."""
  from aesthetics_jax.data import demo as demo_data  # pylint: disable=import-outside-toplevel
  try:
    summary = demo_data.generate(ava_dir, num_train, num_test, seed, progress=True)
  except demo_data.DemoDataError as e:
    if cause := stages.storage_cause(e):
      raise cause from None
    raise
  _log(f'demo data: {"reused" if summary.get("reused") else "generated"} {ava_dir} '
       f'({num_train} train + {num_test} test)')


def _run_arch(arch: str, w: Path, smoke: bool, log_file: str | None = None,
              stop: StopRequest | None = None) -> None:
  """Trains (or resumes) and evaluates one demo model (outputs in `w/<arch>`).

  log_file: in a child process, progress bars and library output go there (two processes
  writing bars to one terminal garble both); the stage lines still reach the terminal.
  stop: SIGTERM's `train.stop.StopRequest` (a child process installs its own: the parent
  passes SIGTERM on to it).
  """
  global _STAGE_STREAM  # pylint: disable=global-statement
  if not log_file:
    _run_arch_here(arch, w, smoke, stop)
    return
  _STAGE_STREAM = sys.stderr
  sys.stderr = open(log_file, 'a', buffering=1)  # pylint: disable=consider-using-with
  logging.set_verbosity(logging.ERROR)
  try:
    _run_arch_here(arch, w, smoke, common.stop_on_sigterm())
  finally:
    # Idle in the pool, this process must outlive a SIGTERM passed on late: raised in the
    # pool's worker loop, it would break the pool, which kills the other model's process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run_arch_here(arch: str, w: Path, smoke: bool, stop: StopRequest | None) -> None:
  """`_run_arch`'s work, in the process that runs it."""
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  from aesthetics_jax.train import trainer  # pylint: disable=C0415
  t0 = time.time()
  ava_dir, data_dir = w / 'ava', w / 'tfds'
  config = demo_config(arch, smoke)
  config.data.data_dir = str(data_dir)
  config.data.ava_dir = str(ava_dir)
  mdir = w / arch
  total = int(config.num_train_steps)
  if total and stages.finished(mdir, total):
    _log(f'{arch}: training already finished (step {total})')
  else:
    _log(f'{arch}: training ({total} steps)')
    trainer.train_and_evaluate(config, str(mdir), stop)
    _log(f'{arch}: trained [{time.time() - t0:.0f}s]')
  if stop is not None:  # held during the final test: stop before the evaluation
    stop.check()
  overrides = {**(SMOKE_EVAL if smoke else DEMO_EVAL),
               **stages.own_data(mdir, data_dir, ava_dir)}  # a moved or copied demo
  m = stages.eval_current(mdir, overrides)
  if m is None:
    _log(f'{arch}: evaluating')
    m = eval_run.evaluate(mdir, demo=True, overrides=overrides)
  else:
    _log(f'{arch}: evaluation already done for step {m.get("step")}')
  _log(f'{arch}: accuracy {m.get("binary_accuracy")} (majority {m.get("majority_rate")}) '
       f'[{time.time() - t0:.0f}s]')


def _run_archs_in_parallel(w: Path, smoke: bool,
                           stop: StopRequest | None = None) -> None:
  """One process per model, all at once; a failure in either is raised here.

  Why: each model's work is a chain of small XLA ops and single-threaded compiles that keep
  neither of two cores busy; two chains side by side fill them (README, "Demo": wall time
  measured both ways).
  stop: SIGTERM's `train.stop.StopRequest`; held here and passed on to the models' processes
  (`docker stop` signals this process alone), which checkpoint their step in flight or stop
  their evaluation; then `Terminated` names the checkpoints.
  """
  ctx = multiprocessing.get_context('spawn')  # fork after JAX has started is unsafe
  logs = {a: w / a / 'demo.log' for a in ARCHS}
  for a in ARCHS:
    logs[a].parent.mkdir(parents=True, exist_ok=True)
  if stop is not None:  # raised here, the pool's exit would wait for the models to finish
    stop.held = True
    stop.forward_to = lambda: [p.pid for p in multiprocessing.active_children()]
  saved, terminated = [], False
  try:
    with concurrent.futures.ProcessPoolExecutor(len(ARCHS), mp_context=ctx) as pool:
      futures = {a: pool.submit(_run_arch, a, w, smoke, str(logs[a])) for a in ARCHS}
      for a in ARCHS:
        try:
          futures[a].result()
        except Terminated as e:  # the other model stops too: wait for it
          terminated = True
          if e.saved:
            saved.append(e.saved)
        except concurrent.futures.process.BrokenProcessPool as e:
          if stop is not None and stop.requested:  # killed by SIGTERM before its handler
            raise Terminated(None) from None
          # Killed (the kernel's out-of-memory killer, kill -9): a BrokenProcessPool traceback.
          from aesthetics_jax.train.errors import TrainingError  # pylint: disable=C0415
          # The pool is broken for both models: which one's process died is not known here.
          raise TrainingError(
              "a model's process ended abruptly (killed: out of memory, or a signal); what "
              'was written is kept (checkpoints, finished evaluations): rerun the same command '
              'to continue, or with --noparallel to train one model at a time (output: '
              f'{w}/<model>/demo.log)') from e
        except Exception as e:  # pylint: disable=broad-except
          msg = f'{a}: {e} (full output: {logs[a]})'
          try:
            err = type(e)(msg)
          except Exception:  # pylint: disable=broad-except
            err = RuntimeError(msg)
          raise err from e
  finally:
    if stop is not None:
      stop.held, stop.forward_to = False, None
  if terminated:
    raise Terminated(None, ' and '.join(saved) or None)


def run_demo(workdir: str | os.PathLike, smoke: bool = False, num_train: int | None = None,
             num_test: int | None = None, seed: int = 0, parallel: bool | None = None,
             stop: StopRequest | None = None) -> Path:
  """Runs (or resumes) the whole demo; returns the path of the combined report.

  parallel: train and evaluate the two models in two processes at once (default: yes, except
    with `smoke`, where starting two more Python processes costs more than it saves).
  stop: SIGTERM's `train.stop.StopRequest` (`common.stop_on_sigterm`): training checkpoints
    the step in flight (in each model's process), and the demo stops there or between stages.
  """
  from aesthetics_jax.train import workdir as workdir_lib  # pylint: disable=C0415
  w = Path(workdir).absolute()
  # A second demo on W at once would write the same data and reports; it is refused (exit 2),
  # naming the first's pid. The models' trainers and evaluations lock W/<arch> themselves.
  with workdir_lib.claim(w, holder='aesthetics-demo'):
    return _run_demo(w, smoke, num_train, num_test, seed, parallel, stop)


def check_workdir(w: Path, num_train: int, num_test: int, seed: int) -> None:
  """DemoDataError (exit 2) for a workdir whose W/ava was made with other sizes or seed, or by
  another demo generator version (or vivid_gain), once a dataset or a model was made from it:
  a rerun with --seed=1 (or --smoke on a full demo's workdir) overwrote the data the finished
  models were trained on, then failed in prepare (exit 1) naming --ava_dir and --data_dir,
  flags the demo does not take; one after an upgrade whose generator draws other images
  remade the data silently under the old models."""
  from aesthetics_jax.data import demo as demo_data  # pylint: disable=import-outside-toplevel
  old = (demo_data.read_manifest(w / 'ava') or {}).get('params')
  if not isinstance(old, dict) or not ((w / 'tfds').exists() or any(
      (w / a / 'checkpoints').exists() for a in ARCHS)):
    return
  said = lambda p: (f'{p.get("num_train")} train / {p.get("num_test")} test images, '  # noqa
                    f'seed {p.get("seed")}')
  now = {'num_train': num_train, 'num_test': num_test, 'seed': seed}
  if old.get('size') == 'paper':
    # 'rerun with the same flags' was the fix named here too: no demo flags draw that data.
    _refuse(f'--workdir={w} holds paper-size data ({w / "ava" / demo_data.MANIFEST}; an '
            'aesthetics-paper-run or aesthetics-make-demo-data --size=paper workdir), which the '
            'demo does not draw: its prepared dataset and models were made from that data; '
            'pass a new --workdir (or continue that run with aesthetics-paper-run)')
  if any(old.get(k) != v for k, v in now.items()):
    made = f'demo data of {said(old)}'
    _refuse(f'--workdir={w} holds {made} ({w / "ava" / demo_data.MANIFEST}), and this run '
            f'asks for {said(now)} (--smoke, --num_train, --num_test, --seed): its prepared '
            'dataset and models were made from that data; rerun with the same flags, or pass '
            'a new --workdir')
  # Another generator draws other images from the same flags: the data stage remade W/ava
  # under the finished models. Every generator since version 1 records its version, so a
  # record without one was not written by any (edited): its data is of no known version.
  version = old.get('generator_version')
  if version != demo_data.GENERATOR_VERSION:
    made = (f'version {version}' if version is not None
            else 'an unknown version (its record names none)')
    _refuse(f'--workdir={w} holds demo data drawn by demo generator {made} '
            f'({w / "ava" / demo_data.MANIFEST}), and this aesthetics-jax draws with version '
            f'{demo_data.GENERATOR_VERSION}, other images from the same flags: its prepared '
            'dataset and models were made from that data; pass a new --workdir, or rerun '
            'with the aesthetics-jax that made it')
  gain = old.get('vivid_gain')
  if gain != demo_data.VIVID_GAIN:  # aesthetics-make-demo-data --vivid_gain into W/ava
    _refuse(f'--workdir={w} holds demo data drawn with vivid_gain {gain} '
            f'({w / "ava" / demo_data.MANIFEST}; aesthetics-make-demo-data --vivid_gain), and '
            f'the demo draws with {demo_data.VIVID_GAIN}: its prepared dataset and models '
            'were made from that data; pass a new --workdir')


def _refuse(message: str) -> NoReturn:
  from aesthetics_jax.data import demo as demo_data  # pylint: disable=import-outside-toplevel
  e = demo_data.DemoDataError(message)
  e.before_work = True  # a usage error (exit 2): nothing ran
  raise e


def _run_demo(w: Path, smoke: bool, num_train: int | None, num_test: int | None, seed: int,
              parallel: bool | None, stop: StopRequest | None = None) -> Path:
  from aesthetics_jax.data import dataset  # pylint: disable=C0415
  t0 = time.time()
  check = stop.check if stop is not None else lambda: None  # between stages
  ava_dir, data_dir = w / 'ava', w / 'tfds'
  d_train, d_test = SIZES[smoke]
  check_workdir(w, num_train or d_train, num_test or d_test, seed)
  make_data(ava_dir, num_train or d_train, num_test or d_test, seed)
  res = stages.prepare_own(ava_dir, data_dir)
  # Both models' training images decoded and resized once (they crop from them).
  dataset.prepare_resized(data_dir, 'style', sorted(
      {int(demo_config(a, smoke).input.resize_size) for a in ARCHS}), progress=False)
  _log(f'dataset: {"reused" if res.reused else "prepared"} {res.kept} '
       f'(skipped {res.skipped}) [{time.time() - t0:.0f}s]')
  if (not smoke) if parallel is None else parallel:
    check()
    _log(f'training and evaluating {" and ".join(ARCHS)} in parallel '
         f'(progress: {w}/<model>/demo.log)')
    _run_archs_in_parallel(w, smoke, stop)
  else:
    for arch in ARCHS:
      check()
      _run_arch(arch, w, smoke, stop=stop)
  check()
  cfg = demo_config(ARCHS[0], smoke)
  cfg.data.data_dir = str(data_dir)
  out = stages.write_combined_report(
      w, ARCHS, cfg, demo=True, title='aesthetics-jax demo: MobileNetV2 (EMD) and VGG16')
  check()
  _log(f'done in {time.time() - t0:.0f}s')
  runs = environment.read_runs(w / ARCHS[0])
  if runs:  # the README's demo tables differ by vector ISA: say which row this run matches
    _log(f'trained on {environment.summary(runs[-1])} (README: the demo\'s figures depend on '
         'the CPU\'s vector instructions)')
  return out


def main(argv):
  if len(argv) > 1:
    common.usage_error('demo', f'unexpected arguments {argv[1:]}; use --flag=value')
  common.check_outputs('demo', folders={'workdir': _WORKDIR.value}, local_only=True)
  logging.set_verbosity(logging.ERROR)
  from aesthetics_jax.train.errors import TrainingError  # pylint: disable=C0415
  try:
    # SIGTERM killed the demo at once (exit -15, no line) and left its model processes
    # running: now the steps in flight are checkpointed, or the demo stops as Ctrl-C does; 143.
    path = run_demo(_WORKDIR.value, _SMOKE.value, _NUM_TRAIN.value, _NUM_TEST.value, _SEED.value,
                    _PARALLEL.value, common.stop_on_sigterm())
  # TrainingError (a RuntimeError: divergence, a workdir of another recipe) was a traceback.
  except (ValueError, FileNotFoundError, OSError, TrainingError) as e:
    # 2 for a busy or unusable workdir
    common.fail('demo', common.storage_line(e, _WORKDIR.value) or e, common.exit_code(e))
  print(path)


def run_cli() -> None:
  """`aesthetics-demo`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
