"""XLA:CPU defaults applied by every command (`cpu_backend.configure`): what they add, that the
user's own XLA_FLAGS win, the opt-out, and that it is too late once JAX has started."""
import os
import subprocess
import sys

import pytest

from aesthetics_jax import cpu_backend

YNN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
# What `configure` puts in an empty XLA_FLAGS on this machine (with >= 2 cores, also one CPU
# device per core).
OURS = cpu_backend.flags_with_defaults('', cpu_backend.host_cpu_count())


def test_user_flags_win():
  assert cpu_backend.flags_with_defaults('') == YNN
  mine = '--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type='
  assert cpu_backend.flags_with_defaults(mine) == mine
  assert cpu_backend.flags_with_defaults('--xla_dump_to=/tmp/x').split() == [
      '--xla_dump_to=/tmp/x', YNN]


def test_one_cpu_device_per_core_unless_set():
  """Two cores or more: one CPU device per core (at most MAX_CPU_DEVICES); the user's count
  wins; one core adds none."""
  dev = '--xla_force_host_platform_device_count'
  assert cpu_backend.flags_with_defaults('', 2) == f'{YNN} {dev}=2'
  assert cpu_backend.flags_with_defaults('', 1) == YNN
  assert cpu_backend.flags_with_defaults('', 64) == f'{YNN} {dev}=8'  # the measured cap
  assert cpu_backend.flags_with_defaults(f'{dev}=8', 2) == f'{dev}=8 {YNN}'


def _fresh(env_extra: dict, code: str) -> str:
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', cpu_backend.OPT_OUT, 'GLIBC_TUNABLES',
                      cpu_backend.DEVICES_ADDED)}
  env.update(env_extra)
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     check=True)
  return r.stdout.strip()


CODE = ('import os, jax; from aesthetics_jax import cpu_backend; a = cpu_backend.configure(); '
        'jax.numpy.zeros(1); print(a, os.environ.get("XLA_FLAGS", "-"))')


def test_a_fresh_process_gets_the_setting_unless_opted_out():
  assert _fresh({}, CODE) == f'True {OURS}'
  assert _fresh({cpu_backend.OPT_OUT: '0'}, CODE) == 'False -'
  mine = '--xla_cpu_experimental_ynn_fusion_type='
  assert _fresh({'XLA_FLAGS': mine}, CODE) == (
      'True ' + cpu_backend.flags_with_defaults(mine, cpu_backend.host_cpu_count()))


def test_too_late_once_jax_has_started():
  code = ('import jax; jax.numpy.zeros(1); from aesthetics_jax import cpu_backend; '
          'print(cpu_backend.configure())')
  assert _fresh({}, code) == 'False'


def test_every_command_applies_it_before_jax_starts():
  """`common.run` (every command's entry) configures before absl runs main."""
  code = ('import os, sys; from aesthetics_jax.cli import common; '
          'common.run(lambda argv: print(os.environ.get("XLA_FLAGS")), "doc", ["prog"])')
  assert _fresh({}, code).splitlines()[-1] == OURS


def test_the_notebook_interface_applies_it_before_jax_starts():
  """`aesthetics_jax.load` (api.py) is the notebook's entry: importing it configures, so a
  notebook gets the commands' CPU speed; the user's opt-out still wins."""
  code = ('import os, aesthetics_jax; aesthetics_jax.load; import jax; jax.numpy.zeros(1); '
          'print(os.environ.get("XLA_FLAGS"))')
  assert _fresh({}, code) == OURS
  assert _fresh({cpu_backend.OPT_OUT: '0'}, code) == 'None'


TRAIN_MESH = ('import os, jax; from aesthetics_jax import cpu_backend, parallel; '
              'cpu_backend.configure(); print(jax.device_count(), parallel.train_mesh().size, '
              'parallel.make_mesh().size, cpu_backend.devices_added())')


@pytest.mark.skipif(cpu_backend.host_cpu_count() < 2, reason='one core: no per-core devices')
def test_training_keeps_one_device_when_the_count_is_ours():
  """Per-core CPU devices (ours) → inference meshes take all, training one per process; a
  count the user set trains on every device; the opt-out leaves one device."""
  n = cpu_backend.cpu_devices(cpu_backend.host_cpu_count())
  assert _fresh({}, TRAIN_MESH) == f'{n} 1 {n} True'
  user = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  assert _fresh(user, TRAIN_MESH) == '4 4 4 False'
  # A child process inherits our flags and the marker: still ours.
  child = {'XLA_FLAGS': OURS, cpu_backend.DEVICES_ADDED: str(n)}
  assert _fresh(child, TRAIN_MESH) == f'{n} 1 {n} True'
  # The marker alone (a parent's) with another count in XLA_FLAGS: the user's.
  assert _fresh({**user, cpu_backend.DEVICES_ADDED: str(n)}, TRAIN_MESH) == '4 4 4 False'
  assert _fresh({cpu_backend.OPT_OUT: '0'}, TRAIN_MESH) == '1 1 1 False'


