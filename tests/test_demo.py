"""launch.demo orchestration: data → prepare → (trained) models → evaluate → combined report.

Training itself is covered by the training tests and costs a minute of compilation here, so
the two model workdirs get initialised checkpoints at the final step: the demo must treat
them as finished (the resume path), evaluate both and write one report; a second run must
skip everything.
"""
import json

import pytest

import checkpoint_fixture


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
  from launch import demo
  w = tmp_path_factory.mktemp('demo')
  for arch in demo.ARCHS:
    c = checkpoint_fixture.smoke_config(arch, w / 'tfds', w / 'ava', 32)
    checkpoint_fixture.write_init_checkpoint(w / arch, c)
  # Two processes (the full demo's default); the rerun below takes the in-process path.
  path = demo.run_demo(w, smoke=True, parallel=True)
  return w, path


def test_demo_writes_combined_report(demo_run):
  w, path = demo_run
  assert path == w / 'report.html'
  html = path.read_text()
  assert 'id="demo-banner"' in html
  assert 'Model: <bdi>mobilenet_v2</bdi>' in html and 'Model: <bdi>vgg16</bdi>' in html
  assert 'Data statistics' in html and 'not available)' not in html.split('Model:')[0]
  assert html.count('Trained on: not recorded') == 2 and 'Evaluated on cpu (' in html
  for arch in ('mobilenet_v2', 'vgg16'):
    m = json.loads((w / arch / 'eval' / 'metrics.json').read_text())
    # the smoke config evaluates at most data.max_test_images = 8 of the 12 test images
    assert m['step'] == 2 and m['num_test_images'] == 8
    # what it was computed on (checkpoints written by the fixture: no training record)
    assert m['environment']['versions']['jaxlib'] and m['training_environments'] == []
    assert (w / arch / 'eval' / 'report.html').is_file()
    # each model's explorer (VGG16: one target), linked from the combined report
    assert (w / arch / 'eval' / 'explorer' / 'index.html').is_file()
    assert f'href="{arch}/eval/explorer/index.html"' in html
  assert 'lcc_mean' in json.loads((w / 'vgg16' / 'eval' / 'metrics.json').read_text())
  assert (w / 'ava' / 'defect_masks').is_dir()
  for arch in ('mobilenet_v2', 'vgg16'):  # each process's progress went to its own log
    assert 'explorer' in (w / arch / 'demo.log').read_text()


def test_demo_rerun_skips_completed_work(demo_run):
  from launch import demo
  w, _ = demo_run
  stamps = {a: (w / a / 'eval' / 'metrics.json').stat().st_mtime_ns for a in demo.ARCHS}
  assert demo.run_demo(w, smoke=True) == w / 'report.html'
  assert stamps == {a: (w / a / 'eval' / 'metrics.json').stat().st_mtime_ns
                    for a in demo.ARCHS}


