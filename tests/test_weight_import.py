"""Weight import on the files users really pass: damaged, wrapped, pickled, foreign, lying
sidecars, odd paths. Each file is made here, small; errors are one line naming the file."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from aesthetics_jax.models import pretrained
from aesthetics_jax.models import weight_files

FIXTURES = Path(__file__).parent / 'fixtures'
MNV2_FILE = FIXTURES / 'mobilenet_v2_w025.safetensors'   # torchvision keys, float16
VGG_FILE = FIXTURES / 'vgg_tiny.safetensors'
ROOT = Path(__file__).parents[1]


def _raw(path=MNV2_FILE) -> dict[str, np.ndarray]:
  return dict(load_file(str(path)))


def _torch_state(raw=None):
  torch = pytest.importorskip('torch')
  return {k: torch.from_numpy(np.array(v)) for k, v in (raw or _raw()).items()}


def _error(fn, *needles) -> str:
  with pytest.raises(pretrained.PretrainedError) as e:
    fn()
  msg = str(e.value)
  assert '\n' not in msg and '\x1b' not in msg, msg
  for n in needles:
    assert n in msg, (n, msg)
  return msg


def _same_as_fixture(path, arch='mobilenet_v2', ref=MNV2_FILE):
  flat, meta = pretrained.read_weights(path, arch)
  want, _ = pretrained.read_weights(ref, arch)
  assert meta['arch'] == arch and set(flat) == set(want)
  for k in want:
    np.testing.assert_array_equal(flat[k], want[k], err_msg=k)
  return meta


def _convert_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'launch.convert_weights', *args],
                        capture_output=True, text=True, cwd=ROOT)


# --- .pth files that torch.load(weights_only=True) refuses, and empty or non-zip files ----

def test_pickled_whole_model_is_refused_with_the_fix(tmp_path):
  torch = pytest.importorskip('torch')
  torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), tmp_path / 'model.pth')
  # Was "not a readable torch checkpoint (UnpicklingError: Weights only load failed. This
  # file can still be loaded, ... \x1b[1mdo those steps ...)", terminal codes included.
  _error(lambda: pretrained.read_weights(tmp_path / 'model.pth'),
         str(tmp_path / 'model.pth'), 'a pickled torch.nn.modules.container.Sequential object',
         'torch.save(model)?', '.state_dict()')
  r = _convert_cli('--arch=mobilenet_v2', f'--source={tmp_path / "model.pth"}',
                   f'--out={tmp_path / "out"}')
  assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
  assert 'Traceback' not in r.stderr and '\x1b' not in r.stderr and 'a pickled' in r.stderr
  assert not (tmp_path / 'out').exists()


def test_random_bytes_pth_does_not_suggest_weights_only_false(tmp_path):
  pytest.importorskip('torch')
  (tmp_path / 'w.pth').write_bytes(np.random.default_rng(0).bytes(4096))
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.pth'), 'w.pth',
               'not a readable torch checkpoint', 'damaged')
  assert 'weights_only' not in msg  # torch's advice: unsafe, and no fix for a damaged file


@pytest.mark.parametrize('ext', ['pth', 'safetensors', 'npz'])
def test_empty_file(tmp_path, ext):
  (tmp_path / f'w.{ext}').write_bytes(b'')
  _error(lambda: pretrained.read_weights(tmp_path / f'w.{ext}'), f'w.{ext}: an empty file')


def test_npz_that_is_not_a_zip_is_not_read_as_a_pickle(tmp_path):
  (tmp_path / 'w.npz').write_bytes(b'garbage, not a zip')
  # Was numpy's "This file contains pickled (object) data. If you trust the file you can
  # load it unsafely using the `allow_pickle=` keyword argument".
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'), 'w.npz: not a .npz file')
  assert 'pickle' not in msg


# --- training checkpoints that wrap the state_dict -----------------------------------------

@pytest.mark.parametrize('wrap', ['model_ema', 'module', 'net', 'nested', 'timm_train'])
def test_wrapped_state_dicts_load(tmp_path, wrap):
  torch = pytest.importorskip('torch')
  sd = _torch_state()
  obj = {'model_ema': {'model_ema': sd, 'epoch': 3},  # was 'holds no arrays'
         'module': {'module': sd}, 'net': {'net': sd, 'optimizer': {'lr': 0.1}},
         'nested': {'checkpoint': {'weights': sd}, 'epoch': 3},  # one dict of tensors inside
         # timm's train.py saves its flags as an argparse.Namespace: was an UnpicklingError
         'timm_train': {'state_dict': sd, 'args': argparse.Namespace(lr=0.1), 'epoch': 3},
         }[wrap]
  torch.save(obj, tmp_path / 'w.pth')
  _same_as_fixture(tmp_path / 'w.pth')


def test_a_checkpoint_with_weights_and_their_ema_says_which_it_read(tmp_path, caplog):
  """{'state_dict', 'state_dict_ema'} (timm's train.py with --model-ema) loaded the first
  without saying so; a user who wanted the EMA weights could not tell."""
  torch = pytest.importorskip('torch')
  sd = _torch_state()
  torch.save({'state_dict': sd, 'state_dict_ema': sd, 'epoch': 3}, tmp_path / 'w.pth')
  with caplog.at_level('WARNING'):
    _same_as_fixture(tmp_path / 'w.pth')
  assert ("holds 'state_dict' and 'state_dict_ema': reading 'state_dict' (the first of"
          in caplog.text), caplog.text


def test_dict_without_a_state_dict_names_its_keys(tmp_path):
  torch = pytest.importorskip('torch')
  torch.save({'epoch': 3, 'a': {'x': torch.zeros(2)}, 'b': {'y': torch.zeros(2)}},
             tmp_path / 'w.pth')
  _error(lambda: pretrained.read_weights(tmp_path / 'w.pth'),  # was 'holds no arrays'
         "w.pth: a dict of 'epoch', 'a', 'b' with no tensors", 'model.state_dict()')


# --- timm's names for the same networks (README: timm .safetensors files load too) ---------

def _timm_keys(name: str) -> list[tuple[str, tuple]]:
  """timm 1.0.31's state_dict keys and shapes, in order (tests/fixtures/timm_keys.json)."""
  import json
  return [(k, tuple(s)) for k, s in
          json.loads((FIXTURES / 'timm_keys.json').read_text())[name]]


@pytest.mark.parametrize('name,arch', [('mobilenetv2_100', 'mobilenet_v2'), ('vgg16', 'vgg16')])
def test_timm_full_size_names_convert_as_torchvisions(name, arch):
  from aesthetics_jax.models import fake_imagenet
  timm = dict(_timm_keys(name))
  want = pretrained.torch_to_flax_shapes(fake_imagenet.layout(arch), arch)
  assert pretrained.torch_to_flax_shapes(timm, arch) == want


def _as_timm(raw: dict, name: str, arch: str, width: float, **kw) -> dict:
  """The torchvision-keyed `raw` under timm's names: both list a network's layers in the same
  order (checked at full size by the test above)."""
  from aesthetics_jax.models import fake_imagenet
  tv = list(fake_imagenet.layout(arch, width, **kw))
  timm = _timm_keys(name)
  assert len(tv) == len(timm)
  out = {}
  for (k, shape), t in zip(timm, tv):
    v = raw[t]
    out[k] = v.reshape(v.shape[0], -1, *shape[2:]) if len(shape) == 4 and v.ndim == 2 else v
  return out


def test_timm_safetensors_load_as_the_torchvision_files(tmp_path):
  from safetensors.numpy import save_file
  save_file(_as_timm(_raw(), 'mobilenetv2_100', 'mobilenet_v2', 0.25),
            str(tmp_path / 'mnv2.safetensors'))
  # Was "keys such as ['bn1.bias', ...] are not a torchvision mobilenet_v2 or vgg16 state_dict"
  assert _same_as_fixture(tmp_path / 'mnv2.safetensors')['width_mult'] == 0.25
  vgg = _as_timm(_raw(VGG_FILE), 'vgg16', 'vgg16', 0.0625, fc_dim=32)
  assert vgg['pre_logits.fc1.weight'].shape == (32, 32, 7, 7)  # fc6 as timm's 7x7 conv
  save_file(vgg, str(tmp_path / 'vgg.safetensors'))
  _same_as_fixture(tmp_path / 'vgg.safetensors', 'vgg16', VGG_FILE)


def test_foreign_keys_name_the_file(tmp_path):
  from safetensors.numpy import save_file
  save_file({'conv1.weight': np.zeros((4, 3, 3, 3), np.float32)}, str(tmp_path / 'r.safetensors'))
  _error(lambda: pretrained.read_weights(tmp_path / 'r.safetensors'),  # the file was unsaid
         f'{tmp_path / "r.safetensors"}: keys such as', 'not a torchvision or timm')


# --- a state_dict of another depth, or with layers missing ------------------------------

def test_other_vgg_depth_is_refused_at_conversion(tmp_path):
  raw = _raw(VGG_FILE)
  raw['features.16.weight'] = np.zeros((32, 32, 3, 3), np.float16)  # VGG19 has a conv here
  raw['features.16.bias'] = np.zeros(32, np.float16)
  np.savez(tmp_path / 'vgg19.npz', **raw)
  # Was converted, then at training 'unexpected key params/encoder/features_16/bias not in
  # the model; file holds arch=vgg16 ...: set config.model.arch/width_mult to match'.
  _error(lambda: pretrained.convert_file(tmp_path / 'vgg19.npz', tmp_path / 'out', 'vgg16'),
         "vgg19.npz: key 'features.16.bias' (and 1 more) is not in torchvision's vgg16",
         'vgg19')
  assert not (tmp_path / 'out').exists()


def test_vgg16_bn_is_named_not_called_damaged(tmp_path):
  raw = _raw(VGG_FILE)
  raw['features.1.running_mean'] = np.zeros(4, np.float16)  # vgg16_bn: a BatchNorm at 1
  np.savez(tmp_path / 'bn.npz', **raw)
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'bn.npz'), 'bn.npz', 'vgg*_bn')
  assert 'damaged' not in msg


