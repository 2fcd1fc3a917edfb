"""aesthetics-paper-run --smoke end to end: synthetic AVA → torchvision-layout weights →
convert → prepare → train the paper config → evaluate → report + stage table; a rerun skips
every stage.

Torch-free, so it runs in CI: the weights are given (`--weights=FOLDER`) as a torchvision-layout
`.safetensors` state_dict, the format timm ships, which `convert_weights` reads without torch.
The stand-in `.pth` that the run writes when no weights are given needs torch
(`test_stand_in_pth_weights_stage`, skipped without it; test_fake_weights.py for the rest).
VGG16 only: each model's evaluation compiles a handful of CAM programs, and MobileNetV2's cost
a minute on a busy 2-core machine; its frozen-encoder training is tested in test_train.py.
"""
import json
import re
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from aesthetics_jax import cpu_backend
from aesthetics_jax.cli import paper_recipe as paper_run  # noqa: E402  (no flags)

STAGES = ['data', 'weights', 'prepare', 'train vgg16', 'evaluate vgg16', 'report']


def torchvision_layout_safetensors(folder, arch: str, width_mult: float, fc_dim: int = 4096,
                                   seed: int = 0):
  """`folder/<arch>-test.safetensors`: the keys and shapes of torchvision's state_dict (width
  scaled), He-initialised numpy arrays (BatchNorm: identity statistics)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in fake_imagenet.layout(arch, width_mult, fc_dim).items():
    leaf = key.rsplit('.', 1)[1]
    if leaf == 'num_batches_tracked':
      state[key] = np.zeros((), np.int64)
    elif leaf == 'running_var' or (leaf == 'weight' and len(shape) == 1):
      state[key] = np.ones(shape, np.float32)
    elif leaf in ('bias', 'running_mean'):
      state[key] = np.zeros(shape, np.float32)
    else:
      fan_in = int(np.prod(shape[1:]))
      state[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
  folder.mkdir(parents=True, exist_ok=True)
  save_file(state, str(folder / f'{arch}-test.safetensors'))
  return folder


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  w = tmp_path_factory.mktemp('paper')
  m = paper_run.paper_config('vgg16', True, 1).model
  weights = torchvision_layout_safetensors(w.parent / f'{w.name}_weights', 'vgg16',
                                           float(m.width_mult), int(m.fc_dim))
  md = paper_run.run_paper(w, smoke=True, archs=('vgg16',), weights=str(weights),
                           eval_overrides={'eval.box_threshold': 0.3})
  return w, md, json.loads((w / paper_run.RUN_JSON).read_text()), weights


def test_smoke_runs_every_stage_and_writes_the_table(run):
  w, md, rec, weights = run
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
  # The given .safetensors was converted into the run's weights folder, and trained from.
  meta = json.loads((w / 'weights' / 'vgg16.npz.json').read_text())
  assert meta['source'] == 'vgg16-test.safetensors' and meta['arch'] == 'vgg16'
  assert stages['weights']['info'] == {'vgg16': str(w / 'weights' / 'vgg16.npz')}
  cfg = json.loads((w / 'vgg16' / 'config.json').read_text())
  assert cfg['model']['init_weights'] == str(w / 'weights' / 'vgg16.npz')
  assert cfg['cache']['num_train_views'] == 1
  table = md.read_text()
  for name in STAGES:
    assert f'| {name} | ran |' in table
  assert 'Model: <bdi>vgg16</bdi>' in (w / 'report.html').read_text()


def test_rerun_skips_every_stage(run):
  w, _, first, weights = run
  stamp = (w / 'vgg16' / 'eval' / 'metrics.json').stat().st_mtime_ns
  paper_run.run_paper(w, smoke=True, archs=('vgg16',), weights=str(weights),
                      eval_overrides={'eval.box_threshold': 0.3})
  again = {r['stage']: r for r in json.loads((w / paper_run.RUN_JSON).read_text())['stages']}
  assert (w / 'vgg16' / 'eval' / 'metrics.json').stat().st_mtime_ns == stamp
  before = {r['stage']: r for r in first['stages']}
  for name in STAGES[:-1]:
    # Each skipped stage keeps the measurements of the run that did the work.
    assert again[name]['resumed'] and again[name]['seconds'] == before[name]['seconds']


def test_a_reused_stage_logs_this_runs_time(tmp_path, capsys):
  """A rerun logged 'weights: reused in 4.8 s' (the earlier run's time) for a check that took
  no time: read as 4.8 s spent again."""
  w = tmp_path / 'w'
  w.mkdir()
  (w / paper_run.RUN_JSON).write_text(json.dumps({'flags': {}, 'stages': [
      {'stage': 'weights', 'status': 'ran', 'seconds': 300.0, 'peak_total_mb': 1.0}]}))
  run = paper_run._Run(w, {})  # pylint: disable=protected-access
  rec = run.stage('weights', [], lambda: ('reused', None, {}))
  assert rec['seconds'] == 300.0 and rec['resumed']
  line = [l for l in capsys.readouterr().err.splitlines() if 'weights: reused' in l][0]
  assert line.endswith('weights: reused in 0.0 s (the work took 5.0 min in an earlier run)')


def test_rerun_with_other_flags_is_refused(run, tmp_path):
  """A rerun with another seed, --views or weights (or without --smoke) reused the finished stages
  (models trained on the first run's data, weights and views) and recorded the new flags."""
  w, _, _, weights = run
  before = (w / paper_run.RUN_JSON).read_text()
  m = paper_run.paper_config('vgg16', True, 1).model
  other = torchvision_layout_safetensors(tmp_path / 'other', 'vgg16', float(m.width_mult),
                                         int(m.fc_dim), seed=1)
  for kw, text in (({'seed': 1}, 'was run with --seed=0 (paper_run.json), this run has '
                    '--seed=1'),
                   ({'vgg16_views': 2}, 'was run with --vgg16_views=1 (paper_run.json), this '
                    'run has --vgg16_views=2'),
                   ({'weights': str(other)}, f'was run with --weights={weights} '
                    f'(paper_run.json), this run has --weights={other}')):
    with pytest.raises(paper_run.PaperRunUsageError) as e:
      paper_run.run_paper(w, archs=('vgg16',), **{'smoke': True, 'weights': str(weights), **kw})
    assert str(e.value).startswith(f'--workdir={w} {text}: its finished stages would be reused')
  assert (w / paper_run.RUN_JSON).read_text() == before


def test_another_commands_workdir_is_refused(tmp_path):
  """An aesthetics-demo workdir: its W/ava demo dataset was overwritten by the paper-size
  one, and the run failed later (exit 1) on the demo's prepared dataset."""
  from aesthetics_jax.data import demo as demo_data
  demo_data.generate(tmp_path / 'w' / 'ava', 3, 2, 0)
  manifest = (tmp_path / 'w' / 'ava' / demo_data.MANIFEST).read_text()
  m = paper_run.paper_config('vgg16', True, 1).model
  weights = torchvision_layout_safetensors(tmp_path / 'wt', 'vgg16', float(m.width_mult),
                                           int(m.fc_dim))
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      f"^--workdir={tmp_path / 'w'} holds ava/ but no paper_run.json: another command's")):
    paper_run.run_paper(tmp_path / 'w', smoke=True, archs=('vgg16',), weights=str(weights))
  assert (tmp_path / 'w' / 'ava' / demo_data.MANIFEST).read_text() == manifest


