"""Weight import: parity with torchvision through committed fixtures (no torch needed),
converter round trips, dont_load, and the one-line errors."""
import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from aesthetics_jax import models
from aesthetics_jax.models import pretrained

FIXTURES = Path(__file__).parent / 'fixtures'
META = json.loads((FIXTURES / 'fixtures.json').read_text())
MNV2_FILE = FIXTURES / META['mobilenet_v2']['file']
VGG_FILE = FIXTURES / META['vgg']['file']
NEW_HEADS = (r'^params/head/(score|tags|logit)/',)


def _model(arch, imagenet=True, width=None, depthwise='auto'):
  key = 'vgg' if arch == 'vgg16' else 'mobilenet_v2'
  cfg = models.model_config(arch=arch, width_mult=width or META[key]['width_mult'],
                            fc_dim=META['vgg']['fc_dim'], dropout=0.5, depthwise=depthwise,
                            dtype='float32')
  return models.create_model(cfg, imagenet_classes=META[key]['num_classes'] if imagenet else 0)


def _init(model, size=64, seed=42):
  """`model.init`'s structure, numpy-filled (jit of init compiles threefry for 10-25 s)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


@pytest.fixture(scope='module')
def io():
  with np.load(FIXTURES / 'parity_io.npz') as z:
    return {k: z[k] for k in z.files}


def test_fixture_sizes():
  sizes = {p.name: p.stat().st_size for p in FIXTURES.iterdir() if p.is_file()}
  assert all(s < 2_000_000 for s in sizes.values()), sizes
  assert sum(sizes.values()) < 1_500_000, sizes


# Depthwise 'shift' (the CPU's choice, named here because the suite makes 'auto' 'conv':
# conftest.py) == 'conv' is tested in test_models.
@pytest.mark.parametrize('arch,key,depthwise', [
    ('mobilenet_v2', 'mobilenet_v2', 'shift'), ('vgg16', 'vgg', 'auto')])
def test_parity_with_torchvision_fixture(io, arch, key, depthwise):
  model = _model(arch, depthwise=depthwise)
  variables = pretrained.load_pretrained(_init(model), FIXTURES / META[key]['file'],
                                         dont_load=NEW_HEADS)
  feats = jax.jit(lambda v, x: model.apply(v, x, method='features'))(variables, io['x'])
  logits = jax.jit(lambda v, a: model.apply(v, a, method='head'))(variables, feats)
  np.testing.assert_allclose(feats, io[f'{key}_features'], atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits['imagenet_logits'], io[f'{key}_logits'], atol=1e-4, rtol=0)


def test_vgg_keeps_empty_batch_stats_and_fresh_logit():
  model = _model('vgg16', imagenet=False)
  fresh = dict(_init(model, 32), batch_stats={})  # as train.init_variables builds it
  loaded = pretrained.load_pretrained(fresh, VGG_FILE)
  assert loaded['batch_stats'] == {}
  np.testing.assert_array_equal(loaded['params']['head']['logit']['kernel'],
                                fresh['params']['head']['logit']['kernel'])
  assert not np.array_equal(loaded['params']['head']['fc7']['kernel'],
                            fresh['params']['head']['fc7']['kernel'])


def test_fc6_permutation_nchw_to_nhwc():
  rng = np.random.default_rng(0)
  c, p, out = 3, 2, 5
  w = rng.normal(size=(out, c * p * p)).astype(np.float32)       # torch Linear (out, in)
  a_nchw = rng.normal(size=(c, p, p)).astype(np.float32)
  state = {'features.0.weight': np.zeros((c, 3, 3, 3), np.float32),
           'features.0.bias': np.zeros(c, np.float32),
           'classifier.0.weight': w, 'classifier.0.bias': np.zeros(out, np.float32)}
  flat = pretrained.torch_to_flax(state, 'vgg16')
  ours = a_nchw.transpose(1, 2, 0).reshape(-1) @ flat['params/head/fc6/kernel']
  np.testing.assert_allclose(ours, w @ a_nchw.reshape(-1), rtol=1e-5, atol=1e-6)


def test_conversion_layouts():
  raw = load_file(str(MNV2_FILE))
  flat = pretrained.torch_to_flax(raw, 'mobilenet_v2')
  dw = raw['features.2.conv.1.0.weight']                           # (C, 1, 3, 3)
  np.testing.assert_array_equal(flat['params/encoder/features_2/depthwise/conv/kernel'],
                                dw.astype(np.float32).transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(flat['batch_stats/encoder/features_2/expand/bn/var'],
                                raw['features.2.conv.0.1.running_var'].astype(np.float32))
  np.testing.assert_array_equal(flat['params/encoder/features_1/project/bn/scale'],
                                raw['features.1.conv.2.weight'].astype(np.float32))
  np.testing.assert_array_equal(flat['params/head/classifier/kernel'],
                                raw['classifier.1.weight'].astype(np.float32).T)
  assert not any('num_batches_tracked' in k for k in flat)
  assert all(v.dtype == np.float32 for v in flat.values())


@pytest.fixture(scope='module')
def mnv2_fresh():
  model = _model('mobilenet_v2', imagenet=False)
  return model, _init(model, 32)


def test_round_trip_npz_safetensors_and_dont_load(tmp_path, mnv2_fresh):
  model, fresh = mnv2_fresh
  raw = load_file(str(MNV2_FILE))
  # Raw torch-keyed .npz, converter .npz, and a flax-keyed .safetensors all load the same.
  np.savez(tmp_path / 'raw.npz', **raw)
  converted, meta = pretrained.convert_file(MNV2_FILE, tmp_path / 'out', 'mobilenet_v2')
  assert converted == tmp_path / 'out' / 'mobilenet_v2.npz'
  side = json.loads((tmp_path / 'out' / 'mobilenet_v2.npz.json').read_text())
  assert side['arch'] == 'mobilenet_v2' and side['width_mult'] == 0.25 and meta == {
      k: side[k] for k in meta}
  flat, _ = pretrained.read_weights(converted)
  save_file(flat, str(tmp_path / 'flax.safetensors'))
  loaded = [pretrained.load_pretrained(fresh, p) for p in
            (MNV2_FILE, tmp_path / 'raw.npz', converted, tmp_path / 'flax.safetensors')]
  ref = pretrained.flatten_variables(loaded[0])
  for other in loaded[1:]:
    other = pretrained.flatten_variables(other)
    assert set(other) == set(ref)
    for k in ref:
      np.testing.assert_array_equal(other[k], ref[k], err_msg=k)
  # Encoder comes from the file; new heads keep their fresh initialisation.
  fresh_flat = pretrained.flatten_variables(fresh)
  np.testing.assert_array_equal(ref['params/encoder/features_0/conv/kernel'],
                                flat['params/encoder/features_0/conv/kernel'])
  assert not np.array_equal(ref['params/encoder/features_0/conv/kernel'],
                            fresh_flat['params/encoder/features_0/conv/kernel'])
  for k in ('params/head/score/kernel', 'params/head/tags/kernel', 'params/head/tags/bias'):
    np.testing.assert_array_equal(ref[k], fresh_flat[k])
  assert 'params/head/classifier/kernel' not in ref  # ImageNet's classifier is not loaded
  # The loaded tree has the model's structure and runs.
  assert jax.tree.structure(loaded[0]) == jax.tree.structure(fresh)


def _one_line_error(fn, *needles):
  with pytest.raises(pretrained.PretrainedError) as e:
    fn()
  msg = str(e.value)
  assert '\n' not in msg, msg
  for n in needles:
    assert n in msg, (n, msg)
  return msg


def test_missing_unexpected_misshaped_errors(tmp_path, mnv2_fresh):
  _, fresh = mnv2_fresh
  flat, meta = pretrained.read_weights(MNV2_FILE)
  gone = 'params/encoder/features_3/project/conv/kernel'
  missing = {k: v for k, v in flat.items() if k != gone}
  pretrained.save_flat(missing, tmp_path / 'missing.npz', meta)
  _one_line_error(lambda: pretrained.load_pretrained(fresh, tmp_path / 'missing.npz'),
                  'missing key', gone, 'missing.npz')
  extra = dict(flat, **{'params/encoder/features_99/conv/kernel': np.zeros(3, np.float32)})
  pretrained.save_flat(extra, tmp_path / 'extra.npz', meta)
  _one_line_error(lambda: pretrained.load_pretrained(fresh, tmp_path / 'extra.npz'),
                  'unexpected key', 'features_99', 'extra.npz')
  # Width 0.5 model, width 0.25 file: named key, both shapes, the file and the fix.
  wide = jax.eval_shape(_model('mobilenet_v2', imagenet=False, width=0.5).init,
                        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  _one_line_error(lambda: pretrained.load_pretrained(wide, MNV2_FILE),
                  'features_0/bn/mean has shape (8,), model expects (16,)',
                  str(MNV2_FILE), 'width_mult=0.25')
  # A VGG file for a MobileNetV2 model.
  _one_line_error(lambda: pretrained.load_pretrained(fresh, VGG_FILE, arch='mobilenet_v2'),
                  'vgg16', str(VGG_FILE))
  # Wrong extension, missing file, corrupt file.
  (tmp_path / 'w.bin').write_bytes(b'x')
  _one_line_error(lambda: pretrained.read_arrays(tmp_path / 'w.bin'), 'w.bin', '.safetensors')
  _one_line_error(lambda: pretrained.read_arrays(tmp_path / 'nope.npz'), 'not found')
  (tmp_path / 'bad.safetensors').write_bytes(b'garbage')
  _one_line_error(lambda: pretrained.read_arrays(tmp_path / 'bad.safetensors'), 'bad.safetensors')


def test_folder_written_by_convert_weights_loads(tmp_path, mnv2_fresh):
  """README: `convert_weights --out=/data/weights/mnv2`, then
  `--config.model.init_weights=/data/weights/mnv2` (the folder, not the file in it)."""
  _, fresh = mnv2_fresh
  folder = tmp_path / 'weights' / 'mnv2'
  written, _ = pretrained.convert_file(MNV2_FILE, folder, 'mobilenet_v2')
  assert written == folder / 'mobilenet_v2.npz'
  ref = pretrained.flatten_variables(pretrained.load_pretrained(fresh, written))
  for arch in ('mobilenet_v2', None):  # the config's arch, or the one file the folder holds
    got = pretrained.flatten_variables(pretrained.load_pretrained(fresh, folder, arch=arch))
    assert set(got) == set(ref)
    for k in ref:
      np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
  # A folder without this arch's file: the folder, what it holds, the command that fills it.
  _one_line_error(lambda: pretrained.load_pretrained(fresh, folder, arch='vgg16'),
                  f'{folder}: a folder without vgg16.npz',
                  'mobilenet_v2.npz, mobilenet_v2.npz.json',
                  'aesthetics-convert-weights --arch=vgg16 --source=', f'--out={folder}')
  _one_line_error(lambda: pretrained.read_weights(tmp_path, 'mobilenet_v2'),
                  f'{tmp_path}: a folder without mobilenet_v2.npz (it holds weights)')
  (tmp_path / 'empty').mkdir()
  _one_line_error(lambda: pretrained.read_weights(tmp_path / 'empty'), 'is empty',
                  '--arch=<arch>')


def test_unknown_torch_key_error():
  raw = dict(load_file(str(MNV2_FILE)), **{'features.1.extra.weight': np.zeros(3, np.float32)})
  _one_line_error(lambda: pretrained.torch_to_flax(raw, 'mobilenet_v2', 'x.pth'),
                  "'features.1.extra.weight'", 'x.pth')


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
  (tmp_path / 'w.pth').write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)  # makes `import torch` raise ImportError
  _one_line_error(lambda: pretrained.read_arrays(tmp_path / 'w.pth'),
                  "pip install -e '.[torch]'", 'w.pth')


def test_convert_weights_cli(tmp_path):
  ok = subprocess.run([sys.executable, '-m', 'launch.convert_weights', '--arch=vgg16',
                       f'--source={VGG_FILE}', f'--out={tmp_path / "v.npz"}'],
                      capture_output=True, text=True, cwd=Path(__file__).parents[1])
  assert ok.returncode == 0, ok.stderr
  assert (tmp_path / 'v.npz').is_file() and (tmp_path / 'v.npz.json').is_file()
  flat, meta = pretrained.read_weights(tmp_path / 'v.npz')
  assert meta['arch'] == 'vgg16' and meta['width_mult'] == META['vgg']['width_mult']
  assert 'params/head/fc6/kernel' in flat
  bad = subprocess.run([sys.executable, '-m', 'launch.convert_weights', '--arch=mobilenet_v2',
                        f'--source={VGG_FILE}', f'--out={tmp_path}'],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
  assert bad.returncode == 1
  lines = [l for l in bad.stderr.splitlines() if l.startswith('convert_weights:')]
  assert len(lines) == 1 and 'vgg16' in lines[0] and 'Traceback' not in bad.stderr
  # Flags that cannot work are exit 2 before any reading (an --out under /proc was exit 1 with
  # a bare "[Errno 2] No such file or directory").
  (tmp_path / 'file').write_text('x')
  for args, expect in (([f'--source={tmp_path / "nope.pth"}', f'--out={tmp_path}'],
                        'nope.pth: no such file; pass a torchvision weights file'),
                       ([f'--source={VGG_FILE}', f'--out={tmp_path / "file" / "w"}'],
                        'is a file; pass a folder you can write to')):
    r = subprocess.run([sys.executable, '-m', 'launch.convert_weights', '--arch=vgg16', *args],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 2 and expect in r.stderr and r.stderr.count('\n') == 1, r.stderr


@pytest.mark.parametrize('name,config', [('mobilenet_v2_1.0', 'mobilenet_v2_emd'),
                                         ('vgg16', 'vgg16_binary:score')])
def test_paper_configs_take_the_full_torchvision_weights(name, config):
  """README's recipe: torchvision's full-size ImageNet files, converted, fit the paper
  configs' models key for key and shape for shape (shapes only: no 528 MB of VGG)."""
  from aesthetics_jax.cli import config_args
  c = config_args.load(config_args.resolve_path(config))
  expected = pretrained.torch_to_flax_shapes(META['torchvision_shapes'][name], c.model.arch)
  model = models.create_model(c.model)
  size = int(c.input.image_size)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  ours = {k: tuple(v.shape) for k, v in pretrained.flatten_variables(shapes).items()}
  loaded = lambda d: {k: v for k, v in d.items()
                      if not any(re.search(p, k) for p in pretrained.DEFAULT_DONT_LOAD)}
  assert loaded(ours) == loaded(expected)