def test_state_dict_with_a_layer_missing_is_refused(tmp_path):
  raw = _raw()
  del raw['features.3.conv.2.weight']
  np.savez(tmp_path / 'part.npz', **raw)
  # Was written with width_mult=None; training then blamed config.model.width_mult.
  _error(lambda: pretrained.convert_file(tmp_path / 'part.npz', tmp_path / 'out'),
         'part.npz: no features.3.conv.2.weight of torchvision\'s mobilenet_v2', 'incomplete')


def test_headless_and_old_state_dicts_still_load(tmp_path):
  raw = {k: v for k, v in _raw().items()  # no classifier, no BN counters (pre-1.0 torch)
         if not k.startswith('classifier.') and not k.endswith('num_batches_tracked')}
  np.savez(tmp_path / 'headless.npz', **raw)
  flat, meta = pretrained.read_weights(tmp_path / 'headless.npz')
  assert meta['width_mult'] == 0.25 and not any('classifier' in k for k in flat)


def test_vgg16_features_only_is_named_as_such(tmp_path):
  """A VGG16 export without classifier.* converted silently, and training then said 'set
  config.model.arch/width_mult to match' though both matched."""
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.configs import vgg16_binary  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  raw = {k: rng.standard_normal(shape).astype(np.float32)
         for k, shape in fake_imagenet.layout('vgg16', 0.125, fc_dim=8).items()
         if k.startswith('features.')}
  np.savez(tmp_path / 'features.npz', **raw)
  r = _convert_cli('--arch=vgg16', f'--source={tmp_path / "features.npz"}',
                   f'--out={tmp_path / "w.npz"}')
  assert r.returncode == 0, r.stderr
  assert 'has no fc6 / fc7' in r.stdout and 'training refuses this file' in r.stdout, r.stdout
  config = vgg16_binary.get_config('score,smoke')
  variables = models.init_variables(models.create_model(config.model), 0, 32)
  _error(lambda: pretrained.load_pretrained(variables, tmp_path / 'w.npz', arch='vgg16'),
         "holds VGG16's convolutions only, without the fc6 / fc7",
         'convert the whole torchvision vgg16 state_dict')