def test_given_weights_folder(tmp_path):
  (tmp_path / 'vgg16-397923af.pth').write_bytes(b'x')
  assert paper_run._given_weights(tmp_path, 'vgg16') == tmp_path / 'vgg16-397923af.pth'
  with pytest.raises(paper_run.PaperRunError, match=r'no mobilenet_v2 weights \(expected'):
    paper_run._given_weights(tmp_path, 'mobilenet_v2')
  # torch.hub's cache holds V1 and V2: the paper's V1 is taken (V2 sorted first, and was).
  (tmp_path / 'mobilenet_v2-7ebf99e0.pth').write_bytes(b'x')
  assert paper_run._given_weights(tmp_path, 'mobilenet_v2') == (
      tmp_path / 'mobilenet_v2-7ebf99e0.pth')
  (tmp_path / 'mobilenet_v2-b0353104.pth').write_bytes(b'x')
  assert paper_run._given_weights(tmp_path, 'mobilenet_v2') == (
      tmp_path / 'mobilenet_v2-b0353104.pth')
  (tmp_path / 'vgg16-other.safetensors').write_bytes(b'x')
  assert paper_run._given_weights(tmp_path, 'vgg16') == tmp_path / 'vgg16-397923af.pth'
  (tmp_path / 'vgg16-397923af.pth').unlink()
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      r"several vgg16 weights \(vgg16-a\.pth, vgg16-other\.safetensors\) and not the paper's")):
    (tmp_path / 'vgg16-a.pth').write_bytes(b'x')
    paper_run._given_weights(tmp_path, 'vgg16')


