"""Configs: defaults live only in configs/default.py, every key is read, arguments parse."""
import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from aesthetics_jax import configs
from aesthetics_jax.configs import default, demo, mobilenet_v2_emd, vgg16_binary
from aesthetics_jax.train import checkpoints
from aesthetics_jax.train import restore

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = [p for p in (ROOT / 'aesthetics_jax').rglob('*.py') if 'configs' not in p.parts]
LAUNCH = list((ROOT / 'launch').glob('*.py'))
CONFIG_NAMES = {'config', 'cfg', 'ec', 'model_config'}


def _root_name(node):
  """`self.config.eval` → 'config'; `config.data` → 'config'; else the leftmost name."""
  while isinstance(node, ast.Attribute):
    if isinstance(node.value, ast.Name) and node.value.id == 'self':
      return node.attr
    node = node.value
  return node.id if isinstance(node, ast.Name) else None


def _config_gets(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, code) where a config object is read with `.get(...)` (a fallback default)."""
  return [(node.lineno, ast.unparse(node)) for node in ast.walk(ast.parse(path.read_text()))
          if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == 'get' and _root_name(node.func.value) in CONFIG_NAMES]


def _leaf_keys(c, prefix=''):
  for k, v in c.items():
    if hasattr(v, 'items'):
      yield from _leaf_keys(v, f'{prefix}{k}.')
    else:
      yield prefix + k


def test_library_reads_config_keys_without_fallback_defaults():
  bad = [f'{p.relative_to(ROOT)}:{line}: {code}' for p in LIBRARY + LAUNCH
         for line, code in _config_gets(p)]
  assert not bad, ('read config keys directly (defaults belong in configs/default.py):\n'
                   + '\n'.join(bad))


def test_checker_finds_a_fallback_default(tmp_path):
  f = tmp_path / 'x.py'
  f.write_text('def f(config, self):\n  a = config.eval.get("batch_size", 0)\n'
               '  b = self.config.input.get("normalize")\n  c = {}.get("x", 1)\n')
  assert sorted(line for line, _ in _config_gets(f)) == [2, 3]


def test_every_default_key_is_read_somewhere():
  """A key nothing reads is a promise the code does not keep (e.g. a removed feature)."""
  used = set()
  for p in LIBRARY + LAUNCH:
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, ast.Attribute):
        used.add(node.attr)
      elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        used.add(node.value.rsplit('.', 1)[-1])
  unused = [k for k in _leaf_keys(default.get_config()) if k.rsplit('.', 1)[-1] not in used]
  assert not unused, f'config keys read by nothing: {unused}'


def test_variants_only_set_existing_keys():
  keys = set(_leaf_keys(default.get_config()))
  for c in (demo.get_config('vgg16'), demo.get_config('mobilenet_v2,smoke'),
            mobilenet_v2_emd.get_config(), vgg16_binary.get_config('class,smoke')):
    assert set(_leaf_keys(c)) == keys


def test_config_arguments_parse():
  assert demo.get_config('vgg16').model.arch == 'vgg16'
  assert demo.get_config().model.arch == 'mobilenet_v2'
  assert not demo.get_config('mobilenet_v2').model.freeze_encoder
  assert vgg16_binary.get_config('class').input.weighting == 'none'  # the sampler's 1/N_c
  assert vgg16_binary.get_config().input.weighting == 'score'
  assert vgg16_binary.get_config().optim.name == 'sgd'
  m = mobilenet_v2_emd.get_config('smoke')
  assert m.num_train_steps == 2 and m.optim.lr == 3e-6 and m.model.freeze_encoder
  assert configs.parse_arg(' a, b ', 'x', ('a', 'b')) == {'a', 'b'}


@pytest.mark.parametrize('make,arg,match', [
    (demo.get_config, 'resnet', r"configs/demo.py: bad config argument 'resnet' \(unknown"),
    (demo.get_config, 'vgg16,mobilenet_v2', 'only one of'),
    (vgg16_binary.get_config, 'score,class', 'only one of'),
    (mobilenet_v2_emd.get_config, 'smok', 'allowed, comma-separated: smoke'),
])
def test_bad_config_argument_is_one_line(make, arg, match):
  with pytest.raises(ValueError, match=match) as e:
    make(arg)
  assert '\n' not in str(e.value)


def test_load_config_fills_new_keys_and_drops_removed_ones(tmp_path):
  saved = demo.get_config('vgg16').to_dict()
  del saved['eval']['faithfulness_steps']      # a key added after this run was trained
  saved['smoke'] = False                        # a key the library no longer has
  saved['num_epochs'] = 3                       # int where the default is a float
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  c = restore.load_config(tmp_path)
  assert c.model.arch == 'vgg16' and c.eval.faithfulness_steps == 16
  assert 'smoke' not in c and c.num_epochs == 3


def test_load_config_garbage_is_one_line(tmp_path):
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(checkpoints.WorkdirError, match='config.json: not valid JSON') as e:
    restore.load_config(tmp_path)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('script,args,expect', [
    ('train', ['--config=configs/demo.py:vgg16', '--config.data.datadir=x'],
     'train: unknown config key --config.data.datadir; did you mean --config.data.data_dir'),
    ('evaluate', ['--config.model.arch=vgg16'],
     'evaluate: --config.model.arch cannot change here (the checkpoint fixes it); this command '
     'takes --config.eval.KEY=VALUE and --config.data.KEY=VALUE'),
    # A config file where the checkpoint's (or the control's) config is used: ml_collections
    # said 'flag --config=...: Overriding config is not allowed.'
    ('predict', ['--config=mobilenet_v2_emd', 'a.jpg'],
     "predict: --config=mobilenet_v2_emd: this command takes no config file (its config is the "
     "workdir's config.json); change its keys with --config.eval.KEY=VALUE"),
    ('control', ['--config', 'control'],
     'control: --config: this command takes no config file (its config is configs/control.py); '
     'change its keys with --config.KEY=VALUE'),
    ('predict', ['--config.data.data_dir=x', 'a.jpg'],
     'predict: --config.data.data_dir cannot change here'),
    # Commands whose --config is a dict of overrides: ml_collections reads them while the flag
    # is defined, so the check must come first (it once met these with a traceback).
    ('predict', ['--config.eval.box_treshold=0.3', 'a.jpg'],
     'predict: unknown config key --config.eval.box_treshold; did you mean '
     '--config.eval.box_threshold'),
    ('evaluate', ['--config.eval.cam_mthods=x'],
     'evaluate: unknown config key --config.eval.cam_mthods; did you mean '
     '--config.eval.cam_methods'),
    # Names listed with commas: ml_collections' line suggested one quoted name, refused next.
    ('predict', ['--config.eval.cam_layers=features.13,features.14', 'a.jpg'],
     "predict: --config.eval.cam_layers=features.13,features.14: a list of names is a Python "
     "tuple here: --config.eval.cam_layers=\"('features.13', 'features.14',)\""),
    # A value of the wrong type: absl's 'FATAL Flags parsing error' and a second line, exit 1.
    ('predict', ['--step=abc', 'a.jpg'],
     "predict: flag --step=abc: invalid literal for int() with base 10: 'abc'"),
    ('train', ['--config=demo:vgg16,smoke', '--config.batch_size=abc'],
     "train: flag --config.batch_size=abc: invalid literal for int() with base 10: 'abc'"),
])
def test_misspelled_or_forbidden_override_is_one_line(script, args, expect, tmp_path):
  r = subprocess.run([sys.executable, '-m', f'launch.{script}', f'--workdir={tmp_path}', *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.strip().startswith(expect), r.stderr
  assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('args,expect', [
    (['--config=configs/nope.py'], "train: config file 'configs/nope.py' not found"),
    (['--config=configs/demo.py:mobilenetv2'],
     "train: configs/demo.py: bad config argument 'mobilenetv2'"),
    (['--config=dmo:vgg16'], "train: config file 'dmo' not found (did you mean demo?)"),
    # README's 'append ,smoke' read literally: a hint with the working form.
    (['--config=configs/mobilenet_v2_emd.py,smoke'],
     "train: configs/mobilenet_v2_emd.py,smoke: no such config file; config arguments follow "
     "':', not ',': use --config=configs/mobilenet_v2_emd.py:smoke"),
    (['--config', 'vgg16_binary,class,smoke'],
     "train: vgg16_binary,class,smoke: no such config file; config arguments follow ':', not "
     "',': use --config=vgg16_binary:class,smoke"),
    (['--config=demo:vgg16', '--config.data.datadir=x'],
     'train: unknown config key --config.data.datadir; did you mean --config.data.data_dir'),
    (['--config=vgg16_binary:smoke', '--config.input.weighting=class'],
     "train: config.input.weighting='class' with config.input.balanced=True counts 1/N_c twice"),
    (['--config=demo:vgg16,smoke', '--workdir={tmp}/file/w'],
     'train: --workdir={tmp}/file/w cannot be created: {tmp}/file is a file'),
    # A missing input is a bad flag (it was exit 1, as a failed run).
    (['--config=demo:vgg16,smoke', '--config.data.data_dir={tmp}/nodata'],
     'train: {tmp}/nodata: no prepared dataset ava/style; run aesthetics-prepare-data'),
    # A value that cannot work (config_checks): was an XLA traceback mid-run.
    (['--config=demo:vgg16,smoke', '--config.input.image_size=0'],
     'train: config.input.image_size=0: must be an integer from 32 to 10000'),
    # An unknown enumeration value: data.subset was "no prepared dataset ... ava/bogus".
    (['--config=demo:vgg16,smoke', '--config.data.subset=bogus'],
     "train: config.data.subset='bogus': must be one of 'style', 'all'"),
    # An override before --config: ml_collections' 'Found --config.data.data_dir=... in argv
    # before a value for --config was specified'; the override is applied now.
    (['--config.data.data_dir={tmp}/nodata', '--config', 'demo:vgg16,smoke'],
     'train: {tmp}/nodata: no prepared dataset ava/style; run aesthetics-prepare-data'),
    # An override without --config: absl's "Unknown command line flag 'config.seed'. Did you
    # mean: config ?"
    (['--config.seed=1'],
     'train: --config.seed=1: no --config to apply it to; pass one, e.g. '
     '--config=mobilenet_v2_emd (packaged: '),
    # Multi-process flags: a lone --num_processes trained as one process, a bad port
    # segfaulted grpc, an unreachable one hung.
    (['--config=demo:vgg16,smoke', '--num_processes=2'],
     'train: --num_processes / --process_id need --coordinator_address'),
    (['--config=demo:vgg16,smoke', '--coordinator_address=localhost:99999',
      '--num_processes=2', '--process_id=0'],
     'train: --coordinator_address=localhost:99999: pass host:port with a port in 1-65535'),
])
def test_train_config_and_workdir_errors_are_one_line(args, expect, tmp_path):
  """Exit 2 before JAX loads; the workdir is not created."""
  (tmp_path / 'file').write_text('x')
  r = subprocess.run([sys.executable, '-m', 'launch.train', f'--workdir={tmp_path / "w"}',
                      *(a.format(tmp=tmp_path) for a in args)],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.startswith(expect.format(tmp=tmp_path)), r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('key, value, expect', [
    ('model.arch', 'resnet', "config.model.arch='resnet': must be one of 'mobilenet_v2', 'vgg16'"),
    ('model.dtype', 'float16', "config.model.dtype='float16': must be one of"),
    ('model.depthwise', 'fast', "config.model.depthwise='fast': must be one of 'auto', "),
    ('data.subset', 'bogus', "config.data.subset='bogus': must be one of 'style', 'all'"),
    ('input.normalize', 'imgnet', "config.input.normalize='imgnet': must be one of"),
    ('optim.name', 'adamw', "config.optim.name='adamw': must be one of 'adam', 'sgd'"),
    ('optim.schedule', 'linear', "config.optim.schedule='linear': must be one of"),
    ('cache.dtype', 'float64', "config.cache.dtype='float64': must be one of 'auto', "),
    ('loss.emd_r', 0.0, 'config.loss.emd_r=0.0: must be a number > 0 and <= 1e6'),
    # float32 cannot tell more from the r -> inf limit; 1e300 was a NaN at the first step.
    ('loss.emd_r', 1e300, 'config.loss.emd_r=1e+300: must be a number > 0 and <= 1e6'),
    # A side over the decoder's pixel cap: resize_size=100000 was the OOM killer, exit 137.
    ('input.resize_size', 100000, 'config.input.resize_size=100000: must be an integer from 32 '
     'to 10000'),
    ('num_train_steps', -1, 'config.num_train_steps=-1: must be an integer from 0 to'),
    # int32 step counters: 2**31 steps wrapped the TrainState's step; warmup_steps=10**11 was
    # an OverflowError traceback at the first step.
    ('num_train_steps', 2 ** 31, 'config.num_train_steps=2147483648: must be an integer from 0 '
     'to 2147483647'),
    ('optim.warmup_steps', 10 ** 11, 'config.optim.warmup_steps=100000000000: must be an '
     'integer from 0 to 2147483647'),
    ('seed', -1, 'config.seed=-1: must be an integer from 0 to'),
    # JAX's keys take an int64: an OverflowError traceback at the first step, after the data.
    ('seed', 2 ** 63 - 2, 'config.seed=9223372036854775806: must be an integer from 0 to'),
    ('optim.lr', float('nan'), 'config.optim.lr=nan: must be a number > 0 and <= 3.4e38'),
    # Past float32: a NaN loss at the first step blamed on optim.lr; no clipping, silently.
    ('input.weight_factor', 1e300, 'config.input.weight_factor=1e+300: must be a number > 0 '
     'and <= 3.4e38 (float32)'),
    ('optim.grad_clip', 1e300, 'config.optim.grad_clip=1e+300: must be a number >= 0 and <= '
     '3.4e38 (float32)'),
    ('eval.box_threshold', 1.5, 'config.eval.box_threshold=1.5: must be a number in (0, 1)'),
    # The explorer's sizes: a traceback or 'scale must be > 0' after the evaluation's passes.
    ('eval.explorer_thumb_size', 0, 'config.eval.explorer_thumb_size=0: must be an integer >= 1'),
    ('eval.explorer_map_size', -1, 'config.eval.explorer_map_size=-1: must be an integer >= 1'),
    ('input.weight_band', (6.5, 4.5), 'config.input.weight_band=(6.5, 4.5): must be (low, high)'),
    # The data's counts: another was a shape-mismatch traceback at the first step.
    ('model.num_buckets', 11, "config.model.num_buckets=11: must be 10 (AVA's votes are a"),
    ('model.num_tags', 100, "config.model.num_tags=100: must be 66 (AVA's tags.txt lists"),
    ('best_metric', 'bogus', "config.best_metric='bogus': use one of ('binary_accuracy',"),
    ('best_metric', 'emd', "config.best_metric='emd' (lower is better;"),
    # What the evaluation after training uses: these passed training and failed only in
    # aesthetics-evaluate (cam_layers there as exit 1, a failure, without naming the key).
    ('eval.cam_method', 'gradcam+', "config.eval.cam_method='gradcam+': unknown CAM method"),
    ('eval.cam_methods', ('gradcam', 'bogus'),
     "config.eval.cam_methods=('gradcam', 'bogus'): unknown CAM method 'bogus'"),
    ('eval.cam_layers', ('features.99',),
     "config.eval.cam_layers=('features.99',): CAM layer 'features.99' is not a module"),
    # Parameters past the machine's RAM: an out-of-memory line that said to lower the batch.
    ('model.width_mult', 10000.0, "config.model.width_mult=10000.0: the model's 2.12e+14 "
     'parameters take at least 7.92e+05 GiB (float32) and this machine has'),
])
def test_config_checks_name_the_key_and_what_it_must_be(key, value, expect):
  """Values that used to fail deep in a run (a traceback) or to be taken silently (a best
  checkpoint chosen on a metric no evaluation reports: every step scored -inf)."""
  from aesthetics_jax.cli import config_args
  from aesthetics_jax.train import config_checks, errors
  c = config_args.load(config_args.resolve_path('mobilenet_v2_emd:smoke'))
  assert config_checks.problems(c) == []
  config_checks.check(c)
  c.update_from_flattened_dict({key: value})
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(c)
  assert str(e.value).startswith(expect) and '\n' not in str(e.value)
  assert isinstance(e.value, errors.TrainingError)  # what train_and_evaluate raises


def test_batch_sizes_the_devices_cannot_split_are_named():
  """They failed at the first step, or `eval.batch_size` at the first evaluation, after
  the data and the feature cache were prepared."""
  from aesthetics_jax.train import config_checks
  c = demo.get_config('vgg16,smoke')
  c.batch_size, c.eval.batch_size = 8, 8
  assert config_checks.device_problems(c, 8) == []
  c.batch_size, c.eval.batch_size = 12, 6
  assert config_checks.device_problems(c, 8) == [
      'config.batch_size=12: must be a multiple of the 8 devices training runs on; set it to '
      'e.g. 8',
      'config.eval.batch_size=6: must be a multiple of the 8 devices training runs on; set it '
      'to e.g. 8']
  # The line names the other setting: '(and 1 more)' read as a second value to try.
  raise_first = config_checks._raise_first  # pylint: disable=protected-access
  with pytest.raises(config_checks.ConfigError) as e:
    raise_first(config_checks.device_problems(c, 8))
  assert str(e.value).endswith('set it to e.g. 8 (also config.eval.batch_size)')


def test_batches_larger_than_the_machine_are_named(monkeypatch):
  """--config.eval.batch_size=10**8 hung the feature cache's build (aesthetics-evaluate: a
  MemoryError traceback), batch_size=10**8 was a RESOURCE_EXHAUSTED traceback after it."""
  from aesthetics_jax import cpu_backend
  from aesthetics_jax.cli import config_args
  from aesthetics_jax.train import config_checks
  monkeypatch.setattr(cpu_backend, 'physical_memory', lambda: 2 ** 30)  # a 1 GiB machine
  c = config_args.load(config_args.resolve_path('mobilenet_v2_emd:smoke'))  # 32 px, cached
  assert config_checks.problems(c) == []
  c.batch_size, c.eval.batch_size = 2 ** 22, 2 ** 20
  # The largest value that fits is named: 2**30 // (32 * 32 * 3), 2**30 // (4 * 86).
  eval_line = ('config.eval.batch_size=1048576: a batch of 1048576 images of 32 px takes at '
               'least 3.0 GiB and this machine has 1.0 GiB of RAM; lower it to at most 349525 '
               '(the paper configs use 32)')
  assert config_checks.problems(c) == [
      'config.batch_size=4194304: a batch of 4194304 cached rows takes at least 1.3 GiB and '
      'this machine has 1.0 GiB of RAM; lower it to at most 3121342 (the paper configs use 32)',
      eval_line]
  assert config_checks.problems(c, 'eval.') == [eval_line]  # what aesthetics-evaluate asks
  c.cache.enabled, c.batch_size = False, 2 ** 20  # online: the crops themselves
  assert config_checks.problems(c)[0].startswith(
      'config.batch_size=1048576: a batch of 1048576 images of 32 px takes at least 3.0 GiB')
  # Batches decoded ahead: an input pipeline faster than the model fills them all.
  c.batch_size, c.eval.batch_size, c.input.prefetch = 8, 8, 2 ** 16  # 1.5 GiB of 32-px images
  assert config_checks.problems(c) == [
      'config.input.prefetch=65536: 65536 batches of config.batch_size=8 images of 32 px '
      'decoded ahead take at least 1.5 GiB and this machine has 1.0 GiB of RAM; lower it to at '
      'most 43690 (the default is 2)']


def test_train_refuses_a_batch_its_devices_cannot_split_before_any_work(tmp_path):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  r = subprocess.run([sys.executable, '-m', 'launch.train', f'--workdir={tmp_path / "w"}',
                      '--config=demo:vgg16,smoke', '--config.batch_size=3',
                      f'--config.data.data_dir={tmp_path / "nodata"}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      'train: config.batch_size=3: must be a multiple of the 2 devices training runs on; '
      'set it to e.g. 2'], r.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('body, expect', [
    ("def get_config():\n  return {'batch_size': 4}\n",
     "get_config() returned a dict, not an ml_collections.ConfigDict; start from "
     "aesthetics_jax.configs.default.get_config()"),
    ('import ml_collections\ndef get_config():\n  c = ml_collections.ConfigDict()\n'
     '  c.batch_size = 4\n  return c\n',
     "lacks 71 key(s) of the default config (e.g. best_metric); start from "),
])
def test_a_user_config_that_is_not_a_full_config_is_one_line(tmp_path, body, expect):
  """Both were an AttributeError traceback (exit 1) once training read a missing key."""
  (tmp_path / 'mine.py').write_text(body)
  r = subprocess.run([sys.executable, '-m', 'launch.train', f'--workdir={tmp_path / "w"}',
                      f'--config={tmp_path / "mine.py"}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1, r.stderr
  assert lines[0].startswith(f"train: config file '{tmp_path / 'mine.py'}'") and expect in lines[0]
  assert not (tmp_path / 'w').exists()


_BASE = ('from aesthetics_jax.configs import vgg16_binary\ndef get_config():\n'
         '  c = vgg16_binary.get_config()\n')


@pytest.mark.parametrize('body, expect', [
    # Read by nothing: the run trained with optim.lr's default, silently.
    # README's example: it named the whole group (difflib finds no 'lr' in 'learning_rate').
    (_BASE + '  c.optim.learning_rate = 0.01\n  return c\n',
     "sets 1 key(s) that nothing reads (optim.learning_rate); did you mean optim.lr?"),
    (_BASE + '  c.optim.zzz = 0.01\n  return c\n',
     "sets 1 key(s) that nothing reads (optim.zzz); the keys of optim are: grad_clip, lr, "
     "momentum"),
    (_BASE + '  c.epochs = 3\n  return c\n', 'did you mean num_epochs?'),
    (_BASE + '  c.optim.warmup_step = 5\n  return c\n', 'did you mean optim.warmup_steps?'),
    (_BASE + '  c.optimiser = dict(lr=1.0)\n  return c\n',
     'there is no section optimiser; did you mean optim?'),
    # The user's own ValueError: 'boom' alone named no file.
    ("def get_config():\n  raise ValueError('boom')\n", ': get_config failed (boom)'),
])
def test_a_user_config_with_unread_keys_or_its_own_error_is_one_line(tmp_path, body, expect):
  from aesthetics_jax.cli import config_args
  (tmp_path / 'mine.py').write_text(body)
  with pytest.raises(ValueError) as e:
    config_args.load(str(tmp_path / 'mine.py'))
  assert str(e.value).startswith(f"config file '{tmp_path / 'mine.py'}'"), e.value
  assert expect in str(e.value) and '\n' not in str(e.value), e.value


def test_the_checked_enumerations_are_the_modules_own():
  """config_checks keeps JAX-free copies of the enumerations; each equals its module's."""
  from aesthetics_jax import models
  from aesthetics_jax.data import ava, decoder, preprocess, sampling
  from aesthetics_jax.models import depthwise, vgg
  from aesthetics_jax.train import cache_store, config_checks, optim
  enums = config_checks.ENUMERATIONS
  assert set(enums['data.subset']) == set(ava.SUBSETS)
  assert set(enums['input.normalize']) == set(preprocess.NORMALIZE_MODES)
  assert set(enums['input.weighting']) == set(sampling.WEIGHT_SCHEMES)
  assert set(enums['model.arch']) == set(default.ARCHS)
  assert set(enums['model.depthwise']) == set(depthwise.IMPLEMENTATIONS)
  assert set(enums['model.conv3x3']) == set(vgg.CONV3X3_IMPLEMENTATIONS)
  assert set(enums['model.dtype']) == set(models._DTYPES)  # pylint: disable=protected-access
  assert set(enums['cache.dtype']) == set(cache_store.DTYPES)
  assert (config_checks.NUM_BUCKETS, config_checks.NUM_TAGS) == (ava.NUM_BUCKETS, ava.NUM_TAGS)
  assert config_checks.MAX_IMAGE_SIZE ** 2 == decoder.MAX_PIXELS
  # The optimiser's names have no constant: every listed value builds, and nothing else does.
  c = default.get_config()
  for name in enums['optim.name']:
    c.optim.name = name
    optim.make_optimizer(c, 10)
  for schedule in enums['optim.schedule']:
    c.optim.schedule = schedule
    optim.make_schedule(c, 10)
  c.optim.name = 'bogus'
  with pytest.raises(Exception, match='optim.name'):
    optim.make_optimizer(c, 10)
  c.optim.schedule = 'bogus'
  with pytest.raises(Exception, match='optim.schedule'):
    optim.make_schedule(c, 10)


