"""Hostile storage: damaged checkpoints, garbage JSON, a busy / unusable workdir, failed saves.

Every fault is one line naming what is wrong and what to do (never a traceback, never NaN
reported as a result). Built on the initialised-checkpoint fixture (no training) except one
short training run that falls back from a corrupt step and then hits a full disk.
"""
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

import checkpoint_fixture
from aesthetics_jax import models, parallel
from aesthetics_jax.evaluation import predictor
from aesthetics_jax.evaluation import records
from aesthetics_jax.evaluation import run as eval_run
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.train import checkpoints, optim, orbax_logging, trainer
from aesthetics_jax.train import restore
from aesthetics_jax.train import workdir as workdir_lib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def base(tmp_path_factory) -> Path:
  """A workdir with intact checkpoints at steps 2 and 4 (VGG16 smoke, 32 px)."""
  wd = tmp_path_factory.mktemp('faults') / 'base'
  config = checkpoint_fixture.smoke_config('vgg16')
  checkpoint_fixture.write_init_checkpoint(wd, config, step=2)
  checkpoint_fixture.write_init_checkpoint(wd, config, step=4)
  return wd


@pytest.fixture
def wd(base, tmp_path) -> Path:
  return Path(shutil.copytree(base, tmp_path / 'w'))


def _data_file(step_dir: Path) -> Path:
  """The largest array data file of `variables` (where the weights are)."""
  return max((p for p in (step_dir / 'variables').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def _flip(p: Path) -> Path:
  b = bytearray(p.read_bytes())
  for i in range(len(b) // 3, min(len(b) // 3 + 4096, len(b))):
    b[i] ^= 0xFF
  p.write_bytes(bytes(b))
  return p


def _truncate(p: Path) -> Path:
  os.truncate(p, p.stat().st_size // 2)
  return p


def _empty(p: Path) -> Path:
  os.truncate(p, 0)
  return p


def _delete(p: Path) -> Path:
  if p.is_dir():
    shutil.rmtree(p)
  else:
    p.unlink()
  return p


def _garbage(p: Path) -> Path:
  p.write_text('{\n')
  return p


# fault name → (damage applied to checkpoints/4, which path it names, the cause it gives)
FAULTS = {
    'bit_flip': (lambda s: _flip(_data_file(s)), 'checksum'),
    'truncated': (lambda s: _truncate(_data_file(s)), 'is truncated ('),
    'emptied': (lambda s: _empty(_data_file(s)), 'is empty (0 of'),
    'data_deleted': (lambda s: _delete(_data_file(s)), 'is missing'),
    'manifest_deleted': (lambda s: _delete(s / 'variables' / 'manifest.ocdbt'), 'is missing'),
    'variables_deleted': (lambda s: _delete(s / 'variables'), 'is missing'),
    'meta_garbage': (lambda s: _garbage(s / 'meta' / 'metadata'), 'not valid JSON'),
}


def _one_line(e: BaseException) -> str:
  text = str(e)
  assert '\n' not in text and 'Traceback' not in text, text
  assert 'does not match this model' not in text, text  # damage is not a model mismatch
  return text


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_damaged_latest_checkpoint_is_one_line(wd, fault):
  damage, cause = FAULTS[fault]
  path = damage(wd / 'checkpoints' / '4')
  with pytest.raises(checkpoints.CorruptCheckpointError) as e:
    restore.restore_for_inference(wd)
  msg = _one_line(e.value)
  assert msg.startswith('checkpoint 4 is corrupt: ') and str(path) in msg and cause in msg, msg
  assert '--step=2' in msg and e.value.step == 4
  if fault == 'bit_flip':  # the intact step it suggests does restore
    assert restore.restore_for_inference(wd, step=2)[3] == 2


@pytest.mark.parametrize('part', ['meta', 'variables', 'all'])
@pytest.mark.parametrize('saved_newer', [True, False])
def test_a_checkpoint_a_running_trainer_deletes_while_it_is_read(wd, monkeypatch, part,
                                                                 saved_newer):
  """Evaluating a workdir still being trained (keep_checkpoints=1, a checkpoint a step): the
  newest checkpoint vanished while it was read, and evaluate said 'checkpoint N is corrupt ...
  no other checkpoint is intact: retrain' or 'does not match this model'. The newer one (a
  copy of 2 saved as 6, as the trainer saves before it deletes; else the remaining 2) is read
  instead."""
  real = checkpoints.Checkpointer.check_model
  calls = []

  def rotate_then_check(self, step, model_config):
    calls.append(step)
    if len(calls) == 1:  # the trainer's save, then its deletion, half done or whole
      if saved_newer:
        shutil.copytree(wd / 'checkpoints' / '2', wd / 'checkpoints' / '6')
      _delete(wd / 'checkpoints' / '4' / part if part != 'all' else wd / 'checkpoints' / '4')
    return real(self, step, model_config)
  monkeypatch.setattr(checkpoints.Checkpointer, 'check_model', rotate_then_check)
  if saved_newer or part == 'all':
    assert restore.restore_for_inference(wd)[3] == (6 if saved_newer else 2)
    assert calls == [4, 6 if saved_newer else 2]
  else:  # the folder is still there, nothing newer: real damage, reported as before
    with pytest.raises(checkpoints.CorruptCheckpointError, match='checkpoint 4 is corrupt'):
      restore.restore_for_inference(wd)


def test_an_explicit_step_deleted_while_it_is_read_says_so(wd, monkeypatch):
  real = checkpoints.Checkpointer.check_model

  def rotate_then_check(self, step, model_config):
    _delete(wd / 'checkpoints' / '2')
    return real(self, step, model_config)
  monkeypatch.setattr(checkpoints.Checkpointer, 'check_model', rotate_then_check)
  with pytest.raises(checkpoints.WorkdirError, match='checkpoint 2 was deleted while it was '
                     'read .*; pass a step it keeps, or omit --step'):
    restore.restore_for_inference(wd, step=2)


def test_evaluate_and_predict_refuse_a_damaged_checkpoint(wd):
  _flip(_data_file(wd / 'checkpoints' / '4'))
  with pytest.raises(checkpoints.CorruptCheckpointError, match=r'--step=2'):
    eval_run.evaluate(wd)
  with pytest.raises(checkpoints.CorruptCheckpointError, match=r'--step=2'):
    predictor.Predictor(wd)
  assert not (wd / 'eval').exists()


def test_without_files_json_the_array_checksums_still_catch_damage(wd):
  """A step written before files.json (or killed before it): the crc32 of every array, saved
  in `meta` with the arrays, catches values that decode but changed (a silent bit flip)."""
  step4 = wd / 'checkpoints' / '4'
  (step4 / checkpoints.FILES_JSON).unlink()
  meta = json.loads((step4 / 'meta' / 'metadata').read_text())
  key = sorted(meta['checksums']['variables'])[0]
  meta['checksums']['variables'][key][0] ^= 1
  (step4 / 'meta' / 'metadata').write_text(json.dumps(meta))
  with pytest.raises(checkpoints.CorruptCheckpointError) as e:
    restore.restore_for_inference(wd)
  assert f'variables{key} differs from what was saved' in _one_line(e.value)
  # A truncated data file is then TensorStore's error, still one line naming the step.
  (step4 / 'meta' / 'metadata').write_text(json.dumps({**meta, 'checksums': {}}))
  _truncate(_data_file(step4))
  with pytest.raises(checkpoints.CorruptCheckpointError) as e:
    restore.restore_for_inference(wd)
  assert 'cannot be read (' in _one_line(e.value) and str(step4) in str(e.value)


def test_fallback_to_the_newest_intact_step_and_when_none_is_left(wd, caplog):
  config = checkpoint_fixture.smoke_config('vgg16')
  model = models.create_model(config.model)
  abstract_vars = models.abstract_variables(model, int(config.input.image_size))
  abstract_opt = {'step': jax.ShapeDtypeStruct((), np.int32)}
  _truncate(_data_file(wd / 'checkpoints' / '4'))
  ck = checkpoints.Checkpointer(wd)
  with caplog.at_level(logging.WARNING):
    step, _, opt = ck.restore_latest_intact(config.model, abstract_vars, abstract_opt)
  assert step == 2 and int(opt['step']) == 2 and ck.all_steps() == [2]
  assert 'checkpoint 4 is corrupt' in caplog.text and 'resuming from checkpoint 2' in caplog.text
  assert (wd / checkpoints.CORRUPT_DIR / '4').is_dir()
  _empty(_data_file(wd / 'checkpoints' / '2'))
  with pytest.raises(checkpoints.CorruptCheckpointError, match='no older checkpoint is intact'):
    ck.restore_latest_intact(config.model, abstract_vars, abstract_opt)
  ck.close()


@pytest.mark.parametrize('text', ['{"model": ', '[1, 2]', '\xff\xfe'])
def test_garbage_config_json_names_the_file(wd, text):
  (wd / 'config.json').write_bytes(text.encode('latin-1'))
  with pytest.raises(checkpoints.WorkdirError) as e:
    restore.restore_for_inference(wd)
  assert str(wd / 'config.json') in _one_line(e.value) and 'not valid JSON' in str(e.value)


def test_another_runs_checkpoint_is_named_without_a_config_fix(wd):
  """evaluate / predict with another model's checkpoint in checkpoints/ said 'use a fresh
  --workdir or the matching --config', and both refuse --config.model.*: config.json names
  the model there. The line now says the checkpoint is another run's."""
  path = wd / 'config.json'
  saved = json.loads(path.read_text())
  saved['model']['width_mult'] = 0.5
  path.write_text(json.dumps(saved))
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    restore.restore_for_inference(wd)
  text = _one_line(e.value)
  assert 'trained with a different model (width_mult=' in text and '--config' not in text
  assert text.endswith(f"{path} names the model, so that checkpoint is another run's: move it "
                       'back to its own workdir and pass that one')


@pytest.mark.parametrize('text', [None, '{garbage', '[1]'])
def test_a_resume_without_a_readable_config_json_is_refused(wd, text):
  """A missing or damaged config.json beside checkpoints let a resume change the recipe
  (image size, normalisation, loss) with no check, and config.json was then rewritten saying
  the whole run used the new one. Now one line naming the file, as evaluate's; a workdir
  without checkpoints still starts (and writes it)."""
  from aesthetics_jax.train import resume_checks  # pylint: disable=import-outside-toplevel
  path = wd / 'config.json'
  config = checkpoint_fixture.smoke_config('vgg16')
  resume_checks.check_workdir_model(wd, config)  # intact: resumes
  if text is None:
    path.unlink()
  else:
    path.write_text(text)
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    resume_checks.check_workdir_model(wd, config)
  assert _one_line(e.value).startswith(f'{path}: not ')
  assert str(e.value).endswith(f'; {wd} holds checkpoints whose recipe cannot be checked '
                               'without it: restore it from a copy, or train in a fresh '
                               '--workdir')
  for step in ('2', '4'):
    shutil.rmtree(wd / 'checkpoints' / step)
  resume_checks.check_workdir_model(wd, config)


# ------------------------------------------------------------------------------------------
# Non-finite outputs are errors, never numbers.
# ------------------------------------------------------------------------------------------


def test_predict_reports_non_finite_outputs_as_errors(tmp_path):
  img = tmp_path / 'a.png'
  from PIL import Image  # pylint: disable=import-outside-toplevel
  Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(img)
  p = object.__new__(predictor.Predictor)  # no checkpoint, no compile: a model gone NaN
  p.size, p.step = 32, 4

  def run(x):
    b = x.shape[0]
    return ({'p_high': np.full((b,), np.nan, np.float32), 'label_pred': np.zeros((b,), np.int32)},
            {'aesthetic': np.zeros((b, 2, 2), np.float32)})
  p.run = run
  recs = list(p.predict_files([str(img), str(tmp_path / 'missing.jpg')]))
  assert 'not finite' in recs[0]['error'] and 'checkpoint 4' in recs[0]['error']
  assert set(recs[0]) == {'path', 'error'} and 'no such file' in recs[1]['error']
  line = records.to_json_line({'path': 'x', 'mean_score': float('nan')})
  assert json.loads(line) == {'path': 'x', 'error': 'non-finite number in the output'}


def test_evaluation_refuses_non_finite_outputs(tmp_path):
  n = 5
  pred = {'p_high': np.array([0.2, np.nan, 0.7, np.inf, 0.1], np.float32),
          'label_pred': np.zeros((n,), np.int32)}
  maps = {'intensity': np.array([0.1, 0.2, np.nan, 0.3, 0.4], np.float32),
          'box_aesthetic': np.zeros((n, 4), np.int32), 'empty_aesthetic': np.zeros((n,), bool)}
  test = streaming.SplitSummary(pred=pred, true={'mean_score': np.zeros((n,))}, maps=maps)
  with pytest.raises(eval_run.EvaluationError) as e:
    eval_run._check_finite(test, 4, tmp_path)
  assert '3 of 5 test images gave non-finite' in _one_line(e.value)


# ------------------------------------------------------------------------------------------
# The workdir: lock, shape, writability.
# ------------------------------------------------------------------------------------------


def _fake_lock(wd: Path, pid: int) -> Path:
  path = wd / workdir_lib.LOCK_NAME
  path.write_text(json.dumps({'pid': pid, 'host': socket.gethostname(),
                              'started': '2024-01-01 00:00:00'}))
  return path


def test_a_live_lock_refuses_a_second_trainer_and_a_stale_one_is_taken_over(wd, caplog):
  sleeper = subprocess.Popen(['sleep', '60'])
  try:
    lock_path = _fake_lock(wd, sleeper.pid)
    config = checkpoint_fixture.smoke_config('vgg16')
    with pytest.raises(checkpoints.WorkdirBusyError) as e:
      trainer.train_and_evaluate(config, wd)  # refused before any work
    msg = _one_line(e.value)
    assert f'pid {sleeper.pid} on {socket.gethostname()}' in msg and str(lock_path) in msg
    assert json.loads(lock_path.read_text())['pid'] == sleeper.pid  # not the refused one's
  finally:
    sleeper.kill()
    sleeper.wait()
  lock = workdir_lib.WorkdirLock(wd)
  with caplog.at_level(logging.WARNING):
    lock.acquire()  # its holder is gone: taken over, said once
  assert 'taking over the stale workdir lock of pid' in caplog.text
  assert json.loads(lock_path.read_text())['pid'] == os.getpid()
  with pytest.raises(checkpoints.WorkdirBusyError, match=f'pid {os.getpid()}'):
    workdir_lib.WorkdirLock(wd).acquire()  # held by this (live) process
  lock.release()
  assert not lock_path.exists()


def test_a_recycled_pid_does_not_hold_the_lock(wd):
  """The lock records the holder's kernel start tick: a new process with its pid is not it."""
  if workdir_lib._proc_start(os.getpid()) is None:
    pytest.skip('no /proc here')
  path = _fake_lock(wd, os.getpid())
  info = json.loads(path.read_text())
  path.write_text(json.dumps({**info, 'proc_start': '1'}))
  lock = workdir_lib.WorkdirLock(wd)
  lock.acquire()
  lock.release()


def test_unusable_workdirs_are_one_line_and_leave_nothing_behind(tmp_path, monkeypatch):
  config = checkpoint_fixture.smoke_config('vgg16', data_dir=tmp_path / 'no_data')
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  for wd, match in ((a_file, 'is not a folder'), (a_file / 'w', 'cannot create the workdir')):
    with pytest.raises(checkpoints.WorkdirError, match=match) as e:
      trainer.train_and_evaluate(config, wd)
    _one_line(e.value)

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
  monkeypatch.setattr(workdir_lib.tempfile, 'mkstemp', read_only)
  fresh = tmp_path / 'fresh'
  with pytest.raises(checkpoints.WorkdirError, match='not writable .Read-only file system'):
    trainer.train_and_evaluate(config, fresh)
  assert not fresh.exists()
  monkeypatch.undo()
  # A start that fails later (no dataset here) removes the workdir it created, lock included.
  with pytest.raises(FileNotFoundError):
    trainer.train_and_evaluate(config, fresh)
  assert not fresh.exists()


def test_evaluate_checks_it_can_write_before_working(wd, monkeypatch):
  (wd / 'eval').write_text('a file where the results go')
  with pytest.raises(checkpoints.WorkdirError, match='eval: exists and is not a folder'):
    eval_run.evaluate(wd)
  (wd / 'eval').unlink()

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
  monkeypatch.setattr(workdir_lib.tempfile, 'mkstemp', read_only)
  # Raised before the (here missing) dataset is even looked for.
  with pytest.raises(checkpoints.WorkdirError) as e:
    eval_run.evaluate(wd)
  assert 'evaluation folder is not writable (Read-only file system)' in _one_line(e.value)
  assert not (wd / 'eval').exists()
  # eval/ writable, eval/figures not (chattr +i): found after the whole evaluation, exit 1.
  monkeypatch.undo()  # the read-only mkstemp above
  (wd / 'eval' / 'figures').mkdir(parents=True)
  real = tempfile.mkstemp

  def figures_read_only(*args, dir=None, **kwargs):  # pylint: disable=redefined-builtin
    if str(dir).endswith('figures'):
      raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    return real(*args, dir=dir, **kwargs)
  monkeypatch.setattr(workdir_lib.tempfile, 'mkstemp', figures_read_only)
  with pytest.raises(checkpoints.WorkdirError) as e:
    eval_run.evaluate(wd)
  assert 'figures: the evaluation figures folder is not writable' in _one_line(e.value)
  shutil.rmtree(wd / 'eval')


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0,
                    reason='root writes through permission bits')
def test_read_only_workdir_by_permissions(tmp_path):
  wd = tmp_path / 'ro'
  wd.mkdir()
  wd.chmod(0o500)
  try:
    with pytest.raises(checkpoints.WorkdirError, match='not writable'):
      workdir_lib.prepare(wd)
  finally:
    wd.chmod(0o700)


# ------------------------------------------------------------------------------------------
# Failed saves.
# ------------------------------------------------------------------------------------------


def _tree(v: float) -> dict:
  return {'w': np.full((3,), v, np.float32)}


def test_a_failed_save_is_one_line_and_touches_nothing(tmp_path, monkeypatch):
  ck = checkpoints.Checkpointer(tmp_path, enable_async=False)
  ck.save(1, _tree(1), {'step': np.int32(1)}, {'model': {}})
  ck.wait()

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'save', disk_full)
  with pytest.raises(checkpoints.CheckpointSaveError) as e:
    ck.save(2, _tree(2), {'step': np.int32(2)}, {'model': {}})
  msg = _one_line(e.value)
  assert 'saving checkpoint 2' in msg and 'No space left on device' in msg
  assert 'checkpoint 1 is untouched' in msg
  monkeypatch.undo()
  ck.close(raise_errors=False)
  ck.verify_files(1, ('variables', 'opt', 'meta'))  # still intact


def test_an_async_save_failure_surfaces_at_the_next_check(tmp_path, monkeypatch):
  """Orbax reports a failed background write (TensorStore's text, no errno) when waited on."""
  ck = checkpoints.Checkpointer(tmp_path)
  ck.save(1, _tree(1), {'step': np.int32(1)}, {'model': {}})
  ck.check_saves()  # non-blocking: a save in flight is no failure
  real_wait = checkpoints.ocp.CheckpointManager.wait_until_finished

  def failed(self):
    real_wait(self)
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0": Failed writing: '
                     '"/x/ocdbt.process_0/d/abc": No space left on device')
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'wait_until_finished', failed)
  with pytest.raises(checkpoints.CheckpointSaveError, match=r'checkpoint 1 .* failed \(No space'):
    ck.check_saves(block=True)
  monkeypatch.undo()
  ck.close(raise_errors=False)


