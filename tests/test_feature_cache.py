"""Feature cache: pooled form == full maps, memmap == RAM, atomic builds, reuse, online mode."""
import dataclasses
import errno
import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from aesthetics_jax import cpu_backend, models, parallel
from aesthetics_jax.configs import demo, mobilenet_v2_emd
from aesthetics_jax.data import dataset
from aesthetics_jax.train import cache_store, config_checks, feature_cache, optim, trainer
from aesthetics_jax.train import restore
from aesthetics_jax.train.errors import TrainingError
from tiny_ava import prepare_tiny


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return prepare_tiny(tmp_path_factory.mktemp('tiny'), num_train=12, num_test=6)


def _config(arch: str, data_dir=None, **overrides):
  """Frozen-encoder smoke config: MobileNetV2 (width 0.25) or VGG16 (width 1/8, fc 32)."""
  if arch == 'mobilenet_v2':
    c = mobilenet_v2_emd.get_config('smoke')
  else:
    c = demo.get_config('vgg16,smoke')
    c.model.freeze_encoder = True
    c.cache.enabled = True
  c.log_cam_images = 0
  if data_dir is not None:
    c.data.data_dir = str(data_dir)
  c.update_from_flattened_dict(overrides)  # dotted keys, as evaluate(overrides=) takes them
  return c


@pytest.mark.parametrize('arch,size,pool,cached_rank', [
    ('mobilenet_v2', 64, 7, 2), ('vgg16', 128, 2, 4)])
def test_training_on_cached_form_equals_full_maps(arch, size, pool, cached_rank):
  """One train step (dropout on) on `cache_features(A)` == on A: loss, grads and update.

  VGG16 at 128 px: a 4x4 map pooled to 2x2 before fc6 (at 224 px: 7x7, the pool is identity).
  """
  c = _config(arch, **{'input.image_size': size, 'optim.lr': 1e-2,
                       'model.vgg_pool_size': pool})
  model = models.create_model(c.model)
  variables = models.init_variables(model, c.seed, size)
  images = np.random.default_rng(0).integers(0, 255, (4, size, size, 3), dtype=np.uint8)
  full = feature_cache.make_encode_fn(model, 'none')(variables, images)
  pooled = feature_cache.make_encode_fn(model, 'none', cacheable=True)(variables, images)
  assert pooled.ndim == cached_rank and pooled.size < full.size
  assert pooled.shape[1:] == feature_cache.view_shape(model, size)
  rng = np.random.default_rng(1)
  batch = {'distribution': rng.dirichlet(np.ones(10), 4).astype(np.float32),
           'tags': np.eye(66, dtype=np.float32)[rng.integers(0, 66, 4)],
           'label': np.array([0, 1, 1, 0], np.int32), 'weight': np.ones(4, np.float32),
           'mask': np.ones(4, np.float32)}
  mesh = parallel.make_mesh()
  tx = optim.make_optimizer(c, 10)
  step = jax.jit(trainer.make_train_step(model, c, tx, 'features'))
  base = jax.random.key_data(jax.random.PRNGKey(3))
  results = []
  for feats in (full, pooled):
    state = trainer.create_state(model, c, tx, mesh, variables)
    new, m = step(state, {**batch, 'features': feats}, base)
    results.append((jax.device_get(new.params['head']), jax.device_get(m)))
  (p_full, m_full), (p_pool, m_pool) = results
  np.testing.assert_allclose(m_pool['loss'], m_full['loss'], rtol=1e-6)
  np.testing.assert_allclose(m_pool['grad_norm'], m_full['grad_norm'], rtol=1e-5)
  assert m_full['grad_norm'] > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               p_full, p_pool)
  # An unmeasured step (the trainer's steps between logs) makes the same update and loss; it
  # only skips the two global norms.
  state = trainer.create_state(model, c, tx, mesh, variables)
  new, m = step(state, {**batch, 'features': pooled}, base, np.bool_(False))
  m = jax.device_get(m)
  assert np.isnan(m['grad_norm']) and m['params_finite'] == 1
  np.testing.assert_allclose(m['loss'], m_pool['loss'], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(new.params['head']), p_pool)