def test_packaged_config_names_resolve_like_paths(tmp_path):
  from aesthetics_jax.cli import config_args
  packaged = configs.packaged()
  assert {'demo', 'mobilenet_v2_emd', 'vgg16_binary'} <= set(packaged)
  assert config_args.resolve_path('demo:vgg16,smoke') == packaged['demo'] + ':vgg16,smoke'
  assert config_args.resolve_path('mobilenet_v2_emd') == packaged['mobilenet_v2_emd']
  # The checkout's configs/demo.py exists relative to the repository root only...
  assert config_args.resolve_path('configs/demo.py:vgg16') in (
      'configs/demo.py:vgg16', packaged['demo'] + ':vgg16')
  # ...and a user's own file is taken as it is.
  own = tmp_path / 'mine.py'
  own.write_text('from aesthetics_jax.configs import demo\n'
                 'def get_config(arg=None):\n  return demo.get_config(arg)\n')
  assert config_args.resolve_path(f'{own}:vgg16') == f'{own}:vgg16'
  assert config_args.load(f'{own}:vgg16').model.arch == 'vgg16'
  with pytest.raises(ValueError, match='has no get_config'):
    (tmp_path / 'empty.py').write_text('x = 1\n')
    config_args.load(str(tmp_path / 'empty.py'))