def test_all_zero_weights_are_warned_of(tmp_path, caplog):
  """An all-zero file loaded silently; the frozen encoder gave every image the same features
  and the run's correlations came out null."""
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.configs import mobilenet_v2_emd  # pylint: disable=import-outside-toplevel
  out, _ = pretrained.convert_file(MNV2_FILE, tmp_path / 'w.npz')
  with np.load(out) as z:
    arrays = {k: np.zeros_like(z[k]) if k.endswith('/kernel') else z[k] for k in z.files}
  np.savez(tmp_path / 'zeros.npz', **arrays)
  config = mobilenet_v2_emd.get_config('smoke')
  variables = models.init_variables(models.create_model(config.model), 0, 32)
  caplog.set_level('WARNING')
  pretrained.load_pretrained(variables, out)
  assert 'all zeros' not in caplog.text
  pretrained.load_pretrained(variables, tmp_path / 'zeros.npz')
  assert "zeros.npz: 52 of the encoder's kernels are all zeros" in caplog.text, caplog.text


# --- values: dtypes, layouts in memory, NaN, empty tensors ---------------------------------

@pytest.mark.parametrize('dtype', ['float64', 'bfloat16', 'non_contiguous'])
def test_float_dtypes_and_strided_tensors_load(tmp_path, dtype):
  torch = pytest.importorskip('torch')
  sd = _torch_state()
  if dtype == 'non_contiguous':  # e.g. a transposed view saved as it was
    sd = {k: v.t().contiguous().t() if v.ndim == 2 else v for k, v in sd.items()}
    assert not sd['classifier.1.weight'].is_contiguous()
  else:
    sd = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in sd.items()}
  torch.save(sd, tmp_path / 'w.pth')
  if dtype == 'bfloat16':  # 8 mantissa bits: compare with the fixture rounded the same way
    flat, _ = pretrained.read_weights(tmp_path / 'w.pth')
    k = 'params/encoder/features_0/conv/kernel'
    want = sd['features.0.0.weight'].float().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(flat[k], want)
  else:
    _same_as_fixture(tmp_path / 'w.pth')


def test_nan_weights_are_refused_before_training(tmp_path):
  raw = _raw()
  raw['features.5.conv.1.0.weight'][0, 0, 0, 0] = np.nan
  np.savez(tmp_path / 'nan.npz', **raw)
  # Was loaded; training then failed after its first step with 'non-finite loss ... lower
  # --config.optim.lr or set --config.optim.grad_clip'.
  _error(lambda: pretrained.read_weights(tmp_path / 'nan.npz'),
         'nan.npz: features.5.conv.1.0.weight holds NaN or inf (1 of 432 values)', 'damaged')
  flat, meta = pretrained.read_weights(MNV2_FILE)  # a converted file too
  var = 'batch_stats/encoder/features_0/bn/var'
  flat[var] = np.full_like(flat[var], np.inf)
  pretrained.save_flat(flat, tmp_path / 'conv.npz', meta)
  _error(lambda: pretrained.read_weights(tmp_path / 'conv.npz'),
         'conv.npz: batch_stats/encoder/features_0/bn/var holds NaN or inf (8 of 8 values)')


def test_integer_weights_are_refused(tmp_path):
  from safetensors.numpy import save_file
  raw = {k: v.astype(np.int8) if v.dtype == np.float16 else v for k, v in _raw().items()}
  save_file(raw, str(tmp_path / 'q.safetensors'))
  _error(lambda: pretrained.read_weights(tmp_path / 'q.safetensors'),  # was cast to float
         'q.safetensors: ', 'holds int8 values, not floats')


def test_empty_conv_is_one_line_not_zero_division(tmp_path):
  raw = _raw(VGG_FILE)
  raw['features.28.weight'] = np.zeros((0, 32, 3, 3), np.float16)
  np.savez(tmp_path / 'e.npz', **raw)
  _error(lambda: pretrained.read_weights(tmp_path / 'e.npz'),  # was ZeroDivisionError
         'e.npz: features.28.weight has shape (0, 32, 3, 3), with no values')


# --- the .npz.json sidecar ------------------------------------------------------------------

def _converted(tmp_path, src=MNV2_FILE, arch='mobilenet_v2') -> Path:
  path, _ = pretrained.convert_file(src, tmp_path / 'w', arch)
  return path


@pytest.mark.parametrize('edit,needle', [
    ({'arch': 'vgg16'}, 'says arch=vgg16, but mobilenet_v2.npz holds mobilenet_v2 weights'),
    ({'width_mult': 1.0}, 'says width_mult=1.0, but mobilenet_v2.npz holds width 0.25'),
    ({'width_mult': 'wide'}, "width_mult='wide' is not a positive number")])
def test_sidecar_that_contradicts_its_arrays(tmp_path, edit, needle):
  import json
  path = _converted(tmp_path)
  side = Path(f'{path}.json')
  side.write_text(json.dumps({**json.loads(side.read_text()), **edit}))
  # Was believed: arch=vgg16 made the file 'holds vgg16 weights, not mobilenet_v2' and
  # convert_file wrote the MobileNetV2 arrays to vgg16.npz; a wrong width misled every hint.
  for fn in (lambda: pretrained.read_weights(path),
             lambda: pretrained.convert_file(path, tmp_path / 'out')):
    _error(fn, f'{side}: {needle}', 'delete it')
  assert not (tmp_path / 'out').exists()


