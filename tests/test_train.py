"""Training loop: smoke run, frozen encoder, cache == online head update, NaN stop, mismatch."""
import contextlib
import json
import logging as std_logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aesthetics_jax import models  # noqa: E402
from aesthetics_jax.train import checkpoints  # noqa: E402
from aesthetics_jax.train import restore
from aesthetics_jax.train import feature_cache  # noqa: E402
from aesthetics_jax.data import preprocess  # noqa: E402
from aesthetics_jax.train import optim  # noqa: E402
from aesthetics_jax.train import resume_checks  # noqa: E402
from aesthetics_jax.train import trainer  # noqa: E402
from aesthetics_jax import parallel
from aesthetics_jax.models import outputs as outputs_lib
from aesthetics_jax.models import pretrained
from aesthetics_jax.configs import demo, mobilenet_v2_emd  # noqa: E402
from tiny_ava import prepare_tiny  # noqa: E402


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return prepare_tiny(tmp_path_factory.mktemp('tiny'))


def _vgg(data_dir, **overrides):
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(data_dir)
  c.update_from_flattened_dict(overrides)  # dotted keys, as evaluate(overrides=) takes them
  return c


def test_a_rerun_after_a_kill_past_the_last_save_keeps_only_what_retention_keeps(data_dir,
                                                                                tmp_path):
  """kill -9 just after the last checkpoint was saved, before orbax deleted the older ones:
  the rerun (which saves nothing) finished with 2, 3 and 4 kept for good, where an
  uninterrupted run keeps config.keep_checkpoints of them."""
  runs = {'num_train_steps': 3, 'eval_every_steps': 100, 'checkpoint_every_steps': 1,
          'log_cam_images': 0}
  trainer.train_and_evaluate(_vgg(data_dir, **runs, keep_checkpoints=3), tmp_path)
  assert sorted(int(d.name) for d in (tmp_path / 'checkpoints').iterdir()
                if d.name.isdigit()) == [1, 2, 3]
  (tmp_path / trainer.RESULT_FILE).unlink()  # killed before the test: nothing reported yet
  res = trainer.train_and_evaluate(_vgg(data_dir, **runs, keep_checkpoints=1), tmp_path)
  assert res['checkpoint_step'] == 3
  assert sorted(int(d.name) for d in (tmp_path / 'checkpoints').iterdir()
                if d.name.isdigit()) == [3]


def test_train_and_restore_vgg(data_dir, tmp_path):
  c = _vgg(data_dir)
  res = trainer.train_and_evaluate(c, tmp_path)
  assert res['step'] == 2 and res['num_test_images'] == 8
  assert 0 <= res['binary_accuracy'] <= 1
  assert json.loads((tmp_path / 'config.json').read_text())['model']['arch'] == 'vgg16'
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert any('train/loss' in r for r in rows)
  assert any('validation/binary_accuracy' in r for r in rows)
  assert [r['step'] for r in rows if 'test/binary_accuracy' in r] == [2]  # test once, at the end
  assert not any(k.startswith('eval/') for r in rows for k in r)
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  model, variables, config, step = restore.restore_for_inference(tmp_path)
  assert step == 2 and config.model.fc_dim == 32
  out = model.apply(variables, jnp.zeros((2, 32, 32, 3)))
  pred = outputs_lib.predict_outputs(out, 'vgg16')
  assert pred['p_high'].shape == (2,) and pred['label_pred'].dtype == jnp.int32
  # Another model in the same workdir: one-line error naming the fix.
  with pytest.raises(checkpoints.CheckpointMismatchError, match='fresh --workdir'):
    trainer.train_and_evaluate(_vgg(data_dir, **{'model.fc_dim': 64}), tmp_path)
  # Fewer steps than the checkpoints reach (num_epochs, a larger batch): nothing was trained,
  # and step 2 was tested and reported as a run of 1 step.
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='reach step 2 and this config trains 1 steps'):
    trainer.train_and_evaluate(_vgg(data_dir, num_train_steps=1), tmp_path)
  assert json.loads((tmp_path / trainer.RESULT_FILE).read_text())['step'] == 2


def test_frozen_encoder_cache_trains_only_head(data_dir, tmp_path, capsys):
  c = _vgg(data_dir, **{'model.freeze_encoder': True, 'cache.enabled': True,
                        'cache.num_train_views': 2})
  model = models.create_model(c.model)
  init = models.init_variables(model, c.seed, c.input.image_size)
  trainer.train_and_evaluate(c, tmp_path)
  out, err = capsys.readouterr()
  # Once, on stderr: not in aesthetics-train's JSON stream, not twice in a terminal.
  assert err.count('FROZEN backbone is RANDOM') == 1 and 'FROZEN' not in out
  _, variables, _, _ = restore.restore_for_inference(tmp_path)
  enc0, enc1 = init['params']['encoder'], jax.device_get(variables['params']['encoder'])
  jax.tree.map(np.testing.assert_array_equal, enc0, enc1)
  head_diff = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                           init['params']['head'],
                                           jax.device_get(variables['params']['head'])))
  assert max(head_diff) > 0


