"""The same training code on 1 device and on 2 processes x 4 fake devices: same params."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from aesthetics_jax.train import trainer  # noqa: E402
from aesthetics_jax.train import restore  # noqa: E402
from aesthetics_jax.configs import demo, mobilenet_v2_emd  # noqa: E402
from tiny_ava import prepare_tiny  # noqa: E402

OVERRIDES = {'num_train_steps': 2, 'checkpoint_every_steps': 2, 'eval_every_steps': 2,
             'log_every_steps': 1}


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """The 1-device reference run."""
  tmp = tmp_path_factory.mktemp('md')
  data_dir = prepare_tiny(tmp / 'data')
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(data_dir)
  for k, v in OVERRIDES.items():
    c[k] = v
  assert jax.device_count() == 1
  trainer.train_and_evaluate(c, tmp / 'single')
  return data_dir, tmp


def _logged_losses(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], r['train/loss']) for r in rows if 'train/loss' in r]


def _train_losses(workdir):
  return [loss for _, loss in _logged_losses(workdir)]


def _assert_same_run(workdir, ref):
  np.testing.assert_allclose(_train_losses(workdir), _train_losses(ref), rtol=1e-5)
  _, v, _, _ = restore.restore_for_inference(workdir)
  _, v_ref, _, _ = restore.restore_for_inference(ref)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(v), jax.device_get(v_ref))


def _cmd(data_dir, workdir, *extra, config='configs/demo.py:vgg16,smoke', overrides=OVERRIDES):
  return ([sys.executable, '-m', 'launch.train', f'--config={config}',
           f'--workdir={workdir}', f'--config.data.data_dir={data_dir}']
          + [f'--config.{k}={v}' for k, v in overrides.items()] + list(extra))


def _run_two_processes(data_dir, workdir, **cmd_kw) -> list[tuple[str, str]]:
  """launch.train in 2 processes x 4 fake CPU devices; (stdout, stderr) of each."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +  # the suite's flags (conftest.py)
                       ' --xla_force_host_platform_device_count=4').strip()}
  procs = [subprocess.Popen(_cmd(data_dir, workdir, f'--coordinator_address=localhost:{port}',
                                 '--num_processes=2', f'--process_id={i}', **cmd_kw),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    # An abort ends stderr with Python's list of extension modules: show the cause instead.
    cause = [l for l in err.splitlines()
             if any(k in l for k in ('Fatal', 'Check failed', 'terminate', 'Error', 'error:'))]
    assert p.returncode == 0, '\n'.join(cause[-20:]) or err[-3000:]
  return outs


def test_two_processes_of_four_devices_match_one(single):
  """2 processes (jax.distributed on localhost) x 4 fake CPU devices = an 8-device mesh.

  One subprocess pair covers both scale-out paths (devices within a process, processes over
  Gloo) for the price of one JAX start-up and compile per process.
  """
  data_dir, tmp = single
  outs = _run_two_processes(data_dir, tmp / 'two')
  result = json.loads(outs[0][0].strip().splitlines()[-1])
  assert result['num_devices'] == 8 and result['num_processes'] == 2, result
  # Only process 0 prints the result (Gloo's own connection lines aside).
  assert '"binary_accuracy"' in outs[0][0] and '"binary_accuracy"' not in outs[1][0]
  _assert_same_run(tmp / 'two', tmp / 'single')


def test_cached_head_segments_on_two_processes_match_one_device(single):
  """The frozen-encoder recipe on the 8-device, 2-process mesh: cache encoded sharded and
  gathered on each process, held on every device, head steps in device-side segments
  (`make_train_segment`) — equal to one device fed one host batch per step."""
  data_dir, tmp = single
  over = {'num_train_steps': 5, 'log_every_steps': 2, 'eval_every_steps': 5,
          'checkpoint_every_steps': 5, 'optim.lr': 0.01, 'cache.num_train_views': 2,
          'log_cam_images': 0}
  c = mobilenet_v2_emd.get_config('smoke')
  c.data.data_dir = str(data_dir)
  c.update_from_flattened_dict({**over, 'cache.device_budget_gb': 0.0})
  trainer.train_and_evaluate(c, tmp / 'cached_single')
  outs = _run_two_processes(data_dir, tmp / 'cached_two',
                            config='configs/mobilenet_v2_emd.py:smoke', overrides=over)
  assert 'feature cache held on the devices' in outs[0][0]
  assert [s for s, _ in _logged_losses(tmp / 'cached_two')] == [2, 4, 5]
  _assert_same_run(tmp / 'cached_two', tmp / 'cached_single')


# Faults of a job launched by hand: tiny runs, 1 device per process.
FAULT_OVERRIDES = {'num_train_steps': 2, 'checkpoint_every_steps': 2, 'eval_every_steps': 2,
                   'log_every_steps': 1, 'input.image_size': 32, 'input.resize_size': 36,
                   'log_cam_images': 0}


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  return prepare_tiny(tmp_path_factory.mktemp('faults') / 'data')


def _start_two(data_dir, workdir, extra=((), ()), overrides=FAULT_OVERRIDES, logs=None,
               cwds=(ROOT, ROOT), configs=('demo:vgg16,smoke',) * 2, envs=({}, {})):
  """Both processes of a 2-process job (1 CPU device each), started in `cwds` with `envs`
  added to the environment; stdout and stderr to files `logs/{out,err}{i}` when `logs` is
  given, else pipes."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
  procs = []
  for i in range(2):
    out = err = subprocess.PIPE
    if logs is not None:
      out, err = open(logs / f'out{i}', 'w'), open(logs / f'err{i}', 'w')
    procs.append(subprocess.Popen(
        _cmd(data_dir, workdir, f'--coordinator_address=localhost:{port}', '--num_processes=2',
             f'--process_id={i}', *extra[i], config=configs[i], overrides=overrides),
        cwd=cwds[i], env={**env, **envs[i]}, stdout=out, stderr=err, text=True))
  return procs


def _communicate_all(procs, timeout):
  """(stdout, stderr) of each; kills them all if one outlives `timeout` (then fails)."""
  try:
    return [p.communicate(timeout=timeout) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
      p.wait()
    pytest.fail(f'a process of the job still ran after {timeout} s')


def _all_exit_2_saying(procs, line: str, timeout: int, traceback_checked: bool = True):
  """Every process of `procs` exits 2 with `line` last on stderr (and no traceback)."""
  for p, (_, err) in zip(procs, _communicate_all(procs, timeout)):
    assert p.returncode == 2, err[-3000:]
    if traceback_checked:
      assert 'Traceback' not in err
    assert err.strip().splitlines()[-1] == line


def test_processes_started_with_different_settings_all_exit_naming_it(tiny_data, tmp_path):
  """Another seed on process 1 trained silently apart (each process's own "replicated"
  weights); another num_train_steps or --workdir hung; another model aborted in Gloo. Every
  process now exits 2 at start, with one line naming the setting."""
  procs = _start_two(tiny_data, tmp_path / 'w', extra=((), ('--config.seed=7',)))
  _all_exit_2_saying(procs, (
      'train: the 2 processes disagree on --config.seed: 0 on process 0; 7 on process 1; '
      'start every process with the same flags (--config, --config.KEY, --workdir, '
      '--num_processes) and data'), 50)
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_processes_training_on_different_device_counts_exit_naming_it(tiny_data, tmp_path):
  """Process 0 with XLA_FLAGS for 2 CPU devices, process 1 as it comes (training on one):
  the job trained into a Gloo timeout on process 0 (a traceback) and JAX's C++ abort on
  process 1. Both now exit 2 at start, naming the devices."""
  flags_ = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2')
  procs = _start_two(tiny_data, tmp_path / 'w', envs=({'XLA_FLAGS': flags_.strip()}, {}))
  _all_exit_2_saying(procs, (
      'train: the 2 processes disagree on the devices training uses on each process '
      '(XLA_FLAGS, CUDA_VISIBLE_DEVICES): 2 on process 0; 1 on process 1; start every '
      'process with the same flags (--config, --config.KEY, --workdir, --num_processes) and '
      'data'), 60)
  assert not (tmp_path / 'w' / 'checkpoints').exists()
  # Both counts set by the user, 2 and 1: the global device list tells, before any collective.
  one = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=1')
  procs = _start_two(tiny_data, tmp_path / 'w',
                     envs=({'XLA_FLAGS': flags_.strip()}, {'XLA_FLAGS': one.strip()}))
  _all_exit_2_saying(procs, (
      'train: the 2 processes hold different numbers of devices (2 on process 0; 1 on '
      'process 1); give each the same (XLA_FLAGS, CUDA_VISIBLE_DEVICES)'), 60,
                     traceback_checked=False)


def test_processes_started_with_different_models_name_the_arch(tiny_data, tmp_path):
  """Another --config on process 1 differs in eight keys; the line named the first sorted,
  --config.eval.cam_layers, which reads as a CAM setting to fix."""
  procs = _start_two(tiny_data, tmp_path / 'w',
                     configs=('demo:vgg16,smoke', 'demo:mobilenet_v2,smoke'))
  for p, (_, err) in zip(procs, _communicate_all(procs, 50)):
    assert p.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('train: the 2 processes disagree on --config.model.arch: vgg16 on '
                           'process 0; mobilenet_v2 on process 1 (and '), last


def test_hosts_with_different_data_under_one_data_dir_exit_naming_it(tiny_data, tmp_path):
  """Per-host copies of the dataset under one --config.data.data_dir (here a relative path
  from two working folders), prepared from different AVA roots: trained silently on both."""
  other = prepare_tiny(tmp_path / 'b' / 'prep', num_train=28, seed=1)
  (tmp_path / 'a').mkdir()
  os.symlink(tiny_data, tmp_path / 'a' / 'tfds')
  os.symlink(other, tmp_path / 'b' / 'tfds')
  procs = _start_two('tfds', tmp_path / 'w', cwds=(tmp_path / 'a', tmp_path / 'b'))
  for p, (_, err) in zip(procs, _communicate_all(procs, 50)):
    assert p.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('train: the 2 processes disagree on the data in '
                           '--config.data.data_dir (its AVA fingerprint): '), last


def _wait_for_training(workdir, procs, timeout=60):
  """Returns once process 0 logged a training loss (the job is in its steps)."""
  log = Path(workdir) / 'metrics.jsonl'
  t0 = time.monotonic()
  while time.monotonic() - t0 < timeout:
    if log.exists() and 'train/loss' in log.read_text():
      return
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.2)
  for p in procs:
    p.kill()
  pytest.fail(f'the job did not start training (exit statuses {[p.poll() for p in procs]})')


def test_a_killed_process_ends_the_others_at_once_with_one_line(tiny_data, tmp_path):
  """kill -9 of process 1 mid-training: process 0 printed a Gloo traceback, then waited 90 s
  at exit for the lost process (JAX's heartbeat timeout) and aborted with a C++ stack."""
  over = {**FAULT_OVERRIDES, 'num_train_steps': 200, 'checkpoint_every_steps': 1000,
          'eval_every_steps': 1000}
  procs = _start_two(tiny_data, tmp_path / 'w', overrides=over, logs=tmp_path)
  _wait_for_training(tmp_path / 'w', procs)
  procs[1].send_signal(signal.SIGKILL)
  t0 = time.monotonic()
  _communicate_all(procs, 30)
  took = time.monotonic() - t0
  err = (tmp_path / 'err0').read_text()
  assert procs[0].returncode == 1, err[-3000:]
  assert 'Traceback' not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith('train: lost contact with process 1 of 2 (Gloo '), last  # all-reduce
  assert last.endswith('rerun all 2 processes with the same flags to start again (no '
                       'checkpoint was saved yet)'), last
  assert took < 20, took


def test_ctrl_c_on_one_process_ends_the_job(tiny_data, tmp_path):
  """Ctrl-C on process 1: it printed 'interrupted' and then waited at exit for process 0,
  itself blocked in its next collective with process 1: both hung for ever."""
  over = {**FAULT_OVERRIDES, 'num_train_steps': 200, 'checkpoint_every_steps': 1000,
          'eval_every_steps': 1000}
  procs = _start_two(tiny_data, tmp_path / 'w', overrides=over, logs=tmp_path)
  _wait_for_training(tmp_path / 'w', procs)
  procs[1].send_signal(signal.SIGINT)
  _communicate_all(procs, 30)
  errs = [(tmp_path / f'err{i}').read_text() for i in range(2)]
  assert [p.returncode for p in procs] == [1, 130], errs[1][-3000:]
  assert errs[1].strip().splitlines()[-1] == (
      'train: interrupted (Ctrl-C); what was written is kept (checkpoints): rerun all 2 '
      'processes with the same flags to continue')
  assert errs[0].strip().splitlines()[-1].startswith('train: lost contact with process 1 of 2')
  assert not any('Traceback' in e for e in errs)


def test_a_job_that_never_assembles_ends_after_the_initialization_timeout(tiny_data, tmp_path):
  """Process 1 started alone (no coordinator), and process 0 alone (process 1 never came, or
  started with another port): both waited 300 s and aborted with JAX's C++ stack."""
  ports = []
  for _ in range(2):
    with socket.socket() as s:
      s.bind(('localhost', 0))
      ports.append(s.getsockname()[1])
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  procs = [subprocess.Popen(
      _cmd(tiny_data, tmp_path / f'w{i}', f'--coordinator_address=localhost:{ports[i]}',
           '--num_processes=2', f'--process_id={1 - i}', '--initialization_timeout=2',
           config='demo:vgg16,smoke', overrides=FAULT_OVERRIDES),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  t0 = time.monotonic()
  outs = _communicate_all(procs, 40)
  assert time.monotonic() - t0 < 30
  lasts = [err.strip().splitlines()[-1] for _, err in outs]
  assert [p.returncode for p in procs] == [1, 1], lasts
  assert lasts[0] == (f'train: no coordinator at --coordinator_address=localhost:{ports[0]} '
                      'after --initialization_timeout=2 s: start process 0 (--process_id=0) of '
                      'the job there, or fix the address')
  assert lasts[1] == (f'train: not all 2 processes connected to the coordinator at '
                      f'localhost:{ports[1]} within --initialization_timeout=2 s: start each '
                      '--process_id from 0 to 1 once, all with --num_processes=2')
  assert not any('Traceback' in err for _, err in outs)


def test_start_up_problems_of_a_job_are_one_line(tiny_data, tmp_path):
  """A coordinator port in use segfaulted process 0 in grpc (exit 139, every thread's stack)
  and the others waited out the timeout; --initialization_timeout=2**31-1 was a TypeError
  traceback in JAX; --coordinator_address=auto off a cluster a ValueError traceback."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  with socket.socket() as busy:
    busy.bind(('', 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = [
        ((f'--coordinator_address=localhost:{port}', '--num_processes=2', '--process_id=0'),
         f'train: --coordinator_address=localhost:{port}: port {port} is in use on this host '
         '(Address already in use); pass another port to every process'),
        ((f'--coordinator_address=localhost:{port}', '--num_processes=2', '--process_id=0',
          '--initialization_timeout=2147483647'),
         'train: --initialization_timeout=2147483647: pass a number of seconds from 1 to '
         '604800 (a week)'),
        (('--coordinator_address=auto',),
         # JAX's own words in between ('coordinator_address should be defined.')
         ('train: --coordinator_address=auto: ', ' (JAX found no TPU pod, SLURM or other '
          'cluster it reads); pass host:port of process 0 with --num_processes and '
          '--process_id'))]
    for extra, line in cases:
      r = subprocess.run(_cmd(tiny_data, tmp_path / 'w', *extra, config='demo:vgg16,smoke',
                              overrides=FAULT_OVERRIDES),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
      said = r.stderr.strip().splitlines()
      assert r.returncode == 2 and len(said) == 1, r.stderr[-2000:]
      head, tail = line if isinstance(line, tuple) else (line, '')
      assert said[0].startswith(head) and said[0].endswith(tail), said
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_a_second_process_with_a_running_process_id_is_refused_before_it_connects(
    tiny_data, tmp_path):
  """A process 1 started while process 1 of the job ran: the coordinator aborted the running
  job (every process exit 134 with a C++ stack) and the duplicate waited out
  --initialization_timeout. Now it is refused before connecting, in one line; the first
  one is untouched (here it ends on its own timeout: there is no process 0)."""
  from aesthetics_jax.cli import process_claim
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  flags_ = (f'--coordinator_address=localhost:{port}', '--num_processes=2', '--process_id=1')
  first = subprocess.Popen(
      _cmd(tiny_data, tmp_path / 'w', *flags_, '--initialization_timeout=10',
           config='demo:vgg16,smoke', overrides=FAULT_OVERRIDES),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 60
    while True:  # until the first holds its claim
      with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
          probe.connect(process_claim.name(f'localhost:{port}', 1))
          break
        except OSError:
          assert first.poll() is None and time.monotonic() < deadline, first.communicate()
          time.sleep(0.1)
    second = subprocess.run(
        _cmd(tiny_data, tmp_path / 'w2', *flags_, config='demo:vgg16,smoke',
             overrides=FAULT_OVERRIDES),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr[-2000:]
    assert second.stderr.strip().splitlines() == [
        f'train: --process_id=1 of the job at --coordinator_address=localhost:{port} is '
        'already running on this host; start each --process_id once (a second one would make '
        'the coordinator stop the whole job)']
    assert first.poll() is None  # still waiting for its coordinator
  finally:
    out, err = _communicate_all([first], 60)[0]
  assert first.returncode == 1 and err.strip().splitlines()[-1].startswith(
      f'train: no coordinator at --coordinator_address=localhost:{port}'), err[-2000:]


def test_an_error_on_one_process_ends_the_others(tiny_data, tmp_path):
  """The data missing on one host only (here a relative --config.data.data_dir from two
  working folders): process 1 printed its one line and then waited at exit for process 0,
  itself waiting in a collective for process 1: both hung for ever."""
  (tmp_path / 'a').mkdir()
  (tmp_path / 'b').mkdir()
  os.symlink(tiny_data, tmp_path / 'a' / 'tfds')
  procs = _start_two('tfds', tmp_path / 'w', cwds=(tmp_path / 'a', tmp_path / 'b'))
  outs = _communicate_all(procs, 40)
  lasts = [err.strip().splitlines()[-1] for _, err in outs]
  assert [p.returncode for p in procs] == [1, 2], lasts
  assert lasts[1].startswith('train: tfds: no prepared dataset ava/style'), lasts[1]
  assert lasts[0].startswith('train: lost contact with process 1 of 2 (Gloo '), lasts[0]


def test_sigterm_on_one_process_checkpoints_one_step_on_all(tiny_data, tmp_path):
  """SIGTERM (a scheduler's preemption) to a process of a multi-process job was taken by the
  notifier jax.distributed.initialize installs: the job trained on until SIGKILL. Every
  process now saves the same step (JAX's preemption sync point): one line each, exit 143."""
  over = {**FAULT_OVERRIDES, 'num_train_steps': 400, 'checkpoint_every_steps': 1000,
          'eval_every_steps': 1000}
  w = tmp_path / 'w'
  procs = _start_two(tiny_data, w, overrides=over, logs=tmp_path)
  _wait_for_training(w, procs)
  procs[1].send_signal(signal.SIGTERM)
  _communicate_all(procs, 60)
  errs = [(tmp_path / f'err{i}').read_text() for i in range(2)]
  assert [p.returncode for p in procs] == [143, 143], errs[1][-3000:]
  lasts = [e.strip().splitlines()[-1] for e in errs]
  step = int(re.match(r'train: terminated \(SIGTERM\) at step (\d+), ', lasts[0]).group(1))
  assert 0 < step < 400
  assert lasts == [f'train: terminated (SIGTERM) at step {step}, checkpointed in '
                   f'{w / "checkpoints" / str(step)}: rerun all 2 processes with the same '
                   'flags to continue'] * 2
  assert sorted(int(p.name) for p in (w / 'checkpoints').iterdir() if p.name.isdigit()) == [
      step]
  assert not any('Traceback' in e for e in errs)