def test_missing_sidecar_reads_arch_and_width_from_the_arrays(tmp_path):
  path = _converted(tmp_path, VGG_FILE, 'vgg16')
  Path(f'{path}.json').unlink()
  _, meta = pretrained.read_weights(path)
  assert meta == {'arch': 'vgg16', 'width_mult': 0.0625}


# --- memory: what a file declares is bounded before anything is allocated ----------------

def _npz_of_zeros(path: Path, shape: tuple, chunk: int = 1 << 20) -> None:
  """An .npz whose one float32 member declares `shape`, deflated: a few KB on disk."""
  import io
  import zipfile
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {'descr': '<f4', 'fortran_order': False, 'shape': shape})
  left = int(np.prod(shape)) * 4
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
    with z.open('features.0.0.weight.npy', 'w', force_zip64=True) as f:
      f.write(header.getvalue())
      zeros = bytes(chunk)
      while left > 0:
        f.write(zeros[:min(chunk, left)])
        left -= chunk


def test_enormous_declared_shape_is_refused_unread(tmp_path, monkeypatch):
  import tracemalloc
  _npz_of_zeros(tmp_path / 'bomb.npz', (64, 1024, 256))  # 64 MiB of zeros in ~70 KB
  assert (tmp_path / 'bomb.npz').stat().st_size < 1 << 20
  monkeypatch.setattr(weight_files, 'MAX_WEIGHTS_BYTES', 16 << 20)
  tracemalloc.start()
  try:  # was read whole (64 MiB here; gigabytes from a slightly larger file), then refused
    _error(lambda: pretrained.read_weights(tmp_path / 'bomb.npz'),
           'bomb.npz: declares 0.0671 GB of arrays', 'the limit is 0.0168 GB')
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 << 20, peak


def test_terabyte_declared_shape_names_the_bound(tmp_path):
  import io
  import zipfile
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {'descr': '<f4', 'fortran_order': False, 'shape': (10**6, 10**6)})
  with zipfile.ZipFile(tmp_path / 'tb.npz', 'w') as z:
    z.writestr('features.0.0.weight.npy', header.getvalue() + bytes(64))
  _error(lambda: pretrained.read_weights(tmp_path / 'tb.npz'),  # was numpy's MemoryError
         'tb.npz: declares 4e+03 GB of arrays', 'another network')


@pytest.mark.parametrize('ext', ['pth', 'safetensors'])
def test_declared_size_bound_of_torch_and_safetensors_files(tmp_path, monkeypatch, ext):
  torch = pytest.importorskip('torch')
  from safetensors.torch import save_file
  state = {'features.0.0.weight': torch.zeros(1 << 20)}  # 4 MiB
  if ext == 'pth':
    torch.save(state, tmp_path / 'w.pth')
  else:
    save_file(state, str(tmp_path / 'w.safetensors'))
  monkeypatch.setattr(weight_files, 'MAX_WEIGHTS_BYTES', 1 << 20)
  _error(lambda: pretrained.read_weights(tmp_path / f'w.{ext}'), f'w.{ext}: declares 0.00419 GB')


# --- paths ----------------------------------------------------------------------------

def test_path_with_a_line_break_is_one_line(tmp_path):
  src = f'{tmp_path / "w.npz"}\n'  # a line of a file list, kept whole
  # Was '<path>\n: weights file not found': two lines, and the commands print the first only.
  _error(lambda: pretrained.read_weights(src), f"weights file {src!r}: no such file",
         'strip() it')
  _error(lambda: pretrained.load_pretrained({}, src, arch='vgg16'), 'strip() it')
  r = _convert_cli('--arch=vgg16', f'--source={src}', f'--out={tmp_path / "out"}')
  assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
  assert f'--source={src!r}: no such file' in r.stderr and 'strip() it' in r.stderr, r.stderr


def test_a_source_that_is_no_regular_file_is_named_as_such(tmp_path):
  """/dev/null or a pipe (`--source=<(...)`) was called 'no such file'."""
  fifo = tmp_path / 'pipe'
  os.mkfifo(fifo)
  for src in ('/dev/null', fifo):
    r = _convert_cli('--arch=vgg16', f'--source={src}', f'--out={tmp_path / "out"}')
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert f'--source={src}: not a regular file (a device or a pipe' in r.stderr, r.stderr


def test_an_error_about_a_file_named_with_a_line_break_is_one_line(tmp_path):
  (tmp_path / 'a\nb.npz').write_bytes(b'not a zip')
  _error(lambda: pretrained.read_weights(tmp_path / 'a\nb.npz'), 'a\\nb.npz: not a .npz file')


def test_spaces_and_unicode_in_paths(tmp_path):
  folder = tmp_path / 'my weights ü 日本'
  folder.mkdir()
  src = folder / 'mobilenet v2 ñ.safetensors'
  src.write_bytes(MNV2_FILE.read_bytes())
  r = _convert_cli('--arch=mobilenet_v2', f'--source={src}', f'--out={folder / "out é"}')
  assert r.returncode == 0, r.stderr
  _same_as_fixture(folder / 'out é')  # the folder, as --config.model.init_weights takes it


@pytest.mark.parametrize('ext', ['npz', 'pth'])
def test_unreadable_file_is_one_line(tmp_path, monkeypatch, ext):
  """Root reads any file, so the permission error is made by `open` here."""
  import builtins
  src = tmp_path / f'w.{ext}'
  np.savez(tmp_path / 'w.npz', **_raw())
  if ext == 'pth':
    torch = pytest.importorskip('torch')
    torch.save(_torch_state(), src)
  real_open = builtins.open

  def no_access(file, *a, **k):
    if str(file) == str(src):
      raise PermissionError(13, 'Permission denied', str(file))
    return real_open(file, *a, **k)

  monkeypatch.setattr(builtins, 'open', no_access)
  # Was 'not a .npz file (no zip archive ...)': zipfile.is_zipfile is False when it cannot read
  _error(lambda: pretrained.read_weights(src), f'{src}: cannot be read (Permission denied)')