def test_cache_and_online_give_same_head_update(data_dir):
  """MobileNetV2 (BatchNorm): frozen encoder in inference mode either way."""
  c = mobilenet_v2_emd.get_config('smoke')
  c.data.data_dir = str(data_dir)
  c.optim.lr = 1e-2
  c.model.dropout = 0.0
  model = models.create_model(c.model)
  mesh = parallel.make_mesh()
  tx = optim.make_optimizer(c, 10)
  variables = models.init_variables(model, c.seed, c.input.image_size)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
  meta = {'distribution': np.full((8, 10), 0.1, np.float32),
          'tags': np.eye(66, dtype=np.float32)[rng.integers(0, 66, 8)],
          'weight': np.ones(8, np.float32), 'mask': np.ones(8, np.float32),
          'label': np.ones(8, np.int32)}
  encode = feature_cache.make_encode_fn(model, 'none')
  feats = encode(variables, images)
  base = jax.random.key_data(jax.random.PRNGKey(0))
  results = []
  for mode, extra in (('online', {'image': preprocess.to_model_input(images)}),
                      ('features', {'features': feats})):
    state = trainer.create_state(model, c, tx, mesh, variables)
    step = jax.jit(trainer.make_train_step(model, c, tx, mode))
    new, m = step(state, {**meta, **extra}, base)
    results.append((jax.device_get(new.params), float(m['loss'])))
  (p_on, l_on), (p_fe, l_fe) = results
  np.testing.assert_allclose(l_on, l_fe, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p_on, p_fe)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), variables['params']['head'],
                       p_on['head'])
  assert max(jax.tree.leaves(moved)) > 0
  jax.tree.map(np.testing.assert_array_equal, variables['params']['encoder'], p_on['encoder'])


def test_converted_weights_folder_and_imagenet_normalisation(data_dir, tmp_path, capsys):
  """README's real-AVA recipe, tiny: `convert_weights --out=FOLDER`, then train the paper's
  MobileNetV2 with `--config.model.init_weights=FOLDER --config.input.normalize=imagenet`."""
  fixtures = Path(__file__).parent / 'fixtures'
  meta = json.loads((fixtures / 'fixtures.json').read_text())['mobilenet_v2']
  folder = tmp_path / 'weights' / 'mnv2'
  pretrained.convert_file(fixtures / meta['file'], folder, 'mobilenet_v2')
  c = mobilenet_v2_emd.get_config('smoke')
  assert c.model.width_mult == meta['width_mult']
  c.data.data_dir = str(data_dir)
  c.model.init_weights = str(folder)
  c.input.normalize = 'imagenet'
  res = trainer.train_and_evaluate(c, tmp_path / 'w')
  assert res['step'] == 2 and 0 <= res['binary_accuracy'] <= 1
  assert 'FROZEN backbone is RANDOM' not in ''.join(capsys.readouterr())
  _, variables, config, _ = restore.restore_for_inference(tmp_path / 'w')
  assert config.input.normalize == 'imagenet' and config.model.init_weights == str(folder)
  # The frozen encoder is the converted ImageNet one, untouched by training.
  flat, _ = pretrained.read_weights(folder / 'mobilenet_v2.npz')
  got = pretrained.flatten_variables(jax.device_get(variables))
  enc = [k for k in flat if '/encoder/' in k]
  assert enc and all(k in got for k in enc)
  for k in enc:
    np.testing.assert_array_equal(got[k], flat[k], err_msg=k)


def test_train_cli_names_a_weights_folder_without_the_model_arch(data_dir, tmp_path):
  """`aesthetics-train` with a folder of VGG16 weights for MobileNetV2: one line (was a
  traceback: PretrainedError was not among train's user errors)."""
  fixtures = Path(__file__).parent / 'fixtures'
  folder = tmp_path / 'weights'
  pretrained.convert_file(fixtures / 'vgg_tiny.safetensors', folder, 'vgg16')
  r = subprocess.run([sys.executable, '-m', 'launch.train', '--config=mobilenet_v2_emd:smoke',
                      f'--workdir={tmp_path / "w"}', f'--config.data.data_dir={data_dir}',
                      f'--config.model.init_weights={folder}'],
                     cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
  # Exit 2 (nothing ran), as for a missing input; it was 1, as for a failed run.
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.startswith('train:')]
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith(f'train: {folder}: a folder without mobilenet_v2.npz (it holds '
                             'vgg16.npz, vgg16.npz.json)'), lines[0]
  assert 'aesthetics-convert-weights --arch=mobilenet_v2' in lines[0]
  # Checked before anything is written: the failed run used to leave validation_ids.json and
  # an empty checkpoints/ in the workdir it created.
  assert not (tmp_path / 'w').exists()


def test_nan_stops_with_step_and_checkpoint(data_dir, tmp_path):
  # A finite rate that overflows the first update (an infinite one is refused by the config
  # check before any step).
  c = _vgg(data_dir, **{'optim.lr': 1e38, 'num_train_steps': 3,
                        'checkpoint_every_steps': 1, 'optim.grad_clip': 0.0,
                        'optim.name': 'sgd'})
  with pytest.raises(trainer.TrainingError, match=r'at step 1; last good checkpoint: none'):
    trainer.train_and_evaluate(c, tmp_path)


