"""Training images prepared decoded and resized (`data/resized_store.py`): the pipeline and the
feature cache crop from them with the pixels of decoding, and a bad store is never used."""
import errno
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aesthetics_jax import parallel
from aesthetics_jax.data import ava, dataset, decoder, pipeline, preprocess, resized_store
from aesthetics_jax.data import validation
from source_fixture import take, tiny_config
from tiny_ava import prepare_tiny

RS = 40  # tiny_config's resize_size


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """(data_dir, TFDS train source, the same with its store), the store built by
  `dataset.prepare_resized` as aesthetics-prepare-data builds it."""
  data_dir = prepare_tiny(tmp_path_factory.mktemp('resized'), num_train=20, num_test=4)
  done = dataset.prepare_resized(data_dir, 'style', [RS, 48], progress=False)
  assert {s: w for s, (_, w) in done.items()} == {RS: 'built', 48: 'built'}
  plain = dataset.load_sources(data_dir, 'style')['train']
  attached = resized_store.attach(plain, dataset.dataset_dir(data_dir, 'style'), 'train', RS)
  assert isinstance(attached, resized_store.WithResized) and attached.resized_size == RS
  return data_dir, plain, attached


def _no_decoding(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('decoded although the resized store holds the image')
  monkeypatch.setattr(decoder, 'decode_pil', refuse)


def test_store_holds_the_pipelines_resize_of_every_row(data):
  _, plain, attached = data
  for i in range(len(plain)):
    want = preprocess.resize_train_np(plain[i]['image'], RS)
    np.testing.assert_array_equal(attached.resized(i), want)


def test_batches_from_the_store_are_those_of_decoding(data, monkeypatch):
  """Bit-identical training batches (crops, flips, targets), also through a row view (the
  trainer's validation split); with the store nothing is decoded."""
  _, plain, attached = data
  mesh = parallel.make_mesh()
  c = tiny_config(random_flip=True)
  rows = np.array([3, 1, 4, 15, 9, 2, 6, 5, 19, 7])
  want = {'all': take(pipeline.train_batches(plain, c, mesh), 3),
          'view': take(pipeline.train_batches(validation.Rows(plain, rows), c, mesh), 3)}
  _no_decoding(monkeypatch)
  got = {'all': take(pipeline.train_batches(attached, c, mesh), 3),
         'view': take(pipeline.train_batches(validation.Rows(attached, rows), c, mesh), 3)}
  for k in want:
    for a, b in zip(want[k], got[k]):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{k} {key}')
  # A store of another side is not this config's: the pipeline decodes (and fails here).
  with pytest.raises(AssertionError, match='decoded although'):
    take(pipeline.train_batches(attached, tiny_config(resize_size=48), mesh), 1)


def test_feature_cache_views_from_the_store_are_those_of_decoding(data, monkeypatch):
  from aesthetics_jax.train import feature_cache  # pylint: disable=import-outside-toplevel
  _, plain, attached = data
  encode = lambda v, x, flip: np.asarray(x, np.float32).reshape(len(x), -1)[:, :16] + flip[:, None]
  mesh = parallel.make_mesh()
  outs = {}
  for name, src in (('plain', plain), ('store', attached)):
    if name == 'store':
      _no_decoding(monkeypatch)
    fn = feature_cache.train_views_fn(RS, 32, 0, 3, True,
                                      resized_store.resized_fn(src, RS))
    o = [np.zeros((len(src), 16), np.float32) for _ in range(3)]
    feature_cache.encode_rows(encode, None, fn, src, np.arange(len(src)), mesh, 4, 32, o, '',
                              False)
    outs[name] = o
  for a, b in zip(outs['plain'], outs['store']):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(outs['plain'][0], outs['plain'][1])


def test_a_store_of_another_dataset_or_shape_or_a_damaged_one_is_not_used(data, tmp_path,
                                                                           caplog, monkeypatch):
  data_dir, plain, _ = data
  n = len(plain)
  f = tmp_path / 'x.npy'
  assert resized_store.load(f, n, RS, 'abc') is None and not caplog.text  # none: silently
  np.save(f, np.zeros((n, RS, RS, 3), np.uint8))
  assert resized_store.load(f, n, RS, 'abc') is None  # no record of its build: unfinished
  assert 'no record of its build' in caplog.text
  (tmp_path / 'x.json').write_text(
      '{"dataset": "abc", "rows": 1, "size": 40, "decoder": "%s"}' % decoder.RULE)
  assert resized_store.load(f, n, RS, 'abc') is not None
  assert resized_store.load(f, n, RS, 'xyz') is None  # the dataset was prepared again
  assert 'prepared again since' in caplog.text
  np.save(f, np.zeros((n - 1, RS, RS, 3), np.uint8))
  assert resized_store.load(f, n, RS, 'abc') is None
  np.save(f, np.zeros((n, RS, RS, 3), np.uint8))
  f.write_bytes(f.read_bytes()[:1000])  # truncated
  assert resized_store.load(f, n, RS, 'abc') is None
  assert 'decoding the training images instead' in caplog.text
  # The real store, once its dataset has been prepared again: not attached.
  d = dataset.dataset_dir(data_dir, 'style')
  assert resized_store.attach(plain, d, 'train', RS) is not plain
  monkeypatch.setattr(resized_store, 'fingerprint', lambda d: 'prepared again')
  assert resized_store.attach(plain, d, 'train', RS) is plain


def test_a_dataset_prepared_again_from_swapped_images_gets_a_new_store(tmp_path):
  """Deleting the dataset to rebuild it from other images of the same sizes (two swapped
  here) gave a byte-identical dataset_info.json: the old store was 'kept', and training
  cropped the old pixels under the new records' labels."""
  from tiny_ava import write_tiny_ava  # pylint: disable=import-outside-toplevel
  ava_dir = write_tiny_ava(tmp_path / 'ava', num_train=4, num_test=2)
  data_dir, d = tmp_path / 'tfds', dataset.dataset_dir(tmp_path / 'tfds', 'style')
  dataset.prepare(ava_dir, data_dir, 'style')
  assert dataset.prepare_resized(data_dir, 'style', [RS], progress=False)[RS][1] == 'built'
  info = (d / 'dataset_info.json').read_bytes()
  a, b = ava.image_path(ava_dir, 1000), ava.image_path(ava_dir, 1001)
  data_a, data_b = a.read_bytes(), b.read_bytes()
  a.write_bytes(data_b)
  b.write_bytes(data_a)
  shutil.rmtree(d)
  dataset.prepare(ava_dir, data_dir, 'style')
  assert (d / 'dataset_info.json').read_bytes() == info  # what the store was tied to
  assert dataset.prepare_resized(data_dir, 'style', [RS], progress=False)[RS][1] == 'built'
  plain = dataset.load_sources(data_dir, 'style')['train']
  attached = resized_store.attach(plain, d, 'train', RS)
  assert isinstance(attached, resized_store.WithResized)
  for i in range(len(plain)):
    np.testing.assert_array_equal(attached.resized(i),
                                  preprocess.resize_train_np(plain[i]['image'], RS))
  # A rerun over the same build keeps it.
  assert dataset.prepare_resized(data_dir, 'style', [RS], progress=False)[RS][1] == 'kept'


def test_a_failed_build_leaves_no_file(data, tmp_path):
  _, plain, _ = data

  class Broken:
    def __len__(self):
      return len(plain)

    def __getitem__(self, i):
      return {'image': b'not an image' if i == 7 else plain[i]['image'], 'image_id': i}
  out = tmp_path / 'store.npy'
  with pytest.raises(decoder.DecodeError, match='row 7'):
    resized_store.build(Broken(), RS, out, progress=False)
  assert list(tmp_path.iterdir()) == []
  # Rebuilt over a store with a record: the old record goes before the new file lands.
  resized_store.build(plain, RS, out, progress=False, dataset='old')
  assert resized_store.load(out, len(plain), RS, 'old') is not None
  with pytest.raises(decoder.DecodeError, match='row 7'):
    resized_store.build(Broken(), RS, out, progress=False)
  assert resized_store.load(out, len(plain), RS, 'old') is not None  # the old one is intact
  resized_store.build(plain, RS, out, progress=False, workers=3, dataset='new')
  assert resized_store.load(out, len(plain), RS, 'old') is None
  np.testing.assert_array_equal(resized_store.load(out, len(plain), RS, 'new')[5],
                                preprocess.resize_train_np(plain[5]['image'], RS))


def test_prepare_resized_keeps_a_built_store_and_leaves_one_out_without_room(data,
                                                                              monkeypatch):
  data_dir, _, _ = data
  again = dataset.prepare_resized(data_dir, 'style', [RS], progress=False)
  assert again[RS][1] == 'kept'

  class Usage:
    free = 1000
  monkeypatch.setattr(dataset.shutil, 'disk_usage', lambda p: Usage)
  none = dataset.prepare_resized(data_dir, 'style', [56], progress=False)
  path, what = none[56]
  assert what.startswith('not built: needs 0.00 GB') and not Path(path).exists()
  over = dataset.prepare_resized(data_dir, 'style', [56], progress=False, max_gb=1e-6)
  assert over[56][1].startswith('not built: 0.000175 GiB is over the 1e-06 GiB bound')
  for bad in (float('nan'), -1.0, 0.0):  # nan compared false: no bound at all
    with pytest.raises(ValueError, match='use a positive number of GiB'):
      dataset.prepare_resized(data_dir, 'style', [56], progress=False, max_gb=bad)


def _no_room(*args):
  raise OSError(errno.ENOSPC, 'No space left on device')


def _unsupported(*args):
  raise OSError(errno.EOPNOTSUPP, 'Operation not supported')


class _FillingFile:
  """A file on a disk that fills after `room` bytes: write() then raises ENOSPC."""

  def __init__(self, f, room: int):
    self.f, self.room = f, room

  def __getattr__(self, name):
    return getattr(self.f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()

  def write(self, data) -> int:
    self.room -= len(data)
    if self.room < 0:
      _no_room()
    return self.f.write(data)


@pytest.mark.parametrize('where', ['allocation', 'write'])
def test_a_disk_that_fills_during_the_build_leaves_the_store_out(data, monkeypatch, where):
  """Rows were written through a memory map of a sparse file: on a full disk the kernel kills
  the process (SIGBUS, exit 135) and the .tmp file stays. Now the build's ENOSPC leaves the
  store out (prepare goes on: training decodes) and nothing behind."""
  data_dir, plain, _ = data
  if where == 'allocation':
    monkeypatch.setattr(resized_store.os, 'posix_fallocate', _no_room)
  else:  # a filesystem that cannot allocate ahead: the disk fills at the fourth row
    monkeypatch.setattr(resized_store.os, 'posix_fallocate', _unsupported)
    real_open = open
    monkeypatch.setattr(resized_store, 'open', lambda p, mode='r': _FillingFile(
        real_open(p, mode), 4 * 24 * 24 * 3 + 200), raising=False)
  folder = resized_store.path(dataset.dataset_dir(data_dir, 'style'), 'train', 24).parent
  before = sorted(folder.iterdir())
  done = dataset.prepare_resized(data_dir, 'style', [24], progress=False)
  assert done[24][1] == 'not built: No space left on device'
  assert sorted(folder.iterdir()) == before  # no .tmp, no store, no record


def _tmpfs(folder: Path, size: str):
  """A real small disk: a tmpfs mounted at `folder` (root only), or a skip."""
  folder.mkdir()
  res = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)],
                       capture_output=True, text=True, check=False)
  if res.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {res.stderr.strip()}')


