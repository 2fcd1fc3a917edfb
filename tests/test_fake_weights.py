"""Stand-in ImageNet weights: torchvision's exact .pth layout, calibrated scales, convert+load."""
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')  # the torch extra: writing .pth needs it

from aesthetics_jax import models  # noqa: E402
from aesthetics_jax.cli import fake_weights as make_fake_weights  # noqa: E402
from aesthetics_jax.configs import mobilenet_v2_emd, vgg16_binary  # noqa: E402
from aesthetics_jax.models import fake_imagenet, pretrained  # noqa: E402


def _torchvision_shapes(arch: str, **kw) -> dict[str, tuple]:
  tv = pytest.importorskip('torchvision')
  with torch.device('meta'):  # shapes only: no 528 MB of VGG16 weights
    net = getattr(tv.models, arch)(**kw)
  return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize('arch,kw', [('mobilenet_v2', {}), ('mobilenet_v2', {'width_mult': 0.25}),
                                     ('vgg16', {})])
def test_layout_is_torchvisions(arch, kw):
  got = fake_imagenet.layout(arch, kw.get('width_mult', 1.0))
  want = _torchvision_shapes(arch, **kw)
  assert list(got) == list(want)  # same keys, same order
  assert got == want


@pytest.mark.parametrize('width', [0.1, 0.2, 0.3, 0.125])
def test_every_vgg16_width_it_writes_converts(tmp_path, width):
  """make-fake-weights --width_mult=0.2 wrote 13, 26, 51, ... channels; the converter read the
  width from the first layer (13/64 = 0.2031, which gives 52) and called the file damaged."""
  rng = np.random.default_rng(0)
  raw = {k: rng.standard_normal(shape).astype(np.float32) if shape else np.float32(1.0)
         for k, shape in fake_imagenet.layout('vgg16', width, fc_dim=8).items()}
  np.savez(tmp_path / 'raw.npz', **raw)
  path, meta = pretrained.convert_file(tmp_path / 'raw.npz', tmp_path / 'out', 'vgg16')
  assert meta['width_mult'] == width
  config = vgg16_binary.get_config('score,smoke')
  config.model.width_mult, config.model.fc_dim = width, 8
  model = models.create_model(config.model)
  pretrained.load_pretrained(models.init_variables(model, 0, 32), path, arch='vgg16')


def _features_std(config, paths, size=32) -> list[tuple[float, float]]:
  """Per weights file: (mean per-channel std, fraction of non-zero activations) of the
  encoder output, with the file loaded as the trainer loads `model.init_weights`."""
  model = models.create_model(config.model)
  features = jax.jit(lambda v, x: model.apply(v, x, method='features'))  # one compile
  x = make_fake_weights.calibration_images(8, size, seed=9)  # other images than calibration
  out = []
  for path in paths:
    variables = models.init_variables(model, 0, size)
    variables = pretrained.load_pretrained(variables, path, arch=config.model.arch)
    a = np.asarray(features(variables, x))
    out.append((float(a.std(axis=(0, 1, 2)).mean()), float((a > 0).mean())))
  return out


def test_mobilenet_v2_pth_converts_loads_and_keeps_scale(tmp_path):
  c = mobilenet_v2_emd.get_config('smoke')  # width 0.25, 32 px
  path, info = make_fake_weights.make_weights(tmp_path, 'mobilenet_v2',
                                              width_mult=c.model.width_mult, num_images=8,
                                              image_size=32)
  state = torch.load(path, map_location='cpu', weights_only=True)
  assert list(state) == list(fake_imagenet.layout('mobilenet_v2', c.model.width_mult))
  # BN statistics were set from data: not torchvision's fresh mean 0 / var 1.
  assert float(state['features.5.conv.1.1.running_var'].std()) > 0
  assert not torch.allclose(state['features.0.1.running_mean'], torch.zeros(()))
  assert all(0.3 < s < 3 for s in info['activation_std'].values())
  npz, meta = pretrained.convert_file(path, tmp_path / 'w', 'mobilenet_v2')
  assert meta['width_mult'] == c.model.width_mult
  # The same weights without the calibration (torchvision's fresh BN statistics) drift.
  raw = fake_imagenet.init_state(fake_imagenet.layout('mobilenet_v2', c.model.width_mult))
  fake_imagenet.save_pth(raw, tmp_path / 'raw.pth')
  (std, alive), (raw_std, _) = _features_std(c, [npz, tmp_path / 'raw.pth'])
  assert 0.2 < std < 3 and alive > 0.2
  assert abs(np.log(raw_std)) > abs(np.log(std))


