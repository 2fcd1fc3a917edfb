"""Training logs read back with TensorBoard's own reader; no repeated steps after a resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

ROOT = Path(__file__).resolve().parents[1]
from aesthetics_jax.train import checkpoints  # noqa: E402
from aesthetics_jax.train import trainer  # noqa: E402
from aesthetics_jax.train import writers  # noqa: E402
from aesthetics_jax.configs import demo  # noqa: E402
from tiny_ava import prepare_tiny  # noqa: E402


def _events(workdir) -> event_accumulator.EventAccumulator:
  """All event files of `workdir/tensorboard`, in order, as TensorBoard loads a run."""
  acc = event_accumulator.EventAccumulator(
      str(Path(workdir) / 'tensorboard'),
      size_guidance={event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0,
                     event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def _steps(acc, tag: str) -> list[int]:
  return [e.step for e in acc.Scalars(tag)]


def _text(acc, tag: str) -> list[str]:
  return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f'{tag}/text_summary')]


def _hparams(acc) -> dict:
  content = acc.PluginTagToContent('hparams')['_hparams_/session_start_info']
  ssi = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  return {k: v.WhichOneof('kind') and getattr(v, v.WhichOneof('kind'))
          for k, v in ssi.hparams.items()}


def test_metric_writer_roundtrip(tmp_path, caplog):
  import logging
  caplog.set_level(logging.INFO)
  w = writers.MetricWriter(tmp_path)
  w.write_scalars(7, {'train/loss': 0.25, 'eval/acc': np.float32(0.75), 'bad': float('nan'),
                      'skipped': 'not a number'})
  w.write_scalars(300, {'train/loss': 0.125})
  w.write_text(0, 'config', '    {"a": 1}')
  image = np.zeros((6, 5, 3), np.uint8)
  image[2, 3] = (255, 0, 0)
  w.write_images(7, {'cam/12': image})
  # An integer past int64 (--config.log_every_steps=10**20, a run as good as another) was a
  # TypeError traceback from tensorboardX at the end of training: it is text.
  w.write_hparams(writers.flat_hparams({'optim': {'lr': 0.5, 'name': 'sgd'},
                                        'views': (1, 2), 'none': None, 'every': 10 ** 20}),
                  ['eval/acc'])
  w.close()
  rows = writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in rows] == [7, 300]
  assert rows[0]['train/loss'] == 0.25 and rows[0]['bad'] == 'nan' and 'skipped' not in rows[0]
  acc = _events(tmp_path)
  assert [(e.step, e.value) for e in acc.Scalars('train/loss')] == [(7, 0.25), (300, 0.125)]
  assert np.isnan(acc.Scalars('bad')[0].value) and acc.Scalars('eval/acc')[0].value == 0.75
  # The NaN is kept, without tensorboardX's "NaN or Inf found in input tensor" line.
  assert not [r for r in caplog.records if 'NaN or Inf' in r.getMessage()]
  assert _text(acc, 'config') == ['    {"a": 1}']
  (img,) = acc.Images('cam/12')
  assert (img.step, img.width, img.height) == (7, 5, 6)
  assert _hparams(acc) == {'optim.lr': 0.5, 'optim.name': 'sgd', 'views': '(1, 2)',
                           'every': str(10 ** 20)}


def test_training_imports_and_logs_without_torch(tmp_path):
  """tensorboardX imports torch when it is installed (~0.4 GB RSS, ~1.5 s): a fresh process
  that imports the trainer and writes every kind of event keeps torch out, and the events
  are intact."""
  code = (
      'import sys, numpy as np\n'
      'from aesthetics_jax.train import trainer, writers\n'
      f'w = writers.MetricWriter({str(tmp_path / "logs")!r})\n'
      "w.write_scalars(3, {'train/loss': 0.5})\n"
      "w.write_images(3, {'cam/1': np.zeros((4, 4, 3), np.uint8)})\n"
      "w.write_hparams({'lr': 0.1}, ['train/loss'])\n"
      'w.close()\n'
      "print('torch' in sys.modules)\n")
  # A stand-in torch on the path, so the check bites where torch is not installed (CI).
  fake = tmp_path / 'fake_site' / 'torch'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text('Tensor = object\n')
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      [str(fake.parent), str(ROOT)] + os.environ.get('PYTHONPATH', '').split(os.pathsep))}
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300, check=True)
  assert out.stdout.split()[-1] == 'False', out.stderr[-2000:]
  acc = _events(tmp_path / 'logs')
  assert [(e.step, e.value) for e in acc.Scalars('train/loss')] == [(3, 0.5)]
  assert len(acc.Images('cam/1')) == 1 and _hparams(acc) == {'lr': 0.1}


def test_inactive_writer_writes_nothing(tmp_path):
  w = writers.MetricWriter(tmp_path, active=False, resume_step=0)
  w.write_scalars(1, {'train/loss': 1.0})
  w.write_text(1, 'config', 'x')
  w.close()
  assert list(tmp_path.iterdir()) == []


def test_resume_drops_rows_after_the_restored_step(tmp_path):
  w = writers.MetricWriter(tmp_path, resume_step=0)
  for s in range(1, 7):
    w.write_scalars(s, {'train/loss': float(s)})
  w.close()
  path = tmp_path / 'metrics.jsonl'
  before = path.read_text().splitlines()
  with open(path, 'a') as f:
    f.write('{"step": 7, "train/lo')  # torn by a kill mid-write
  w = writers.MetricWriter(tmp_path, resume_step=4)  # checkpoint 4 restored
  w.write_scalars(5, {'train/loss': 50.0})
  w.close()
  after = path.read_text().splitlines()
  assert after[:4] == before[:4]  # kept rows are untouched, byte for byte
  assert [json.loads(l)['step'] for l in after] == [1, 2, 3, 4, 5]
  assert json.loads(after[-1])['train/loss'] == 50.0
  # TensorBoard's reader purges the old file's steps >= 5 when the new file starts.
  acc = _events(tmp_path)
  assert [(e.step, e.value) for e in acc.Scalars('train/loss')] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
  assert writers.truncate_jsonl(tmp_path / 'missing.jsonl', 3) == 0


class _Crash(Exception):
  pass


def test_training_run_logs_and_resumes_without_repeats(tmp_path, monkeypatch):
  """Two evaluations + a crash after step 3 was logged but before its checkpoint; rerun."""
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(prepare_tiny(tmp_path / 'data'))
  c.num_train_steps = 3
  c.eval_every_steps = 2   # evaluations at steps 2 and 3 (the last step)
  c.checkpoint_every_steps = 2
  c.log_cam_images = 3
  workdir = tmp_path / 'run'
  save = checkpoints.Checkpointer.save

  def crashing_save(self, step, *args, **kwargs):
    if step == 3:
      raise _Crash()
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoints.Checkpointer, 'save', crashing_save)
  with pytest.raises(_Crash):
    trainer.train_and_evaluate(c, workdir)
  rows = writers.read_jsonl(workdir / 'metrics.jsonl')
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3]
  monkeypatch.setattr(checkpoints.Checkpointer, 'save', save)
  result = trainer.train_and_evaluate(c, workdir)  # resumes from checkpoint 2
  assert result['step'] == 3

  rows = writers.read_jsonl(workdir / 'metrics.jsonl')
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3]
  assert [r['step'] for r in rows if 'validation/binary_accuracy' in r] == [2, 3]
  assert [r['step'] for r in rows if 'test/binary_accuracy' in r] == [3]
  acc = _events(workdir)
  assert _steps(acc, 'train/loss') == [1, 2, 3]
  assert _steps(acc, 'validation/binary_accuracy') == [2, 3]
  assert acc.Scalars('test/binary_accuracy')[-1].value == pytest.approx(
      result['binary_accuracy'])
  texts = _text(acc, 'config')
  assert len(texts) == 2  # one per session: at step 0, then at the resumed step 2
  assert '"arch": "vgg16"' in texts[-1] and '"num_train_steps": 3' in texts[-1]
  image_tags = acc.Tags()['images']
  assert len(image_tags) == 3 and all(t.startswith('cam/') for t in image_tags)
  for tag in image_tags:
    assert [e.step for e in acc.Images(tag)] == [2, 3]  # one per evaluation
    assert (acc.Images(tag)[0].width, acc.Images(tag)[0].height) == (32, 32)
  hp = _hparams(acc)
  assert hp['model.arch'] == 'vgg16' and hp['optim.lr'] == c.optim.lr
  exp = plugin_data_pb2.HParamsPluginData.FromString(
      acc.PluginTagToContent('hparams')['_hparams_/experiment']).experiment
  assert 'test/binary_accuracy' in [m.name.tag for m in exp.metric_infos]
  # A rerun of the finished run returns its result and writes nothing: it used to rebuild
  # its inputs, test again and log a second test record (and a second event file).
  from aesthetics_jax import io as io_lib
  logged = (workdir / 'metrics.jsonl').read_bytes()
  events = sorted((workdir / 'tensorboard').rglob('*'))
  assert trainer.train_and_evaluate(c, workdir) == io_lib.json_safe(result)
  assert (workdir / 'metrics.jsonl').read_bytes() == logged
  assert sorted((workdir / 'tensorboard').rglob('*')) == events
  # The training data's identity is recorded for evaluation; a resume on data prepared from
  # another AVA root is refused (the checkpoints were trained on the recorded one).
  from aesthetics_jax.data import dataset
  ident = json.loads((workdir / dataset.IDENTITY_FILE).read_text())
  assert ident['ava_fingerprint'] == dataset.load_metadata(c.data.data_dir)['ava_fingerprint']
  assert len(ident['ava_fingerprint']) == 64 and ident['subset'] == 'style'
  (workdir / dataset.IDENTITY_FILE).write_text(json.dumps(dict(ident, ava_fingerprint='0' * 64)))
  # Other data also holds other validation ids: the data is named, not the split (whose fix,
  # the seed or validation_fraction, was the wrong one).
  ids = workdir / 'validation_ids.json'
  ids.write_text(json.dumps(dict(json.loads(ids.read_text()), image_ids=[-1])))
  with pytest.raises(checkpoints.CheckpointMismatchError, match='prepared from another AVA root'):
    trainer.train_and_evaluate(c, workdir)
  # A damaged record cannot be checked: it was rewritten from the current data, so this
  # resume and every later evaluation passed unchecked.
  (workdir / dataset.IDENTITY_FILE).write_text('{"data_dir": ')
  with pytest.raises(checkpoints.WorkdirError, match=(
      r'dataset.json: not valid JSON .*; it records the data the checkpoints were trained '
      r'on: restore it from a copy, or delete it to resume')):
    trainer.train_and_evaluate(c, workdir)
  assert (workdir / dataset.IDENTITY_FILE).read_text() == '{"data_dir": '


def test_a_full_disk_in_tensorboards_thread_is_one_warning(tmp_path, monkeypatch, caplog):
  """A full disk (a 3 MB tmpfs workdir) printed 'Exception in thread Thread-2: Traceback ...
  tensorboardX/event_file_writer.py ... OSError: [Errno 28] No space left on device' in
  aesthetics-demo's output: tensorboardX writes events in its own thread."""
  import errno  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel
  seen = []
  monkeypatch.setattr(threading, 'excepthook', seen.append)
  w = writers.TensorBoardWriter(tmp_path / 'tb')

  def full(self, event):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(event_file_writer.EventsWriter, 'write_event', full)
  w.write_scalars(1, {'loss': 1.0})
  worker = w._w.file_writer.event_writer._worker  # pylint: disable=protected-access
  deadline = time.time() + 10
  while worker.is_alive() and time.time() < deadline:
    time.sleep(0.05)
  assert not worker.is_alive() and seen == []
  assert any('TensorBoard events stop here: [Errno 28] No space left on device' in r.getMessage()
             for r in caplog.records)