def test_missing_inputs_fail_before_any_stage(tmp_path):
  """An --ava_dir without AVA.txt passed the data stage and a --weights folder without the
  files failed in the weights stage, both exit 1; now exit 2 before any stage."""
  empty = tmp_path / 'empty'
  empty.mkdir()
  for kw, expect in (({'ava_dir': str(empty)}, f'{empty / "AVA.txt"}: not found; pass --ava_dir='),
                     ({'weights': str(tmp_path / 'nope')}, f'--weights={tmp_path / "nope"}: not '
                      'a folder'),
                     ({'weights': str(empty)}, f'--weights={empty}: no vgg16 weights')):
    with pytest.raises(paper_run.PaperRunUsageError) as e:
      paper_run.run_paper(tmp_path / 'w', smoke=True, archs=('vgg16',),
                          **{'weights': str(tmp_path), **kw})
    assert str(e.value).startswith(expect) and not (tmp_path / 'w').exists()
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      f'--weights={empty}', '--archs=vgg16', '--smoke'],
                     capture_output=True, text=True)
  assert r.returncode == 2 and not (tmp_path / 'w').exists()
  assert r.stderr.strip().splitlines() == [
      f'paper_run: --weights={empty}: no vgg16 weights (expected vgg16*.pth, .pt, .safetensors '
      'or vgg16.npz there); add them or drop --archs=vgg16']


def test_unusable_weights_fail_before_any_stage(tmp_path):
  """A damaged weights file, or one of another width than the config's, failed in the weights
  or the train stage (exit 1), after the data stage (minutes at paper scale)."""
  junk = tmp_path / 'junk'
  junk.mkdir()
  (junk / 'vgg16-x.safetensors').write_bytes(b'\x00' * 64)
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      f'^--weights={junk}: {junk / "vgg16-x.safetensors"}: cannot read weights')):
    paper_run.run_paper(tmp_path / 'w', smoke=True, archs=('vgg16',), weights=str(junk))
  wide = torchvision_layout_safetensors(tmp_path / 'wide', 'vgg16', 0.5, 64)
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      f'^--weights={wide}: vgg16-test.safetensors holds width 0.5 vgg16 weights; the smoke '
      r'config trains width 0.125')):
    paper_run.run_paper(tmp_path / 'w', smoke=True, archs=('vgg16',), weights=str(wide))
  assert not (tmp_path / 'w').exists()
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      f'--weights={junk}', '--archs=vgg16', '--smoke'],
                     capture_output=True, text=True, timeout=400)
  assert r.returncode == 2 and not (tmp_path / 'w').exists(), r.stderr[-3000:]
  assert len(r.stderr.strip().splitlines()) == 1


def test_bad_archs_flag_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path}',
                      '--archs=resnet50'], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      'paper_run: --archs=resnet50: use one or both of mobilenet_v2,vgg16']


@pytest.mark.parametrize('flag, expect', [
    # An empty value (an unset shell variable) ran on synthetic data or stand-in weights.
    ('--ava_dir=', '--ava_dir is empty; pass a folder, or leave the flag out for the '
     'synthetic default'),
    ('--weights=', '--weights is empty; pass a folder, or leave the flag out for the '
     'synthetic default'),
    ('--seed=-1', f'--seed=-1: pass a value from 0 to {2 ** 64 - 1}'),  # was exit 1
    (f'--seed={2 ** 64}', f'--seed={2 ** 64}: pass a value from 0 to {2 ** 64 - 1}'),
    # A pool of 100,000 spawned interpreters, started at once.
    ('--workers=100000', '--workers=100000: pass 0 (one per core) or 1 to '
     f'{4 * cpu_backend.host_cpu_count()} (4 per core: more processes only take memory)')])
def test_bad_input_flags_exit_2_before_any_stage(tmp_path, flag, expect):
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      '--archs=vgg16', '--smoke', flag], capture_output=True, text=True,
                     timeout=400)
  assert r.returncode == 2 and not (tmp_path / 'w').exists(), r.stderr[-3000:]
  assert r.stderr.strip().splitlines() == [f'paper_run: {expect}']


def test_eval_overrides_reach_the_evaluation(run):
  w, _, _, _ = run
  m = json.loads((w / 'vgg16' / 'eval' / 'metrics.json').read_text())
  assert m['box_threshold'] == 0.3  # the config's default is 0.2