# Damaged files: one PretrainedError line naming the file, from every entry point (read,
# train's `init_weights` = load_pretrained, the converter), and the converter writes nothing.
def _damaged(tmp_path, src, *needles, named=None):
  out = tmp_path / 'out'
  for fn in (lambda: pretrained.read_weights(src),
             lambda: pretrained.load_pretrained({}, src, arch='mobilenet_v2'),
             lambda: pretrained.convert_file(src, out, 'mobilenet_v2')):
    _one_line_error(fn, str(named or src), *needles)
  assert not out.exists()


def _converted_with_sidecar(tmp_path, text):
  path, _ = pretrained.convert_file(MNV2_FILE, tmp_path / 'w.npz', 'mobilenet_v2')
  Path(f'{path}.json').write_text(text)
  return path


def test_sidecar_not_json(tmp_path):
  path = _converted_with_sidecar(tmp_path, '{not json')
  _damaged(tmp_path, path, 'not valid JSON', 'delete it', named=f'{path}.json')
  # The CLI prints that one line, no traceback, and writes nothing.
  bad = subprocess.run([sys.executable, '-m', 'launch.convert_weights', '--arch=mobilenet_v2',
                        f'--source={path}', f'--out={tmp_path / "cli"}'],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr, bad.stderr
  lines = [l for l in bad.stderr.splitlines() if l.startswith('convert_weights:')]
  assert len(lines) == 1 and f'{path}.json: not valid JSON' in lines[0], bad.stderr
  assert not (tmp_path / 'cli').exists()


def test_sidecar_not_an_object(tmp_path):
  path = _converted_with_sidecar(tmp_path, '[1,2]')
  _damaged(tmp_path, path, 'JSON list, not an object', 'delete it', named=f'{path}.json')
  # An arch we do not know would otherwise be written as `<out>/resnet.npz`.
  path = _converted_with_sidecar(tmp_path, '{"arch": "resnet"}')
  _damaged(tmp_path, path, "arch='resnet' is not one of", named=f'{path}.json')


@pytest.mark.parametrize('ext', ['npz', 'pth'])
def test_conv_weight_of_wrong_rank(tmp_path, ext):
  raw = dict(load_file(str(MNV2_FILE)))
  raw['features.0.0.weight'] = raw['features.0.0.weight'].reshape(8, -1)  # (O, I*H*W)
  src = tmp_path / f'w.{ext}'
  if ext == 'pth':
    torch = pytest.importorskip('torch')
    torch.save({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in raw.items()}, src)
  else:
    np.savez(src, **raw)
  _damaged(tmp_path, src, 'features.0.0.weight has shape (8, 27)', 'has 4 dims')


def test_pth_with_non_string_keys(tmp_path):
  torch = pytest.importorskip('torch')
  torch.save({0: torch.zeros(3), 1: torch.zeros(3)}, tmp_path / 'w.pth')
  _damaged(tmp_path, tmp_path / 'w.pth', 'non-string keys such as 0',
           'not a torchvision state_dict')