def test_unreadable_sidecar_is_one_line(tmp_path, monkeypatch):
  """The `.npz.json` beside a converted file: a bare PermissionError (exit 1) where the file's
  own is one line naming it."""
  out, _ = pretrained.convert_file(MNV2_FILE, tmp_path / 'w.npz')
  side = Path(f'{out}.json')
  real_read = Path.read_text

  def no_access(self, *a, **k):  # root reads any file: the error is made here
    if str(self) == str(side):
      raise PermissionError(13, 'Permission denied', str(self))
    return real_read(self, *a, **k)

  monkeypatch.setattr(Path, 'read_text', no_access)
  _error(lambda: pretrained.read_weights(out), f'{side}: cannot be read (Permission denied)',
         'fix its permissions')


def test_out_of_another_weights_format_is_refused(tmp_path):
  r = _convert_cli('--arch=vgg16', f'--source={VGG_FILE}', f'--out={tmp_path / "w.safetensors"}')
  # Was exit 0, having made a folder w.safetensors/ holding vgg16.npz.
  assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
  assert 'w.safetensors: the converter writes .npz files; pass a folder' in r.stderr, r.stderr
  assert list(tmp_path.iterdir()) == []


def test_out_npz_in_capitals_is_a_file(tmp_path):
  (tmp_path / 'W.NPZ').write_bytes(b'an older conversion')
  r = _convert_cli('--arch=vgg16', f'--source={VGG_FILE}', f'--out={tmp_path / "W.NPZ"}')
  # Was exit 2, '--out=.../W.NPZ is a file, not a folder', though the converter writes it.
  assert r.returncode == 0, r.stderr
  _same_as_fixture(tmp_path / 'W.NPZ', 'vgg16', VGG_FILE)


# --- files told apart by content: names that training scripts and hubs give them ------------

@pytest.mark.parametrize('name,fmt', [('checkpoint.pth.tar', 'torch'),  # PyTorch's ImageNet example
                                      ('pytorch_model.bin', 'torch'),   # Hugging Face
                                      ('model.ckpt', 'legacy_torch'),
                                      ('renamed.pth', 'safetensors'), ('weights.bin', 'npz')])
def test_weights_read_by_content(tmp_path, name, fmt):
  from safetensors.numpy import save_file
  path = tmp_path / name
  if fmt in ('torch', 'legacy_torch'):
    torch = pytest.importorskip('torch')
    torch.save({'state_dict': _torch_state(), 'epoch': 90}, path,
               _use_new_zipfile_serialization=fmt == 'torch')
  elif fmt == 'safetensors':
    save_file(_raw(), str(path))
  else:
    with open(path, 'wb') as f:
      np.savez(f, **_raw())
  # Was "unknown weights extension '.tar'" (.bin, .ckpt), or for the renamed .safetensors
  # "not a readable torch checkpoint".
  _same_as_fixture(path)


def test_unknown_content_and_extension(tmp_path):
  (tmp_path / 'w.h5').write_bytes(b'\x89HDF\r\n\x1a\n' + bytes(64))
  _error(lambda: pretrained.read_weights(tmp_path / 'w.h5'), 'w.h5: neither a torch checkpoint',
         "'.h5'")


# --- converted files damaged after conversion: the hint must not blame the config ----------

@pytest.fixture(scope='module')
def mnv2_shapes():
  import jax
  import jax.numpy as jnp
  from aesthetics_jax import models
  cfg = models.model_config(arch='mobilenet_v2', width_mult=0.25, dtype='float32')
  return jax.eval_shape(models.create_model(cfg).init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize('damage,needle', [
    ('missing', 'missing key params/encoder/features_3/project/conv/kernel'),
    ('extra', 'unexpected key params/encoder/features_3/extra/kernel'),
    ('shape', 'features_3/project/conv/kernel has shape (1, 1, 48, 9)')])
def test_damaged_converted_file_is_not_blamed_on_the_config(tmp_path, mnv2_shapes, damage,
                                                            needle):
  flat, meta = pretrained.read_weights(MNV2_FILE)
  key = 'params/encoder/features_3/project/conv/kernel'
  if damage == 'missing':
    del flat[key]
  elif damage == 'extra':
    flat['params/encoder/features_3/extra/kernel'] = np.zeros(3, np.float32)
  else:
    flat[key] = np.zeros((1, 1, 48, 9), np.float32)
  pretrained.save_flat(flat, tmp_path / 'w.npz', meta)
  # Was '... file holds arch=mobilenet_v2 width_mult=0.25: set config.model.arch/width_mult to
  # match', for a config that matched.
  msg = _error(lambda: pretrained.load_pretrained(mnv2_shapes, tmp_path / 'w.npz',
                                                  arch='mobilenet_v2'),
               needle, 'file and model are both mobilenet_v2 width_mult=0.25', 'damaged')
  assert 'set config.model' not in msg


@pytest.mark.parametrize('extra', ['junk', 'features.0.0.weight'])
def test_converted_file_with_stray_keys_names_them(tmp_path, extra):
  flat, meta = pretrained.read_weights(MNV2_FILE)
  np.savez(tmp_path / 'w.npz', **flat, **{extra: np.zeros(3, np.float32)})
  # Was "keys such as ['params/head/classifier/bias', ...] are not a torchvision or timm
  # mobilenet_v2 or vgg16 state_dict": the converted keys blamed, not the stray one.
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'),
               f"w.npz: a converted file (params/ and batch_stats/ keys) that also holds "
               f"{extra!r}; remove those keys")
  assert 'keys such as' not in msg


