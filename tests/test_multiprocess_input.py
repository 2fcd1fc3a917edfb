"""Multi-process and multi-device input tests, each in fresh subprocesses (CPU only).

- 2 processes joined by `jax.distributed.initialize` (2 fake CPU devices each, so a 4-device
  mesh): every process decodes only its own rows; gathered, the global batch holds every
  row of the step's global index list exactly once, at the right position, with the right
  pixels.
- 1 process with 8 fake devices: batches are sharded over the 8 devices; a batch size that
  does not divide by 8 is a one-line error.
"""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_COMMON = textwrap.dedent('''
    import sys
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import numpy as np
    import jax
    from aesthetics_jax import parallel
    from aesthetics_jax.data import pipeline
    from aesthetics_jax.data import preprocess
    from aesthetics_jax.data import sampling
    from source_fixture import make_source, tiny_config
''')

_MULTIPROCESS = textwrap.dedent('''
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address='localhost:' + port, num_processes=2,
                               process_id=pid, initialization_timeout=60)
    from jax.experimental import multihost_utils
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    source = make_source(16)
    c = tiny_config(random_flip=True)
    mesh = parallel.make_mesh()
    rows = parallel.local_rows(parallel.data_sharding(mesh), 8)
    assert rows == parallel.process_slice(8, pid, 2), (rows, pid)
    meta = sampling.read_metadata(source)
    cdf = np.cumsum(sampling.balanced_probabilities(meta.label))
    it = pipeline.train_batches(source, c, mesh, start_step=3)
    for step in (3, 4):
      b = next(it)
      assert not b['image'].is_fully_addressable
      local = np.concatenate([np.asarray(s.data) for s in
                              sorted(b['image_id'].addressable_shards,
                                     key=lambda s: s.index[0].start or 0)])
      g = multihost_utils.process_allgather(b, tiled=True)
      want_idx = sampling.train_indices(step, 16, 8, c.seed, cdf)
      np.testing.assert_array_equal(g['image_id'], meta.image_id[want_idx])
      np.testing.assert_array_equal(local, meta.image_id[want_idx][rows])
      offsets, mirror = preprocess.augment_draws(c.seed, step, 8, 40, 32, True)
      for j, i in enumerate(want_idx):
        img = preprocess.mirror_np(preprocess.crop_np(source[i]['image'], 40, 32, offsets[j]),
                                   mirror[j])
        np.testing.assert_allclose(g['image'][j], np.asarray(preprocess.to_model_input(img)),
                                   atol=1e-6)
    it.close()
    ids, mask = [], []
    for b in pipeline.eval_batches(source[:13], c, mesh, batch_size=8):
      g = multihost_utils.process_allgather(b, tiled=True)
      ids.append(g['image_id']); mask.append(g['mask'])
    ids, mask = np.concatenate(ids), np.concatenate(mask)
    np.testing.assert_array_equal(mask, [1] * 13 + [0] * 3)
    np.testing.assert_array_equal(ids[:13], meta.image_id[:13])
    print('OK', pid, rows)
''')

_EIGHT_DEVICES = textwrap.dedent('''
    assert jax.device_count() == 8
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ('data',) and mesh.devices.size == 8
    source = make_source(16)
    c = tiny_config()
    c.batch_size = 16
    it = pipeline.train_batches(source, c, mesh)
    b = next(it)
    it.close()
    for k, v in b.items():
      assert v.sharding.spec[0] == 'data', (k, v.sharding)
      assert len(v.addressable_shards) == 8
      assert {s.data.shape[0] for s in v.addressable_shards} == {2}, k
      assert {s.device for s in v.addressable_shards} == set(jax.devices())
    assert b['image'].shape == (16, 32, 32, 3)
    ev = list(pipeline.eval_batches(source[:10], c, mesh, batch_size=8))
    assert len(ev) == 2 and float(ev[1]['mask'].sum()) == 2.0
    c.batch_size = 12
    try:
      pipeline.train_batches(source, c, mesh)
      raise SystemExit('expected an InputError')
    except preprocess.InputError as e:
      assert 'device count 8' in str(e) and '\\n' not in str(e), str(e)
    print('OK')
''')


def _script(body: str) -> str:
  return _COMMON.format(root=str(ROOT), tests=str(ROOT / 'tests')) + body


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  # Appended: keep the suite's XLA_FLAGS (conftest.py)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={devices}').strip()
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_cover_global_batch_once(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(_script(_MULTIPROCESS))
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port], env=_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=120)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} failed:\n{out[-3000:]}'
    assert f'OK {i}' in out, out[-3000:]
  assert 'slice(0, 4' in outs[0] and 'slice(4, 8' in outs[1]


def test_eight_devices_shard_global_batch(tmp_path):
  script = tmp_path / 'eight.py'
  script.write_text(_script(_EIGHT_DEVICES))
  r = subprocess.run([sys.executable, str(script)], env=_env(8), capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0 and 'OK' in r.stdout, (r.stdout + r.stderr)[-3000:]