# ------------------------------------------------------------------------------------------
# Training: falls back from a corrupt latest step, then stops at once when a save fails.
# ------------------------------------------------------------------------------------------


def _write_train_checkpoints(wd: Path, config, steps) -> None:
  """Checkpoints with the trainer's real state structure, without training (no compile)."""
  model = models.create_model(config.model)
  mesh = parallel.make_mesh()
  tx = optim.make_optimizer(config, int(config.num_train_steps))
  variables = models.init_variables(model, config.seed, int(config.input.image_size))
  state = trainer.create_state(model, config, tx, mesh, variables)
  (wd / 'config.json').parent.mkdir(parents=True, exist_ok=True)
  (wd / 'config.json').write_text(json.dumps(config.to_dict(), default=str))
  ck = checkpoints.Checkpointer(wd, enable_async=False)
  for s in steps:
    step = parallel.replicate(np.int32(s), mesh)
    ck.save(s, state.variables, {'step': step, 'opt_state': state.opt_state},
            {'model': checkpoints.model_signature(config.model), 'step': s})
  ck.close()


def test_train_falls_back_to_the_intact_step_then_stops_at_a_failed_save(tmp_path, monkeypatch,
                                                                         caplog):
  from tiny_ava import prepare_tiny  # pylint: disable=import-outside-toplevel
  data_dir = prepare_tiny(tmp_path / 'data')
  config = checkpoint_fixture.smoke_config('vgg16', data_dir=data_dir)
  config.num_train_steps, config.checkpoint_every_steps = 8, 2
  config.eval_every_steps, config.log_every_steps, config.log_cam_images = 100, 1, 0
  wd = tmp_path / 'w'
  _write_train_checkpoints(wd, config, (2, 4))
  _flip(_data_file(wd / 'checkpoints' / '4'))
  real_save = checkpoints.ocp.CheckpointManager.save

  def disk_full_at_4(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'save', disk_full_at_4)
  with caplog.at_level(logging.WARNING), pytest.raises(checkpoints.CheckpointSaveError) as e:
    trainer.train_and_evaluate(config, wd)
  falls_back = [r.getMessage() for r in caplog.records if 'resuming from checkpoint 2' in
                r.getMessage()]
  assert len(falls_back) == 1 and 'checkpoint 4 is corrupt' in falls_back[0]
  assert (wd / checkpoints.CORRUPT_DIR / '4').is_dir()  # kept for inspection, out of the way
  assert 'saving checkpoint 4' in _one_line(e.value) and 'checkpoint 2 is untouched' in str(e.value)
  rows = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [3, 4]  # resumed after 2; nothing ran after the failure
  assert not (wd / workdir_lib.LOCK_NAME).exists()
  assert sorted(p.name for p in (wd / 'checkpoints').iterdir()) == ['2']
  assert restore.restore_for_inference(wd)[3] == 2