def _build(c, cache_dir=None):
  model = models.create_model(c.model)
  variables = models.init_variables(model, c.seed, int(c.input.image_size))
  sources = dataset.load_sources(c.data.data_dir, c.data.subset)
  return feature_cache.build(model, variables, sources['train'], sources['test'], c,
                             parallel.make_mesh(), progress=False, cache_dir=cache_dir)


def _batches(cache, steps=3, b=4):
  out = [jax.device_get(cache.train_batch(s, b)) for s in range(steps)]
  return out + [jax.device_get(t) for t in cache.test_batches(b)]


@pytest.mark.parametrize('arch,dtype', [('mobilenet_v2', np.float32), ('vgg16', np.float16)])
def test_memmap_over_budget_equals_ram_and_is_reused(arch, dtype, data_dir, tmp_path,
                                                    monkeypatch):
  c = _config(arch, data_dir, **{'cache.num_train_views': 2})
  ram = _build(c, tmp_path / 'cache')
  assert not isinstance(ram.train, np.memmap) and not (tmp_path / 'cache').exists()
  assert ram.train.dtype == dtype  # 'auto': f32 vectors, f16 maps
  c.cache.ram_budget_gb = 1e-9
  disk = _build(c, tmp_path / 'cache')
  assert isinstance(disk.train, np.memmap) and isinstance(disk.test, np.memmap)
  assert not disk.reused and disk.directory.parent == tmp_path / 'cache'
  assert json.loads((disk.directory / 'manifest.json').read_text())['dtype'] == dtype.__name__
  np.testing.assert_array_equal(ram.train, disk.train)
  np.testing.assert_array_equal(ram.test, disk.test)
  jax.tree.map(np.testing.assert_array_equal, _batches(ram), _batches(disk))
  # Same key: read back without encoding anything.
  monkeypatch.setattr(feature_cache, 'encode_rows', _fail)
  again = _build(c, tmp_path / 'cache')
  assert again.reused and again.directory == disk.directory
  np.testing.assert_array_equal(ram.train, again.train)
  # Another key (K): rebuilt, and the old entry is deleted.
  monkeypatch.undo()
  c.cache.num_train_views = 1
  other = _build(c, tmp_path / 'cache')
  assert not other.reused and other.directory != disk.directory
  assert [p.name for p in (tmp_path / 'cache').iterdir()] == [other.directory.name]
  np.testing.assert_array_equal(ram.train[:1], other.train)  # view k depends on (seed, k, i)


def test_views_decoded_once_equal_each_view_preprocessed_alone(data_dir):
  """The K views of a row come from one decode + resize; each equals the view made alone
  (`preprocess_train_np` with its `view_rng`, mirrored on the host), encoded alone: the
  cache's builder mirrors on the device, and both mirrored and unmirrored views occur."""
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  c = _config('mobilenet_v2', data_dir, **{'cache.num_train_views': 3,
                                           'input.random_flip': True})
  cache = _build(c)
  model = models.create_model(c.model)
  variables = models.init_variables(model, c.seed, int(c.input.image_size))
  source = dataset.load_sources(c.data.data_dir, c.data.subset)['train']
  rs, s, flip = int(c.input.resize_size), int(c.input.image_size), bool(c.input.random_flip)
  encode = feature_cache.make_encode_fn(model, str(c.input.normalize), cacheable=True)
  mirrors = set()
  for i in (0, 5):
    data = source[i]['image']
    crops = preprocess.train_view_crops_np(
        data, rs, s, [feature_cache.view_rng(c.seed, k, i) for k in range(3)], flip)
    mirrors |= {m for _, m in crops}
    together = [preprocess.mirror_np(*crop) for crop in crops]
    for k in range(3):
      alone = preprocess.preprocess_train_np(data, rs, s, feature_cache.view_rng(c.seed, k, i),
                                             flip)
      np.testing.assert_array_equal(together[k], alone)
      want = np.asarray(encode(variables, alone[None]))[0]
      np.testing.assert_allclose(cache.train[k, i], want, rtol=1e-5, atol=1e-6)
  assert not np.array_equal(cache.train[0], cache.train[1])  # the views differ
  assert mirrors == {True, False}


