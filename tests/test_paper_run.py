"""aesthetics-paper-run --smoke end to end: synthetic AVA → stand-in .pth → convert → prepare →
train the paper config → evaluate → report + stage table; a rerun skips every stage.

VGG16 only: each model's evaluation compiles a handful of CAM programs, and MobileNetV2's cost
a minute on a busy 2-core machine; its stand-in weights (make, convert, load) are tested in
test_fake_weights.py and its frozen-encoder training in test_train.py.
"""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip('torch')  # the stand-in weights are written as torchvision .pth

from aesthetics_jax.cli import paper_recipe as paper_run  # noqa: E402  (no flags)

STAGES = ['data', 'weights', 'prepare', 'train vgg16', 'evaluate vgg16', 'report']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  w = tmp_path_factory.mktemp('paper')
  md = paper_run.run_paper(w, smoke=True, archs=('vgg16',),
                           eval_overrides={'eval.box_threshold': 0.3})
  return w, md, json.loads((w / paper_run.RUN_JSON).read_text())


def test_smoke_runs_every_stage_and_writes_the_table(run):
  w, md, rec = run
  stages = {r['stage']: r for r in rec['stages']}
  assert list(stages) == STAGES and all(r['status'] == 'ran' for r in rec['stages'])
  data = stages['data']
  # 24 + 12 kept, lists 30 + 15: every written image (all but the missing files) counted.
  assert data['info']['num_listed'] == {'train': 30, 'test': 15}
  assert data['images'] == 45 - data['info']['num_missing'] and data['images_per_s'] > 0
  assert stages['prepare']['info']['kept'] == {'train': 24, 'test': 12}
  assert stages['train vgg16']['info']['step'] == 2 and stages['train vgg16']['images'] == 16
  assert stages['evaluate vgg16']['info']['num_test_images'] == 8
  assert all(r['peak_rss_mb'] > 50 and r['seconds'] >= 0 for r in rec['stages'])
  assert stages['data']['disk_mb'] > 0.1 and stages['weights']['disk_mb'] > 0
  assert (w / 'weights' / 'torch' / 'vgg16-synthetic.pth').is_file()
  cfg = json.loads((w / 'vgg16' / 'config.json').read_text())
  assert cfg['model']['init_weights'] == str(w / 'weights' / 'vgg16.npz')
  assert cfg['cache']['num_train_views'] == 1
  table = md.read_text()
  for name in STAGES:
    assert f'| {name} | ran |' in table
  assert 'Model: vgg16' in (w / 'report.html').read_text()


def test_rerun_skips_every_stage(run):
  w, _, first = run
  stamp = (w / 'vgg16' / 'eval' / 'metrics.json').stat().st_mtime_ns
  paper_run.run_paper(w, smoke=True, archs=('vgg16',))
  again = {r['stage']: r for r in json.loads((w / paper_run.RUN_JSON).read_text())['stages']}
  assert (w / 'vgg16' / 'eval' / 'metrics.json').stat().st_mtime_ns == stamp
  before = {r['stage']: r for r in first['stages']}
  for name in STAGES[:-1]:
    # Each skipped stage keeps the measurements of the run that did the work.
    assert again[name]['resumed'] and again[name]['seconds'] == before[name]['seconds']


def test_given_weights_folder(tmp_path):
  (tmp_path / 'vgg16-397923af.pth').write_bytes(b'x')
  assert paper_run._given_weights(tmp_path, 'vgg16') == tmp_path / 'vgg16-397923af.pth'
  with pytest.raises(paper_run.PaperRunError, match=r'no mobilenet_v2 weights \(expected'):
    paper_run._given_weights(tmp_path, 'mobilenet_v2')


def test_bad_archs_flag_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path}',
                      '--archs=resnet50'], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      'paper_run: --archs=resnet50: use one or both of mobilenet_v2,vgg16']


def test_eval_overrides_reach_the_evaluation(run):
  w, _, _ = run
  m = json.loads((w / 'vgg16' / 'eval' / 'metrics.json').read_text())
  assert m['box_threshold'] == 0.3  # the config's default is 0.2


def test_parse_eval_set():
  assert paper_run.parse_eval_set(['eval.faithfulness_images=16', 'eval.cam_methods=("gradcam",)',
                                   'eval.masks_dir=/data/masks']) == {
      'eval.faithfulness_images': 16, 'eval.cam_methods': ('gradcam',),
      'eval.masks_dir': '/data/masks'}
  for bad in ('faithfulness_images=16', 'eval.faithfulness_images'):
    with pytest.raises(paper_run.PaperRunError, match='use KEY=VALUE with an eval'):
      paper_run.parse_eval_set([bad])