@pytest.mark.parametrize('job', ['demo', 'control'])
def test_second_run_on_one_workdir_is_refused(tmp_path, job):
  """Two demos (or controls) on one workdir wrote the same data and reports at once."""
  import os
  from aesthetics_jax.train import checkpoints, workdir
  first = workdir.WorkdirLock(tmp_path, holder=f'aesthetics-{job}')
  first.acquire()  # as a live run holds it
  try:
    with pytest.raises(checkpoints.WorkdirBusyError, match=(
        f'is in use by another aesthetics-{job} \\(pid {os.getpid()} ')):
      if job == 'demo':
        from launch import demo
        demo.run_demo(tmp_path, smoke=True)
      else:
        from aesthetics_jax.cli import control_study
        from aesthetics_jax.configs import control as control_config
        control_study.run_control(tmp_path, control_config.get_config('smoke'), [0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock']  # nothing ran
  finally:
    first.release()


def test_a_failed_training_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
  """A demo model that diverges (a TrainingError: a RuntimeError, not a ValueError) ended the
  demo in a traceback; it is one line naming the model, exit 1, as other failed runs."""
  from absl import flags
  from aesthetics_jax.cli import demo as demo_cli
  from aesthetics_jax.train.errors import TrainingError

  def diverged(*args, **kwargs):
    raise TrainingError('vgg16: non-finite loss at step 7; last good checkpoint: 5')
  monkeypatch.setattr(demo_cli, 'run_demo', diverged)
  flags.FLAGS(['demo', f'--workdir={tmp_path / "w"}'])
  try:
    with pytest.raises(SystemExit) as e:
      demo_cli.main(['demo'])
  finally:
    flags.FLAGS.unparse_flags()
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'non-finite loss at step 7' in err, err


def test_a_metrics_file_the_report_cannot_read_is_one_line(demo_run, tmp_path):
  """A metrics.json that parses but is not what evaluate writes (edited, another version's)
  ended the demo's report stage in a traceback; the error names the file and the fix."""
  import shutil
  from launch import demo
  from aesthetics_jax.cli import stages
  w = tmp_path / 'w'
  shutil.copytree(demo_run[0], w, ignore=shutil.ignore_patterns('.lock'))
  mpath = w / 'vgg16' / 'eval' / 'metrics.json'
  m = json.loads(mpath.read_text())
  m['localization'] = ['odd']
  mpath.write_text(json.dumps(m))
  cfg = demo.demo_config(demo.ARCHS[0], True)
  cfg.data.data_dir = str(w / 'tfds')
  with pytest.raises(ValueError, match=f'{mpath}: not as aesthetics-evaluate writes it .*'
                                       f'delete {w / "vgg16" / "eval"} and rerun'):
    stages.write_combined_report(w, demo.ARCHS, cfg, demo=True, title='t')


def test_a_rerun_with_other_data_flags_is_refused(tmp_path):
  """A rerun with --seed=1 (or --smoke on a full demo's workdir) overwrote the demo data the
  finished models were made from, then failed in prepare (exit 1) naming --ava_dir and
  --data_dir, which the demo does not take. Now one line, exit 2, the data untouched."""
  from launch import demo
  from aesthetics_jax.cli import common
  from aesthetics_jax.data import demo as demo_data
  demo_data.generate(tmp_path / 'ava', 3, 2, 0)
  (tmp_path / 'tfds').mkdir()  # prepared from it
  manifest = (tmp_path / 'ava' / demo_data.MANIFEST).read_text()
  with pytest.raises(demo_data.DemoDataError, match=(
      f'^--workdir={tmp_path} holds demo data of 3 train / 2 test images, seed 0 '
      rf'\({tmp_path / "ava" / demo_data.MANIFEST}\), and this run asks for 3 train / 2 test '
      r'images, seed 1 \(--smoke, --num_train, --num_test, --seed\): ')) as e:
    demo.run_demo(tmp_path, smoke=True, num_train=3, num_test=2, seed=1)
  assert common.exit_code(e.value) == 2
  assert (tmp_path / 'ava' / demo_data.MANIFEST).read_text() == manifest


def test_a_paper_run_workdir_names_no_demo_flags_as_the_fix(tmp_path):
  """`aesthetics-demo --smoke` on an `aesthetics-paper-run --smoke` workdir (both 24 / 12
  images, seed 0) was refused with 'this run asks for 24 train / 12 test images, seed 0 ...;
  rerun with the same flags': the same counts, and no demo flags draw paper-size data."""
  from launch import demo
  from aesthetics_jax.data import demo as demo_data
  (tmp_path / 'ava').mkdir()
  (tmp_path / 'tfds').mkdir()  # prepared from it
  (tmp_path / 'ava' / demo_data.MANIFEST).write_text(json.dumps({'params': {
      'size': 'paper', 'num_train': 24, 'num_test': 12, 'seed': 0}}))
  with pytest.raises(demo_data.DemoDataError) as e:
    demo.run_demo(tmp_path, smoke=True)
  assert 'rerun with the same flags' not in str(e.value)
  assert str(e.value).endswith('which the demo does not draw: its prepared dataset and models '
                               'were made from that data; pass a new --workdir (or continue '
                               'that run with aesthetics-paper-run)'), str(e.value)


def test_a_rerun_with_another_generator_version_is_refused(tmp_path):
  """The rerun check compared the sizes and the seed only: a workdir's data drawn by another
  demo generator version (a new aesthetics-jax draws other images) was remade silently under
  the models trained on the old. A record without a version (no generator wrote one) is of
  no known version: refused too. The data untouched, exit 2."""
  from launch import demo
  from aesthetics_jax.cli import common
  from aesthetics_jax.data import demo as demo_data
  demo_data.generate(tmp_path / 'ava', 3, 2, 0)
  (tmp_path / 'tfds').mkdir()  # prepared from it
  path = tmp_path / 'ava' / demo_data.MANIFEST
  record = json.loads(path.read_text())
  now = demo_data.GENERATOR_VERSION
  for version, said in ((now - 1, f'version {now - 1}'),
                        (None, 'an unknown version (its record names none)')):
    record['params'].pop('generator_version')
    if version is not None:
      record['params']['generator_version'] = version
    path.write_text(json.dumps(record))
    manifest = path.read_text()
    with pytest.raises(demo_data.DemoDataError) as e:
      demo.run_demo(tmp_path, smoke=True, num_train=3, num_test=2, seed=0)
    assert str(e.value) == (
        f'--workdir={tmp_path} holds demo data drawn by demo generator {said} ({path}), and '
        f'this aesthetics-jax draws with version {now}, other images from the same flags: its '
        'prepared dataset and models were made from that data; pass a new --workdir, or rerun '
        'with the aesthetics-jax that made it')
    assert common.exit_code(e.value) == 2 and path.read_text() == manifest


def test_a_rerun_on_data_drawn_with_another_vivid_gain_is_refused(tmp_path):
  """`aesthetics-make-demo-data --vivid_gain=0.1` into a demo workdir's W/ava: the demo's
  rerun would remake that data (with the demo's gain) under the models made from it. One
  line naming the flag, exit 2, the data untouched."""
  from launch import demo
  from aesthetics_jax.cli import common
  from aesthetics_jax.data import demo as demo_data
  demo_data.generate(tmp_path / 'ava', 3, 2, 0, vivid_gain=0.1)
  (tmp_path / 'tfds').mkdir()  # prepared from it
  path = tmp_path / 'ava' / demo_data.MANIFEST
  manifest = path.read_text()
  with pytest.raises(demo_data.DemoDataError) as e:
    demo.run_demo(tmp_path, smoke=True, num_train=3, num_test=2, seed=0)
  assert str(e.value) == (
      f'--workdir={tmp_path} holds demo data drawn with vivid_gain 0.1 ({path}; '
      'aesthetics-make-demo-data --vivid_gain), and the demo draws with '
      f'{demo_data.VIVID_GAIN}: its prepared dataset and models were made from that data; '
      'pass a new --workdir')
  assert common.exit_code(e.value) == 2 and path.read_text() == manifest


def test_a_model_process_killed_is_one_line(tmp_path, monkeypatch):
  """A demo model's process killed (the out-of-memory killer, kill -9) ended the demo in a
  BrokenProcessPool traceback; now a TrainingError line (exit 1) that says to rerun."""
  import concurrent.futures
  from concurrent.futures.process import BrokenProcessPool
  from aesthetics_jax.cli import demo
  from aesthetics_jax.train.errors import TrainingError

  class KilledPool:
    def __init__(self, *args, **kwargs):
      pass

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

    def submit(self, *args):
      f = concurrent.futures.Future()
      f.set_exception(BrokenProcessPool('A process in the process pool was terminated '
                                        'abruptly while the future was running or pending.'))
      return f

  monkeypatch.setattr(concurrent.futures, 'ProcessPoolExecutor', KilledPool)
  with pytest.raises(TrainingError, match=(
      r"^a model's process ended abruptly \(killed: out of memory, or a signal\); "
      'what was written is kept .*: rerun the same command to continue')):
    demo._run_archs_in_parallel(tmp_path, True)


def test_a_full_disk_in_the_data_stage_names_no_other_commands_flag(tmp_path, monkeypatch):
  """The demo's data on a full disk said '(choose a writable --out_dir with ~50 MB free)', a
  flag of aesthetics-make-demo-data; the disk's error reaches the command's one line."""
  import errno
  from aesthetics_jax.cli import demo
  from aesthetics_jax.data import demo as demo_data

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'AVA.txt'))

  monkeypatch.setattr(demo_data, '_generate', full)
  with pytest.raises(OSError, match='No space left on device'):
    demo.make_data(tmp_path, 3, 2, 0)


def test_sigterm_reaches_the_model_processes_which_checkpoint_and_exit_143(tmp_path):
  """SIGTERM to aesthetics-demo (`docker stop` signals its process alone) killed it at once
  (exit -15, no line) and left its two model processes training and evaluating unseen (still
  there 20 s later, holding their workdirs). Now the demo passes it on: each model's process
  checkpoints its step in flight, one line names both checkpoints, exit 143, and no process
  of the demo is left."""
  import sigterm_fixture
  w = tmp_path / 'w'
  r = sigterm_fixture.run('demo', 'demo models', f'--workdir={w}', '--smoke', '--parallel')
  assert r.returncode == 143 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-3000:])
  assert r.stderr.strip().splitlines()[-1] == (
      f'demo: terminated (SIGTERM): training checkpointed in {w}/mobilenet_v2/checkpoints/1 '
      f'and {w}/vgg16/checkpoints/1; rerun the same command to continue'), r.stderr[-3000:]
  assert not r.left and not (w / 'report.html').exists()
