"""XLA:CPU defaults applied by every command (`cpu_backend.configure`): what they add, that the
user's own XLA_FLAGS win, the opt-out, and that it is too late once JAX has started."""
import os
import subprocess
import sys

from aesthetics_jax import cpu_backend

YNN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def test_user_flags_win():
  assert cpu_backend.flags_with_defaults('') == YNN
  mine = '--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type='
  assert cpu_backend.flags_with_defaults(mine) == mine
  assert cpu_backend.flags_with_defaults('--xla_dump_to=/tmp/x').split() == [
      '--xla_dump_to=/tmp/x', YNN]


def _fresh(env_extra: dict, code: str) -> str:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', cpu_backend.OPT_OUT)}
  env.update(env_extra)
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     check=True)
  return r.stdout.strip()


CODE = ('import os, jax; from aesthetics_jax import cpu_backend; a = cpu_backend.configure(); '
        'jax.numpy.zeros(1); print(a, os.environ.get("XLA_FLAGS", "-"))')


def test_a_fresh_process_gets_the_setting_unless_opted_out():
  assert _fresh({}, CODE) == f'True {YNN}'
  assert _fresh({cpu_backend.OPT_OUT: '0'}, CODE) == 'False -'
  assert _fresh({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type='}, CODE) == (
      'True --xla_cpu_experimental_ynn_fusion_type=')


def test_too_late_once_jax_has_started():
  code = ('import jax; jax.numpy.zeros(1); from aesthetics_jax import cpu_backend; '
          'print(cpu_backend.configure())')
  assert _fresh({}, code) == 'False'


def test_every_command_applies_it_before_jax_starts():
  """`common.run` (every command's entry) configures before absl runs main."""
  code = ('import os, sys; from aesthetics_jax.cli import common; '
          'common.run(lambda argv: print(os.environ.get("XLA_FLAGS")), "doc", ["prog"])')
  assert _fresh({}, code) == YNN
