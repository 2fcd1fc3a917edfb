"""XLA:CPU defaults applied by every command (`cpu_backend.configure`): what they add, that the
user's own XLA_FLAGS win, the opt-out, and that a fresh process gets one device per core."""
import os
import subprocess
import sys

import pytest

from aesthetics_jax import cpu_backend

YNN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


@pytest.mark.parametrize('cores,want', [(1, 1), (2, 2), (3, 2), (6, 4), (8, 8), (64, 8)])
def test_device_count_is_a_power_of_two_up_to_8(cores, want):
  assert cpu_backend.default_devices(cores) == want


def test_user_flags_win():
  assert cpu_backend.flags_with_defaults('', 2).split() == [
      YNN, '--xla_force_host_platform_device_count=2']
  mine = '--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type='
  assert cpu_backend.flags_with_defaults(mine, 2) == mine
  assert cpu_backend.flags_with_defaults('--xla_dump_to=/tmp/x', 4).split() == [
      '--xla_dump_to=/tmp/x', YNN, '--xla_force_host_platform_device_count=4']


def _fresh(env_extra: dict, code: str) -> str:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', cpu_backend.OPT_OUT)}
  env.update(env_extra)
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     check=True)
  return r.stdout.strip()


CODE = ('import os, jax; from aesthetics_jax import cpu_backend; a = cpu_backend.configure(); '
        'print(a, jax.device_count(), os.environ.get("XLA_FLAGS", ""))')


def test_a_fresh_process_gets_one_device_per_core_and_the_ynn_setting():
  applied, devices, flags = _fresh({}, CODE).split(' ', 2)
  assert applied == 'True' and int(devices) == cpu_backend.default_devices()
  assert YNN in flags.split()
  assert _fresh({cpu_backend.OPT_OUT: '0'}, CODE).split(' ', 2)[:2] == ['False', '1']


def test_too_late_once_jax_has_started():
  code = ('import jax; jax.numpy.zeros(1); from aesthetics_jax import cpu_backend; '
          'print(cpu_backend.configure(), jax.device_count())')
  assert _fresh({}, code) == 'False 1'