def test_divergence_sets_aside_the_checkpoint_that_gave_it(data_dir, tmp_path, monkeypatch):
  # The loss of step 3 is computed from checkpoint 2's weights: that checkpoint cannot be
  # resumed from (it diverges at once whatever the rate). It was named "last good", and a
  # rerun resumed from it into the same error.
  real = trainer.make_train_step

  def poisoned(*a, **k):
    step_fn = real(*a, **k)

    def step(state, batch, base_rng, measure):
      new, m = step_fn(state, batch, base_rng, measure)
      return new, {**m, 'loss': jnp.where(state.step == 2, jnp.nan, m['loss'])}
    return step

  monkeypatch.setattr(trainer, 'make_train_step', poisoned)
  c = _vgg(data_dir, **{'num_train_steps': 4, 'checkpoint_every_steps': 1,
                        'log_every_steps': 1, 'keep_checkpoints': 5})
  with pytest.raises(trainer.TrainingError) as e:
    trainer.train_and_evaluate(c, tmp_path)
  msg = str(e.value)
  assert msg.startswith('non-finite loss (nan) at step 3 (checkpoint 2 gave it; moved to '
                        f'{tmp_path / "diverged_checkpoints" / "2"})'), msg
  assert f'last good checkpoint: {tmp_path / "checkpoints" / "1"}, where a rerun resumes' in msg
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                if p.name.isdigit()) == [1]
  monkeypatch.undo()  # the rerun (e.g. at a lower rate) resumes from 1 and finishes
  res = trainer.train_and_evaluate(c, tmp_path)
  assert res['step'] == 4
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3, 4]


def _eval_spy(monkeypatch, scripted):
  """Records the image ids and variables of every `trainer.evaluate` call; the first
  `len(scripted)` calls report `binary_accuracy` from `scripted` (to pin the best step)."""
  real, calls, script = trainer.evaluate, [], list(scripted)

  def spy(eval_step, variables, batches, config):
    batches = list(batches)
    ids = {int(i) for b in batches
           for i, m in zip(np.asarray(b['image_id']), np.asarray(b['mask'])) if m > 0}
    metrics, pred, true = real(eval_step, variables, batches, config)
    if len(calls) < len(script):
      metrics = {**metrics, 'binary_accuracy': script[len(calls)]}
    calls.append((ids, jax.device_get(variables)))
    return metrics, pred, true

  monkeypatch.setattr(trainer, 'evaluate', spy)
  return calls


def _train_id_spy(monkeypatch):
  """Image ids of every training batch, online (pipeline) or from the feature cache (host-fed
  steps, or the rows of the device-side segments)."""
  seen = set()
  orig_online, orig_cache = trainer.ip.train_batches, feature_cache.FeatureCache.train_batch
  orig_segment = feature_cache.FeatureCache.segment_indices

  def online(*a, **k):
    for b in orig_online(*a, **k):
      seen.update(np.asarray(b['image_id']).tolist())
      yield b

  def cached(self, *a, **k):
    b = orig_cache(self, *a, **k)
    seen.update(np.asarray(b['image_id']).tolist())
    return b

  monkeypatch.setattr(trainer.ip, 'train_batches', online)
  def segment(self, *a, **k):
    rows, views = orig_segment(self, *a, **k)
    seen.update(self.train_meta.image_id[rows.ravel()].tolist())
    return rows, views

  monkeypatch.setattr(feature_cache.FeatureCache, 'train_batch', cached)
  monkeypatch.setattr(feature_cache.FeatureCache, 'segment_indices', segment)
  return seen


@pytest.mark.parametrize('cache', [False, True], ids=['online', 'feature_cache'])
def test_best_checkpoint_is_chosen_on_validation_and_test_runs_once(data_dir, tmp_path,
                                                                    monkeypatch, cache):
  c = _vgg(data_dir, **{'num_train_steps': 3, 'eval_every_steps': 1, 'keep_checkpoints': 1,
                        'data.validation_fraction': 0.25, 'log_cam_images': 0,
                        'model.freeze_encoder': cache, 'cache.enabled': cache})
  calls = _eval_spy(monkeypatch, [0.2, 0.9, 0.5])  # validation at steps 1, 2, 3: best = 2
  train_ids = _train_id_spy(monkeypatch)
  res = trainer.train_and_evaluate(c, tmp_path)
  rec = json.loads((tmp_path / 'validation_ids.json').read_text())
  val = set(rec['image_ids'])
  assert len(val) == 4 and rec['num_train'] == 12 and (rec['seed'], rec['fraction']) == (0, 0.25)
  assert len(calls) == 4  # three periodic evaluations, then test once
  assert all(ids == val for ids, _ in calls[:3])  # selection never sees a test image
  test_ids = calls[3][0]
  assert len(test_ids) == 8 and not test_ids & val
  assert train_ids and not train_ids & val and not train_ids & test_ids
  assert (res['eval_split'], res['checkpoint_step'], res['selected_by']) == (
      'test', 2, 'validation/binary_accuracy')
  assert res['num_test_images'] == 8 and res['num_validation_images'] == 4
  # Evaluate's, predict's and the API's default: the checkpoint test used (was the newest,
  # 3: metrics of other weights than training reported).
  _, best, _, step = restore.restore_for_inference(tmp_path)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(best), calls[3][1])
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'validation/binary_accuracy' in r] == [1, 2, 3]
  assert [r['step'] for r in rows if 'test/binary_accuracy' in r] == [3]
  # Each split's image count under its own name (was 'validation/num_test_images': 4).
  assert {r['validation/num_validation_images'] for r in rows if 'validation/lcc_mean' in r} == {4}
  assert [r['test/num_test_images'] for r in rows if 'test/lcc_mean' in r] == [8]
  assert not any('validation/num_test_images' in r for r in rows)