def test_build_decodes_in_the_configured_threads(data_dir, monkeypatch):
  """The build's decode threads follow config.input.num_workers (0: one per CPU core, not two
  per device: a 1-GPU host's 16 cores decoded in 2 threads), and the cache is the same."""
  made = []
  real = feature_cache.concurrent.futures.ThreadPoolExecutor

  def recording(max_workers=None, **kwargs):
    if kwargs.get('thread_name_prefix') == 'encode':  # not other libraries' pools
      made.append(max_workers)
    return real(max_workers, **kwargs)
  monkeypatch.setattr(feature_cache.concurrent.futures, 'ThreadPoolExecutor', recording)
  monkeypatch.setattr(feature_cache.cpu_backend, 'host_cpu_count', lambda: 5)
  caches = {}
  for workers in (0, 1):
    made.clear()
    c = _config('mobilenet_v2', data_dir, **{'input.num_workers': workers,
                                             'cache.num_train_views': 2})
    caches[workers] = _build(c)
    assert made == [workers or 5] * 2  # train views, then the test view
  np.testing.assert_array_equal(caches[0].train, caches[1].train)
  np.testing.assert_array_equal(caches[0].test, caches[1].test)


def _fail(*args, **kwargs):
  raise AssertionError('encoded although a committed cache matched')


class _Interrupt(Exception):
  pass


def test_interrupted_build_is_never_reused(data_dir, tmp_path, monkeypatch):
  c = _config('mobilenet_v2', data_dir, **{'cache.num_train_views': 2,
                                           'cache.ram_budget_gb': 1e-9})
  ref = _build(c)  # no cache_dir: a temporary folder
  encode_rows = feature_cache.encode_rows
  calls = []

  def dies_on_second_view(*args, **kwargs):  # train views done, test view not
    calls.append(1)
    if len(calls) == 2:
      raise _Interrupt()
    return encode_rows(*args, **kwargs)

  monkeypatch.setattr(feature_cache, 'encode_rows', dies_on_second_view)
  with pytest.raises(_Interrupt):  # an error or Ctrl-C: its allocated files are removed
    _build(c, tmp_path / 'cache')
  assert list((tmp_path / 'cache').iterdir()) == []
  monkeypatch.undo()
  # What a killed build leaves (of this key, or of another: the settings changed since) is
  # removed by the next build.
  for name in ('0123456789abcdef.partial', feature_cache.cache_store.digest('x') + '.partial'):
    (tmp_path / 'cache' / name).mkdir()
    (tmp_path / 'cache' / name / 'train.bin').write_bytes(b'\0' * 64)
  rebuilt = _build(c, tmp_path / 'cache')
  assert not rebuilt.reused
  assert [p.name for p in (tmp_path / 'cache').iterdir()] == [rebuilt.directory.name]
  np.testing.assert_array_equal(ref.train, rebuilt.train)
  # A committed entry whose file was truncated afterwards is rebuilt, not read.
  path = rebuilt.directory / 'train.bin'
  del rebuilt
  path.write_bytes(path.read_bytes()[:-4])
  again = _build(c, tmp_path / 'cache')
  assert not again.reused
  np.testing.assert_array_equal(ref.train, again.train)


def _no_room(*args):
  raise OSError(errno.ENOSPC, 'No space left on device')


def test_a_full_disk_is_one_line_before_encoding(data_dir, tmp_path, monkeypatch):
  """The cache's files were sparse memory maps: a disk that filled during the build (another
  job writing, or a quota that the free space does not show) killed the trainer with SIGBUS
  mid-build. Their blocks are allocated up front: a TrainingError before encoding, nothing
  left behind."""
  c = _config('mobilenet_v2', data_dir, **{'cache.ram_budget_gb': 1e-9})
  monkeypatch.setattr(cache_store.os, 'posix_fallocate', _no_room)
  monkeypatch.setattr(feature_cache, 'encode_rows', _fail)
  with pytest.raises(TrainingError) as e:
    _build(c, tmp_path / 'cache')
  assert str(e.value).startswith(f'{tmp_path / "cache"}: the feature cache needs ')
  assert 'allocating it failed: No space left on device; free space' in str(e.value)
  assert list((tmp_path / 'cache').iterdir()) == []


