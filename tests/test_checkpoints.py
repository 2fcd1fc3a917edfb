"""Checkpoints: retention (latest + best), mismatch errors, SIGKILL + rerun == uninterrupted."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from aesthetics_jax.train import checkpoints  # noqa: E402
from aesthetics_jax.train import restore
from tiny_ava import prepare_tiny  # noqa: E402

OVERRIDES = {'num_train_steps': 6, 'checkpoint_every_steps': 2, 'eval_every_steps': 3,
             'log_every_steps': 1}


def test_keeps_latest_and_best(tmp_path):
  ck = checkpoints.Checkpointer(tmp_path, keep=1, best_metric='binary_accuracy')
  meta = {'model': {'arch': 'vgg16', 'width_mult': 0.125}}
  for step, acc in zip([1, 2, 3, 4], [0.1, 0.9, 0.2, 0.3]):
    tree = {'w': np.full((3,), step, np.float32)}
    ck.save(step, tree, {'step': np.int32(step)}, meta, metrics={'binary_accuracy': acc})
  ck.wait()
  assert sorted(ck.all_steps()) == [2, 4] and ck.best_step() == 2 and ck.latest_step() == 4
  abstract = {'w': jax.ShapeDtypeStruct((3,), np.float32)}
  v, _ = ck.restore(2, abstract)
  np.testing.assert_array_equal(v['w'], [2, 2, 2])
  ck.check_model(4, {'arch': 'vgg16', 'width_mult': 0.125})
  with pytest.raises(checkpoints.CheckpointMismatchError, match='fresh --workdir or the matching'):
    ck.check_model(4, {'arch': 'mobilenet_v2', 'width_mult': 0.125})
  with pytest.raises(checkpoints.CheckpointMismatchError, match=str(tmp_path)):
    ck.restore(4, {'w': jax.ShapeDtypeStruct((5,), np.float32)})
  ck.close()



@pytest.mark.parametrize('read_only', [False, True])
def test_a_step_folder_without_a_checkpoint_prints_no_orbax_notice(tmp_path, read_only, caplog):
  """An empty step folder (a half-copied workdir) printed orbax's 'W ... checkpoint.py:202]
  Metadata file does not exist: .../checkpoints/3/_CHECKPOINT_METADATA' before training's
  own warning (it moves the step aside) or, in evaluate / predict, alone (they skip it)."""
  import logging  # pylint: disable=import-outside-toplevel
  ck = checkpoints.Checkpointer(tmp_path, keep=2)
  ck.save(2, {'w': np.zeros((3,), np.float32)}, {'step': np.int32(2)}, {})
  ck.wait()
  ck.close()
  (tmp_path / 'checkpoints' / '3').mkdir()
  with caplog.at_level(logging.INFO):
    ck = checkpoints.Checkpointer(tmp_path, read_only=read_only)
    ck.all_steps()
    ck.close()
  assert [r.getMessage() for r in caplog.records if 'Metadata file' in r.getMessage()] == []


def test_a_checkpoint_between_evaluations_prints_no_orbax_notice(tmp_path, caplog):
  """Every checkpoint saved without metrics (between evaluations, on SIGTERM) printed orbax's
  'W ... checkpoint_manager.py:1489] Requested `tracked_metric`; did not provide metrics.' in
  aesthetics-train's, -paper-run's and -demo's output: such steps are never the best, by
  design."""
  import logging  # pylint: disable=import-outside-toplevel
  with caplog.at_level(logging.INFO):
    ck = checkpoints.Checkpointer(tmp_path, keep=2, best_metric='binary_accuracy')
    ck.save(1, {'w': np.zeros((3,), np.float32)}, {'step': np.int32(1)}, {})
    ck.wait()
    ck.close()
  assert 1 in ck.all_steps()
  assert [r.getMessage() for r in caplog.records if 'tracked_metric' in r.getMessage()] == []


def test_a_save_killed_midway_is_redone_without_an_orbax_notice(tmp_path, caplog):
  """The rerun after a save killed midway printed orbax's 'W ... atomicity.py] Attempted to
  create temporary directory .../checkpoints/4.orbax-checkpoint-tmp which already exists.
  Removing existing directory since it is not finalized.' when it saved that step again: the
  unfinished save is not a checkpoint, and redoing it is what the user asked for."""
  import logging  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel
  left = tmp_path / 'checkpoints' / f'4{atomicity.TMP_DIR_SUFFIX}'
  (left / 'state').mkdir(parents=True)  # what the killed save wrote
  (left / 'state' / 'partial').write_bytes(b'x' * 10)
  with caplog.at_level(logging.INFO):
    ck = checkpoints.Checkpointer(tmp_path, keep=2)
    ck.save(4, {'w': np.ones((3,), np.float32)}, {'step': np.int32(4)}, {})
    ck.wait()
    ck.close()
  assert ck.all_steps() == [4] and not left.exists()
  assert [r.getMessage() for r in caplog.records if 'Attempted to create' in r.getMessage()] == []


@pytest.mark.parametrize('values, kept, best', [((0.3, float('nan'), 0.1), [1, 3], 1),
                                                ((0.1, 0.3, float('nan')), [2, 3], 2)])
def test_a_nan_evaluation_is_never_the_best(tmp_path, values, kept, best):
  """lcc_mean / srcc_mean are NaN for constant predictions; as a sort key NaN scrambled orbax's
  ranking: the NaN step was selected, or a later worse one, and the best was deleted."""
  ck = checkpoints.Checkpointer(tmp_path, keep=1, best_metric='lcc_mean')
  for step, value in zip([1, 2, 3], values):
    ck.save(step, {'w': np.full((3,), step, np.float32)}, {'step': np.int32(step)},
            {'model': {'arch': 'vgg16'}}, metrics={'lcc_mean': value})
  ck.wait()
  assert (sorted(ck.all_steps()), ck.selected_step()) == (kept, best)
  ck.close()

def test_an_evaluation_of_the_selected_checkpoint_is_current(tmp_path):
  """Evaluation takes the checkpoint training selected (the best); the demo's and paper run's
  "evaluation already done" compared its step with the newest, so a run whose best was not
  its last step evaluated again on every rerun."""
  from aesthetics_jax import io as io_lib
  from aesthetics_jax.cli import stages
  from aesthetics_jax.configs import demo
  test_keeps_latest_and_best(tmp_path)  # checkpoints 2 (best) and 4 (newest)
  io_lib.atomic_write_json(restore.config_path(tmp_path), demo.get_config('vgg16').to_dict())
  assert restore.selected_step(tmp_path) == 2
  (tmp_path / 'eval').mkdir()
  (tmp_path / 'eval' / 'report.html').write_text('<html></html>')
  for step, current in ((2, True), (4, False)):
    (tmp_path / 'eval' / 'metrics.json').write_text(json.dumps({'step': step, 'overrides': {}}))
    assert (stages.eval_current(tmp_path) is not None) == current, step


_KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from aesthetics_jax import cpu_backend
    cpu_backend.configure()  # the XLA flags `launch.train` runs with (the rerun's and the ref's)
    from aesthetics_jax.train import checkpoints
    from aesthetics_jax.train import restore  # pylint: disable=import-outside-toplevel
    from aesthetics_jax.train import trainer
    from aesthetics_jax.configs import demo
    c = demo.get_config('vgg16,smoke')
    c.data.data_dir = {data_dir!r}
    for k, v in {overrides!r}.items():
      c[k] = v
    orig = checkpoints.Checkpointer.save
    def save(self, step, *a, **k):
      out = orig(self, step, *a, **k)
      if step == 4:  # die hard once checkpoint 4 is on disk
        self.wait()
        os.kill(os.getpid(), signal.SIGKILL)
      return out
    checkpoints.Checkpointer.save = save
    trainer.train_and_evaluate(c, {workdir!r})
''')


def _last_eval(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return [r for r in rows if 'validation/binary_accuracy' in r][-1]


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
  data_dir = prepare_tiny(tmp_path / 'data')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  killed = tmp_path / 'killed'
  script = _KILLED_RUN.format(root=str(ROOT), data_dir=str(data_dir), overrides=OVERRIDES,
                              workdir=str(killed))
  flags = [f'--config.data.data_dir={data_dir}'] + [f'--config.{k}={v}'
                                                     for k, v in OVERRIDES.items()]
  train_cmd = [sys.executable, '-m', 'launch.train',
               '--config=configs/demo.py:vgg16,smoke'] + flags
  # All three runs use launch.train's XLA flags (the reference as `launch.train` in a fresh
  # process, like the rerun): other flags fuse differently, and on a Zen 4 CPU that rounding
  # alone put an in-process reference 7e-5 away from a correct resume.
  # Both children at once: start-up and compilation overlap (the slowest test of the suite).
  ref_dir = tmp_path / 'ref'
  log = tmp_path / 'killed.log'  # files, not pipes: nobody reads them while the children run
  ref_out, ref_log = tmp_path / 'ref.out', tmp_path / 'ref.log'  # result line / the rest
  with open(log, 'w') as out, open(ref_out, 'w') as r_out, open(ref_log, 'w') as r_log:
    killer = subprocess.Popen([sys.executable, '-c', script], env=env, stdout=out, stderr=out)
    ref = subprocess.Popen(train_cmd + [f'--workdir={ref_dir}'], cwd=ROOT, env=env,
                           stdout=r_out, stderr=r_log)
  assert ref.wait(timeout=300) == 0, ref_log.read_text()[-2000:]
  ref_result = json.loads(ref_out.read_text().strip().splitlines()[-1])
  assert killer.wait(timeout=300) == -9, log.read_text()[-2000:]
  assert (killed / 'checkpoints' / '4').is_dir() and not (killed / 'checkpoints' / '6').exists()
  assert (killed / '.lock').exists()  # the killed trainer's: the rerun takes it over
  p = subprocess.run(train_cmd + [f'--workdir={killed}'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  resumed_result = json.loads(p.stdout.strip().splitlines()[-1])
  # Labels (eval_split, selected_by, ...) exactly, numbers up to float rounding.
  labels = {k for k, v in ref_result.items() if isinstance(v, str)}
  assert {k: resumed_result[k] for k in labels} == {k: ref_result[k] for k in labels}
  assert {k: v for k, v in resumed_result.items() if k not in labels} == pytest.approx(
      {k: v for k, v in ref_result.items() if k not in labels}, rel=1e-6, nan_ok=True)
  _, v_res, _, s_res = restore.restore_for_inference(killed)
  _, v_ref, _, s_ref = restore.restore_for_inference(ref_dir)
  assert s_res == s_ref == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               jax.device_get(v_res), jax.device_get(v_ref))
  a, b = _last_eval(killed), _last_eval(ref_dir)
  # The rerun dropped the rows the killed run logged after checkpoint 4: none repeats.
  train_steps = [json.loads(l)['step'] for l in (killed / 'metrics.jsonl').read_text().splitlines()
                 if 'train/loss' in l]
  assert train_steps == list(range(1, OVERRIDES['num_train_steps'] + 1))
  assert {k: v for k, v in a.items() if k != 'time'} == {k: v for k, v in b.items()
                                                         if k != 'time'}
  # The CLI refuses another model in this workdir with one line and exit code 2 (nothing ran).
  p = subprocess.run(train_cmd + [f'--workdir={killed}', '--config.model.fc_dim=64'],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 2
  last = p.stderr.strip().splitlines()[-1]
  assert 'fresh --workdir' in last and str(killed) in last and 'Traceback' not in p.stderr


def test_a_folder_of_workdirs_names_them(tmp_path):
  """The demo's --workdir (/tmp/demo) holds one training workdir per model; passed to
  predict, evaluate or `aesthetics_jax.load`, it was only 'not a training workdir'. The line
  names the workdirs in it and the --workdir to pass."""
  import aesthetics_jax
  from aesthetics_jax.train import checkpoint_errors
  for name in ('vgg16', 'mobilenet_v2', 'other'):
    (tmp_path / name).mkdir()
  for name in ('vgg16', 'mobilenet_v2'):
    (tmp_path / name / 'config.json').write_text('{}')
  with pytest.raises(checkpoint_errors.WorkdirError) as e:
    restore.load_config(tmp_path)
  assert str(e.value) == (
      f'{tmp_path}/config.json: not found; {tmp_path} holds the training workdirs '
      f'mobilenet_v2, vgg16: pass --workdir={tmp_path}/mobilenet_v2')
  with pytest.raises(checkpoint_errors.WorkdirError) as e:
    aesthetics_jax.load(tmp_path)
  assert str(e.value) == (f'workdir {tmp_path}: no config.json here but it holds the training '
                          f'workdirs mobilenet_v2, vgg16; pass {tmp_path}/mobilenet_v2')
  with pytest.raises(checkpoint_errors.WorkdirError, match='is --workdir a training workdir'):
    restore.load_config(tmp_path / 'other')


def test_step_folders_ignore_names_that_only_look_like_digits(tmp_path):
  """'²' (and other non-ASCII digits) passed str.isdigit() and then int() raised a
  ValueError traceback from every command that lists a workdir's steps."""
  for name in ('3', '12', '²', '٣', 'x1'):
    (tmp_path / name).mkdir()
  (tmp_path / '7').write_text('')  # a file, not a step folder
  assert checkpoints.step_folders(tmp_path) == [3, 12]