class _Crash(Exception):
  pass


def test_resume_keeps_the_validation_split(data_dir, tmp_path, monkeypatch):
  c = _vgg(data_dir, **{'num_train_steps': 3, 'checkpoint_every_steps': 2, 'log_cam_images': 0})
  save = checkpoints.Checkpointer.save

  def crashing_save(self, step, *args, **kwargs):
    if step == 3:
      raise _Crash()
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoints.Checkpointer, 'save', crashing_save)
  with pytest.raises(_Crash):
    trainer.train_and_evaluate(c, tmp_path)
  first = json.loads((tmp_path / 'validation_ids.json').read_text())
  monkeypatch.setattr(checkpoints.Checkpointer, 'save', save)
  calls = _eval_spy(monkeypatch, [])
  assert trainer.train_and_evaluate(c, tmp_path)['step'] == 3  # resumed from checkpoint 2
  assert json.loads((tmp_path / 'validation_ids.json').read_text()) == first
  assert calls[0][0] == set(first['image_ids'])  # the resumed run validates on the same rows
  # Another split in this workdir would mix two: refused with one line naming the fix.
  # (exit 2, as the other mismatches: it was a TrainingError, exit 1)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='another validation split.*fresh --workdir'):
    trainer.train_and_evaluate(_vgg(data_dir, **{'seed': 5}), tmp_path)
  # Another input or loss would mix two recipes in one run: refused before any step.
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"trained with config.input.normalize='none' \(checkpoints\) vs "
                           r"'imagenet' \(config\); resuming would mix two recipes"):
    trainer.train_and_evaluate(_vgg(data_dir, **{'input.normalize': 'imagenet'}), tmp_path)
  # The step count may change: more steps resume.
  assert trainer.train_and_evaluate(_vgg(data_dir, **{'num_train_steps': 4,
                                                      'checkpoint_every_steps': 2,
                                                      'log_cam_images': 0}),
                                    tmp_path)['step'] == 4


def test_sigterm_checkpoints_the_step_reached_exit_143_and_the_rerun_resumes(data_dir,
                                                                             tmp_path):
  """SIGTERM (a scheduler's preemption) killed aesthetics-train at once (exit -15, no line):
  every step since the last scheduled checkpoint was lost."""
  import signal
  import time
  wd = tmp_path / 'w'
  flags = {'checkpoint_every_steps': 1000, 'eval_every_steps': 1000, 'log_cam_images': 0}
  p = subprocess.Popen([sys.executable, '-m', 'launch.train', '--config=demo:vgg16,smoke',
                        f'--workdir={wd}', f'--config.data.data_dir={data_dir}',
                        '--config.num_train_steps=100000',
                        *(f'--config.{k}={v}' for k, v in flags.items())],
                       cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while len(_train_rows(wd) if (wd / 'metrics.jsonl').exists() else ()) < 2:
      assert p.poll() is None and time.time() < deadline, p.stderr.read()[-3000:]
      time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
  finally:
    p.kill()
  step = max(_train_rows(wd))
  assert p.returncode == 143, err[-3000:]
  assert err.strip().splitlines()[-1] == (
      f'train: terminated (SIGTERM) at step {step}, checkpointed in {wd / "checkpoints"}/'
      f'{step}: rerun the same command to continue'), err[-3000:]
  assert (wd / 'checkpoints' / str(step)).is_dir()
  # The rerun resumes from that step (keeping the rows before it), and logs each step once.
  before = (wd / 'metrics.jsonl').read_text()
  c = _vgg(data_dir, **flags, num_train_steps=step + 1)
  assert trainer.train_and_evaluate(c, wd)['step'] == step + 1
  assert (wd / 'metrics.jsonl').read_text().startswith(before)
  assert sorted(_train_rows(wd)) == list(range(1, step + 2))


def test_a_resume_with_another_batch_size_says_so(data_dir, tmp_path, capsys):
  """A rerun with another --config.batch_size (8 -> 4) resumed silently: its steps draw other
  rows and crops (seed, step, batch_size) than either uninterrupted run."""
  runs = {'eval_every_steps': 100, 'log_cam_images': 0}
  trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=1), tmp_path)
  capsys.readouterr()
  assert trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=2, batch_size=4),
                                    tmp_path)['step'] == 2
  said = [l for l in capsys.readouterr().err.splitlines() if 'config.batch_size=' in l]
  assert said == [f'warning: {tmp_path}: its checkpoints were trained with '
                  'config.batch_size=8 and this run uses 4: training goes on, but from the '
                  'resumed step on it draws other images than one uninterrupted run at either '
                  'size (an unbalanced epoch skips or repeats rows), and config.num_epochs '
                  'counts steps of the new size'], said


