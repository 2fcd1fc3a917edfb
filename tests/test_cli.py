"""The installed commands: entry points, the launch/ shims, running from any directory, LICENSE.

The wheel install itself (`pip install .` into a fresh venv, then `aesthetics-train --helpfull`
from /tmp) takes minutes and is checked by hand; here the same code runs with the package on
PYTHONPATH from a directory that is not the checkout.
"""
import ast
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from aesthetics_jax.cli import common, inputs

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']


def _defines(path: Path, name: str) -> bool:
  return any(isinstance(n, ast.FunctionDef) and n.name == name
             for n in ast.parse(path.read_text()).body)


@pytest.mark.parametrize('command', sorted(SCRIPTS))
def test_every_command_has_its_module_and_launch_shim(command):
  module, func = SCRIPTS[command].split(':')
  assert command == 'aesthetics-' + module.rsplit('.', 1)[1].replace('_', '-')
  path = ROOT / (module.replace('.', '/') + '.py')
  assert func == 'run_cli' and _defines(path, 'run_cli'), path
  shim = (ROOT / 'launch' / path.name).read_text()
  assert f'from {module} import run_cli' in shim


def _run_elsewhere(tmp_path, *args):
  """`python -m aesthetics_jax.cli.train ...` from tmp_path: like the installed command."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'aesthetics_jax.cli.train', *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)


def test_train_help_and_config_names_work_outside_the_checkout(tmp_path):
  r = _run_elsewhere(tmp_path, '--helpfull')  # absl exits 1 after printing help; we exit 0
  assert '--config: Config: a packaged name' in r.stdout and 'Traceback' not in r.stderr
  assert r.returncode == 0
  r = _run_elsewhere(tmp_path, '--help')
  assert r.returncode == 0 and 'aesthetics-train' in r.stdout, r.stderr
  # The config resolves (by name, and as the checkout's configs/X.py): what stops the run is
  # the workdir check that comes after it, before anything is written.
  (tmp_path / 'file').write_text('x')
  for config in ('demo:mobilenet_v2,smoke', 'configs/demo.py:vgg16,smoke'):
    r = _run_elsewhere(tmp_path, f'--config={config}', f'--workdir={tmp_path / "file" / "w"}')
    assert r.returncode == 2 and r.stderr.startswith('train: --workdir='), r.stderr
  # Arguments after ',' instead of ':': one line with the working form, from anywhere too.
  r = _run_elsewhere(tmp_path, '--config=configs/demo.py,vgg16,smoke', f'--workdir={tmp_path}')
  assert r.returncode == 2 and r.stderr == (
      "train: configs/demo.py,vgg16,smoke: no such config file; config arguments follow ':', "
      "not ',': use --config=configs/demo.py:vgg16,smoke\n"), r.stderr


def test_output_checks(tmp_path):
  (tmp_path / 'file').write_text('x')
  assert common.folder_problem(tmp_path / 'new' / 'dir', 'd') is None
  assert common.folder_problem(tmp_path, 'd') is None
  assert 'is a file' in common.folder_problem(tmp_path / 'file', 'd')
  assert 'is a file' in common.folder_problem(tmp_path / 'file' / 'sub', 'd')
  assert common.file_problem(tmp_path / 'out.json', 'o') is None
  assert 'is a folder' in common.file_problem(tmp_path, 'o')
  # The folder named, not 'its folder is a folder you cannot write to'.
  assert common.file_problem(tmp_path / 'file' / 'x.json', 'o') == (
      f'--o={tmp_path}/file/x.json: {tmp_path}/file is a file, not a folder; pass a path you '
      'can write to')
  assert common.folder_problem('gs://bucket/run', 'd') is None   # checked by the write itself
  assert not list(tmp_path.glob('.aesthetics-write-check-*'))     # the probe cleans up
  if sys.platform == 'linux':  # unwritable even for root
    assert 'not writable' in common.folder_problem('/proc/aesthetics-test', 'd')


def test_inputs_expand_in_order(tmp_path):
  (tmp_path / 'd' / 'sub').mkdir(parents=True)
  for name in ('d/b.jpg', 'd/a.png', 'd/sub/c.jpeg', 'd/x.txt', 'd/.hidden.jpg', 'e.jpg'):
    (tmp_path / name).write_bytes(b'')
  d = tmp_path / 'd'
  got = inputs.expand([str(tmp_path / 'e.jpg'), str(d), f'{d}/*.jpg', f'{d}/*.gif',
                       str(tmp_path / 'missing.jpg')])
  assert got[:5] == [str(tmp_path / 'e.jpg'), f'{d}/a.png', f'{d}/b.jpg', f'{d}/sub/c.jpeg',
                     f'{d}/b.jpg']
  assert got[5] == {'path': f'{d}/*.gif', 'error': f'{d}/*.gif: no image files match this '
                    'pattern'}
  assert got[6] == str(tmp_path / 'missing.jpg')   # its error comes from reading it
  # Other names of JPEG (and ICO) were skipped in folders and by patterns, though they scored
  # when named.
  (tmp_path / 'f').mkdir()
  for name in ('p.jfif', 'q.JPE', 'r.ico'):
    (tmp_path / 'f' / name).write_bytes(b'')
  f = tmp_path / 'f'
  assert inputs.expand([str(f), f'{f}/*.jfif']) == [f'{f}/p.jfif', f'{f}/q.JPE', f'{f}/r.ico',
                                                    f'{f}/p.jfif']


def test_inputs_patterns_do_not_follow_links_up_and_skip_output_folders(tmp_path):
  """`**` does not enter linked folders: two links back up made glob's walk exponential (a
  hang before any image was scored) and one repeated every image 41 times. An image reached
  twice by one pattern is listed once; the run's own output folders are not inputs below a
  folder or pattern, but are when named themselves."""
  d = tmp_path / 'shoot'
  (d / 'sub').mkdir(parents=True)
  (d / 'ov').mkdir()
  for name in ('sub/a.jpg', 'b.png', 'ov/0000_b_cam.png'):
    (d / name).write_bytes(b'')
  (d / 'sub' / 'up').symlink_to('..')
  (d / 'sub' / 'up2').symlink_to('..')
  (tmp_path / 'link').symlink_to(d)
  a, b = str(d / 'sub' / 'a.jpg'), str(d / 'b.png')
  skip = [d / 'ov']
  assert inputs.expand([f'{d}/**/*.jpg'], skip) == [a]
  assert inputs.expand([f'{d}/**'], skip) == [b, a]
  assert inputs.expand([f'{d}/*/*.jpg', f'{d}/sub/*/sub/*.jpg'], skip) == [
      a, f'{d}/sub/up/sub/a.jpg']  # per argument, once by real path
  assert inputs.expand([str(d)], skip) == [b, a]
  assert inputs.expand([str(d)]) == [b, str(d / 'ov' / '0000_b_cam.png'), a]
  # Named themselves, the output folders are inputs, less the files named as their outputs.
  (d / 'ov' / 'mine.png').write_bytes(b'')
  assert inputs.expand([str(d / 'ov'), f'{d}/ov/*.png'], skip) == [str(d / 'ov' / 'mine.png')] * 2
  (d / 'ov' / 'mine.png').unlink()
  # A linked folder named by the pattern is followed; relative patterns stay relative.
  assert inputs.expand([f'{tmp_path}/link/**/*.png'], skip) == [f'{tmp_path}/link/b.png']
  cwd = os.getcwd()
  try:
    os.chdir(d)
    assert inputs.expand(['**/*.jpg', '*.png']) == ['sub/a.jpg', 'b.png']
  finally:
    os.chdir(cwd)


def test_inputs_empty_argument_is_an_error_not_the_current_folder(tmp_path, monkeypatch):
  """`aesthetics-predict --workdir=W "$photo"` with $photo unset (or a list's blank line via
  xargs) passed '', which Path read as '.': every image below the current folder was scored."""
  (tmp_path / 'a.jpg').write_bytes(b'')
  monkeypatch.chdir(tmp_path)
  got = inputs.expand(['', 'a.jpg'])
  assert got[1:] == ['a.jpg']
  assert got[0]['path'] == '' and 'empty argument' in got[0]['error']
  assert '\n' not in got[0]['error']


def test_inputs_dash_says_standard_input_is_not_read(tmp_path, monkeypatch):
  """`find ... | aesthetics-predict --workdir=W -` got '-: no such file; check the path'. A
  file named '-' is still an input."""
  monkeypatch.chdir(tmp_path)
  (got,) = inputs.expand(['-'])
  assert got['path'] == '-' and 'standard input is not read' in got['error']
  assert "xargs -d '\\n'" in got['error'] and '\n' not in got['error']
  (tmp_path / '-').write_bytes(b'')
  assert inputs.expand(['-']) == ['-']


def test_inputs_folders_list_an_image_reached_twice_once(tmp_path):
  """A folder listed a linked file beside its target (or two links to one file) twice, so the
  image was scored twice; patterns listed it once (by real path), and now folders do too."""
  d = tmp_path / 'd'
  (d / 'sub').mkdir(parents=True)
  (d / 'a.jpg').write_bytes(b'')
  (d / 'sub' / 'b.png').write_bytes(b'')
  (d / 'link.jpg').symlink_to('a.jpg')
  (d / 'sub' / 'again.jpg').symlink_to('../a.jpg')
  (d / 'sub' / 'b2.png').symlink_to(d / 'sub' / 'b.png')
  assert inputs.expand([str(d)]) == [str(d / 'a.jpg'), str(d / 'sub' / 'b.png')]
  assert inputs.expand([f'{d}/**/*']) == [str(d / 'a.jpg'), str(d / 'sub' / 'b.png')]


def test_inputs_leave_out_earlier_outputs_of_an_output_folder_that_is_an_input(tmp_path):
  """`--overlay_dir=photos photos/`: a rerun scored the overlays and crops the first run wrote
  into the input folder (and named its own after them: 0000_0000_a_cam_cam.png). Files named
  as predict's outputs, right in this run's output folder, are not inputs; other images there,
  and such names elsewhere, are."""
  d = tmp_path / 'photos'
  (d / 'keep').mkdir(parents=True)
  earlier = ('0000_a_cam.png', '0001_b_crop.jpg', '0001_b_crop.png', '12345_c d_cam.png')
  for name in ('a.jpg', 'b.png', 'keep/0000_a_cam.png', *earlier):
    (d / name).write_bytes(b'')
  a, b, keep = str(d / 'a.jpg'), str(d / 'b.png'), str(d / 'keep' / '0000_a_cam.png')
  assert inputs.expand([str(d), f'{d}/*.png', f'{d}/**/*_cam.png'], [d]) == [
      a, b, keep, b, keep]
  assert inputs.expand([f'{d}/*'], [d]) == [a, b, keep]
  assert len(inputs.expand([str(d)])) == 7  # not an output folder: every image
  assert inputs.expand([f'{d}/*.png'], [d / 'keep']) == [*(str(d / n) for n in sorted(
      ('b.png', *earlier)) if n.endswith('.png'))]
  for name in ('a.jpg', 'b.png'):
    (d / name).unlink()
  assert inputs.expand([f'{d}/*.png'], [d]) == [{'path': f'{d}/*.png', 'error': (
      f'{d}/*.png: no image files match this pattern besides 3 files an earlier run wrote '
      "there (this run's --overlay_dir / --crop_dir: not inputs)")}]


def test_license_is_the_apache_text_pyproject_names():
  text = (ROOT / 'LICENSE').read_text()
  assert 'Apache License' in text and 'Version 2.0, January 2004' in text
  assert 'END OF TERMS AND CONDITIONS' in text
  assert 'Apache-2.0' in (ROOT / 'pyproject.toml').read_text()


def test_modules_the_tests_import_define_no_flag_twice():
  """pytest-xdist runs several test files in one process, so every module a test imports must
  load beside every other one: absl refuses a flag defined twice (two commands' `--workdir`).
  Each command's importable work lives in a flag-free module (`control_study`,
  `paper_recipe`, `stages`); this imports, in one process, every module the tests import
  from cli/ and launch/."""
  imported = set()
  for path in sorted((ROOT / 'tests').glob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module in ('launch', 'aesthetics_jax.cli'):
        imported |= {f'{node.module}.{a.name}' for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
          ('launch.', 'aesthetics_jax.cli.')):
        imported.add(node.module)
  assert 'aesthetics_jax.cli.control_study' in imported and 'launch.demo' in imported
  code = ''.join(f'import {m}\n' for m in sorted(imported))
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert r.returncode == 0, r.stderr[-2000:]


def test_the_slow_first_order_names_test_files():
  """conftest.py's `_SLOW_FIRST` (the files handed to the xdist workers first): a renamed file
  would silently drop back to alphabetical order."""
  import conftest  # pylint: disable=import-outside-toplevel
  names = {p.stem for p in (ROOT / 'tests').glob('test_*.py')}
  assert set(conftest._SLOW_FIRST) <= names, set(conftest._SLOW_FIRST) - names
  assert 'no-loadscope-reorder' in tomllib.loads((ROOT / 'pyproject.toml').read_text())[
      'tool']['pytest']['ini_options']['addopts']


@pytest.mark.parametrize('kw, expect', [
    (dict(width_mult=100.0), '--width_mult=100.0: pass a value in (0, 2]'),
    (dict(width_mult=float('nan')), '--width_mult=nan: pass a value in (0, 2]'),
    (dict(fc_dim=10 ** 6), '--fc_dim=1000000: pass a value from 1 to 8192'),
    (dict(num_images=100000), '--calibration_images=100000: pass a value from 2 to 64'),
    (dict(image_size=8), '--image_size=8: pass a value from 32 to 448'),
])
def test_stand_in_weight_sizes_are_bounded(kw, expect):
  """Huge values used to run out of memory calibrating (or fill the disk) after minutes."""
  from aesthetics_jax.cli import fake_weights
  from aesthetics_jax.models import fake_imagenet
  args = dict(width_mult=1.0, fc_dim=4096, num_images=16, image_size=224) | kw
  with pytest.raises(fake_imagenet.FakeWeightsError) as e:
    fake_weights.check_args(**args)
  assert str(e.value) == expect


def test_make_fake_weights_bad_size_flag_exits_2(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'launch.make_fake_weights', f'--out={tmp_path / "w"}',
                      '--calibration_images=100000'], capture_output=True, text=True)
  assert r.returncode == 2 and not (tmp_path / 'w').exists()
  assert r.stderr.strip().splitlines() == [
      'make_fake_weights: --calibration_images=100000: pass a value from 2 to 64']


# A bad flag or config value answers before JAX loads (it took 3-8 s of imports first: predict
# without --workdir 3.3 s, a bad --config value of train 8.3 s; prepare_data loads none at all).
_BEFORE_JAX = [
    ('train', ['--config=demo:vgg16,smoke', '--config.input.image_size=0', '--workdir={tmp}/w'],
     'train: config.input.image_size=0: must be an integer from 32 to 10000'),
    ('train', ['--config=demo:vgg16,smoke', '--config.input.weighting=class',
               '--config.input.balanced=True',
               '--workdir={tmp}/w'], "train: config.input.weighting='class' with"),
    ('train', ['--config=demo:vgg16,smoke', '--num_processes=2', '--workdir={tmp}/w'],
     'train: --num_processes / --process_id need --coordinator_address'),
    ('predict', [], 'predict: flag --workdir=None'),
    ('predict', ['--workdir={tmp}/nowhere', 'x.jpg'], 'predict: --workdir={tmp}/nowhere: no such'),
    ('train', ['--config=demo:vgg16,smoke', '--config.model.arch=resnet', '--workdir={tmp}/w'],
     "train: config.model.arch='resnet': must be one of 'mobilenet_v2', 'vgg16'"),
    ('evaluate', ['--workdir={tmp}/nowhere'], 'evaluate: --workdir={tmp}/nowhere'),
    ('evaluate', ['--workdir={tmp}', '--config.eval.batch_size=0'],
     'evaluate: config.eval.batch_size=0: must be an integer >= 1'),
    ('evaluate', ['--workdir={tmp}', '--config.data.subset=bogus'],
     "evaluate: config.data.subset='bogus': must be one of 'style', 'all'"),
    ('evaluate', ['--workdir={tmp}', '--config.eval.cam_method=gradcan'],
     "evaluate: unknown CAM method 'gradcan'; use one of gradcam,"),
    ('predict', ['--workdir={tmp}', '--aspect=bogus', 'x.jpg'],
     "predict: crop aspect 'bogus' is not valid; use 'W:H'"),
    ('benchmark', ['--what=nope'], 'benchmark: '),
    ('benchmark', ['--what=model', '--model_archs=resnet'],
     'benchmark: --model_archs=resnet: use some of mobilenet_v2,vgg16'),
    ('demo', ['--bogus=1'], "demo: Unknown command line flag 'bogus'"),
    ('control', ['--bogus=1'], "control: Unknown command line flag 'bogus'"),
    ('paper_run', ['--bogus=1'], "paper_run: Unknown command line flag 'bogus'"),
    ('make_demo_data', ['--bogus=1'], "make_demo_data: Unknown command line flag 'bogus'"),
    ('make_fake_weights', ['--out={tmp}/w', '--archs=resnet'],
     'make_fake_weights: --archs=resnet: use some of mobilenet_v2,vgg16'),
    ('make_fake_weights', ['--out={tmp}/w', '--width_mult=0'],
     'make_fake_weights: --width_mult=0.0: pass a value in (0, 2]'),
    ('prepare_data', ['--ava_dir={tmp}/nowhere', '--data_dir={tmp}/d'],
     'prepare_data: {tmp}/nowhere/AVA.txt: not found'),
    # A URL was read as a local path: 'gs:/b/ava/AVA.txt: not found'.
    ('prepare_data', ['--ava_dir=gs://b/ava', '--data_dir={tmp}/d'],
     'prepare_data: --ava_dir=gs://b/ava: pass a local folder'),
    ('convert_weights', ['--arch=vgg16', '--source={tmp}/none.pth', '--out={tmp}/o'],
     'convert_weights: --source={tmp}/none.pth: no such file'),
]


def test_usage_errors_answer_before_jax_loads(tmp_path):
  """Each command runs with a `jax` package on PYTHONPATH that fails on import: the usage
  error must still be its one line, exit 2."""
  (tmp_path / 'poison' / 'jax').mkdir(parents=True)
  (tmp_path / 'poison' / 'jax' / '__init__.py').write_text(
      "raise ImportError('JAX was imported before the usage error')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / 'poison'), str(ROOT)]))
  assert {c for c, _, _ in _BEFORE_JAX} == {
      SCRIPTS[s].split(':')[0].rsplit('.', 1)[1] for s in SCRIPTS}
  # The first command re-executes itself with the malloc tunable (`common.run`), as every
  # command does; the others start with it set, so each runs once (the process before the
  # re-exec imports what the one after it does): 8.4 -> 5.3 s.
  from aesthetics_jax import cpu_backend
  tuned = dict(env, GLIBC_TUNABLES=cpu_backend.tunables_with_malloc(''))
  for i, (command, args, expect) in enumerate(_BEFORE_JAX):
    args = [a.format(tmp=tmp_path) for a in args]
    r = subprocess.run([sys.executable, '-m', f'aesthetics_jax.cli.{command}', *args],
                       cwd=tmp_path, env=tuned if i else env, capture_output=True, text=True,
                       timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (command, args, r.stderr)
    assert lines[0].startswith(expect.format(tmp=tmp_path)), (command, lines)
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'o').exists()


def test_every_command_quiets_orbax_echoes_before_its_main(tmp_path):
  """A full disk's failed save was one line after ~380 lines of orbax's ERROR logs and
  asyncio's tracebacks in aesthetics-demo, which (unlike train, paper-run and control) never
  quieted them: `common.run` now does it for every command, before its main, without JAX."""
  (tmp_path / 'poison' / 'jax').mkdir(parents=True)
  (tmp_path / 'poison' / 'jax' / '__init__.py').write_text("raise ImportError('JAX loaded')\n")
  code = ('import sys; from absl import logging; from aesthetics_jax.cli import common; '
          'common.run(lambda argv: print(sorted(f.__name__ for f in '
          'logging.get_absl_logger().filters), "jax" in sys.modules), None, ["command"])')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / 'poison'), str(ROOT)]))
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr
  assert "'_drop_orbax_errors'" in r.stdout and r.stdout.strip().endswith('False'), r.stdout


@pytest.mark.parametrize('flag', ['workdir', 'out'])
def test_an_empty_output_flag_is_refused_not_the_current_folder(flag, capsys):
  """`--workdir=` meant the current folder: the demo wrote its whole workdir there."""
  with pytest.raises(SystemExit) as e:
    common.check_outputs('demo', folders={flag: ''})
  assert e.value.code == 2
  assert capsys.readouterr().err == f'demo: --{flag} is empty; pass a folder to write to\n'
  with pytest.raises(SystemExit):
    common.check_outputs('benchmark', files={'json': ''})
  common.check_outputs('demo', folders={flag: None}, files={'json': None})  # not given: fine


def test_a_url_is_refused_where_a_command_writes_local_paths_only(tmp_path):
  """`--workdir=gs://bucket/run` became the local folder ./gs:/bucket/run: aesthetics-paper-run,
  -demo and -control made data and trained there, then failed at the first checkpoint ('free
  space or fix the storage'); make-demo-data, make-fake-weights and convert-weights wrote
  there and exited 0. Now one line, exit 2, before any work."""
  from aesthetics_jax import cpu_backend
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             GLIBC_TUNABLES=cpu_backend.tunables_with_malloc('') or '')
  for command, flag in (('paper_run', 'workdir'), ('demo', 'workdir'), ('control', 'workdir'),
                        ('make_demo_data', 'out_dir'), ('make_fake_weights', 'out'),
                        ('convert_weights', 'out')):
    args = [f'--{flag}=gs://bucket/x']
    if command == 'convert_weights':
      (tmp_path / 'w.npz').write_bytes(b'')
      args += ['--arch=vgg16', f'--source={tmp_path / "w.npz"}']
    r = subprocess.run([sys.executable, '-m', f'aesthetics_jax.cli.{command}', *args],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (command, r.stderr[-2000:])
    assert lines[0].startswith(f'{command}: --{flag}=gs://bucket/x: this command writes local '
                               'paths only'), lines
  assert not (tmp_path / 'gs:').exists()


@pytest.mark.parametrize('flag', ['workdir', 'data_dir'])
def test_a_folder_not_named_in_utf8_is_refused_where_checkpoints_go(flag, tmp_path, capsys,
                                                                    monkeypatch):
  """orbax's and array_record's C++ take UTF-8 names only: a --workdir named in another
  encoding (b'run\\xff') ran until the first checkpoint save or restore, then failed with a
  traceback and "Unable to cast Python instance of type <class 'str'> to C++ type '?'"."""
  bad = os.fsdecode(os.fsencode(tmp_path) + b'/run\xff')
  os.mkdir(bad)
  with pytest.raises(SystemExit) as e:
    common.check_outputs('evaluate', folders={flag: bad})
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      f'evaluate: --{flag}={tmp_path}/run\\xff is not a UTF-8 name: checkpoints and dataset '
      'files cannot be opened under it; rename the folder (or pass a link to it with a UTF-8 '
      'name)\n')
  monkeypatch.chdir(bad)  # the current folder counts
  assert 'run\\xff is not a UTF-8 name' in common.utf8_problem('.', flag)
  common.check_outputs('predict', folders={'overlay_dir': '.'})  # PNGs: any name will do
  monkeypatch.chdir(tmp_path)
  assert common.utf8_problem('r\u00e9sum\u00e9 \U0001f600', flag) is None


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
@pytest.mark.parametrize('command', ['prepare_data', 'evaluate'])
def test_stdout_full_or_closed_is_one_line_or_quiet(command, tmp_path):
  """`--help > /dev/full` (stdout on a full disk) ended in a traceback: now one line naming
  the cause, exit 1; `--help` into a pipe whose reader already left (`| head`): quiet, 141."""
  cmd = [sys.executable, '-m', f'aesthetics_jax.cli.{command}', '--help']
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  with open('/dev/full', 'w') as full:
    r = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=full, stderr=subprocess.PIPE,
                       text=True, timeout=120)
  assert r.returncode == 1, r.stderr
  assert r.stderr.strip() == (
      f'{command}: could not write to stdout (No space left on device); files written before '
      'are kept: rerun with stdout on a disk with free space'), r.stderr
  read, write = os.pipe()
  os.close(read)  # the reader is gone before the first write
  try:
    r = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=write, stderr=subprocess.PIPE,
                       text=True, timeout=120)
  finally:
    os.close(write)
  assert (r.returncode, r.stderr) == (common.EXIT_SIGPIPE, '')


def test_every_launch_script_parses_flags_with_common():
  """absl's own parser exits 1 after printing --help (a failed run, README says 0) and prints
  a bad flag value as two FATAL lines: launch scripts that call app.run themselves did."""
  for script in sorted((ROOT / 'launch').glob('*.py')):
    text = script.read_text()
    for call in re.findall(r'app\.run\([^\n]*', text):
      assert 'flags_parser=common.parse_flags' in call, (script.name, call)


@pytest.mark.parametrize('script', ['fault_drill', 'check_cam_parity', 'check_torch_parity'])
def test_checkout_scripts_help_exits_0(script):
  r = subprocess.run([sys.executable, '-m', f'launch.{script}', '--help'], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and 'python -m launch.' in r.stdout, r.stderr


@pytest.mark.parametrize('error, oom', [
    (RuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 25652339520 bytes.'), True),
    (MemoryError(), True),
    # XLA:CPU's, for a temporary buffer it could not allocate (VGG16 at 224 px, 1024 images)
    (RuntimeError('INTERNAL: Error dispatching computation: Out of memory allocating '
                  '9093251384 bytes.'), True),
    # orbax's full disk: CheckpointError's job, not a batch to lower
    (RuntimeError('RESOURCE_EXHAUSTED: Error writing "w/0": No space left on device'), False),
    (RuntimeError('INTERNAL: something else'), False),
])
def test_out_of_memory_is_told_from_other_runtime_errors(error, oom):
  assert common.out_of_memory(error) is oom


def test_evaluate_out_of_memory_names_the_batch_size(tmp_path):
  """evaluate printed XLA:CPU's 'INTERNAL: ... Out of memory allocating N bytes.' bare, with no
  flag to lower (its own handler took every RuntimeError)."""
  code = ('import runpy, sys\n'
          'from aesthetics_jax.evaluation import run\n'
          'def evaluate(*a, **k):\n'
          '  raise RuntimeError("INTERNAL: Error dispatching computation: Out of memory '
          'allocating 9093251384 bytes.")\n'
          'run.evaluate = evaluate\n'
          'sys.argv[0] = "evaluate"\n'
          'runpy.run_module("launch.evaluate", run_name="__main__", alter_sys=True)\n')
  r = subprocess.run([sys.executable, '-c', code, f'--workdir={tmp_path}'], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and r.stderr == (
      'evaluate: out of memory (INTERNAL: Error dispatching computation: Out of memory '
      'allocating 9093251384 bytes.); lower --config.eval.batch_size; what was written is '
      'kept\n'), r.stderr


# Ctrl-C landing in a callback whose errors Python only prints (JAX's gc callback, a __del__).
_CTRL_C_IN_A_CALLBACK = '''
import os, signal, time
from aesthetics_jax.cli import common
class Dropped:
  def __del__(self):
    os.kill(os.getpid(), signal.SIGINT)
def main(argv):
  Dropped()
  time.sleep(30)
  print('ran to the end')
common.run(main, 'doc')
'''


def test_ctrl_c_in_a_callback_still_stops_the_command():
  """A paper run given Ctrl-C in JAX's gc callback printed 'Exception ignored ...
  KeyboardInterrupt', ran to the end and exited 0, deaf to Ctrl-C from then on. Then it stopped,
  but only once the main thread's blocking call (here a 30 s sleep) returned."""
  t0 = time.monotonic()
  r = subprocess.run([sys.executable, '-c', _CTRL_C_IN_A_CALLBACK], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 130 and 'ran to the end' not in r.stdout, (r.returncode, r.stderr)
  assert time.monotonic() - t0 < 20, 'the interrupt waited for the sleep to end'
  assert r.stderr.strip().splitlines() == [
      '_c: interrupted (Ctrl-C); what was written is kept (checkpoints, finished stages, '
      'atomic outputs): rerun the same command to continue'], r.stderr


# Ctrl-C while another thread is inside XLA (as the input-prefetch thread may be).
_CTRL_C_WHILE_A_THREAD_COMPILES = '''
import atexit, os, signal, threading, time
# Runs after JAX's exit handler (registered later, so run earlier): the slow exit of a loaded
# machine, where the compiling thread had time to start the backends again after it.
atexit.register(time.sleep, 0.5)
from aesthetics_jax.cli import common
def compile_forever():
  import jax, jax.numpy as jnp
  jax.config.update('jax_enable_compilation_cache', False)  # compiles, as a first run does
  n = 1
  while True:
    n += 1
    jax.jit(lambda x: jnp.sin(x) @ x.T + jnp.cos(x).sum())(jnp.ones((n, 7)))
def main(argv):
  import jax.numpy as jnp
  jnp.ones(3).block_until_ready()  # the backend, started by the main thread as in a run
  threading.Thread(target=compile_forever, daemon=True).start()
  time.sleep(1.5)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(5)
common.run(main, 'doc')
'''


def test_ctrl_c_while_a_thread_runs_xla_exits_130():
  """aesthetics-control given Ctrl-C printed its interrupted line, then the interpreter's
  teardown met a thread inside XLA: 'LLVM ERROR: ...' or 'FATAL: exception not rethrown',
  SIGABRT (exit 134; 1 in 4 Ctrl-Cs of the smoke control, every time here). Then, in CI, the
  interrupted line was not the last: JAX's exit handler cleared the backends, the thread
  started them again, and their probe logged a line after it."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # LLVM at -O0: rarely hit
  r = subprocess.run([sys.executable, '-c', _CTRL_C_WHILE_A_THREAD_COMPILES],
                     capture_output=True, text=True, timeout=60, env=env)
  assert r.returncode == 130 and 'Fatal Python error' not in r.stderr, (r.returncode,
                                                                          r.stderr[-2000:])
  assert r.stderr.strip().splitlines()[-1].startswith('_c: interrupted (Ctrl-C); what was')


# A stage's write refused by a full disk (tensorboardX's flush: a bare OSError, no file name).
_DISK_FULL = '''
import errno, importlib, sys
command = sys.argv.pop(1)
sys.argv[0] = command
def full(*args, **kwargs):
  raise OSError(errno.ENOSPC, 'No space left on device')
# The work each command calls (one command's flags per process).
module, name = {'paper_run': ('paper_recipe', 'run_paper'), 'demo': ('demo', 'run_demo'),
                'control': ('control_study', 'run_control')}[command]
setattr(importlib.import_module(f'aesthetics_jax.cli.{module}'), name, full)
importlib.import_module(f'aesthetics_jax.cli.{command}').run_cli()
'''


@pytest.mark.parametrize('command', ['paper_run', 'demo', 'control'])
def test_a_full_disk_names_the_workdir_and_the_fix(tmp_path, command):
  """A disk that filled under a paper run's training logs said only 'paper_run: [Errno 28] No
  space left on device' (aesthetics-train named the folder and the fix)."""
  r = subprocess.run([sys.executable, '-c', _DISK_FULL, command, f'--workdir={tmp_path}',
                      '--smoke'], capture_output=True, text=True, timeout=120)
  assert r.returncode == 1, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      f'{command}: {tmp_path}: No space left on device; free space or fix the storage, then '
      'rerun the same command to continue'], r.stderr[-2000:]


_SIGTERM_IN_A_CALLBACK = '''
import os, signal, sys, time
from aesthetics_jax.cli import common
class Terminated(KeyboardInterrupt):  # as train's: its raiser notices a lost request itself
  pass
def stop(signum, frame):
  raise Terminated()
class Dropped:
  def __del__(self):
    os.kill(os.getpid(), signal.SIGTERM)
def main(argv):
  signal.signal(signal.SIGTERM, stop)
  Dropped()
  time.sleep(0.5)
  print('noticed the request itself')
common.run(main, 'doc')
'''


def test_a_lost_sigterm_is_not_turned_into_ctrl_c():
  """train's SIGTERM exception (a KeyboardInterrupt subclass) lost in such a callback came
  back as Ctrl-C: 'interrupted (Ctrl-C)', exit 130, where train exits 143 naming its
  checkpoint. Only Ctrl-C's own exception is raised again; nothing is printed for the other."""
  r = subprocess.run([sys.executable, '-c', _SIGTERM_IN_A_CALLBACK], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0 and 'noticed the request itself' in r.stdout, (r.returncode, r.stderr)
  assert 'Ctrl-C' not in r.stderr and 'Exception ignored' not in r.stderr, r.stderr


# SIGTERM during an import (a module that signals itself while it is imported).
_SIGTERM_IN_AN_IMPORT = '''
import pathlib, sys, tempfile, time
from aesthetics_jax.cli import common
from aesthetics_jax.train import stop as stop_lib
folder = tempfile.mkdtemp()
sys.path.insert(0, folder)
pathlib.Path(folder, 'signalled.py').write_text(
    'import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\n'
    'time.sleep(0.3)\\nDONE = 1\\n')
common.stop_on_sigterm()
try:
  import signalled
  time.sleep(5)
except stop_lib.Terminated:
  print('imported' if getattr(sys.modules.get('signalled'), 'DONE', 0) else 'import cut short')
'''


def test_sigterm_in_an_import_stops_once_the_import_is_done():
  """SIGTERM raised inside an import could reach an extension module's initialisation, which
  made it an ImportError: a demo model's process signalled as it started (numpy's 'Encountered
  an error while initializing the extension') ended the demo in a traceback, exit 1. The
  request is delivered again once the import is over."""
  r = subprocess.run([sys.executable, '-c', _SIGTERM_IN_AN_IMPORT], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0 and r.stdout == 'imported\n', (r.returncode, r.stdout, r.stderr)


_CTRL_C_IN_AN_IMPORT = (
    _SIGTERM_IN_AN_IMPORT.replace('signal.SIGTERM', 'signal.SIGINT')
    .replace('common.stop_on_sigterm()', 'signal.signal(signal.SIGINT, common.interrupt_once)')
    .replace('except stop_lib.Terminated:', 'except KeyboardInterrupt:')
    .replace('import pathlib, sys', 'import pathlib, signal, sys'))


def test_ctrl_c_in_an_import_stops_once_the_import_is_done():
  """Ctrl-C raised inside an import had SIGTERM's problem (above): an extension module's
  initialisation could make it an ImportError traceback, exit 1. It is delivered again once
  the import is over."""
  assert 'SIGTERM' not in _CTRL_C_IN_AN_IMPORT
  r = subprocess.run([sys.executable, '-c', _CTRL_C_IN_AN_IMPORT], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0 and r.stdout == 'imported\n', (r.returncode, r.stdout, r.stderr)


def test_ctrl_c_in_an_import_that_hangs_still_stops():
  """Ctrl-C waiting for the end of an import (above) must not wait for ever: an import that
  hangs (a network file system) could no longer be stopped. After IMPORT_WAIT_S it is raised."""
  script = _CTRL_C_IN_AN_IMPORT.replace('time.sleep(0.3)', 'time.sleep(30)')
  assert script != _CTRL_C_IN_AN_IMPORT
  t0 = time.monotonic()
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and r.stdout == 'import cut short\n', (r.returncode, r.stdout,
                                                                  r.stderr)
  assert time.monotonic() - t0 < 20


@pytest.mark.parametrize('script, names', [
    ('predict', ('workdir', 'step', 'output', 'top_k', 'overlay_dir', 'crop_dir', 'crop_format',
                 'aspect', 'cam_method', 'cam_layers', 'batch_size')),
    ('train', ('config', 'workdir', 'coordinator_address', 'num_processes', 'process_id')),
])
def test_help_lists_the_commands_own_flags(script, names):
  """`aesthetics-predict --help` (and `python -m launch.predict --help`) printed the docstring
  and 'Try --helpfull' but no flag: absl lists the flags of the module sys.argv[0] names,
  pip's stub or the launch shim, not the module defining them. Each flag is listed now."""
  r = subprocess.run([sys.executable, '-m', f'launch.{script}', '--help'], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  listed = set(re.findall(r'^  --(\w+):', r.stdout, re.M))
  assert set(names) <= listed, (set(names) - listed, r.stdout[-1500:])
  if script == 'predict':  # --config (the whole config as its default) is not listed
    assert '--config.eval.KEY=VALUE' in r.stdout
    # --aspect's forms as PREDICTING.md gives them (the help knew W:H only)
    assert 'W/H, WxH or a ratio' in ' '.join(r.stdout.split())
    # 'png: lossless PNG always', of a 16-bit scan's 8-bit crop
    assert 'lossless at 8 bits per channel' in ' '.join(r.stdout.split())


@pytest.fixture(scope='module')
def train_from_home(tmp_path_factory):
  """(HOME, result) of ONE `aesthetics-train --config=~/mine.py:... --config.data.data_dir=~/tfds`
  with HOME a fresh folder holding mine.py and an empty tfds/: both '~'s are the home folder,
  so it stops at the data check, naming HOME/tfds (each of the two tests below started train
  on its own, ~5 s each)."""
  home = tmp_path_factory.mktemp('home')
  (home / 'tfds').mkdir()
  (home / 'mine.py').write_text(
      'from aesthetics_jax.configs import demo\n'
      'def get_config(arg=None):\n'
      '  return demo.get_config(arg)\n')
  r = subprocess.run([sys.executable, '-m', 'launch.train',
                      '--config=~/mine.py:mobilenet_v2,smoke', f'--workdir={home / "w"}',
                      '--config.data.data_dir=~/tfds'], cwd=ROOT, capture_output=True,
                     text=True, timeout=120, env=dict(os.environ, HOME=str(home),
                                                      JAX_PLATFORMS='cpu'))
  return home, r


def test_a_config_override_of_home_is_the_home_folder(train_from_home):
  """`--config.data.data_dir=~/tfds` reached train as written (the shell expands '~' only at
  a word's start): 'no prepared dataset' of '~/tfds'. The override's '~' is the home folder."""
  home, r = train_from_home
  assert r.returncode == 2 and r.stderr.startswith(
      f'train: {home}/tfds: no prepared dataset'), r.stderr[-2000:]


def test_a_config_file_under_home_is_found(train_from_home):
  """`--config=~/mine.py` reached the command as written (the shell expands '~' only at a
  word's start): 'config file '~/mine.py' not found'. Found, its config reaches the data
  check."""
  home, r = train_from_home
  assert r.returncode == 2 and r.stderr.startswith(
      f'train: {home}/tfds: no prepared dataset'), r.stderr[-2000:]