@pytest.mark.parametrize('prefix', ['_orig_mod.', 'model.module.', 'backbone.'])
def test_prefix_every_key_shares_is_stripped(tmp_path, prefix):
  # torch.compile's '_orig_mod.', a DataParallel model inside a LightningModule, a
  # LightningModule's backbone: were "keys such as [...] are not a torchvision ... state_dict".
  np.savez(tmp_path / 'w.npz', **{prefix + k: v for k, v in _raw().items()})
  _same_as_fixture(tmp_path / 'w.npz')


@pytest.mark.parametrize('prefixes,needle', [
    (('', 'module.'), "holds 'classifier.1.bias' twice, also as 'module.classifier.1.bias'"),
    (('model.', 'model_ema.'), "layers under 2 prefixes ('model.', 'model_ema.')"),
    (('backbone.', 'head.'), "layers under 'backbone.' beside other keys such as 'head.")])
def test_weights_under_several_prefixes_are_explained(tmp_path, prefixes, needle):
  raw = _raw()
  arrays = {p + k: v for p in prefixes for k, v in raw.items()
            if p != 'head.' or k == 'classifier.1.weight'}
  np.savez(tmp_path / 'w.npz', **arrays)
  # Were "key 'module.classifier.1.bias' (and 313 more) is not in torchvision's mobilenet_v2
  # (is it a deeper timm mobilenetv2_110d / _120d ...?)" or "keys such as [...] are not ...".
  _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'), f'w.npz: {needle}')


@pytest.mark.parametrize('out', ['w.npz', '.'])
def test_out_on_top_of_the_source_is_refused(tmp_path, out):
  src = tmp_path / ('w.npz' if out == 'w.npz' else 'mobilenet_v2.npz')
  np.savez(src, **_raw())
  before = src.read_bytes()
  r = _convert_cli('--arch=mobilenet_v2', f'--source={src}', f'--out={tmp_path / out}')
  # Was exit 0: the torchvision file replaced by its conversion.
  assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
  assert 'would overwrite --source=' in r.stderr and 'pass another --out' in r.stderr
  assert src.read_bytes() == before and sorted(tmp_path.iterdir()) == [src]


def test_npz_zip_directory_is_parsed_once(tmp_path, monkeypatch):
  import zipfile
  raw = {**_raw(), 'fortran': np.asfortranarray(np.arange(6.).reshape(2, 3))}
  np.savez(tmp_path / 'w.npz', **raw)
  opened = []
  init = zipfile.ZipFile.__init__

  def counting(self, *args, **kwargs):
    opened.append(args[0])
    init(self, *args, **kwargs)

  monkeypatch.setattr(zipfile.ZipFile, '__init__', counting)
  arrays = weight_files.read_arrays(tmp_path / 'w.npz')
  # Was 3: sniffing, the size bound and np.load each parsed the directory (0.23 ms each for
  # 100 members; such a file loaded in 9.9 ms, now 9.2 ms).
  assert len(opened) == 1, opened
  assert set(arrays) == set(raw)
  for k, v in raw.items():
    np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    assert arrays[k].dtype == v.dtype


@pytest.mark.parametrize('damage', ['torch_zip', 'torch_legacy', 'safetensors_header'])
def test_truncated_files_say_how_to_fix_them(tmp_path, damage):
  path = tmp_path / ('w.safetensors' if damage.startswith('safetensors') else 'w.pth')
  if damage.startswith('torch'):
    torch = pytest.importorskip('torch')
    torch.save(_torch_state(), path, _use_new_zipfile_serialization=damage == 'torch_zip')
    path.write_bytes(path.read_bytes()[:20000])
  else:  # a header length past the end of the file
    data = MNV2_FILE.read_bytes()
    path.write_bytes((len(data) + 100).to_bytes(8, 'little') + data[8:])
  # Were "cannot read weights (OSError: [Errno 22] Invalid argument)" (torch's zip reader),
  # "not a readable torch checkpoint (error: unpack requires a buffer of 4 bytes)" and
  # "cannot read weights (SafetensorError: ... invalid header length)": no fix.
  msg = _error(lambda: pretrained.read_weights(path), str(path), 'download or export it again')
  assert 'Errno' not in msg


def test_sparse_tensor_is_named_not_called_damaged(tmp_path):
  torch = pytest.importorskip('torch')
  sd = _torch_state()
  sd['features.0.0.weight'] = sd['features.0.0.weight'].float().to_sparse()
  torch.save(sd, tmp_path / 'w.pth')
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.pth'),
               'w.pth: features.0.0.weight is a torch.sparse_coo torch.float32 tensor on cpu',
               "save a dense float model's state_dict()")
  assert 'damaged' not in msg


def test_npz_object_array_is_refused_as_pickled_not_damaged(tmp_path):
  raw = {k: v for k, v in _raw().items()}
  raw['features.0.0.weight'] = np.array([raw['features.0.0.weight']], dtype=object)
  np.savez(tmp_path / 'w.npz', **raw)  # np.savez pickles object arrays
  # Was "cannot read weights (ValueError: Object arrays cannot be loaded when
  # allow_pickle=False)", since then with "the file is damaged".
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'),
               'w.npz: features.0.0.weight is an object array (pickled Python objects',
               'refused: save numeric arrays')
  assert 'damaged' not in msg


def test_float8_safetensors_names_the_type(tmp_path):
  torch = pytest.importorskip('torch')
  from safetensors.torch import save_file
  save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v
             for k, v in _torch_state().items()}, str(tmp_path / 'w.safetensors'))
  # Was "cannot read weights (AttributeError: module 'numpy' has no attribute
  # 'float8_e4m3fn')", since then with "the file is damaged".
  _error(lambda: pretrained.read_weights(tmp_path / 'w.safetensors'),
         'w.safetensors: holds float8_e4m3fn tensors, a type numpy cannot read (the file is not '
         'damaged); save the weights as float32')


