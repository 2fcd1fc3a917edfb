"""SIGTERM at a known point of a multi-stage command (aesthetics-paper-run, -demo, -control),
run in a subprocess.

Training is replaced by `stopped_training`, which does what the trainer does under SIGTERM
(test_train.py tests the trainer itself: the step in flight finishes and is checkpointed)
without its minute of compilation: the signal arrives while a step runs, the step is
checkpointed, and `Terminated` names the checkpoint. The command must pass the trainer its
SIGTERM handler (a `StopRequest`) for that: without one the signal kills the process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MAIN = '''
import importlib, sys
sys.path[:0] = [{tests!r}, {root!r}]
import sigterm_fixture
command, hook = sys.argv.pop(1), sys.argv.pop(1)
sys.argv[0] = command
sigterm_fixture.install(hook)
importlib.import_module(f'aesthetics_jax.cli.{{command}}').run_cli()
'''


def run(command: str, hook: str, *args: str, timeout: float = 90
        ) -> subprocess.CompletedProcess:
  """`aesthetics-<command> args` with `install(hook)`, in a process group of its own; the
  processes of the group still alive 5 s after the command ended (a demo's model processes)
  are killed, and listed in the result's `left`."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    # Files, not pipes: a process left behind would hold a pipe open.
    p = subprocess.Popen(
        [sys.executable, '-c', _MAIN.format(tests=str(ROOT / 'tests'), root=str(ROOT)),
         command, hook, *args], cwd=ROOT, stdout=out, stderr=err, text=True,
        start_new_session=True)
    left = []
    try:
      p.wait(timeout=timeout)
    finally:
      p.kill()
      deadline = time.time() + 5
      while True:
        try:
          os.killpg(p.pid, 0)
        except ProcessLookupError:
          break
        if time.time() > deadline:
          left.append(p.pid)
          os.killpg(p.pid, signal.SIGKILL)
          break
        time.sleep(0.1)
    out.seek(0)
    err.seek(0)
    r = subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
  r.left = left
  return r


def install(hook: str) -> None:
  """'training': every training stops at its first step, SIGTERM sent to this process;
  'demo models': the same in each demo model's process, SIGTERM sent to the demo (the parent
  process alone, as `docker stop` does) once both models train; 'call:MODULE.NAME': SIGTERM
  sent to this process as MODULE.NAME is called; 'lost:MODULE.NAME': the same, from inside a
  __del__, where the handler's exception is only printed (a weakref callback of evaluate's)."""
  if hook == 'training':
    from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
    trainer.train_and_evaluate = stopped_training
  elif hook == 'demo models':
    from aesthetics_jax.cli import demo  # pylint: disable=import-outside-toplevel
    demo._run_arch = demo_model  # pylint: disable=protected-access
  elif hook.startswith(('call:', 'lost:')):
    import importlib  # pylint: disable=import-outside-toplevel
    how, target = hook.split(':', 1)
    module, name = target.rsplit('.', 1)
    module = importlib.import_module(module)
    real = getattr(module, name)

    def signalled(*args, **kwargs):
      if how == 'lost':
        _SignalsWhenDropped()
      else:
        os.kill(os.getpid(), signal.SIGTERM)
      return real(*args, **kwargs)

    setattr(module, name, signalled)
  else:
    raise ValueError(hook)


class _SignalsWhenDropped:
  """Sends SIGTERM to this process from its __del__, which the handler's exception is raised
  in (and lost: Python prints it, or passes it to sys.unraisablehook)."""

  def __del__(self):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # the handler runs here, inside __del__


def stopped_training(config, workdir, stop=None, *, signal_to: int | None = None,
                     send: bool = True, ready=None) -> dict:
  """`trainer.train_and_evaluate` given SIGTERM during its first step: `stop` holds the
  request, the step is checkpointed (its folder made) and `Terminated(1, folder)` raised.
  signal_to: the process sent SIGTERM (default: this one), if `send`; ready: called first."""
  del config
  if stop is not None:
    stop.held = True
  try:
    if ready is not None:
      ready()
    if send:
      os.kill(os.getpid() if signal_to is None else signal_to, signal.SIGTERM)
    deadline = time.time() + 30
    while stop is None or not stop.requested:  # without a handler: killed, or waits here
      if time.time() > deadline:
        raise TimeoutError('no SIGTERM came')
      time.sleep(0.01)
    from aesthetics_jax.train import stop as stop_lib  # pylint: disable=C0415
    saved = Path(workdir) / 'checkpoints' / '1'
    saved.mkdir(parents=True)
    raise stop_lib.Terminated(1, str(saved))
  finally:
    if stop is not None:
      stop.held = False


def demo_model(arch, w, smoke, log_file=None, stop=None):
  """`demo._run_arch` in a demo model's process, its training `stopped_training`: MobileNetV2
  marks that it trains; VGG16 waits for the mark and sends SIGTERM to the demo's process."""
  del stop
  from aesthetics_jax.cli import demo  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
  mark = Path(w) / 'mobilenet_v2.training'

  def ready():
    if arch == 'mobilenet_v2':
      mark.touch()
      return
    deadline = time.time() + 60
    while not mark.exists():
      if time.time() > deadline:
        raise TimeoutError(f'{mark} was not made')
      time.sleep(0.05)

  def training(config, workdir, stop=None):
    # Only VGG16 signals: MobileNetV2's SIGTERM must come from the demo.
    return stopped_training(config, workdir, stop, ready=ready, signal_to=os.getppid(),
                            send=arch == 'vgg16')

  trainer.train_and_evaluate = training
  return demo._run_arch(arch, w, smoke, log_file)  # pylint: disable=protected-access