def test_a_resume_on_other_images_of_the_same_metadata_says_so(data_dir, tmp_path, capsys):
  """The same AVA metadata prepared again after images went missing (1198 / 297 records
  against 1200 / 300) resumed without a word: its rows are other images. dataset.json now
  records the split sizes and a resume on other sizes warns (the data is the same AVA root, so
  it is not refused)."""
  from aesthetics_jax.data import dataset
  runs = {'eval_every_steps': 100, 'log_cam_images': 0}
  trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=1), tmp_path)
  path = tmp_path / dataset.IDENTITY_FILE
  record = json.loads(path.read_text())
  now = dataset.split_sizes(data_dir)
  assert record['num_examples'] == now and now['train'] > 0 and now['test'] > 0
  path.write_text(json.dumps(dict(record, num_examples={'train': now['train'] + 2,
                                                        'test': now['test']})))
  capsys.readouterr()
  trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=2), tmp_path)
  said = [l for l in capsys.readouterr().err.splitlines() if 'other image files' in l]
  assert said == [f'warning: {tmp_path}: resumed on --config.data.data_dir={data_dir}, which '
                  f'holds {now["train"]} train / {now["test"]} test images where the '
                  f'checkpoints\' data ({data_dir}) held {now["train"] + 2} train / '
                  f'{now["test"]} test (the same AVA metadata, other image files): training '
                  'goes on, but not on the data it started on'], said


def test_a_resume_that_lengthens_a_cosine_schedule_says_so(data_dir, tmp_path, capsys):
  """A run stopped at 1 step and rerun for 2 resumed silently on another cosine curve (the
  1-step one ends at 0): not the 2-step run it looked like."""
  runs = {'eval_every_steps': 100, 'log_cam_images': 0}
  res = trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=1), tmp_path)
  # One evaluation, at the last step, selects nothing (it said 'validation/binary_accuracy').
  assert res['selected_by'] == 'last step (the only evaluation)', res
  capsys.readouterr()
  trainer.train_and_evaluate(_vgg(data_dir, **runs, num_train_steps=2), tmp_path)
  out, err = capsys.readouterr()
  # On stderr: on stdout it went into aesthetics-control's table (`> table.md`).
  assert 'warning' not in out, out
  said = [l for l in err.splitlines() if l.startswith('warning:')]
  assert said == [f'warning: {tmp_path} resumed at step 1 on a cosine schedule over 2 steps '
                  'where its checkpoints followed one over 1 (config.num_train_steps, '
                  "num_epochs or batch_size changed): the next step's learning rate is 0.0005, "
                  'not 0; the run will not equal one uninterrupted 2-step run'], said


def test_sigterm_before_the_first_checkpoint_says_the_rerun_starts_again(tmp_path):
  """SIGTERM during the feature cache build of a fresh run said 'the checkpoints so far are
  kept' where there were none."""
  import subprocess
  import sys

  def line() -> str:  # in a child: the CLI module defines absl flags (test_cli's rule)
    code = ('import sys; from aesthetics_jax.cli import train; '
            'print(train.terminated_line(sys.argv[1], None))')
    return subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()
  (tmp_path / 'checkpoints').mkdir()  # made before the cache is built
  assert line() == (
      'terminated (SIGTERM): rerun the same command to start again (no checkpoint was saved '
      'yet)')
  (tmp_path / 'checkpoints' / '7').mkdir()
  assert line() == (
      'terminated (SIGTERM): rerun the same command to resume from the last checkpoint '
      f'({tmp_path / "checkpoints" / "7"})')


def test_sigterm_during_the_final_test_lets_the_run_finish(data_dir, tmp_path, monkeypatch):
  """SIGTERM during the test after the last step raised there, where it could land in a
  callback that only prints its errors: once in 8 runs, 'Terminated: None' and exit 0."""
  import signal
  stop, calls, evaluate = trainer.StopRequest(), [], trainer.evaluate

  def evaluate_then_sigterm(*args):
    calls.append(1)
    if len(calls) == 2:  # the test (the first: step 2's validation)
      stop(signal.SIGTERM, None)
    return evaluate(*args)

  monkeypatch.setattr(trainer, 'evaluate', evaluate_then_sigterm)
  c = _vgg(data_dir, eval_every_steps=100, log_cam_images=0)
  assert trainer.train_and_evaluate(c, tmp_path, stop)['step'] == 2
  assert len(calls) == 2 and stop.requested


def _train_rows(workdir: Path) -> dict[int, dict]:
  """metrics.jsonl's train/* rows by step, without the wall-clock keys."""
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: {k: v for k, v in r.items() if k not in ('time', 'train/steps_per_sec')}
          for r in rows if 'train/loss' in r}