@pytest.mark.parametrize('full', ['at_reservation', 'at_write'])
def test_full_disk_when_converting_is_one_line(tmp_path, monkeypatch, full):
  import builtins
  import errno
  import os
  from aesthetics_jax import io as io_lib
  flat, meta = pretrained.read_weights(MNV2_FILE)
  if full == 'at_reservation':  # a disk whose free space is less than the arrays
    def no_room(fd, offset, size):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'posix_fallocate', no_room)
  else:  # a disk that fills while writing (another job); /dev/full fails every write
    def to_dev_full(file, mode='r', *a, **k):
      if str(file).endswith('.tmp'):  # the atomic writer's hidden sibling
        open(file, 'wb').close()
        return builtins.open('/dev/full', mode, *a, **k)
      return builtins.open(file, mode, *a, **k)
    monkeypatch.setattr(io_lib, 'open', to_dev_full, raising=False)
  # Was "[Errno 28] No space left on device: '.../w.npz'" (an OSError, no fix), and a disk
  # too small for 0.55 GB of VGG16 arrays found out only once they were written.
  msg = _error(lambda: pretrained.save_flat(flat, tmp_path / 'w.npz', meta))
  monkeypatch.undo()
  assert msg == (f'{tmp_path / "w.npz"}: cannot write (No space left on device); free some '
                 'space or write to another disk')
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('src,key,shape,want', [
    (MNV2_FILE, 'features.0.0.weight', (3, 3, 3, 3), 'mobilenet_v2 of width_mult=0.25'),
    (MNV2_FILE, 'features.5.conv.1.0.weight', (7, 1, 3, 3), 'mobilenet_v2 of width_mult=0.25'),
    (VGG_FILE, 'features.2.weight', (5, 4, 3, 3), 'vgg16 of width_mult=0.0625')])
def test_layer_of_the_wrong_shape_is_refused_at_conversion(tmp_path, src, key, shape, want):
  raw = _raw(src)
  raw[key] = np.zeros(shape, np.float32)
  np.savez(tmp_path / 'w.npz', **raw)
  # Was converted, exit 0 (the stem's: with width_mult=None, and training then said to "set
  # config.model.width_mult to match" None); the others failed only at training.
  _error(lambda: pretrained.convert_file(tmp_path / 'w.npz', tmp_path / 'out'),
         f'w.npz: {key} has shape {shape}, but torchvision\'s {want}', 'damaged or edited')
  assert not (tmp_path / 'out').exists()


def test_bfloat16_saved_by_numpy_is_explained(tmp_path):
  import ml_dtypes
  flat, meta = pretrained.read_weights(MNV2_FILE)
  np.savez(tmp_path / 'w.npz', **{k: v.astype(ml_dtypes.bfloat16) for k, v in flat.items()})
  # Was "holds |V2 values, not floats; the file is damaged or not an ImageNet float
  # state_dict" for a JAX user's bfloat16 params: np.save keeps 2 raw bytes, not the type.
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'),
               'holds |V2 values, untyped bytes: how np.save stores bfloat16',
               'save the arrays as float32')
  assert 'damaged' not in msg


def test_converted_file_of_no_width_is_called_damaged(tmp_path, mnv2_shapes):
  flat, meta = pretrained.read_weights(MNV2_FILE)
  flat['params/encoder/features_0/conv/kernel'] = np.zeros((3, 3, 3, 5), np.float32)
  np.savez(tmp_path / 'w.npz', **flat)  # no sidecar: the width is read from the shapes
  # Was "... file holds arch=mobilenet_v2 width_mult=None: set config.model.arch/width_mult
  # to match", a width no config can have.
  msg = _error(lambda: pretrained.load_pretrained(mnv2_shapes, tmp_path / 'w.npz',
                                                  arch='mobilenet_v2'),
               'features_0/conv/kernel has shape (3, 3, 3, 5)',
               "the file's mobilenet_v2 layer shapes match no width_mult, so it is damaged")
  assert 'set config.model' not in msg


@pytest.mark.parametrize('converted', [False, True])
def test_other_archs_weights_name_both_fixes(tmp_path, mnv2_shapes, converted):
  path = _converted(tmp_path, VGG_FILE, 'vgg16') if converted else VGG_FILE
  # Training said "holds vgg16 weights, not mobilenet_v2; pass --arch=vgg16" (a flag of
  # aesthetics-convert-weights, not of training), or for a converted file named no fix.
  _error(lambda: pretrained.load_pretrained(mnv2_shapes, path, arch='mobilenet_v2'),
         f'{path}: holds vgg16 weights, not mobilenet_v2; pass mobilenet_v2 weights, or use '
         'vgg16: aesthetics-convert-weights --arch=vgg16, or a vgg16 training config '
         '(config.model.arch=vgg16)')


@pytest.mark.parametrize('name,text,needle', [
    ('pytorch_model.bin', b'version https://git-lfs.github.com/spec/v1\noid sha256:0a1b\n'
     b'size 14212972\n', 'a Git LFS pointer, not the weights (cloned without git-lfs): run '
     'git lfs pull'),
    ('w.safetensors', b'\n<!DOCTYPE html>\n<html><body>Sign in</body></html>\n',
     'an HTML page, not weights (a download that saved a login or error page?)')])
def test_stand_ins_for_weights_are_named(tmp_path, name, text, needle):
  (tmp_path / name).write_bytes(text)
  # Were "not a readable torch checkpoint (damaged, truncated, or not written by torch.save)"
  # and "cannot read weights (SafetensorError: ... header too large)".
  _error(lambda: pretrained.read_weights(tmp_path / name), f'{name}: {needle}')