_QUOTA = textwrap.dedent('''
    import collections, shutil, sys
    from pathlib import Path
    import numpy as np
    from aesthetics_jax.train import cache_store, errors
    usage = collections.namedtuple('usage', 'total used free')
    shutil.disk_usage = lambda p: usage(2 ** 40, 0, 2 ** 40)  # a quota it does not show
    lay = cache_store.Layout(num_views=1, num_train=1000, num_test=10, view_shape=(1280,),
                             dtype=np.dtype(np.float32), ram_budget_bytes=0)
    try:
      w = cache_store.DiskWriter(Path(sys.argv[1]), '0123456789abcdef', lay)
      w.arrays['train'][-1] = 1.0
    except errors.TrainingError as e:
      print(e)
''')


def test_a_real_full_disk_is_an_error_not_sigbus(tmp_path):
  """On a 1 MB tmpfs (root only), a 4.9 MiB cache that the free space said would fit."""
  mnt = tmp_path / 'small'
  mnt.mkdir()
  res = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mnt)],
                       capture_output=True, text=True, check=False)
  if res.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {res.stderr.strip()}')
  try:
    res = subprocess.run([sys.executable, '-c', _QUOTA, str(mnt / 'cache')],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith(f'{mnt / "cache"}: the feature cache needs 4.9 MiB on disk '
                                 'and allocating it failed: No space left on device')
    assert list((mnt / 'cache').iterdir()) == []
  finally:
    subprocess.run(['umount', str(mnt)], check=False)


def test_a_ram_cache_larger_than_the_machine_is_one_line(data_dir, monkeypatch):
  """A raised ram_budget_gb kept a cache larger than the RAM in RAM: a MemoryError traceback,
  or the OOM killer once encoding had filled it. Here the machine has 64 KiB."""
  c = _config('mobilenet_v2', data_dir, **{'cache.ram_budget_gb': 100.0})
  monkeypatch.setattr(cpu_backend, 'physical_memory', lambda: 64 * 1024)
  monkeypatch.setattr(feature_cache, 'encode_rows', _fail)
  with pytest.raises(TrainingError) as e:
    _build(c)
  assert str(e.value).startswith('config.cache.ram_budget_gb=100 keeps this ')
  assert 'feature cache in RAM and this machine has 64.0 KiB; lower it below' in str(e.value)
  monkeypatch.undo()
  assert cpu_backend.physical_memory() is None or cpu_backend.physical_memory() > 2 ** 20


def test_a_cache_larger_than_the_disk_is_a_usage_error_before_any_work(data_dir, tmp_path,
                                                                       monkeypatch):
  """--config.cache.num_train_views=10**20 passed until the cache's build, after the
  checkpoints and config.json: exit 1 and '6675720214843750.0 GiB'. A ConfigError (exit 2)
  before them, naming the key and the most views that fit, the size in three digits."""
  c = _config('mobilenet_v2', data_dir, **{'cache.num_train_views': 10 ** 20})
  monkeypatch.setattr(feature_cache, 'encode_rows', _fail)
  with pytest.raises(config_checks.ConfigError) as e:
    trainer.train_and_evaluate(c, tmp_path / 'w')
  msg = str(e.value)
  assert msg.startswith('config.cache.num_train_views=100000000000000000000: ')
  assert 'e+' in msg.split(' GiB feature cache')[0] and 'lower it to at most ' in msg
  fits = int(msg.rsplit(' ', 1)[1])
  assert fits >= 1 and '\n' not in msg
  assert not (tmp_path / 'w' / 'checkpoints').exists()
  assert not (tmp_path / 'w' / 'config.json').exists()
  # Nor the data's records: dataset.json and validation_ids.json were left in the refused run's
  # workdir.
  assert not list((tmp_path / 'w').glob('*.json')), list((tmp_path / 'w').iterdir())


def test_room_counts_the_entry_a_resume_reuses(tmp_path, monkeypatch):
  """The disk's free space plus the cache folder's entries: a resume whose entry fills the
  disk is not refused; the most views that fit are on disk or in the RAM budget."""
  lay = cache_store.Layout(num_views=4, num_train=10, num_test=2, view_shape=(256,),
                           dtype=np.dtype(np.float32), ram_budget_bytes=0)
  usage = lambda p: type('U', (), {'free': 1024 * 30})()  # 2 KiB test + 2 x 10 KiB views
  monkeypatch.setattr(cache_store.shutil, 'disk_usage', usage)
  problem = cache_store.room_problem(lay, tmp_path / 'cache')
  assert problem.startswith('config.cache.num_train_views=4: 4 views of 10 training rows '
                            'make a 42.0 KiB feature cache')
  assert problem.endswith('has room for 30.0 KiB; lower it to at most 2')
  (tmp_path / 'cache' / '0123456789abcdef').mkdir(parents=True)
  (tmp_path / 'cache' / '0123456789abcdef' / 'train.bin').write_bytes(b'0' * lay.total_bytes)
  assert cache_store.room_problem(lay, tmp_path / 'cache') is None
  huge = cache_store.room_problem(dataclasses.replace(lay, num_views=10 ** 20),
                                  tmp_path / 'cache')
  assert huge.endswith('room for 72.0 KiB; lower it to at most 7')


def test_no_room_for_one_view_names_a_fix_that_helps(tmp_path, monkeypatch):
  """'even 1 view does not fit ... set config.cache.dtype='float16'' was said of a cache
  already in float16, where it changes nothing."""
  monkeypatch.setattr(cache_store.shutil, 'disk_usage',
                      lambda p: type('U', (), {'free': 100})())
  for dtype, fix in ((np.float32, "set config.cache.dtype='float16'"),
                     (np.float16, 'turn the cache off (config.cache.enabled=False)')):
    lay = cache_store.Layout(num_views=4, num_train=10, num_test=2, view_shape=(256,),
                             dtype=np.dtype(dtype), ram_budget_bytes=0)
    problem = cache_store.room_problem(lay, tmp_path / 'cache')
    assert problem.endswith(f'even 1 view does not fit: free space, or {fix}'), problem


def test_float16_overflow_is_a_one_line_error():
  out = np.zeros((2, 3), np.float16)
  encode = lambda v, x, flip: np.full((2, 3), 1e6, np.float32)
  src = [{'image': b''}] * 2
  with pytest.raises(TrainingError, match='cache.dtype=float32'):
    feature_cache.encode_rows(encode, None,
                               lambda read, i: [(np.zeros((4, 4, 3), np.uint8), False)],
                               src, np.arange(2), parallel.make_mesh(), 2, 4, [out], '', False)


def test_layout_sizes_at_224():
  """The README's figures: MobileNetV2 pooled 1280 f32; VGG16 7x7x512 f16."""
  mn = feature_cache.layout(models.create_model(models.model_config()),
                            _config('mobilenet_v2', **{'input.image_size': 224,
                                                        'cache.num_train_views': 4}),
                            8900, 2203)
  assert mn.view_shape == (1280,) and mn.bytes_per_view == 5120
  assert mn.total_bytes == 5120 * (4 * 8900 + 2203) and not mn.on_disk
  vgg = feature_cache.layout(models.create_model(models.model_config(arch='vgg16')),
                             _config('mobilenet_v2', **{'input.image_size': 224,
                                                        'cache.num_train_views': 1}),
                             8900, 2203)
  assert vgg.view_shape == (7, 7, 512) and vgg.bytes_per_view == 7 * 7 * 512 * 2
  assert 'per view' in vgg.describe() and 'in RAM' in vgg.describe()
  with pytest.raises(TrainingError, match='config.cache.dtype'):
    cache_store.storage_dtype('float64', (3,))
  # --config.cache.ram_budget_gb=1e300, as good as no limit, was an OverflowError traceback.
  huge = feature_cache.layout(models.create_model(models.model_config()),
                              _config('mobilenet_v2', **{'cache.ram_budget_gb': 1e300}), 10, 5)
  assert not huge.on_disk and 'in RAM' in huge.describe()


def test_trainer_disk_cache_equals_ram_and_resumes(data_dir, tmp_path, capsys):
  ram = trainer.train_and_evaluate(_config('mobilenet_v2', data_dir), tmp_path / 'ram')
  assert 'in RAM' in capsys.readouterr().out and not (tmp_path / 'ram' / 'cache').exists()
  c = _config('mobilenet_v2', data_dir, **{'cache.ram_budget_gb': 1e-9})
  disk = trainer.train_and_evaluate(c, tmp_path / 'disk')
  assert 'on disk, memory-mapped' in capsys.readouterr().out
  labels = {k for k, v in ram.items() if isinstance(v, str)}  # eval_split, selected_by, ...
  assert {k: disk[k] for k in labels} == {k: ram[k] for k in labels}
  assert ({k: v for k, v in disk.items() if k not in labels}
          == pytest.approx({k: v for k, v in ram.items() if k not in labels}, rel=0, abs=0,
                           nan_ok=True))
  _, v_ram, _, _ = restore.restore_for_inference(tmp_path / 'ram')
  _, v_disk, _, _ = restore.restore_for_inference(tmp_path / 'disk')
  jax.tree.map(np.testing.assert_array_equal, v_ram, v_disk)
  entries = list((tmp_path / 'disk' / 'cache').iterdir())
  assert len(entries) == 1 and (entries[0] / 'manifest.json').is_file()
  mtime = (entries[0] / 'train.bin').stat().st_mtime_ns
  c.num_train_steps = 3  # resume from checkpoint 2: the entry is reused as it is
  assert trainer.train_and_evaluate(c, tmp_path / 'disk')['step'] == 3
  assert list((tmp_path / 'disk' / 'cache').iterdir()) == entries
  assert (entries[0] / 'train.bin').stat().st_mtime_ns == mtime


def test_a_damaged_cache_file_is_named_and_no_checkpoint_moved(data_dir, tmp_path):
  """NaNs written over the disk cache's rows (same size: the manifest's checks pass) made the
  first resumed step's loss NaN; the trainer blamed the checkpoint it resumed from and moved it
  away, one healthy checkpoint per rerun, telling the user to lower the learning rate. Now
  the error names the cache and the checkpoints stay."""
  c = _config('mobilenet_v2', data_dir, **{'cache.ram_budget_gb': 1e-9,
                                           'checkpoint_every_steps': 1, 'log_every_steps': 1})
  trainer.train_and_evaluate(c, tmp_path)
  entry, = (tmp_path / 'cache').iterdir()
  train = np.memmap(entry / 'train.bin', mode='r+', dtype=np.uint8)
  train[:] = 0xFF  # NaN in every float dtype's bytes
  train.flush()
  del train
  steps = sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  c.num_train_steps = 3
  for _ in range(2):  # the rerun the first message suggests: the same
    with pytest.raises(trainer.TrainingError) as e:
      trainer.train_and_evaluate(c, tmp_path)
    assert str(e.value) == (
        'non-finite loss (nan) at step 3: the cached features that step trained on are not '
        f'finite; the cache under {entry} is damaged: delete that folder and rerun to build it '
        'again (the checkpoints are kept)')
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()
                  if p.name.isdigit()) == steps
    assert not (tmp_path / 'diverged_checkpoints').exists()
  shutil.rmtree(entry)
  assert trainer.train_and_evaluate(c, tmp_path)['step'] == 3