def test_vgg16_pth_converts_and_loads(tmp_path):
  c = vgg16_binary.get_config('smoke')  # width 0.125, fc_dim 32
  path, info = make_fake_weights.make_weights(tmp_path, 'vgg16', width_mult=c.model.width_mult,
                                              fc_dim=c.model.fc_dim, num_images=8,
                                              image_size=32)
  assert all(0.3 < s < 3 for s in info['activation_std'].values())
  npz, _ = pretrained.convert_file(path, tmp_path, 'vgg16')
  [(std, alive)] = _features_std(c, [npz])
  assert 0.1 < std < 3 and alive > 0.1


def test_cli_unknown_arch_is_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'launch.make_fake_weights', f'--out={tmp_path}',
                      '--archs=resnet50'], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      'make_fake_weights: --archs=resnet50: use some of mobilenet_v2,vgg16']


@pytest.mark.parametrize('seed', [-1, 2 ** 64])
def test_cli_seed_out_of_range_is_one_line(tmp_path, seed):
  """numpy refused a negative seed and torch one of 2**64 or more: tracebacks, exit 1."""
  r = subprocess.run([sys.executable, '-m', 'launch.make_fake_weights', f'--out={tmp_path}',
                      '--archs=mobilenet_v2', '--width_mult=0.25', '--calibration_images=2',
                      '--image_size=32', f'--seed={seed}'], capture_output=True, text=True)
  assert r.returncode == 2 and list(tmp_path.iterdir()) == []
  assert r.stderr.strip().splitlines() == [
      f'make_fake_weights: --seed={seed}: pass a value from 0 to {2 ** 64 - 1}']


def test_full_disk_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
  """torch.save reported a full disk as 'enforce fail at inline_container.cc: unexpected
  pos', a traceback; /dev/full fails every write with ENOSPC, as a full disk does."""
  import builtins
  from aesthetics_jax import io as io_lib

  def to_dev_full(file, mode='r', *a, **k):
    if str(file).endswith('.tmp'):  # the atomic writer's hidden sibling
      open(file, 'wb').close()  # the sibling exists, as on a real full disk
      return builtins.open('/dev/full', mode, *a, **k)
    return builtins.open(file, mode, *a, **k)

  state = fake_imagenet.init_state(fake_imagenet.layout('mobilenet_v2', 0.25), 0)
  monkeypatch.setattr(io_lib, 'open', to_dev_full, raising=False)
  with pytest.raises(fake_imagenet.FakeWeightsError) as e:
    fake_imagenet.save_pth(state, tmp_path / 'w.pth')
  monkeypatch.undo()
  assert str(e.value) == (f'{tmp_path / "w.pth"}: cannot write (No space left on device); '
                          'free some space or write to another disk')
  assert list(tmp_path.iterdir()) == []


def test_cli_repeated_arch_is_written_once(tmp_path):
  out = tmp_path / 'fake weights ü'
  r = subprocess.run([sys.executable, '-m', 'launch.make_fake_weights', f'--out={out}',
                      '--archs=mobilenet_v2,mobilenet_v2', '--width_mult=0.25',
                      '--calibration_images=2', '--image_size=32'], capture_output=True, text=True)
  # Was two 'Wrote' lines: the same file calibrated and written twice (VGG16: 528 MB each).
  assert r.returncode == 0, r.stderr
  assert r.stdout.count('Wrote ') == 1, r.stdout
  # The follow-up command it prints pastes into a shell (it printed the paths unquoted).
  command = shlex.split(r.stdout.split('convert it with: ')[1])
  assert command[2:] == [f'--source={out / "mobilenet_v2-synthetic.pth"}', f'--out={out}'], command
