"""gs:// workdirs stay URLs (etils.epath), never a local folder `gs:/bucket/run`.

No GCS here: `fake_gcs` serves gs:// from memory through etils.epath's real fsspec backend
(fsspec's MemoryFileSystem registered for the gs/gcs protocols), so whatever goes through
epath lands in `FakeGCS.store` and whatever wrongly goes through the local file system shows
up as a `gs:` folder in the working directory.
"""
import json
import os
import sys

import numpy as np
import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from aesthetics_jax import io
from aesthetics_jax.configs import demo
from aesthetics_jax.report import html as report_html
from aesthetics_jax.train import checkpoints
from aesthetics_jax.train import checkpoint_files
from aesthetics_jax.train import restore
from aesthetics_jax.train import trainer
from aesthetics_jax.train import writers
from tiny_ava import prepare_tiny


class FakeGCS(MemoryFileSystem):
  protocol = ('gs', 'gcs')
  store: dict = {}
  pseudo_dirs = ['']

  @classmethod
  def _strip_protocol(cls, path):
    return MemoryFileSystem._strip_protocol(str(path).removeprefix('gs://'))


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
  registry = sys.modules['fsspec.registry']._registry
  for name in ('gs', 'gcs'):
    monkeypatch.setitem(registry, name, FakeGCS)
  monkeypatch.setattr(FakeGCS, 'store', {})
  monkeypatch.setattr(FakeGCS, 'pseudo_dirs', [''])
  # The fake stands in for gcsfs and google-cloud-storage, except as tensorboardX's client.
  monkeypatch.setattr(io, 'missing_backend', lambda p: [])
  monkeypatch.setattr(io, 'installed', lambda module: module != 'google.cloud.storage')
  cache = type(epath_backend.fsspec_backend)._get_filesystem
  cache.cache_clear()
  monkeypatch.chdir(tmp_path)
  yield FakeGCS
  cache.cache_clear()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return prepare_tiny(tmp_path_factory.mktemp('tiny'))


def _config(data_dir):
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(data_dir)
  c.log_cam_images = 0
  return c


def test_gs_workdir_without_the_backends_is_one_line_and_creates_nothing(data_dir, tmp_path,
                                                                         monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(io, 'installed', lambda module: False)
  for call in (lambda: trainer.train_and_evaluate(_config(data_dir), 'gs://bucket/run'),
               lambda: restore.restore_for_inference('gs://bucket/run')):
    with pytest.raises(checkpoints.WorkdirError) as e:
      call()
    assert str(e.value) == ('gs://bucket/run: the workdir is on gs:// but gcsfs and '
                            'google-cloud-storage are not installed; pip install gcsfs '
                            'google-cloud-storage (or pass a local path)')
  assert not (tmp_path / 'gs:').exists()
  assert io.missing_backend(tmp_path) == []


def test_trainer_writes_a_gs_workdir_through_epath(fake_gcs, data_dir, tmp_path, monkeypatch):
  # Orbax writes gs:// arrays with tensorstore's own GCS client, which no fake reaches here:
  # the checkpoints alone go to a local folder; everything else the trainer writes must land
  # in the bucket.
  local_ckpt = tmp_path / 'local'

  class LocalCheckpointer(checkpoints.Checkpointer):
    def __init__(self, workdir, **kw):
      assert str(workdir) == 'gs://bucket/run'  # handed over as a URL, not a local path
      super().__init__(local_ckpt, **kw)

  monkeypatch.setattr(trainer.ckpt_lib, 'Checkpointer', LocalCheckpointer)
  res = trainer.train_and_evaluate(_config(data_dir), 'gs://bucket/run')
  assert res['step'] == 2 and res['eval_split'] == 'test'
  names = sorted(fake_gcs.store)
  assert names == ['/bucket/run/config.json', '/bucket/run/dataset.json',
                   '/bucket/run/environment.json', '/bucket/run/metrics.jsonl',
                   '/bucket/run/result.json', '/bucket/run/validation_ids.json'], names
  rows = writers.read_jsonl('gs://bucket/run/metrics.jsonl')
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2]
  assert [r['step'] for r in rows if 'test/binary_accuracy' in r] == [2]
  saved = json.loads(io.path('gs://bucket/run/config.json').read_text())
  assert saved['model']['arch'] == 'vgg16'
  assert sorted(os.listdir(tmp_path)) == ['local']  # no `gs:` folder, no local tensorboard


def test_tensorboard_on_gs_is_skipped_with_one_line_without_its_client(fake_gcs):
  why = writers.tensorboard_unavailable('gs://bucket/run')
  assert why == ('gs://bucket/run/tensorboard: TensorBoard events skipped (tensorboardX cannot '
                 'write gs:// here; pip install google-cloud-storage to get them); '
                 'metrics.jsonl has every scalar')
  w = writers.MetricWriter('gs://bucket/run', resume_step=None)
  for step in (1, 2, 3):
    w.write_scalars(step, {'loss': float(step)})
  w.write_text(1, 'config', 'ignored')  # TensorBoard-only: a no-op without TensorBoard
  w.close()
  w = writers.MetricWriter('gs://bucket/run', resume_step=2)  # a resumed run drops step 3
  w.write_scalars(3, {'loss': 30.0})
  w.close()
  assert [(r['step'], r['loss']) for r in writers.read_jsonl('gs://bucket/run/metrics.jsonl')
          ] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  assert writers.tensorboard_unavailable('/tmp/run') is None
  assert sorted(fake_gcs.store) == ['/bucket/run/metrics.jsonl']


def test_checkpoint_manifest_and_report_on_gs(fake_gcs):
  step_dir = io.path('gs://bucket/run/checkpoints/5')
  io.atomic_write_bytes(step_dir / 'variables' / 'x', b'12345')
  checkpoint_files.write_file_manifest(step_dir)
  listed = json.loads((step_dir / checkpoint_files.FILES_JSON).read_text())['files']
  assert list(listed) == ['variables/x'] and listed['variables/x'][0] == 5
  io.atomic_write_bytes(step_dir / 'variables' / 'x', b'123')
  assert checkpoint_files.file_problem(step_dir / 'variables' / 'x', *listed['variables/x']) == (
      'is truncated (3 of 5 bytes)')
  out = report_html.write_report('gs://bucket/run/eval/report.html', [], None)
  assert str(out) == 'gs://bucket/run/eval/report.html'
  assert '/bucket/run/eval/report.html' in fake_gcs.store
  # Its explorer link was the gs:// URL, which no browser opens; relative, it works once the
  # folder is copied down.
  section = {'arch': 'vgg16', 'metrics': {'explorer_images': 3}, 'figures': {},
             'explorer': 'gs://bucket/run/eval/explorer/index.html'}
  link = report_html._explorer_link(section, str(out.parent))
  assert 'href="explorer/index.html"' in link, link
  assert np.all([not p.startswith('gs:') for p in os.listdir('.')])