def test_online_frozen_mode_trains_only_the_head(data_dir, tmp_path, capsys):
  c = _config('mobilenet_v2', data_dir, **{'cache.enabled': False})
  model = models.create_model(c.model)
  init = models.init_variables(model, c.seed, c.input.image_size)
  res = trainer.train_and_evaluate(c, tmp_path)
  out = capsys.readouterr().out
  assert 'online frozen encoder' in out and '2 steps x 8 = 16 train' in out
  assert res['step'] == 2 and not (tmp_path / 'cache').exists()
  _, variables, _, _ = restore.restore_for_inference(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, init['params']['encoder'],
               jax.device_get(variables['params']['encoder']))
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), init['params']['head'],
                       jax.device_get(variables['params']['head']))
  assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize('name', ['float32', 'float16', 'bfloat16'])
def test_disk_entry_round_trips_each_dtype(name, tmp_path):
  lay = cache_store.Layout(num_views=2, num_train=3, num_test=1, view_shape=(2, 2, 4),
                           dtype=cache_store.storage_dtype(name, (2, 2, 4)), ram_budget_bytes=0)
  assert lay.on_disk and cache_store.open_committed(tmp_path, 'a' * 16, lay) is None
  writer = cache_store.DiskWriter(tmp_path, 'a' * 16, lay)
  values = np.random.default_rng(0).standard_normal(lay.shapes()['train']).astype(lay.dtype)
  writer.arrays['train'][:] = values
  writer.arrays['test'][:] = 1.5
  assert cache_store.open_committed(tmp_path, 'a' * 16, lay) is None  # not committed yet
  got = writer.commit()
  again = cache_store.open_committed(tmp_path, 'a' * 16, lay)
  for arrays in (got, again):
    assert arrays['train'].dtype == lay.dtype
    np.testing.assert_array_equal(arrays['train'], values)
    np.testing.assert_array_equal(arrays['test'].astype(np.float32), 1.5)
  other = dataclasses.replace(lay, num_views=1)  # another layout under the same key: not used
  assert cache_store.open_committed(tmp_path, 'a' * 16, other) is None