@pytest.mark.parametrize('kind', ['npz', 'safetensors', 'pth'])
def test_file_of_no_arrays_says_what_to_pass(tmp_path, kind):
  path = tmp_path / f'w.{kind}'
  if kind == 'npz':
    np.savez(path)
  elif kind == 'safetensors':
    # Written by hand: safetensors < 0.4.4 (pyproject allows 0.4) wrote a malformed header
    # for no tensors that it could not read back; these are the bytes 0.4.4+ write.
    header = b'{"__metadata__":{"format":"pt"}}'
    path.write_bytes(len(header).to_bytes(8, 'little') + header)
  else:
    pytest.importorskip('torch').save({}, path)
  _error(lambda: pretrained.read_weights(path),  # was 'holds no arrays', no fix
         f'w.{kind}: holds no arrays (an empty state_dict or archive); save the whole '
         'model.state_dict()')


def test_whole_model_inside_a_checkpoint_dict_gets_a_fix_that_works(tmp_path):
  torch = pytest.importorskip('torch')
  torch.save({'model': torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 'epoch': 3},
             tmp_path / 'ckpt.pth')
  # Was "... torch.save(torch.load(f, weights_only=False).state_dict(), 'w.pth')": a dict has
  # no state_dict(), so the advice failed with an AttributeError.
  _error(lambda: pretrained.read_weights(tmp_path / 'ckpt.pth'),
         "object under 'model' of a checkpoint dict",
         "torch.save(torch.load(f, weights_only=False)['model'].state_dict(), 'w.pth')")
  torch.save({'features.0.0.weight': np.zeros((8, 3, 3, 3), np.float32)}, tmp_path / 'np.pth')
  msg = _error(lambda: pretrained.read_weights(tmp_path / 'np.pth'),  # was the same advice
               'np.pth: numpy arrays pickled by torch.save', 'torch.from_numpy')
  assert 'state_dict()' not in msg


def test_converted_vgg_without_its_first_conv_is_still_vgg(tmp_path):
  import jax
  import jax.numpy as jnp
  from aesthetics_jax import models
  flat, _ = pretrained.read_weights(VGG_FILE)
  del flat['params/encoder/features_0/kernel']
  np.savez(tmp_path / 'w.npz', **flat)
  # Was read as 'mobilenet_v2 weights' (the arch was told by the stem's key alone), so the
  # VGG16 model said "holds mobilenet_v2 weights, not vgg16".
  assert pretrained.read_weights(tmp_path / 'w.npz')[1]['arch'] == 'vgg16'
  cfg = models.model_config(arch='vgg16', width_mult=0.0625, fc_dim=32, dtype='float32')
  shapes = jax.eval_shape(models.create_model(cfg).init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  msg = _error(lambda: pretrained.load_pretrained(shapes, tmp_path / 'w.npz', arch='vgg16'),
               'w.npz: missing key params/encoder/features_0/kernel', 'damaged or incomplete')
  assert 'mobilenet_v2' not in msg


@pytest.mark.parametrize('converted', [False, True])
def test_negative_batchnorm_variance_is_refused(tmp_path, converted):
  if converted:
    arrays, _ = pretrained.read_weights(MNV2_FILE)
    key = 'batch_stats/encoder/features_3/project/bn/var'
  else:
    arrays, key = _raw(), 'features.3.conv.3.running_var'
  arrays[key] = -np.abs(arrays[key]).astype(np.float32)
  np.savez(tmp_path / 'w.npz', **arrays)
  # Was converted and loaded: the frozen encoder's BatchNorm then gave NaN, and training
  # stopped at 'non-finite loss ... lower the learning rate'.
  _error(lambda: pretrained.read_weights(tmp_path / 'w.npz'),
         'w.npz: batch_stats/encoder/features_3/project/bn/var holds', 'negative variances',
         'damaged')


def test_torchs_loading_warnings_do_not_come_before_the_one_line(tmp_path):
  torch = pytest.importorskip('torch')
  sd = _torch_state()
  sd['features.0.0.weight'] = sd['features.0.0.weight'].float().to_sparse()
  torch.save(sd, tmp_path / 'w.pth')
  r = _convert_cli('--arch=mobilenet_v2', f'--source={tmp_path / "w.pth"}',
                   f'--out={tmp_path / "out"}')
  # Was "UserWarning: Validating sparse tensor invariants because weights_only=True ..." and
  # the source line it came from, before the command's line.
  assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
  assert r.stderr.startswith('convert_weights: ') and 'sparse_coo' in r.stderr, r.stderr


@pytest.mark.parametrize('what', ['list', 'Tensor'])
def test_checkpoint_of_no_dict_says_what_to_save(tmp_path, what):
  torch = pytest.importorskip('torch')
  torch.save([_torch_state()] if what == 'list' else torch.zeros(3), tmp_path / 'w.pth')
  _error(lambda: pretrained.read_weights(tmp_path / 'w.pth'),  # was without the fix
         f'w.pth: expected a state_dict, got {what}; save model.state_dict() and pass that')


def test_converted_weights_stream_to_a_fifo(tmp_path):
  import os
  import threading
  os.mkfifo(tmp_path / 'w.npz')
  got = {}
  reader = threading.Thread(target=lambda: got.update(
      data=open(tmp_path / 'w.npz', 'rb').read()), daemon=True)
  reader.start()
  # 7874c95's space reservation and truncation of the written .npz failed on a pipe
  # ('[Errno 29] Illegal seek'), which np.savez streams to.
  pretrained.save_flat({'params/w': np.ones(2, np.float32)}, tmp_path / 'w.npz', {})
  reader.join(10)
  (tmp_path / 'copy.npz').write_bytes(got['data'])
  assert np.load(tmp_path / 'copy.npz')['params/w'].tolist() == [1.0, 1.0]