def test_every_config_form_in_the_readme_loads():
  """The README's `--config=` forms load as written; its one `,`-for-`:` example is the
  hinted mistake, and the hint's form loads."""
  from aesthetics_jax.cli import config_args
  text = (ROOT / 'README.md').read_text()
  forms = set(re.findall(r'--config=([A-Za-z][^\s`\\)]*)', text)) - {'path/to/mine.py[:arg]'}
  assert {'mobilenet_v2_emd', 'mobilenet_v2_emd:smoke', 'vgg16_binary:score',
          'vgg16_binary:score,smoke', 'vgg16_binary:class', 'vgg16_binary:class,smoke',
          'demo:mobilenet_v2', 'demo:mobilenet_v2,smoke', 'demo:vgg16',
          'demo:vgg16,smoke'} <= forms
  for form in sorted(forms):
    if ',' in form.partition(':')[0]:
      with pytest.raises(ValueError, match='use --config=') as e:
        config_args.resolve_path(form)
      form = str(e.value).rsplit('use --config=', 1)[1]
    config = config_args.load(config_args.resolve_path(form))
    assert config.model.arch in ('mobilenet_v2', 'vgg16'), form
    assert (int(config.num_train_steps) == 2) == ('smoke' in form), form


def test_the_largest_seed_makes_every_key_the_run_draws():
  """MAX_SEED is taken, and so are the keys training and evaluation draw from it (+1, +2)."""
  import jax
  from aesthetics_jax.train import config_checks
  assert config_checks.value_problem('seed', config_checks.MAX_SEED) is None
  assert config_checks.value_problem('seed', config_checks.MAX_SEED + 1)
  jax.random.PRNGKey(config_checks.MAX_SEED + 2)