def test_malloc_tunable_added_unless_set():
  assert cpu_backend.tunables_with_malloc('') == 'glibc.malloc.hugetlb=1'
  assert cpu_backend.tunables_with_malloc('glibc.malloc.arena_max=2') == (
      'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
  assert cpu_backend.tunables_with_malloc('glibc.malloc.hugetlb=0') is None


RUN = ('import os, sys; from aesthetics_jax.cli import common; print("start", os.getpid()); '
       'common.run(lambda argv: print("main", os.getpid(), os.environ.get("GLIBC_TUNABLES")), '
       '"doc", ["prog"])')


@pytest.mark.skipif((cpu_backend.glibc_version() or (0, 0)) < (2, 35),
                    reason='the tunable exists from glibc 2.35 (this C library is older or not glibc)')
def test_every_command_reexecutes_once_with_the_malloc_tunable():
  """The process (same pid) starts again once, with the tunable; the user's value and the
  opt-out are respected (no re-exec)."""
  lines = _fresh({}, RUN).splitlines()
  pid = lines[0].split()[1]
  assert lines == [f'start {pid}', f'start {pid}', f'main {pid} glibc.malloc.hugetlb=1']
  for env, tunables in (({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'glibc.malloc.hugetlb=0'),
                        ({cpu_backend.OPT_OUT: '0'}, 'None')):
    lines = _fresh(env, RUN).splitlines()
    pid = lines[0].split()[1]
    assert lines == [f'start {pid}', f'main {pid} {tunables}']


def test_a_failed_reexec_runs_on_without_the_tunable(monkeypatch):
  """execv failing (the interpreter replaced or not executable) ended the command in a
  PermissionError traceback; the tunable only saves memory."""
  def refuse(*a):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(cpu_backend, 'glibc_version', lambda: (2, 39))
  monkeypatch.setattr(cpu_backend, '_opted_out', lambda: False)
  monkeypatch.setattr(cpu_backend, 'backends_started', lambda: False)
  monkeypatch.setattr(cpu_backend.os, 'execv', refuse)
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  cpu_backend.reexec_with_malloc_tunable()
  assert 'GLIBC_TUNABLES' not in os.environ
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  cpu_backend.reexec_with_malloc_tunable()
  assert os.environ['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'


def test_encoder_options_for_full_width_vgg16_only(monkeypatch):
  """Per-executable XLA:CPU options: full-width VGG16 encoders only; the user's own YNNPACK
  flag and the opt-out win; compiled with them, the encoder computes the same features."""
  import jax
  import numpy as np
  from aesthetics_jax import models
  from aesthetics_jax.train import feature_cache
  monkeypatch.delenv(cpu_backend.OPT_OUT, raising=False)
  monkeypatch.setenv('XLA_FLAGS', YNN)  # what configure() leaves
  vgg = models.create_model(models.model_config(arch='vgg16'))
  assert cpu_backend.encoder_options(vgg) == {'xla_cpu_experimental_ynn_fusion_type': ''}
  assert cpu_backend.encoder_options(vgg, 'cam') == {
      'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
  with pytest.raises(ValueError, match='forward'):
    cpu_backend.encoder_options(vgg, 'train')
  assert cpu_backend.encoder_options(models.create_model(
      models.model_config(arch='vgg16', width_mult=0.25))) is None   # demo widths: slower
  assert cpu_backend.encoder_options(models.create_model(
      models.model_config(arch='mobilenet_v2'))) is None
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert cpu_backend.encoder_options(vgg) is None                     # the user's flag wins
  monkeypatch.setenv('XLA_FLAGS', YNN)
  monkeypatch.setenv(cpu_backend.OPT_OUT, '0')
  assert cpu_backend.encoder_options(vgg) is None
  monkeypatch.delenv(cpu_backend.OPT_OUT)
  # 32 px: the whole network at full width, compiled both ways, equal features.
  v = models.init_variables(vgg, 0, 32)
  x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), np.uint8)
  with_opts = feature_cache.make_encode_fn(vgg, 'imagenet', chunk=0)
  monkeypatch.setenv(cpu_backend.OPT_OUT, '0')
  without = feature_cache.make_encode_fn(vgg, 'imagenet', chunk=0)
  # The options reach the compiler: no YNNPACK fusion in that executable, some without them.
  assert 'ynn_fusion' not in with_opts.lower(v, x).compile().as_text()
  assert 'ynn_fusion' in without.lower(v, x).compile().as_text()
  np.testing.assert_allclose(np.asarray(with_opts(v, x)), np.asarray(without(v, x)),
                             atol=1e-5, rtol=1e-5)
  assert jax.default_backend() == 'cpu'


@pytest.mark.parametrize('value', ['0', '-1', 'eight', '2.5'])
def test_an_unusable_device_count_in_xla_flags_is_one_line(value):
  """XLA_FLAGS=--xla_force_host_platform_device_count=0 (the README's way to try many devices)
  ended every command in a RuntimeError traceback from JAX's backend; -1 in one about
  vector::reserve, a word or 2.5 in XLA's list of all its flags. Now one line, exit 2."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = f'{cpu_backend.DEVICES_FLAG}={value}'
  code = ('import jax; from aesthetics_jax.cli import common; '
          'common.run(lambda argv: print(jax.devices()), "doc", ["prog"])')
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1].endswith(
      f'XLA_FLAGS: {cpu_backend.DEVICES_FLAG}={value}: pass a whole number of CPU devices, '
      f'1 or more (e.g. {cpu_backend.DEVICES_FLAG}=8), or leave it out (one per core)')
  assert 'Traceback' not in r.stderr


def test_a_usable_device_count_passes():
  assert cpu_backend.device_flag_problem(f'{cpu_backend.DEVICES_FLAG}=8') is None
  assert cpu_backend.device_flag_problem(f'{cpu_backend.DEVICES_FLAG}=4096') is None
  # 100,000 devices: killed at 22 GB with no word, before any work.
  assert cpu_backend.device_flag_problem(f'{cpu_backend.DEVICES_FLAG}=100000').startswith(
      f'XLA_FLAGS: {cpu_backend.DEVICES_FLAG}=100000: at most 4096 CPU devices')
  assert cpu_backend.device_flag_problem('--xla_cpu_enable_fast_math=false') is None