def test_other_eval_set_makes_the_evaluation_stale(run):
  """A rerun with other --eval_set values used to keep the first run's metrics."""
  from aesthetics_jax.cli import stages
  w = run[0]
  smoke = dict(stages.SMOKE_EVAL)
  assert stages.eval_current(w / 'vgg16', {**smoke, 'eval.box_threshold': 0.3}) is not None
  assert stages.eval_current(w / 'vgg16', smoke) is None
  assert stages.eval_current(w / 'vgg16', {**smoke, 'eval.box_threshold': 0.4}) is None


@pytest.mark.parametrize('item, expect', [
    ('eval.faithfulness_image=16', "--eval_set: unknown config key 'eval.faithfulness_image'; "
     'did you mean eval.faithfulness_images'),
    ('eval.box_threshold=1.5', '--eval_set (mobilenet_v2): config.eval.box_threshold=1.5: '
     'must be in (0, 1)'),
    ('eval.cam_methods=gradcam', "--eval_set: eval.cam_methods='gradcam' is a str; this key "
     'takes a tuple'),
])
def test_bad_eval_set_fails_before_any_stage(tmp_path, item, expect):
  """It used to surface after the data, weights and training stages (hours at paper scale)."""
  with pytest.raises(paper_run.PaperRunError) as e:
    paper_run.run_paper(tmp_path / 'w', smoke=True, eval_overrides=paper_run.parse_eval_set(
        [item]))
  assert str(e.value).startswith(expect) and not (tmp_path / 'w').exists()


def test_second_run_on_one_workdir_is_refused(tmp_path):
  """Two runs on one workdir wrote the same data, weights and table at once."""
  import os
  from aesthetics_jax.train import checkpoints, workdir
  w = tmp_path / 'w'
  w.mkdir()
  m = paper_run.paper_config('vgg16', True, 1).model  # read before the lock: a real file
  weights = torchvision_layout_safetensors(tmp_path / 'wt', 'vgg16', float(m.width_mult),
                                           int(m.fc_dim))
  first = workdir.WorkdirLock(w, holder='aesthetics-paper-run')
  first.acquire()  # as a live run holds it
  try:
    with pytest.raises(checkpoints.WorkdirBusyError, match=(
        f'is in use by another aesthetics-paper-run \\(pid {os.getpid()} ')):
      # Weights given: the stand-in check (torch) does not come first without the torch extra.
      paper_run.run_paper(w, smoke=True, archs=('vgg16',), weights=str(weights))
    assert sorted(p.name for p in w.iterdir()) == ['.lock']  # no stage ran
  finally:
    first.release()


def test_stand_in_weights_without_torch_fail_before_any_stage(tmp_path, monkeypatch):
  """Without --weights and without torch, the run used to fail at the weights stage, after
  making the data (minutes at paper scale)."""
  from aesthetics_jax.models import fake_imagenet

  def no_torch():
    raise fake_imagenet.FakeWeightsError('writing torchvision .pth files needs torch')

  monkeypatch.setattr(fake_imagenet, '_torch', no_torch)
  with pytest.raises(paper_run.PaperRunError, match=r"needs torch: pip install -e '\.\[torch\]' "
                     r'\(or pass --weights=DIR'):
    paper_run.run_paper(tmp_path / 'w', smoke=True, archs=('vgg16',))
  assert not (tmp_path / 'w').exists()
  paper_run.check_stand_in_torch(tmp_path / 'w', str(tmp_path), ['vgg16'], True, 0)  # given


def test_bad_eval_set_flag_exits_2(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      '--eval_set=eval.box_threshold=2'], capture_output=True, text=True)
  assert r.returncode == 2 and not (tmp_path / 'w').exists()
  assert r.stderr.strip().splitlines() == [
      'paper_run: --eval_set (mobilenet_v2): config.eval.box_threshold=2.0: must be in (0, 1), '
      "the fraction of a map's peak a box encloses (default 0.2)"]


def test_parse_eval_set():
  assert paper_run.parse_eval_set(['eval.faithfulness_images=16', 'eval.cam_methods=("gradcam",)',
                                   'eval.masks_dir=/data/masks']) == {
      'eval.faithfulness_images': 16, 'eval.cam_methods': ('gradcam',),
      'eval.masks_dir': '/data/masks'}
  for bad in ('faithfulness_images=16', 'eval.faithfulness_images'):
    with pytest.raises(paper_run.PaperRunError, match='use KEY=VALUE with an eval'):
      paper_run.parse_eval_set([bad])