# ------------------------------------------------------------------------------------------
# The launch scripts print these as one line (the only subprocesses here).
# ------------------------------------------------------------------------------------------


def test_cli_prints_one_line(wd, tmp_path):
  from tiny_ava import prepare_tiny  # pylint: disable=import-outside-toplevel
  data_dir = prepare_tiny(tmp_path / 'data')  # train checks the dataset before the workdir
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  path = _flip(_data_file(wd / 'checkpoints' / '4'))
  lock = workdir_lib.WorkdirLock(wd)
  lock.acquire()  # this (live) process holds the workdir: a trainer must refuse it
  run = lambda *args: subprocess.Popen(  # noqa: E731
      [sys.executable, '-m', *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:  # both at once: their start-up (imports) is most of the cost
    procs = [run('launch.evaluate', f'--workdir={wd}'),
             run('launch.train', '--config=configs/demo.py:vgg16', f'--workdir={wd}',
                 f'--config.data.data_dir={data_dir}'),
             run('launch.predict', f'--workdir={wd}', str(wd / 'x.jpg'))]
    (_, ev_err), (_, tr_err), (pr_out, pr_err) = (p.communicate(timeout=300) for p in procs)
  finally:
    lock.release()
  for p, err in zip(procs, (ev_err, tr_err, pr_err)):  # nothing ran: exit 2 (common.exit_code)
    assert p.returncode == 2 and 'Traceback' not in err, err[-3000:]
  for script, err in (('evaluate', ev_err), ('predict', pr_err)):
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'{script}: checkpoint 4 is corrupt: ') and str(path) in last, err
    assert '--step=2' in last
  assert pr_out == ''
  assert tr_err.strip().splitlines()[-1].startswith(
      f'train: {wd} is in use by another trainer (pid {os.getpid()}')


def test_unretrieved_failures_of_an_orbax_save_print_no_tracebacks(caplog, monkeypatch):
  """A real full disk (a 3 MB tmpfs workdir) failed the save in TensorStore's writes: after
  the one line, asyncio logged 'E ... base_events.py:1771] _GatheringFuture exception was
  never retrieved' with a traceback for each array (26 for a MobileNetV2). Other code's
  unretrieved failures are still logged."""
  import asyncio  # pylint: disable=import-outside-toplevel
  import gc  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  # quiet_orbax_errors is for a command's whole process: undone after this test, else its
  # hooks hold pytest's hooks of this test and the next tests' unraisable exceptions went to
  # them (20-odd PytestUnraisableExceptionWarnings in later tests of this worker).
  loggers = (absl_logging.get_absl_logger(), logging.getLogger('asyncio'))
  saved = (sys.excepthook, sys.unraisablehook, [list(g.filters) for g in loggers])
  monkeypatch.setattr(sys, 'excepthook', saved[0])
  monkeypatch.setattr(sys, 'unraisablehook', saved[1])
  for g, filters in zip(loggers, saved[2]):
    monkeypatch.setattr(g, 'filters', list(filters))
  orbax_logging.quiet_orbax_errors()
  ns: dict = {}
  for where in ('orbax', 'mine'):
    exec(compile(f'async def write():\n  raise ValueError("{where}: No space left")\n',
                 os.path.join(os.sep, 'site-packages', where, 'serialization.py'), 'exec'), ns)
    ns[where] = ns['write']

  async def unretrieved(write):
    g = asyncio.gather(write())
    await asyncio.sleep(0.01)
    del g
    gc.collect()

  loop = asyncio.new_event_loop()
  try:
    with caplog.at_level(logging.ERROR):
      loop.run_until_complete(unretrieved(ns['orbax']))
      loop.run_until_complete(unretrieved(ns['mine']))
  finally:
    loop.close()
  logged = [r for r in caplog.records if 'never retrieved' in r.getMessage()]
  assert [str(r.exc_info[1]) for r in logged] == ['mine: No space left']


def test_a_failed_lock_release_does_not_hide_the_error_that_stopped_the_work(tmp_path,
                                                                             monkeypatch):
  """eval/ made read-only midway (chattr +i): the lock's release failed too, and evaluate's
  one line named '.lock' (Operation not permitted) instead of the write that failed."""
  from aesthetics_jax.train import workdir as workdir_lib
  def refused(self):
    raise PermissionError(errno.EPERM, 'Operation not permitted', str(self.path))
  monkeypatch.setattr(workdir_lib.WorkdirLock, 'release', refused)
  with pytest.raises(OSError, match='No space left on device: .*metrics.json'):
    with workdir_lib.claim(tmp_path / 'eval', holder='aesthetics-evaluate'):
      raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'metrics.json'))


def test_train_prints_no_unawaited_coroutine_warnings():
  """A save the storage refused left orbax's writes unawaited: six 'coroutine ... was never
  awaited' RuntimeWarnings followed train's one line at exit."""
  script = ('import warnings\n'
            'from aesthetics_jax.train import orbax_logging\n'
            'orbax_logging.quiet_orbax_errors()\n'
            'warnings.warn("coroutine \'_create_paths\' was never awaited", RuntimeWarning)\n'
            'warnings.warn("another warning", RuntimeWarning)\n')
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0 and 'never awaited' not in r.stderr, r.stderr
  assert 'another warning' in r.stderr, r.stderr  # the others still show