def test_epochs_making_more_steps_than_a_run_counts_are_named():
  """num_epochs=1e30 (1.75e30 steps of the smoke run) trained for ever, its progress bar
  counting to 1750000000000000105166837645312; now one line, exit 2, before the cache."""
  from aesthetics_jax.cli import common
  from aesthetics_jax.train import config_checks, optim
  c = mobilenet_v2_emd.get_config('smoke')
  c.num_train_steps, c.num_epochs = 0, 1e30
  assert config_checks.problems(c) == []  # the rows are known once the data is read
  with pytest.raises(config_checks.ConfigError) as e:
    optim.total_train_steps(c, 14)
  assert str(e.value) == (
      'config.num_epochs=1e+30: 1e+30 epochs of 14 training rows in batches of '
      'config.batch_size=8 are 1.75e+30 steps, more than the 2147483647 a run can count; lower '
      'it to at most 1227133512')
  assert common.exit_code(e.value) == common.EXIT_USAGE
  c.num_epochs = 1227133512
  assert optim.total_train_steps(c, 14) <= config_checks.MAX_STEPS  # the value it names


@pytest.mark.parametrize('key, value', [('model.fc_dim', 10 ** 9),
                                        ('model.vgg_pool_size', 10 ** 5)])
def test_a_model_larger_than_the_machine_names_its_size_key(key, value):
  """VGG16's fc_dim=10**9 (fc7 alone: 10**18 weights) or vgg_pool_size=10**5 were 'out of
  memory ... lower --config.batch_size': the key that sized the model is named instead."""
  from aesthetics_jax.train import config_checks
  c = vgg16_binary.get_config('smoke')
  c.update_from_flattened_dict({key: value})
  with pytest.raises(config_checks.ConfigError, match=rf'^config\.{key}={value}: the model'):
    config_checks.check(c)


def test_one_faithfulness_step_is_refused():
  """--config.eval.faithfulness_steps=1 was taken and gave every CAM method deletion AUC 0.5
  (the curve [1, 0]): numbers that rank nothing."""
  from aesthetics_jax.train import config_checks
  assert config_checks.value_problem('eval.faithfulness_steps', 2) is None
  assert config_checks.value_problem('eval.faithfulness_steps', 1) == (
      "config.eval.faithfulness_steps=1: must be an integer >= 2: with 1 step every method's "
      'deletion and insertion AUC is 0.5 whatever its map')


def test_a_bootstrap_of_a_few_resamples_is_refused():
  """--config.eval.bootstrap_samples=1 gave binary_accuracy 0.75 the "95% CI" [0.5, 0.5]."""
  from aesthetics_jax.train import config_checks
  for ok in (0, config_checks.MIN_BOOTSTRAP_SAMPLES, 1000):
    assert config_checks.value_problem('eval.bootstrap_samples', ok) is None, ok
  problem = config_checks.value_problem('eval.bootstrap_samples', 1)
  assert problem.startswith('config.eval.bootstrap_samples=1: must be 0 (no intervals) or')