def test_a_rows_grad_norm_is_the_logged_steps(data_dir, tmp_path):
  """README: train/grad_norm is measured on the logged step only; a checkpoint step between
  two rows was measured too (for its weight check) and averaged into the row."""
  runs = {'eval_every_steps': 100, 'keep_checkpoints': 2, 'log_cam_images': 0}
  trainer.train_and_evaluate(_vgg(data_dir, **runs, log_every_steps=1), tmp_path / 'each')
  trainer.train_and_evaluate(_vgg(data_dir, **runs, log_every_steps=2,
                                  checkpoint_every_steps=1), tmp_path / 'w')
  each, rows = _train_rows(tmp_path / 'each'), _train_rows(tmp_path / 'w')
  assert rows[2]['train/grad_norm'] == each[2]['train/grad_norm'] != each[1]['train/grad_norm']

def test_train_rows_average_every_step_since_the_last_and_a_resume_logs_the_same(data_dir,
                                                                                 tmp_path):
  """A checkpoint between two train/* rows (every 3 steps, rows every 2) fetched its steps'
  metrics for the divergence check and dropped them: row 4 was step 4's loss alone."""
  runs = {'num_train_steps': 4, 'eval_every_steps': 100, 'keep_checkpoints': 4,
          'log_cam_images': 0}
  trainer.train_and_evaluate(_vgg(data_dir, **runs, log_every_steps=1), tmp_path / 'each')
  each = _train_rows(tmp_path / 'each')
  c = _vgg(data_dir, **runs, log_every_steps=2, checkpoint_every_steps=3)
  trainer.train_and_evaluate(c, tmp_path / 'w')
  rows = _train_rows(tmp_path / 'w')
  assert rows[4]['train/loss'] == pytest.approx(
      (each[3]['train/loss'] + each[4]['train/loss']) / 2, rel=1e-6, abs=0)
  # Resumed from checkpoint 3 (the run killed before checkpoint 4), row 4 is the same.
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(tmp_path / 'w' / 'checkpoints' / '4')
  (tmp_path / 'w' / trainer.RESULT_FILE).unlink()
  trainer.train_and_evaluate(c, tmp_path / 'w')
  assert _train_rows(tmp_path / 'w') == rows


@contextlib.contextmanager
def _absl_warnings() -> Iterator[list[str]]:
  """The messages of the absl warnings logged in the block."""
  seen: list[str] = []

  class Catch(std_logging.Handler):
    def emit(self, record):
      seen.append(record.getMessage())

  catch = Catch(std_logging.WARNING)
  std_logging.getLogger('absl').addHandler(catch)
  try:
    yield seen
  finally:
    std_logging.getLogger('absl').removeHandler(catch)


def test_validation_off_selects_on_test_and_says_so(data_dir, tmp_path):
  with _absl_warnings() as seen:  # (a warmup as long as the run: see below)
    res = trainer.train_and_evaluate(_vgg(data_dir, **{'data.validation_fraction': 0.0,
                                                       'optim.warmup_steps': 5}), tmp_path)
  # The rate rose for the whole run and never reached optim.lr: now a warning says so.
  assert [m for m in seen if m.startswith(
      "config.optim.warmup_steps=5 is not below the run's 2 steps")], seen
  assert res['selection_split'] == 'test' and res['num_validation_images'] == 0
  rec = json.loads((tmp_path / 'validation_ids.json').read_text())
  assert rec['image_ids'] == [] and 'TEST split' in rec['note']



def test_evaluations_between_checkpoints_are_named_unselectable(data_dir, tmp_path):
  """Only checkpointed steps can be selected: an evaluation between checkpoints was logged,
  could be the best of metrics.jsonl, and was silently passed over (now a warning says so)."""
  with _absl_warnings() as seen:
    res = trainer.train_and_evaluate(_vgg(data_dir, **{'eval_every_steps': 1,
                                                       'checkpoint_every_steps': 2,
                                                       'log_cam_images': 0}), tmp_path)
  assert res['checkpoint_step'] == 2
  assert [m for m in seen if m.startswith(
      'config.eval_every_steps=1 with config.checkpoint_every_steps=2: evaluations at steps '
      'without a checkpoint (such as 1)')], seen

