"""Training images prepared decoded and resized (`data/resized_store.py`): the pipeline and the
feature cache crop from them with the pixels of decoding, and a bad store is never used."""
from pathlib import Path

import numpy as np
import pytest

from aesthetics_jax import parallel
from aesthetics_jax.data import dataset, decoder, pipeline, preprocess, resized_store
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
  (tmp_path / 'x.json').write_text('{"dataset": "abc", "rows": 1, "size": 40}')
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