_FILL = textwrap.dedent('''
    import errno, io, os, sys
    from PIL import Image
    from aesthetics_jax.data import resized_store
    if sys.argv[2] == 'write':  # no allocation ahead: the disk fills at a write
      def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, 'Operation not supported')
      os.posix_fallocate = unsupported
    buf = io.BytesIO()
    Image.new('RGB', (64, 64), (1, 2, 3)).save(buf, 'JPEG')
    rows = [{'image': buf.getvalue(), 'image_id': i} for i in range(40)]  # 1.9 MB at 128
    try:
      resized_store.build(rows, 128, sys.argv[1], progress=False)
    except OSError as e:
      print(e.errno == errno.ENOSPC)
''')


@pytest.mark.parametrize('where', ['allocation', 'write'])
def test_a_real_full_disk_is_enospc_not_sigbus(tmp_path, where):
  mnt = tmp_path / 'small'
  _tmpfs(mnt, '1m')
  try:
    res = subprocess.run([sys.executable, '-c', _FILL, str(mnt / 's.npy'), where],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout == 'True\n', (res.returncode, res.stderr)
    assert list(mnt.iterdir()) == []
  finally:
    subprocess.run(['umount', str(mnt)], check=False)


@pytest.mark.parametrize('cache', [False, True])
def test_training_crops_the_prepared_images(data, tmp_path, monkeypatch, cache):
  """A training run whose data has prepared images at its resize_size never resizes a
  training image (online mode and the feature-cache build); the store is found by the
  trainer itself (dataset folder, split, size)."""
  from aesthetics_jax.configs import mobilenet_v2_emd  # pylint: disable=C0415
  from aesthetics_jax.train import trainer  # pylint: disable=C0415
  data_dir, _, _ = data
  c = mobilenet_v2_emd.get_config('smoke')
  c.log_cam_images = 0
  c.data.data_dir = str(data_dir)
  c.input.resize_size, c.input.image_size = RS, 32
  c.cache.enabled = cache

  def refuse(*args, **kwargs):
    raise AssertionError('a training image was decoded and resized')
  monkeypatch.setattr(preprocess, 'resize_train_np', refuse)
  res = trainer.train_and_evaluate(c, tmp_path / 'w')
  assert res['step'] >= 1
