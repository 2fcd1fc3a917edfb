"""SIGTERM in the commands that do not train (evaluate, prepare_data, make_demo_data,
convert_weights, make_fake_weights, benchmark): one line and exit 143, as Ctrl-C's 130.

The signal is sent at a known point (`sigterm_fixture`: as a library function is called), in a
subprocess; the commands' own outputs are atomic and their reruns redo the work.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import sigterm_fixture

# command: (the function SIGTERM comes at, its flags given a tmp folder `t`).
_COMMANDS = {
    'make_demo_data': ('aesthetics_jax.data.demo.generate',
                       lambda t: [f'--out_dir={t}/ava', '--num_train=4', '--num_test=2']),
    'prepare_data': ('aesthetics_jax.data.dataset.prepare',
                     lambda t: [f'--ava_dir={t}/ava', f'--data_dir={t}/tfds']),
    'convert_weights': ('aesthetics_jax.models.pretrained.convert_file',
                        lambda t: ['--arch=mobilenet_v2', f'--source={t}/w.npz',
                                   f'--out={t}/out']),
    'make_fake_weights': ('aesthetics_jax.cli.fake_weights.make_weights',
                          lambda t: [f'--out={t}/out', '--archs=mobilenet_v2']),
    'evaluate': ('aesthetics_jax.evaluation.run.evaluate', lambda t: [f'--workdir={t}']),
    'benchmark': ('aesthetics_jax.cli.benchmark.run',
                  lambda t: ['--what=model', '--reference=none', f'--json={t}/b.json']),
}


@pytest.mark.parametrize('command', list(_COMMANDS))
def test_sigterm_is_one_line_and_143(tmp_path, command):
  """SIGTERM (`timeout`, a job's time limit, `docker stop`) killed these commands at once:
  exit -15, no line."""
  function, flags = _COMMANDS[command]
  if command == 'prepare_data':  # an AVA root whose check passes (nothing is decoded)
    (tmp_path / 'ava' / 'style_image_lists').mkdir(parents=True)
    for name in ('AVA.txt', 'tags.txt', 'style_image_lists/train.jpgl',
                 'style_image_lists/test.jpgl'):
      (tmp_path / 'ava' / name).write_text('')
  if command == 'convert_weights':
    (tmp_path / 'w.npz').write_bytes(b'')
  r = sigterm_fixture.run(command, f'call:{function}', *flags(tmp_path), timeout=60)
  assert r.returncode == 143, (r.returncode, r.stderr[-2000:])
  # The last line (benchmark logs JAX's backends before it): no traceback.
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(f'{command}: terminated (SIGTERM)'), r.stderr
  # The benchmark resumes nothing: it says what it wrote (here, before any section, nothing).
  again = ('nothing written' if command == 'benchmark' else 'rerun the same command')
  assert again in last and 'Traceback' not in r.stderr, last
  assert not (tmp_path / 'out').exists() and not (tmp_path / 'b.json').exists()


def test_a_sigterm_lost_in_a_callback_still_stops_the_command(tmp_path):
  """SIGTERM whose exception was raised in a callback that only prints its errors (a weakref
  callback: 1 in 2 of those sent to aesthetics-evaluate late in its run) was dropped, and the
  command ran on to exit 0: Ctrl-C's is raised again, SIGTERM's was left to the trainer."""
  r = sigterm_fixture.run('make_demo_data', 'lost:aesthetics_jax.data.demo.generate',
                          f'--out_dir={tmp_path}/ava', '--num_train=4', '--num_test=2',
                          timeout=60)
  assert r.returncode == 143, (r.returncode, r.stderr[-2000:])
  assert r.stderr.strip().splitlines()[-1] == (  # after the progress bar
      'make_demo_data: terminated (SIGTERM); what was written is kept (checkpoints, finished '
      'stages, atomic outputs): rerun the same command to continue'), r.stderr
  assert 'Exception ignored' not in r.stderr and 'Traceback' not in r.stderr, r.stderr
  assert not (tmp_path / 'ava' / 'demo_manifest.json').exists()  # the run did not finish


# aesthetics-convert-weights SIGKILLed (kill -9, the OOM killer) while it writes the .npz.
_KILLED_IN_THE_WRITE = '''
import os, signal, sys
import numpy as np
sys.argv[0] = 'convert_weights'
def killed(*args, **kwargs):
  os.kill(os.getpid(), signal.SIGKILL)
np.savez = killed
from aesthetics_jax.cli import convert_weights
convert_weights.run_cli()
'''


def test_a_rerun_removes_what_a_killed_weights_write_left(tmp_path):
  """kill -9 during convert_weights (or make_fake_weights) left the hidden temporary file
  `.mobilenet_v2.npz.<pid>.<id>.tmp` for good (VGG16's: 0.55 GB, reserved up front), one more
  each run; the rerun removes it. Another writer's, still running, stays."""
  source = sigterm_fixture.ROOT / 'tests' / 'fixtures' / 'mobilenet_v2_w025.safetensors'
  args = ['--arch=mobilenet_v2', f'--source={source}', f'--out={tmp_path}']
  r = subprocess.run([sys.executable, '-c', _KILLED_IN_THE_WRITE, *args],
                     cwd=sigterm_fixture.ROOT, capture_output=True, text=True, timeout=60)
  assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
  left = [p.name for p in tmp_path.iterdir()]
  assert len(left) == 1 and left[0].startswith('.mobilenet_v2.npz.'), left
  running = tmp_path / f'.mobilenet_v2.npz.{os.getpid()}.0123abcd.tmp'  # this process's
  running.write_bytes(b'')
  r = subprocess.run([sys.executable, '-m', 'launch.convert_weights', *args],
                     cwd=sigterm_fixture.ROOT, capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      running.name, 'mobilenet_v2.npz', 'mobilenet_v2.npz.json']


_CTRL_C_WITH_THE_PLACEMENT_PROBE = '''
import os, signal, time
from aesthetics_jax.bench import placement
signal.signal(signal.SIGINT, lambda *_: None)  # this one goes on (SIG_IGN: the helper too)
with placement.probe(True) as measure:
  if measure() is None:
    print('no helper')
  os.killpg(0, signal.SIGINT)  # a terminal's Ctrl-C: its whole foreground process group
  time.sleep(1)
'''


def test_ctrl_c_in_a_terminal_leaves_the_benchmarks_helper_quiet():
  """Ctrl-C in a terminal during `aesthetics-benchmark --what=model,cam` with the torch
  reference reached the core-latency helper process too: its KeyboardInterrupt traceback
  (10 lines) came before the benchmark's one line."""
  r = subprocess.run([sys.executable, '-c', _CTRL_C_WITH_THE_PLACEMENT_PROBE],
                     cwd=sigterm_fixture.ROOT, capture_output=True, text=True, timeout=60,
                     start_new_session=True)
  if 'no helper' in r.stdout:
    pytest.skip('one CPU: no helper process')
  assert r.returncode == 0 and r.stderr == '', (r.returncode, r.stderr)


@pytest.mark.parametrize('signum,code,line', [
    (signal.SIGINT, 130, 'predict: interrupted (Ctrl-C) while starting; nothing was written'),
    (signal.SIGTERM, 143, 'predict: terminated (SIGTERM) while starting; nothing was written')])
def test_a_signal_while_a_command_starts_is_one_line(signum, code, line):
  """Ctrl-C in a command's first ~0.5 s, while its modules loaded (before common.run's
  handlers), was a 15-line traceback; SIGTERM there a silent -15. The signal comes here as
  the command's package is imported, as `aesthetics-predict` imports it."""
  script = ('import os, signal, sys, time; sys.argv[0] = "/venv/bin/aesthetics-predict"; '
            f'import aesthetics_jax.cli; os.kill(os.getpid(), {int(signum)}); time.sleep(30)')
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                     timeout=60, check=False)
  assert (r.returncode, r.stderr.strip()) == (code, line)


def test_a_library_user_keeps_its_own_ctrl_c():
  """Outside the commands (a notebook, a script, a demo's model process) importing the
  package leaves Ctrl-C a KeyboardInterrupt."""
  script = ('import os, signal, sys, time; sys.orig_argv.append("--multiprocessing-fork"); '
            'sys.argv[0] = "aesthetics-demo"; import aesthetics_jax.cli\n'
            'try:\n  os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n'
            'except KeyboardInterrupt:\n  print("caught")')
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                     timeout=60, check=False)
  assert (r.returncode, r.stdout.strip()) == (0, 'caught')