def test_stand_in_pth_weights_stage(tmp_path):
  """Without --weights: a torchvision-layout stand-in .pth, converted; a rerun reuses both."""
  pytest.importorskip('torch')  # the stand-in is written with torch.save
  configs = {'vgg16': paper_run.paper_config('vgg16', True, 1)}
  status, _, info = paper_run.stage_weights(tmp_path, None, ['vgg16'], configs, True, 0)
  assert status == 'ran' and info == {'vgg16': str(tmp_path / 'weights' / 'vgg16.npz')}
  assert (tmp_path / 'weights' / 'torch' / 'vgg16-synthetic.pth').is_file()
  meta = json.loads((tmp_path / 'weights' / 'vgg16.npz.json').read_text())
  assert meta['source'] == 'vgg16-synthetic.pth'
  assert paper_run.stage_weights(tmp_path, None, ['vgg16'], configs, True, 0)[0] == 'reused'


_STALE_PID = 2 ** 22 + 1  # above Linux's pid_max: never a live process


@pytest.fixture(scope='module')
def failed_training(tmp_path_factory):
  """aesthetics-paper-run whose train stage fails (a feature cache that the disk cannot hold),
  on a workdir holding the stale lock of a crashed run: (result, workdir, --vgg16_views).
  Two tests read its one process (a paper run with the CLI costs 10-20 s)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(Path(__file__).parent))
  import tiny_ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import feature_cache  # pylint: disable=import-outside-toplevel
  tmp_path = tmp_path_factory.mktemp('failed_training')
  c = paper_run.paper_config('vgg16', True, 1)
  weights = torchvision_layout_safetensors(tmp_path / 'wt', 'vgg16', float(c.model.width_mult),
                                           int(c.model.fc_dim))
  ava = tiny_ava.write_tiny_ava(tmp_path / 'ava')
  per_view = feature_cache.layout(models.create_model(c.model), c, 1, 0).bytes_per_view
  views = shutil.disk_usage(tmp_path).free // per_view // 2
  (tmp_path / 'w' / 'vgg16').mkdir(parents=True)
  (tmp_path / 'w' / 'vgg16' / '.lock').write_text(json.dumps(
      {'pid': _STALE_PID, 'host': socket.gethostname(), 'started': '2026-01-01 00:00:00',
       'proc_start': 1, 'token': 'crashed'}))
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      f'--weights={weights}', f'--ava_dir={ava}', '--archs=vgg16', '--smoke',
                      f'--vgg16_views={views}'], capture_output=True, text=True, timeout=400)
  return r, tmp_path / 'w', views


def test_cli_shows_warnings(failed_training):
  """The training stage's warnings reach the user (absl WARNING): `aesthetics-paper-run` set
  ERROR, so hours-long runs hid a resume from an older checkpoint, a resized-image store that
  could not be used, or, here, the stale lock of a crashed run being taken over (the trainer
  takes it before its feature cache is refused; the rerun of a killed aesthetics-train that
  takes one over and finishes is test_checkpoints.py's)."""
  import socket  # pylint: disable=import-outside-toplevel
  r, w, _ = failed_training
  assert (f'{w / "vgg16" / ".lock"}: taking over the stale workdir lock of pid '
          f'{_STALE_PID} on {socket.gethostname()}, which is no longer running') in r.stderr, (
              r.stderr[-3000:])


def test_training_error_is_one_line(failed_training):
  """A TrainingError (here: a feature cache that the disk cannot hold) ended the run in a
  traceback; it is one line, exit 1 (a stage failed). With --ava_dir the check before any
  stage counts one training row (prepare learns how many there are): K views of one row fit,
  of the 14 rows prepare keeps they do not."""
  r, _, views = failed_training
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
  # The trainer's check names the key this command sets through its flag (since 1161500 it
  # refuses the cache before building it).
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(f'paper_run: --vgg16_views={views}: {views} views of 14 training rows '
                         'make a ') and 'feature cache' in last, last


def test_views_that_did_not_fit_do_not_lock_the_workdir(failed_training):
  """The rerun with a --vgg16_views that fits, after the train stage refused the cache, was
  refused ('was run with --vgg16_views=<huge>'): the user had to throw away the workdir, its
  weights and prepared data, though no model was trained with that K."""
  _, w, views = failed_training
  flags = json.loads((w / paper_run.RUN_JSON).read_text())['flags']
  assert flags['vgg16_views'] == views
  paper_run.check_workdir(w, {**flags, 'vgg16_views': 1})  # no model trained: K may change
  with pytest.raises(paper_run.PaperRunUsageError, match=r'this run has no --weights: its'):
    paper_run.check_workdir(w, {**flags, 'vgg16_views': 1, 'weights': None})  # others still


def test_views_no_disk_holds_exit_2_before_any_stage(tmp_path):
  """A --views / --vgg16_views whose feature cache no disk holds failed in the train stage
  (exit 1), after the data stage (minutes at the paper's size)."""
  flag = f'--views={10 ** 9}'
  r = subprocess.run([sys.executable, '-m', 'launch.paper_run', f'--workdir={tmp_path / "w"}',
                      '--smoke', flag], capture_output=True, text=True, timeout=400)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and not (tmp_path / 'w').exists(), r.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith(
      f'paper_run: {flag}: the mobilenet_v2 feature cache needs at least '), lines
  assert f'{tmp_path} has ' in lines[0] and 'pass a smaller value' in lines[0]
  # --vgg16_views in-process (a second command cost ~4 s): the command prints run_paper's
  # PaperRunUsageError as the line above, exit 2 (cli/paper_run.py).
  with pytest.raises(paper_run.PaperRunUsageError) as e:
    paper_run.run_paper(tmp_path / 'w', smoke=True, vgg16_views=10 ** 9)
  assert str(e.value).startswith(
      f'--vgg16_views={10 ** 9}: the vgg16 feature cache needs at least '), e.value
  assert f'{tmp_path} has ' in str(e.value) and 'pass a smaller value' in str(e.value)
  assert '\n' not in str(e.value) and not (tmp_path / 'w').exists()


def test_a_damaged_final_checkpoint_is_trained_again(tmp_path, monkeypatch):
  """A rerun after the final checkpoint was damaged (a truncated file) reused the train stage
  (and the trainer returned its result.json), and the evaluation stopped, exit 2, with 'pass
  --step=1', a flag aesthetics-paper-run (and aesthetics-demo, aesthetics-control:
  stages.finished) does not take. The train stage runs again: the trainer sets the damaged
  step aside and redoes it."""
  sys.path.insert(0, str(Path(__file__).parent))
  import checkpoint_fixture  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.cli import stages  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import checkpoints, resume_checks  # pylint: disable=C0415
  from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'vgg16', checkpoint_fixture.smoke_config('vgg16'), step=2)
  (wd / trainer.RESULT_FILE).write_text('{"step": 2}')
  calls = []
  monkeypatch.setattr(trainer, 'train_and_evaluate',
                      lambda config, workdir, stop=None: calls.append(workdir) or {'step': 2})
  c, earlier = paper_run.paper_config('vgg16', True, 1), {'info': {'step': 2}}

  def trainer_finds_it_finished() -> bool:
    ck = checkpoints.Checkpointer(wd, read_only=True, enable_async=False)
    try:
      return resume_checks.finished_result(wd, ck, 2) is not None
    finally:
      ck.close()

  assert paper_run.stage_train(c, wd, earlier)[0] == 'reused' and stages.finished(wd, 2)
  assert trainer_finds_it_finished()
  data = max((p for p in (wd / 'checkpoints' / '2' / 'variables').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  assert not stages.finished(wd, 2) and not trainer_finds_it_finished()
  assert paper_run.stage_train(c, wd, earlier)[0] == 'ran' and calls == [str(wd)]


def test_damaged_weights_the_run_wrote_are_written_again(tmp_path):
  """A converted W/weights/<arch>.npz or a stand-in .pth truncated since the run wrote it was
  reused: training failed (exit 1) with 'convert it again' / 'download or export it again',
  which a paper-run user has no command for; the weights stage writes them again."""
  configs = {'vgg16': paper_run.paper_config('vgg16', True, 1)}
  m = configs['vgg16'].model
  given = torchvision_layout_safetensors(tmp_path / 'given', 'vgg16', float(m.width_mult),
                                         int(m.fc_dim))
  w, npz = tmp_path / 'w', tmp_path / 'w' / 'weights' / 'vgg16.npz'
  assert paper_run.stage_weights(w, str(given), ['vgg16'], configs, True, 0)[0] == 'ran'
  whole = npz.read_bytes()
  assert paper_run.stage_weights(w, str(given), ['vgg16'], configs, True, 0)[0] == 'reused'
  npz.write_bytes(whole[:len(whole) // 2])
  assert paper_run.stage_weights(w, str(given), ['vgg16'], configs, True, 0)[0] == 'ran'
  assert npz.read_bytes() == whole
  pytest.importorskip('torch')  # the stand-in is written with torch.save
  assert paper_run.stage_weights(w, None, ['vgg16'], configs, True, 0)[0] == 'ran'
  pth = w / 'weights' / 'torch' / 'vgg16-synthetic.pth'
  pth.write_bytes(pth.read_bytes()[:1000])
  npz.unlink()
  assert paper_run.stage_weights(w, None, ['vgg16'], configs, True, 0)[0] == 'ran'
  assert paper_run.stage_weights(w, None, ['vgg16'], configs, True, 0)[0] == 'reused'


@pytest.mark.parametrize('text', ['', '[1]', '{"flags": [1]}', '{"stages": []}'])
def test_a_damaged_run_record_is_refused(tmp_path, text):
  """An emptied or edited W/paper_run.json counted as 'nothing to compare with': a rerun with
  --vgg16_views=2 reused the model trained with 1 and recorded it as 2 (a 'flags' list was an
  AttributeError traceback)."""
  (tmp_path / paper_run.RUN_JSON).write_text(text)
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      f'^{tmp_path / paper_run.RUN_JSON}: cannot be read \\(.*\\), and it records the flags '
      'this workdir was run with, which a rerun must repeat; restore it, or pass a new')):
    paper_run.check_workdir(tmp_path, {'smoke': True, 'vgg16_views': 2, 'seed': 0})


def test_a_damaged_prepared_dataset_names_this_commands_fix(tmp_path):
  """A truncated shard of the run's own W/tfds said 'remove that folder and rerun
  aesthetics-prepare-data, or choose another --data_dir': a command and a flag the paper run,
  the demo and the control (stages.prepare_own) do not have."""
  sys.path.insert(0, str(Path(__file__).parent))
  import tiny_ava  # pylint: disable=import-outside-toplevel
  ava = tiny_ava.write_tiny_ava(tmp_path / 'ava', num_train=8, num_test=8, size=32)
  data_dir = tmp_path / 'tfds'
  paper_run.stage_prepare(ava, data_dir)
  shard = next((data_dir / 'ava' / 'style' / '1.0.0').glob('ava-test.array_record*'))
  shard.write_bytes(shard.read_bytes()[:100])
  with pytest.raises(ValueError) as e:
    paper_run.stage_prepare(ava, data_dir)
  assert str(e.value).startswith(
      f'{data_dir / "ava" / "style" / "1.0.0"}: the prepared dataset cannot be used (damaged '
      '(RuntimeError: ')
  assert str(e.value).endswith(f'; delete {data_dir} and rerun the same command to prepare it '
                               'again'), e.value


def test_a_full_disk_in_the_data_stage_names_the_file_and_the_fix(tmp_path, monkeypatch):
  """The data stage on a full disk said '(choose a writable --out_dir with ~2.5 GB free)', a
  flag of aesthetics-make-demo-data (and 2.5 GB with --smoke); the disk's error reaches the
  command, whose line names the file and says to free space and rerun."""
  import errno  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.cli import common  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import paper_size  # pylint: disable=import-outside-toplevel
  where = str(tmp_path / 'ava' / 'images' / '1.jpg')

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', where)

  monkeypatch.setattr(paper_size, '_generate', full)
  with pytest.raises(OSError) as e:
    paper_run.stage_data(tmp_path, None, True, 0, 1)
  assert common.storage_line(e.value, tmp_path) == (
      f'{where}: No space left on device; free space or fix the storage, then rerun the same '
      'command to continue')


def test_a_stand_in_record_holding_a_list_is_made_again(tmp_path):
  """W/weights/torch/<arch>.pth.json edited into a list (not an object) was an AttributeError
  traceback when the weights stage asked whether its stand-in was current; it is not current,
  so the stage makes it again (as a damaged converted .npz's record is)."""
  pth = tmp_path / 'vgg16.pth'
  pth.write_bytes(b'')
  Path(f'{pth}.json').write_text('["arch", "vgg16"]')
  assert paper_run._fake_is_current(pth, {'arch': 'vgg16'}) is False


def test_sigterm_checkpoints_the_training_step_and_exits_143(tmp_path):
  """SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) killed the paper run at
  once (exit -15, no line), losing every step since the last checkpoint; aesthetics-train
  checkpointed the step in flight. Now so does the paper run, naming it, exit 143; the stages
  finished before are kept (a rerun reuses them)."""
  import sigterm_fixture
  m = paper_run.paper_config('vgg16', True, 1).model
  weights = torchvision_layout_safetensors(tmp_path / 'weights', 'vgg16', float(m.width_mult),
                                           int(m.fc_dim))
  w = tmp_path / 'w'
  r = sigterm_fixture.run('paper_run', 'training', f'--workdir={w}', '--smoke',
                          '--archs=vgg16', f'--weights={weights}')
  assert r.returncode == 143 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-3000:])
  assert r.stderr.strip().splitlines()[-1] == (
      f'paper_run: terminated (SIGTERM): training checkpointed in {w}/vgg16/checkpoints/1; '
      'rerun the same command to continue'), r.stderr[-3000:]
  stages = json.loads((w / paper_run.RUN_JSON).read_text())['stages']
  assert [(s['stage'], s['status']) for s in stages] == [
      ('data', 'ran'), ('weights', 'ran'), ('prepare', 'ran'), ('train vgg16', 'stopped')]