def test_validation_off_logs_each_test_row_once(data_dir, tmp_path, monkeypatch):
  """Without a validation split the periodic evaluations are the test/* rows: the final
  test logged its checkpoint's row again at the last step (metrics.jsonl and TensorBoard),
  a duplicate, or for an earlier best step a second, other test/* value there. Each row
  once now; the selected step's result is still the test of its checkpoint."""
  from tensorboard.backend.event_processing import event_accumulator
  c = _vgg(data_dir, **{'num_train_steps': 3, 'eval_every_steps': 1, 'keep_checkpoints': 1,
                        'data.validation_fraction': 0.0, 'log_cam_images': 0})
  calls = _eval_spy(monkeypatch, [0.2, 0.9, 0.5])  # test at steps 1, 2, 3: best = 2
  res = trainer.train_and_evaluate(c, tmp_path / 'best2')
  assert (res['checkpoint_step'], res['selected_by']) == (2, 'test/binary_accuracy')
  _, best, _, _ = restore.restore_for_inference(tmp_path / 'best2', 2)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(best), calls[3][1])
  calls = _eval_spy(monkeypatch, [])
  trainer.train_and_evaluate(_vgg(data_dir, **{'data.validation_fraction': 0.0,
                                              'log_cam_images': 0}), tmp_path / 'last')
  for name, want in (('best2', [1, 2, 3]), ('last', [2])):
    rows = [json.loads(l) for l in (tmp_path / name / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if 'test/binary_accuracy' in r] == want, name
    acc = event_accumulator.EventAccumulator(str(tmp_path / name / 'tensorboard'),
                                             size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars('test/binary_accuracy')] == want, name
  assert len(calls) == 1  # the evaluation at the last step is its test: not run twice


@pytest.mark.parametrize('overrides, why', [
    ({'data.validation_fraction': 0.0}, 'config.data.validation_fraction=0: no validation'),
    # It blamed validation_fraction=0 here, though the fraction was 0.5.
    ({'data.validation_fraction': 0.5, 'data.max_train_images': 1},
     'no class has 2 of the 1 training rows to hold one out (config.data.max_train_images=1): '
     'no validation split'),
])
def test_no_validation_split_warning_names_its_cause(data_dir, tmp_path, overrides, why):
  from aesthetics_jax.data import dataset
  c = _vgg(data_dir, **overrides)
  train = dataset.load_sources(data_dir)['train']
  with _absl_warnings() as seen:
    split = resume_checks.carve_validation(train, c, tmp_path)[0]
  assert not split.enabled
  assert [m for m in seen if 'no validation split' in m][0].startswith(why), seen


def test_out_of_memory_is_one_line_naming_the_batch_size(data_dir, tmp_path):
  """A batch the RAM check lets through (it counts the cached head's targets, not the features
  and activations) but XLA cannot allocate: batch_size=10**6 was a RESOURCE_EXHAUSTED
  traceback after the cache build. 10**7 asks XLA for ~256 GB, more than any CI machine."""
  r = subprocess.run(
      [sys.executable, '-m', 'launch.train', '--config=mobilenet_v2_emd:smoke',
       f'--workdir={tmp_path / "w"}', f'--config.data.data_dir={data_dir}',
       f'--config.batch_size={10**7}'],
      cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('train: out of memory (RESOURCE_EXHAUSTED: ') and last.endswith(
      'lower --config.batch_size or --config.eval.batch_size; what was written is kept'), last


def test_ctrl_c_is_one_line_exit_130_and_the_rerun_resumes(data_dir, tmp_path):
  """Ctrl-C in aesthetics-train (and every command without its own handling) printed a
  KeyboardInterrupt traceback."""
  import os
  import signal
  import threading
  import time
  wd = tmp_path / 'w'
  args = [sys.executable, '-m', 'launch.train', '--config=demo:vgg16,smoke', f'--workdir={wd}',
          f'--config.data.data_dir={data_dir}', '--config.checkpoint_every_steps=1',
          '--config.eval_every_steps=100000']
  p = subprocess.Popen([*args, '--config.num_train_steps=100000'],
                       cwd=Path(__file__).parents[1], stderr=subprocess.PIPE, text=True,
                       # faulthandler (it survives the allocator re-exec): on a hang after the
                       # Ctrl-C (once in five CI runs, never here) the SIGABRT below prints
                       # every thread's stack, so the failure shows where it waits.
                       env={**os.environ, 'PYTHONUNBUFFERED': '1', 'PYTHONFAULTHANDLER': '1'})
  # stderr is read as it comes: a full pipe (64 KB of progress and log lines) would block the
  # trainer before checkpoint 2, and this loop would wait for it until its deadline.
  parts: list[str] = []
  reader = threading.Thread(target=lambda: parts.extend(p.stderr), daemon=True)
  reader.start()
  try:
    deadline = time.time() + 240
    while not (wd / 'checkpoints' / '2').is_dir():
      assert p.poll() is None and time.time() < deadline, ('no checkpoint 2', ''.join(parts))
      time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
      p.wait(timeout=120)
    except subprocess.TimeoutExpired:
      p.send_signal(signal.SIGABRT)
      p.wait(timeout=30)
      reader.join(timeout=30)
      raise AssertionError(('no exit 120 s after Ctrl-C', ''.join(parts)[-20000:])) from None
    reader.join(timeout=30)
    err = ''.join(parts)
  finally:
    p.kill()
  assert p.returncode == 130 and 'Traceback' not in err, err
  assert err.strip().splitlines()[-1].startswith(
      'train: interrupted (Ctrl-C); what was written is kept'), err
  # The same command (here with fewer steps, one past the last checkpoint: the Ctrl-C may land
  # after later saves, and fewer steps than they reach are refused) resumes from them.
  last = max(int(d.name) for d in (wd / 'checkpoints').iterdir() if d.name.isdigit())
  r = subprocess.run([*args, f'--config.num_train_steps={last + 1}'],
                     cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])['step'] == last + 1
  rows = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert any('test/binary_accuracy' in r for r in rows)


def test_config_json_keeps_relative_paths_absolute(tmp_path, monkeypatch):
  """--config.data.data_dir=tfds (relative) was stored as typed in config.json: evaluate,
  predict and aesthetics_jax.load, run from another folder, then found 'tfds/ava/style: no
  prepared dataset' (and no init_weights for the untrained control)."""
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  prepare_tiny(tmp_path / 'run', num_train=8, num_test=4)
  monkeypatch.chdir(tmp_path / 'run')
  c = demo.get_config('vgg16,smoke')
  c.update_from_flattened_dict({'data.data_dir': 'tfds', 'num_train_steps': 1,
                                'log_cam_images': 0, 'data.validation_fraction': 0.0,
                                'eval.masks_dir': 'masks'})
  trainer.train_and_evaluate(c, Path('w'))
  monkeypatch.chdir(tmp_path)  # elsewhere, as a later command may run
  _, _, saved, _ = restore.restore_for_inference(tmp_path / 'run' / 'w')
  assert saved.data.data_dir == str(tmp_path / 'run' / 'tfds')
  assert saved.eval.masks_dir == str(tmp_path / 'run' / 'masks')
  assert saved.model.init_weights == '' and saved.data.ava_dir == ''  # unset stays unset
  assert dataset.load_sources(saved.data.data_dir, 'style')['test']


def test_a_resume_naming_other_starting_weights_is_refused(tmp_path, capsys):
  """A resume with another --config.model.init_weights trained on from the checkpoints (as it
  should) but config.json took the new path, and evaluate built its untrained control from a
  file the model never started from, without a word (walk-through audit). A moved or copied
  file (same bytes) resumes; a changed one is one line naming both; a gone one, a warning."""
  from aesthetics_jax.configs import default as default_config
  (tmp_path / 'a.npz').write_bytes(b'weights A')
  (tmp_path / 'copy.npz').write_bytes(b'weights A')
  (tmp_path / 'b.npz').write_bytes(b'weights B')
  wd = tmp_path / 'w'
  (wd / 'checkpoints' / '2').mkdir(parents=True)
  config = default_config.get_config()
  config.model.init_weights = str(tmp_path / 'a.npz')
  (wd / 'config.json').write_text(json.dumps(resume_checks.saved_config(config)))

  def resume(path):
    config.model.init_weights = path
    resume_checks.check_workdir_model(wd, config)
  resume(str(tmp_path / 'a.npz'))
  resume(str(tmp_path / 'copy.npz'))
  for other in (str(tmp_path / 'b.npz'), ''):
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r'started from config.model.init_weights=.*a\.npz and this run '
                             r'names .*; .*fresh --workdir'):
      resume(other)
  (tmp_path / 'a.npz').unlink()
  capsys.readouterr()
  resume(str(tmp_path / 'b.npz'))
  assert 'a.npz, which is gone' in capsys.readouterr().err


