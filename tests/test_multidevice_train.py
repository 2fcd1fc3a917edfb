"""The same training code on 1 device and on 2 processes x 4 fake devices: same params."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
from aesthetics_jax.train import trainer  # noqa: E402
from aesthetics_jax.train import restore  # noqa: E402
from aesthetics_jax.configs import demo, mobilenet_v2_emd  # noqa: E402
from tiny_ava import prepare_tiny  # noqa: E402

OVERRIDES = {'num_train_steps': 2, 'checkpoint_every_steps': 2, 'eval_every_steps': 2,
             'log_every_steps': 1}


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """The 1-device reference run."""
  tmp = tmp_path_factory.mktemp('md')
  data_dir = prepare_tiny(tmp / 'data')
  c = demo.get_config('vgg16,smoke')
  c.data.data_dir = str(data_dir)
  for k, v in OVERRIDES.items():
    c[k] = v
  assert jax.device_count() == 1
  trainer.train_and_evaluate(c, tmp / 'single')
  return data_dir, tmp


def _logged_losses(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], r['train/loss']) for r in rows if 'train/loss' in r]


def _train_losses(workdir):
  return [loss for _, loss in _logged_losses(workdir)]


def _assert_same_run(workdir, ref):
  np.testing.assert_allclose(_train_losses(workdir), _train_losses(ref), rtol=1e-5)
  _, v, _, _ = restore.restore_for_inference(workdir)
  _, v_ref, _, _ = restore.restore_for_inference(ref)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(v), jax.device_get(v_ref))


def _cmd(data_dir, workdir, *extra, config='configs/demo.py:vgg16,smoke', overrides=OVERRIDES):
  return ([sys.executable, '-m', 'launch.train', f'--config={config}',
           f'--workdir={workdir}', f'--config.data.data_dir={data_dir}']
          + [f'--config.{k}={v}' for k, v in overrides.items()] + list(extra))


def _run_two_processes(data_dir, workdir, **cmd_kw) -> list[tuple[str, str]]:
  """launch.train in 2 processes x 4 fake CPU devices; (stdout, stderr) of each."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +  # the suite's flags (conftest.py)
                       ' --xla_force_host_platform_device_count=4').strip()}
  procs = [subprocess.Popen(_cmd(data_dir, workdir, f'--coordinator_address=localhost:{port}',
                                 '--num_processes=2', f'--process_id={i}', **cmd_kw),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    # An abort ends stderr with Python's list of extension modules: show the cause instead.
    cause = [l for l in err.splitlines()
             if any(k in l for k in ('Fatal', 'Check failed', 'terminate', 'Error', 'error:'))]
    assert p.returncode == 0, '\n'.join(cause[-20:]) or err[-3000:]
  return outs


def test_two_processes_of_four_devices_match_one(single):
  """2 processes (jax.distributed on localhost) x 4 fake CPU devices = an 8-device mesh.

  One subprocess pair covers both scale-out paths (devices within a process, processes over
  Gloo) for the price of one JAX start-up and compile per process.
  """
  data_dir, tmp = single
  outs = _run_two_processes(data_dir, tmp / 'two')
  result = json.loads(outs[0][0].strip().splitlines()[-1])
  assert result['num_devices'] == 8 and result['num_processes'] == 2, result
  # Only process 0 prints the result (Gloo's own connection lines aside).
  assert '"binary_accuracy"' in outs[0][0] and '"binary_accuracy"' not in outs[1][0]
  _assert_same_run(tmp / 'two', tmp / 'single')


def test_cached_head_segments_on_two_processes_match_one_device(single):
  """The frozen-encoder recipe on the 8-device, 2-process mesh: cache encoded sharded and
  gathered on each process, held on every device, head steps in device-side segments
  (`make_train_segment`) — equal to one device fed one host batch per step."""
  data_dir, tmp = single
  over = {'num_train_steps': 5, 'log_every_steps': 2, 'eval_every_steps': 5,
          'checkpoint_every_steps': 5, 'optim.lr': 0.01, 'cache.num_train_views': 2,
          'log_cam_images': 0}
  c = mobilenet_v2_emd.get_config('smoke')
  c.data.data_dir = str(data_dir)
  c.update_from_flattened_dict({**over, 'cache.device_budget_gb': 0.0})
  trainer.train_and_evaluate(c, tmp / 'cached_single')
  outs = _run_two_processes(data_dir, tmp / 'cached_two',
                            config='configs/mobilenet_v2_emd.py:smoke', overrides=over)
  assert 'feature cache held on the devices' in outs[0][0]
  assert [s for s, _ in _logged_losses(tmp / 'cached_two')] == [2, 4, 5]
  _assert_same_run(tmp / 'cached_two', tmp / 'cached_single')