def test_the_table_keeps_other_stages_and_the_time_of_stopped_attempts(tmp_path):
  """A rerun with fewer --archs dropped the other model's rows (a later full rerun then
  called that finished model 'ran in 0.2 s'), and a stage resumed after Ctrl-C showed the
  resumed part's time only."""
  import time  # pylint: disable=import-outside-toplevel

  def work(status='ran'):
    time.sleep(0.2)
    return status, 4, {}

  def stopped():
    time.sleep(0.2)
    raise KeyboardInterrupt

  run = paper_run._Run(tmp_path, {})
  run.stage('train a', [], work)
  with pytest.raises(KeyboardInterrupt):
    run.stage('train b', [], stopped)
  rows = json.loads((tmp_path / paper_run.RUN_JSON).read_text())['stages']
  assert [(r['stage'], r['status']) for r in rows] == [('train a', 'ran'), ('train b', 'stopped')]
  run = paper_run._Run(tmp_path, {})  # the rerun: only b
  run.stage('train b', [], work)
  rows = {r['stage']: r for r in json.loads((tmp_path / paper_run.RUN_JSON).read_text())['stages']}
  assert rows['train a']['status'] == 'ran' and rows['train a']['not_this_run']
  assert rows['train b']['status'] == 'ran' and rows['train b']['earlier_attempts_s'] >= 0.2
  md = (tmp_path / paper_run.RUN_MD).read_text()
  assert '| train a | ran (an earlier run; not run this time) |' in md, md
  assert re.search(r'\| train b \| ran \(resumed; 0\.\d s in stopped attempts before\) \| '
                   r'0\.\d s \|', md), md