def test_the_starting_weights_are_checked_by_their_bytes(data_dir, tmp_path):
  """A resume naming the same init_weights path after the file was exported again (other
  bytes) went on unchecked, and evaluate built its untrained control from the new file; the
  same file named as its folder and then by name was refused as two starts (walk-through)."""
  import os  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=import-outside-toplevel
  fixtures = Path(__file__).parent / 'fixtures'
  meta = json.loads((fixtures / 'fixtures.json').read_text())['mobilenet_v2']
  folder = tmp_path / 'weights'
  pretrained.convert_file(fixtures / meta['file'], folder, 'mobilenet_v2')
  npz = folder / 'mobilenet_v2.npz'
  c = mobilenet_v2_emd.get_config('smoke')
  c.data.data_dir, c.model.init_weights, c.num_train_steps = str(data_dir), str(folder), 1
  wd = tmp_path / 'w'
  trainer.train_and_evaluate(c, wd)
  rec = json.loads((wd / resume_checks.WEIGHTS_RECORD).read_text())
  assert rec['file'] == os.path.realpath(npz) and rec['bytes'] == npz.stat().st_size
  c.model.init_weights, c.num_train_steps = str(npz), 2  # the folder's file, by name
  assert trainer.train_and_evaluate(c, wd)['step'] == 2
  with np.load(npz) as z:  # exported again in place: the same keys and shapes, other values
    arrays = {k: z[k] * 0.5 for k in z.files}
  np.savez(npz, **arrays)
  c.num_train_steps = 3
  with pytest.raises(checkpoints.CheckpointMismatchError, match=(
      rf'^{wd}: its checkpoints started from weights of SHA-256 {rec["sha256"][:12]} \(.*\), '
      rf'and {npz} now holds others .*put the recorded file back, or use a fresh --workdir$')):
    trainer.train_and_evaluate(c, wd)
  m = eval_run.evaluate(wd, write_html=False, overrides={
      'eval.cam_methods': ('gradcam',), 'eval.bootstrap_samples': 20,
      'eval.num_example_images': 0})
  assert m['intensity_untrained_note'].startswith(
      'skipped: its checkpoints started from weights of SHA-256'), m['intensity_untrained_note']