def _jsonl(workdir, prefix):
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], {k: v for k, v in r.items() if k.startswith(prefix)})
          for r in rows if any(k.startswith(prefix) for k in r)]


def test_device_segments_equal_host_fed_steps(data_dir, tmp_path, monkeypatch, capsys):
  """With the cache on the device the steps between logs / evaluations / checkpoints run in
  one call (`make_train_segment`): the same batches, updates, logged losses and checkpoints as
  one host-fed step per call. VGG16's cached [P,P,C] maps, balanced sampling (uniform epochs:
  the index blocks below)."""
  arch = 'vgg16'
  over = {'num_train_steps': 7, 'log_every_steps': 2, 'eval_every_steps': 3,
          'checkpoint_every_steps': 3, 'optim.lr': 1e-2, 'input.balanced': True,
          'input.weighting': 'none',
          'cache.num_train_views': 2, 'keep_checkpoints': 3}
  calls = []
  make = trainer.make_train_segment
  monkeypatch.setattr(trainer, 'make_train_segment', lambda *a: calls.append(1) or make(*a))
  seg = trainer.train_and_evaluate(_config(arch, data_dir, **over), tmp_path / 'seg')
  assert calls == [1] and 'feature cache held on the devices' in capsys.readouterr().out
  host = trainer.train_and_evaluate(
      _config(arch, data_dir, **over, **{'cache.device_budget_gb': 0.0}), tmp_path / 'host')
  assert calls == [1]  # budget 0: one host-fed step per call
  assert 'fed from the host one at a time' in capsys.readouterr().out
  labels = {k for k, v in host.items() if isinstance(v, str)}
  assert {k: seg[k] for k in labels} == {k: host[k] for k in labels}
  assert ({k: v for k, v in seg.items() if k not in labels}
          == pytest.approx({k: v for k, v in host.items() if k not in labels}, rel=1e-5,
                           abs=1e-7, nan_ok=True))
  train_seg, train_host = _jsonl(tmp_path / 'seg', 'train/'), _jsonl(tmp_path / 'host', 'train/')
  assert [s for s, _ in train_seg] == [2, 4, 6, 7]
  for (s, a), (_, b) in zip(train_seg, train_host):
    assert a.keys() == b.keys()
    for k in a:
      if k != 'train/steps_per_sec':
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (s, k)
  assert _jsonl(tmp_path / 'seg', 'validation/') == _jsonl(tmp_path / 'host', 'validation/')
  for step in (3, 6, 7):
    _, v_seg, _, _ = restore.restore_for_inference(tmp_path / 'seg', step=step)
    _, v_host, _, _ = restore.restore_for_inference(tmp_path / 'host', step=step)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 jax.device_get(v_seg), jax.device_get(v_host))


