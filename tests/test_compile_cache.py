"""The commands' persistent compilation cache (`compile_cache.configure`), each case in a fresh
process with a clean environment (JAX reads its cache settings at import; the suite's own
cache, `conftest.py`, is taken out of the child's environment)."""
import json
import os
import subprocess
import sys

import pytest

_CHILD = '''
import json, os, sys
from aesthetics_jax import compile_cache
if sys.argv[2] == 'accelerator':  # as if a CUDA/TPU plugin were installed
  compile_cache.accelerator_likely = lambda: True
if sys.argv[3] == 'no_filelock':  # as if filelock were not installed
  import importlib.util
  sys.modules['filelock'] = None
  find_spec = importlib.util.find_spec
  importlib.util.find_spec = lambda name, *a: None if name == 'filelock' else find_spec(name, *a)
if sys.argv[1] == 'after_import':
  import jax
path = compile_cache.configure()
import jax, jax.numpy as jnp
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(json.dumps({'path': None if path is None else str(path),
                  'jax_dir': jax.config.jax_compilation_cache_dir,
                  'max_size': jax.config.jax_compilation_cache_max_size}))
'''


def _child(tmp_path, when='before_import', device='cpu', filelock='filelock', **env_extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'AESTHETICS_JAX_COMPILE_CACHE')}
  env.update(XDG_CACHE_HOME=str(tmp_path / 'xdg'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             **env_extra)
  p = subprocess.run([sys.executable, '-c', _CHILD, when, device, filelock], env=env,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def _entries(folder):
  return [f for f in os.listdir(folder)] if os.path.isdir(folder) else []


@pytest.mark.parametrize('when', ['before_import', 'after_import'])
def test_on_by_default_with_an_accelerator_in_the_users_cache_folder(tmp_path, when):
  out, _ = _child(tmp_path, when, 'accelerator')
  want = tmp_path / 'xdg' / 'aesthetics_jax' / 'xla'
  assert out['path'] == out['jax_dir'] == str(want)
  assert out['max_size'] == 2 << 30
  assert _entries(want), 'the compilation was not written to the cache'


def test_off_by_default_on_cpu_on_when_asked(tmp_path):
  want = tmp_path / 'xdg' / 'aesthetics_jax' / 'xla'
  out, _ = _child(tmp_path)
  assert out['path'] is None and out['jax_dir'] is None and not _entries(want)
  out, _ = _child(tmp_path, AESTHETICS_JAX_COMPILE_CACHE='1')
  assert out['path'] == str(want) and _entries(want)
  out, _ = _child(tmp_path, AESTHETICS_JAX_COMPILE_CACHE=str(tmp_path / 'mine'))
  assert out['path'] == str(tmp_path / 'mine') and _entries(tmp_path / 'mine')


def test_off_wins_over_an_accelerator(tmp_path):
  out, _ = _child(tmp_path, device='accelerator', AESTHETICS_JAX_COMPILE_CACHE='0')
  assert out['path'] is None and out['jax_dir'] is None
  assert not _entries(tmp_path / 'xdg' / 'aesthetics_jax' / 'xla')


def test_accelerator_likely_reads_jax_platforms(monkeypatch):
  from aesthetics_jax import compile_cache
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert not compile_cache.accelerator_likely()
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda,cpu')
  assert compile_cache.accelerator_likely()


def test_the_users_jax_setting_wins(tmp_path):
  out, _ = _child(tmp_path, device='accelerator',
                  JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_own'))
  assert out['path'] is None and out['jax_dir'] == str(tmp_path / 'jax_own')
  assert not _entries(tmp_path / 'xdg' / 'aesthetics_jax' / 'xla')


def test_an_unwritable_folder_is_skipped_with_a_warning(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  out, err = _child(tmp_path, AESTHETICS_JAX_COMPILE_CACHE=str(blocker / 'xla'))
  assert out['path'] is None and out['jax_dir'] is None
  assert 'compilation cache off: cannot create' in err and 'AESTHETICS_JAX_COMPILE_CACHE' in err


@pytest.mark.parametrize('when', ['before_import', 'after_import'])
def test_without_filelock_unbounded_but_working(tmp_path, when):
  """JAX's size bound needs filelock; without it JAX warned at every compilation and cached
  nothing (seen in CI's venv, which had no filelock), so the bound is left out."""
  out, err = _child(tmp_path, when, 'accelerator', 'no_filelock')
  want = tmp_path / 'xdg' / 'aesthetics_jax' / 'xla'
  assert out['path'] == str(want) and out['max_size'] == -1
  assert _entries(want) and 'filelock' not in err
