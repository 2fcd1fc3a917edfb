"""memory_fit: a batch whose activations cannot fit is one line before any work, exit 2.

VGG16 at 224 px with --config.eval.batch_size=1024 (154 MB of images) passed the config
checks, decoded and compiled for 2 minutes, then stopped with 'INTERNAL: Error dispatching
computation: Out of memory allocating 9093251384 bytes' (exit 1); a training batch of 1024
asked for 205 GB after its first step was compiled. Here the machine is made small instead
(`memory_fit.available_memory` patched, in a child for the commands).
"""
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import checkpoint_fixture
from tiny_ava import prepare_tiny
from aesthetics_jax import memory_fit

ROOT = Path(__file__).parents[1]
# A command run on a machine with no memory available from the `SKIP`th check on (argv:
# SKIP, the launch module, then its flags).
_SMALL_MACHINE = ('import runpy, sys\n'
                  'from aesthetics_jax import memory_fit\n'
                  'calls, skip = [], int(sys.argv.pop(1))\n'
                  'memory_fit.available_memory = lambda device: (\n'
                  '    calls.append(device), 1 << 50 if len(calls) <= skip else 0)[1]\n'
                  'sys.argv = [sys.argv[1], *sys.argv[2:]]\n'
                  'runpy.run_module("launch." + sys.argv[0], run_name="__main__", '
                  'alter_sys=True)\n')
LINE = (r'{cmd}: {flag}: a batch of {batch} images needs about [0-9.]+ GiB \(XLA\'s estimate\) '
        r'and this machine has 0\.0 GiB RAM available; even a batch of 1 may not fit: free '
        r'memory or use a larger machine')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return prepare_tiny(tmp_path_factory.mktemp('tiny'), num_train=8, num_test=4, size=40)


def _small_machine(command: str, *flags: str, skip: int = 0) -> tuple[int, list[str]]:
  """(exit status, the command's lines on stderr: progress bars left out), the first `skip`
  checks passing."""
  r = subprocess.run([sys.executable, '-c', _SMALL_MACHINE, str(skip), command, *flags],
                     cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  last = [x.split('\r')[-1] for x in r.stderr.splitlines()]
  return r.returncode, [x for x in last if x.startswith(f'{command}:')
                        and not re.match(r'\w+: +\d+%\|', x)]


def test_check_names_the_flag_and_the_batch_that_fits(monkeypatch):
  """The line, and no second compilation: jit reuses the one the check made."""
  f = jax.jit(lambda x: jnp.sort(x[:, :, None] * x[:, None, :], axis=-1).sum())
  x = jnp.ones((8, 64), jnp.float32)  # temporaries ~8 * 64 * 64 * 4 bytes
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, *a, **k: compiles.append(name)
      if name == '/jax/core/compile/backend_compile_duration' else None)
  monkeypatch.setattr(memory_fit, 'available_memory', lambda device: 40_000)
  with pytest.raises(memory_fit.BatchMemoryError) as e:
    memory_fit.check(f, (x,), flag='--batch_size', batch=8)
  assert e.value.before_work and '\n' not in str(e.value)
  assert re.fullmatch(r'--batch_size: a batch of 8 images needs about 0\.0 GiB \(XLA\'s '
                      r'estimate\) and this machine has 0\.0 GiB RAM available; lower it to '
                      r'about [1-7]', str(e.value)), str(e.value)
  monkeypatch.setattr(memory_fit, 'available_memory', lambda device: 1 << 40)
  out = [memory_fit.call(f, x, flag='--batch_size', batch=8), f(x)]
  assert len(compiles) == 1, compiles  # the check's: neither call compiled again
  assert float(out[0]) == float(out[1])
  # No estimate (a backend without memory_analysis): not checked.
  monkeypatch.setattr(memory_fit, 'needed_bytes', lambda compiled: None)
  monkeypatch.setattr(memory_fit, 'available_memory', lambda device: 0)
  memory_fit.check(f, (x,), flag='--batch_size', batch=8)
  memory_fit.check(np.sum, (x,), flag='--batch_size', batch=8)  # not jitted: not checked


def test_evaluate_refuses_a_batch_that_cannot_fit_before_the_test_pass(data_dir, tmp_path):
  config = checkpoint_fixture.smoke_config('vgg16', data_dir, image_size=32)
  wd = checkpoint_fixture.write_init_checkpoint(tmp_path / 'w', config)
  code, lines = _small_machine('evaluate', f'--workdir={wd}', '--config.eval.batch_size=4')
  assert code == 2 and len(lines) == 1, (code, lines)
  assert re.fullmatch(LINE.format(cmd='evaluate', flag=r'config\.eval\.batch_size', batch=4),
                      lines[0]), lines
  assert not (wd / 'eval' / 'metrics.json').exists()


@pytest.mark.parametrize('skip, flag, batch', [(0, 'batch_size', 2), (1, 'eval.batch_size', 4)])
def test_train_refuses_a_batch_that_cannot_fit_before_the_first_step(data_dir, tmp_path, skip,
                                                                     flag, batch):
  """The training step's batch, and the evaluations' (which first ran after
  config.eval_every_steps steps)."""
  wd = tmp_path / 'w'
  code, lines = _small_machine('train', '--config=demo:vgg16,smoke', f'--workdir={wd}',
                               f'--config.data.data_dir={data_dir}', '--config.batch_size=2',
                               '--config.eval.batch_size=4', '--config.input.image_size=32',
                               '--config.input.resize_size=40', skip=skip)
  assert code == 2 and len(lines) == 1, (code, lines)
  assert re.fullmatch(LINE.format(cmd='train', flag=re.escape(f'config.{flag}'), batch=batch),
                      lines[0]), lines
  assert not list((wd / 'checkpoints').iterdir())


def test_predict_refuses_a_batch_that_cannot_fit_before_scoring(tmp_path):
  from PIL import Image
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'w', checkpoint_fixture.smoke_config('vgg16', image_size=32))
  Image.new('RGB', (48, 40), (90, 120, 30)).save(tmp_path / 'a.png')
  code, lines = _small_machine('predict', f'--workdir={wd}', '--batch_size=2',
                               str(tmp_path / 'a.png'))
  assert code == 2 and len(lines) == 1, (code, lines)
  assert re.fullmatch(LINE.format(cmd='predict', flag='--batch_size', batch=2), lines[0]), lines


def test_train_refuses_a_feature_cache_batch_that_cannot_fit(data_dir, tmp_path):
  """The frozen encoder's cache build (the paper configs' path) encodes eval.batch_size images
  at a time (capped at the 6 training rows; the evaluations' batch is 4, the test rows),
  before the first step."""
  code, lines = _small_machine('train', '--config=mobilenet_v2_emd:smoke',
                               f'--workdir={tmp_path / "w"}', f'--config.data.data_dir={data_dir}',
                               '--config.eval.batch_size=8')
  assert code == 2 and len(lines) == 1, (code, lines)
  assert re.fullmatch(LINE.format(cmd='train', flag=r'config\.eval\.batch_size', batch=6),
                      lines[0]), lines