def test_segment_boundaries_and_index_blocks():
  assert [trainer.next_boundary(s, 7, 2, 3, 3) for s in range(7)] == [2, 2, 3, 4, 6, 6, 7]
  assert trainer.next_boundary(5, 100, 50, 500, 500) == 50
  from aesthetics_jax.data import sampling  # pylint: disable=import-outside-toplevel
  cdf = np.cumsum(np.linspace(1, 2, 10))
  for c in (None, cdf):
    block = sampling.train_indices_block(3, 9, 10, 4, 5, c)
    want = np.stack([sampling.train_indices(s, 10, 4, 5, c) for s in range(3, 12)])
    np.testing.assert_array_equal(block, want)


def test_a_huge_eval_batch_size_is_capped_at_the_rows(data_dir, tmp_path, monkeypatch):
  """Evaluation batches are padded to the batch size: --config.eval.batch_size=20000 built the
  smoke run's cache and evaluated it in 3 GB and 3x the time. The batches hold at most the
  rows, rounded up to the devices."""
  sizes = []
  encode_rows, test_batches = feature_cache.encode_rows, feature_cache.FeatureCache.test_batches

  def encode_rows_spy(*a, **k):
    sizes.append(('encode', a[6]))  # (..., rows, mesh, batch_size, ...)
    return encode_rows(*a, **k)

  def test_batches_spy(self, batch_size):
    sizes.append(('test', batch_size))
    return test_batches(self, batch_size)

  monkeypatch.setattr(feature_cache, 'encode_rows', encode_rows_spy)
  monkeypatch.setattr(feature_cache.FeatureCache, 'test_batches', test_batches_spy)
  trainer.train_and_evaluate(_config('mobilenet_v2', data_dir, **{'eval.batch_size': 20000}),
                             tmp_path / 'w')
  devices = parallel.train_mesh().size
  assert sizes and max(s for _, s in sizes) <= -(-16 // devices) * devices, sizes


def test_the_host_fed_line_says_why(tmp_path):
  """'fed from the host ... (over config.cache.device_budget_gb)' was printed for a
  memory-mapped cache of a few KiB and for a budget of 0 alike: it names the real reason."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  ram = np.zeros((1, 4, 1280), np.float32)  # 20 KiB
  disk = np.memmap(tmp_path / 'train.bin', np.float32, 'w+', shape=ram.shape)
  cache = lambda train: feature_cache.FeatureCache(  # pylint: disable=unnecessary-lambda-assignment
      train=train, train_meta=None, train_weights=None, cdf=None, test=None, test_meta=None,
      test_weights=None, seed=0, mesh=mesh)
  assert cache(ram).host_fed_reason(1.0) is None
  assert 'memory-mapped' in cache(disk).host_fed_reason(1.0)
  assert cache(ram).host_fed_reason(0.0) == 'config.cache.device_budget_gb=0'
  assert cache(ram).host_fed_reason(1e-6).endswith('over config.cache.device_budget_gb=1e-06')


def test_a_resume_that_reuses_the_disk_cache_says_so(data_dir, tmp_path, capsys):
  """The cost line ('... 24 encoder passes once') was all a resume printed, then encoded
  nothing: whether the cache was reused went to the INFO log only."""
  c = _config('vgg16', data_dir, **{'cache.ram_budget_gb': 1e-9, 'num_train_steps': 1,
                                    'data.validation_fraction': 0.0})
  trainer.train_and_evaluate(c, tmp_path / 'w')
  assert 'feature cache reused' not in capsys.readouterr().out
  c.num_train_steps = 2
  trainer.train_and_evaluate(c, tmp_path / 'w')
  out = capsys.readouterr().out
  assert f'feature cache reused from {tmp_path / "w" / "cache"}/' in out, out


def test_the_online_cost_line_counts_the_validation_evaluations():
  """With a validation split (the default) the periodic evaluations run on it and the test
  split once: the line said '80 per evaluation x 1' for a 300 / 80 / 30 run (at the paper's
  size 26 x 2,203 test passes for 26 x 890 validation + 2,203)."""
  c = mobilenet_v2_emd.get_config()
  c.batch_size, c.eval_every_steps = 32, 500
  line = feature_cache.describe_online(c, 12516, 2203, 890)
  assert line.endswith('encoder passes: 12516 steps x 32 = 400512 train + 890 validation per '
                       'evaluation x 26 + 2203 test = 425855'), line
  assert feature_cache.describe_online(c, 4, 80).endswith('+ 80 per evaluation x 1 = 208')