@pytest.mark.parametrize('key', ['generator_version', 'demo_generator_version', 'vivid_gain'])
def test_data_of_another_generator_is_refused(tmp_path, key):
  """After an upgrade whose generator draws other images from the same flags, the data stage
  remade W/ava silently under the finished prepare and train stages (the old data's models)."""
  from aesthetics_jax.data import demo as demo_data
  from aesthetics_jax.data import paper_size
  flags_used = {'smoke': True, 'vgg16_views': 1, 'seed': 0}
  (tmp_path / paper_run.RUN_JSON).write_text(json.dumps({'flags': flags_used, 'stages': []}))
  (tmp_path / 'ava').mkdir()
  params = paper_size._params(10, 4, 0, (300, 400))  # pylint: disable=protected-access
  manifest = tmp_path / 'ava' / demo_data.MANIFEST
  manifest.write_text(json.dumps({'params': params}))
  paper_run.check_workdir(tmp_path, flags_used)  # nothing made from it yet
  (tmp_path / 'tfds').mkdir()
  paper_run.check_workdir(tmp_path, flags_used)  # the same generator
  manifest.write_text(json.dumps({'params': {**params, key: params[key] - 1}}))
  with pytest.raises(paper_run.PaperRunUsageError, match=(
      f'^--workdir={tmp_path} holds data drawn with {key} {params[key] - 1} .*, and this '
      f'aesthetics-jax draws with {params[key]}, other images from the same flags')):
    paper_run.check_workdir(tmp_path, flags_used)
