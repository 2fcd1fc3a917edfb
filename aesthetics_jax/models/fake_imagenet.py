"""Stand-in ImageNet weights: torchvision-layout state_dicts with random, calibrated weights.

The paper's models start from torchvision's ImageNet files (`mobilenet_v2-b0353104.pth`,
`vgg16-397923af.pth`), which cannot be downloaded here. These functions write files in exactly
their format (key names, shapes, order, dtypes of `torchvision.models.mobilenet_v2()` /
`vgg16()` state_dicts) so the user's path (convert_weights → `model.init_weights`) runs end to
end at full size:

  * weights are drawn as torchvision initialises them (Kaiming-normal fan-out convs, N(0, 0.01)
    linears, zero biases, BN weight 1 / bias 0);
  * MobileNetV2's BatchNorm running_mean / running_var are then set, layer by layer, to the
    per-channel statistics of the layer's input over calibration images (each later layer
    seeing the already-calibrated earlier ones), so in eval mode every BN outputs ~N(0, 1)
    per channel, as a trained network's roughly does;
  * VGG16 has no BatchNorm: the same statistics are folded into each conv / fc6 / fc7 / fc8
    (W/σ, (b-μ)/σ per output channel), so every pre-activation is ~N(0, 1) per channel.
Random features carry no ImageNet semantics; what they preserve is the scale of every
activation, hence realistic numerics, timing and memory for the whole pipeline.

Layout helpers take the same width arguments as `aesthetics_jax.models` (MobileNetV2
`width_mult`; VGG16 `width_mult` channel scale and `fc_dim`), so tests write tiny files.
torch is needed (imported here lazily; `FakeWeightsError` names the extra to install).
"""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import numpy as np

from aesthetics_jax import io
from aesthetics_jax.configs.default import ARCHS
from aesthetics_jax.models import mobilenet_v2 as mnv2
from aesthetics_jax.models import vgg
from aesthetics_jax.models import weight_files

NUM_CLASSES = 1000      # ImageNet's classifier rows, as in the real files
BN_EPS = 1e-5
VGG_POOL = 7            # torchvision's AdaptiveAvgPool2d((7, 7)) before classifier.0
TORCH_HINT = weight_files.TORCH_HINT
_BN_LEAVES = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


class FakeWeightsError(ValueError):
  """One-line, user-fixable problem (missing torch, bad arch or width)."""


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise FakeWeightsError(f'writing torchvision .pth files needs torch; {TORCH_HINT}') from None
  return torch


# ---------------------------------------------------------------------------------------
# Layout: {torch key: shape} in torchvision's state_dict order.

def _bn(prefix: str, c: int) -> dict[str, tuple]:
  return {f'{prefix}.{leaf}': (() if leaf == 'num_batches_tracked' else (c,))
          for leaf in _BN_LEAVES}


def mobilenet_v2_blocks(width_mult: float) -> list[dict[str, Any]]:
  """Per inverted-residual block (features.1..17): its torch sub-keys and shapes.

  Each dict: `index`, `inp`, `hidden`, `out`, `stride`, `expand` (None or the 1x1 conv's
  prefix), `depthwise` and `project` prefixes (conv, bn). torchvision numbers the Sequential
  `conv` children 0.. so the depthwise conv is `conv.0` without an expansion, `conv.1` with one.
  """
  blocks = []
  for i, (inp, hidden, out, stride, t) in enumerate(mnv2.block_specs(width_mult), start=1):
    p = f'features.{i}.conv'
    j = 0 if t == 1 else 1
    blocks.append({'index': i, 'inp': inp, 'hidden': hidden, 'out': out, 'stride': stride,
                   'expand': None if t == 1 else f'{p}.0',
                   'depthwise': f'{p}.{j}', 'project': (f'{p}.{j + 1}', f'{p}.{j + 2}')})
  return blocks


def mobilenet_v2_layout(width_mult: float = 1.0) -> dict[str, tuple]:
  """`torchvision.models.mobilenet_v2(width_mult=w).state_dict()` keys → shapes."""
  s = {}
  stem = mnv2.stem_channels(width_mult)
  s['features.0.0.weight'] = (stem, 3, 3, 3)
  s.update(_bn('features.0.1', stem))
  for b in mobilenet_v2_blocks(width_mult):
    if b['expand']:
      s[f"{b['expand']}.0.weight"] = (b['hidden'], b['inp'], 1, 1)
      s.update(_bn(f"{b['expand']}.1", b['hidden']))
    s[f"{b['depthwise']}.0.weight"] = (b['hidden'], 1, 3, 3)
    s.update(_bn(f"{b['depthwise']}.1", b['hidden']))
    conv, bn = b['project']
    s[f'{conv}.weight'] = (b['out'], b['hidden'], 1, 1)
    s.update(_bn(bn, b['out']))
  last_in = mnv2.block_specs(width_mult)[-1][2]
  last = mnv2.last_channels(width_mult)
  s['features.18.0.weight'] = (last, last_in, 1, 1)
  s.update(_bn('features.18.1', last))
  s['classifier.1.weight'] = (NUM_CLASSES, last)
  s['classifier.1.bias'] = (NUM_CLASSES,)
  return s


def vgg16_layout(width_mult: float = 1.0, fc_dim: int = 4096) -> dict[str, tuple]:
  """`torchvision.models.vgg16().state_dict()` keys → shapes (channels and fc width scaled)."""
  s, c_in = {}, 3
  for idx, c in vgg.conv_layers(width_mult):
    s[f'features.{idx}.weight'] = (c, c_in, 3, 3)
    s[f'features.{idx}.bias'] = (c,)
    c_in = c
  for name, (o, i) in (('0', (fc_dim, c_in * VGG_POOL * VGG_POOL)), ('3', (fc_dim, fc_dim)),
                       ('6', (NUM_CLASSES, fc_dim))):
    s[f'classifier.{name}.weight'] = (o, i)
    s[f'classifier.{name}.bias'] = (o,)
  return s


def layout(arch: str, width_mult: float = 1.0, fc_dim: int = 4096) -> dict[str, tuple]:
  if arch not in ARCHS:
    raise FakeWeightsError(f'unknown arch {arch!r}; use one of {", ".join(ARCHS)}')
  if not width_mult > 0 or fc_dim < 1:
    raise FakeWeightsError(f'width_mult must be > 0 and fc_dim >= 1, got {width_mult} and '
                           f'{fc_dim}')
  return mobilenet_v2_layout(width_mult) if arch == 'mobilenet_v2' else vgg16_layout(
      width_mult, fc_dim)


# ---------------------------------------------------------------------------------------
# torchvision's initialisation.

def init_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, Any]:
  """torch tensors as torchvision initialises the modules (see the module docstring)."""
  torch = _torch()
  g = torch.Generator().manual_seed(int(seed))
  out = collections.OrderedDict()
  for key, shape in shapes.items():
    leaf = key.rsplit('.', 1)[1]
    if leaf == 'num_batches_tracked':
      out[key] = torch.zeros((), dtype=torch.long)
    elif leaf in ('running_var',) or (leaf == 'weight' and len(shape) == 1):  # BN var / gamma
      out[key] = torch.ones(shape)
    elif leaf in ('bias', 'running_mean'):
      out[key] = torch.zeros(shape)
    elif len(shape) == 4:  # conv: kaiming_normal_(mode='fan_out', nonlinearity='relu')
      fan_out = shape[0] * shape[2] * shape[3]
      out[key] = torch.randn(shape, generator=g) * float(np.sqrt(2.0 / fan_out))
    else:                  # linear: normal_(0, 0.01)
      out[key] = torch.randn(shape, generator=g) * 0.01
  return out


# ---------------------------------------------------------------------------------------
# Calibration forward passes (eval-mode semantics, NCHW, torch.nn.functional).

def _calibrate_bn(state, prefix: str, y):
  """Sets `prefix`'s running stats to y's per-channel statistics; returns eval-mode BN(y)."""
  mean = y.mean(dim=(0, 2, 3))
  var = y.var(dim=(0, 2, 3), unbiased=True)  # what torch's running_var accumulates
  state[f'{prefix}.running_mean'] = mean.clone()
  state[f'{prefix}.running_var'] = var.clone()
  state[f'{prefix}.num_batches_tracked'] += 1
  inv = state[f'{prefix}.weight'] / (var + BN_EPS).sqrt()
  return (y - mean[None, :, None, None]) * inv[None, :, None, None] + state[
      f'{prefix}.bias'][None, :, None, None]


def _channel_std(x) -> float:
  return float(x.std(dim=(0, 2, 3)).mean()) if x.dim() == 4 else float(x.std(dim=0).mean())


def _calibrate_mobilenet_v2(state, x, width_mult: float) -> dict[str, float]:
  torch = _torch()
  F = torch.nn.functional
  stats = {}
  with torch.no_grad():
    x = F.conv2d(x, state['features.0.0.weight'], stride=2, padding=1)
    x = F.relu6(_calibrate_bn(state, 'features.0.1', x))
    stats['features.0'] = _channel_std(x)
    for b in mobilenet_v2_blocks(width_mult):
      y = x
      if b['expand']:
        y = F.conv2d(y, state[f"{b['expand']}.0.weight"])
        y = F.relu6(_calibrate_bn(state, f"{b['expand']}.1", y))
      y = F.conv2d(y, state[f"{b['depthwise']}.0.weight"], stride=b['stride'], padding=1,
                   groups=b['hidden'])
      y = F.relu6(_calibrate_bn(state, f"{b['depthwise']}.1", y))
      conv, bn = b['project']
      y = _calibrate_bn(state, bn, F.conv2d(y, state[f'{conv}.weight']))
      x = x + y if b['stride'] == 1 and b['inp'] == b['out'] else y
      stats[f"features.{b['index']}"] = _channel_std(x)
    x = F.relu6(_calibrate_bn(state, 'features.18.1',
                              F.conv2d(x, state['features.18.0.weight'])))
    stats['features.18'] = _channel_std(x)
  return stats


def _fold(state, prefix: str, y):
  """Folds y's per-output statistics into `prefix`.weight/bias; returns the standardised y."""
  dims = (0, 2, 3) if y.dim() == 4 else (0,)
  mean, std = y.mean(dim=dims), y.std(dim=dims).clamp_min(1e-6)
  w = state[f'{prefix}.weight']
  state[f'{prefix}.weight'] = w / std.reshape((-1,) + (1,) * (w.dim() - 1))
  state[f'{prefix}.bias'] = (state[f'{prefix}.bias'] - mean) / std
  shape = (1, -1, 1, 1) if y.dim() == 4 else (1, -1)
  return (y - mean.reshape(shape)) / std.reshape(shape)


def _calibrate_vgg16(state, x) -> dict[str, float]:
  torch = _torch()
  F = torch.nn.functional
  stats = {}
  with torch.no_grad():
    for idx, kind, _ in vgg.sequence():
      if kind == 'conv':
        x = _fold(state, f'features.{idx}', F.conv2d(x, state[f'features.{idx}.weight'],
                                                     state[f'features.{idx}.bias'], padding=1))
      elif kind == 'relu':
        x = F.relu(x)
        stats[f'features.{idx}'] = _channel_std(x)
      else:
        x = F.max_pool2d(x, 2, 2)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (VGG_POOL, VGG_POOL)), 1)
    for name in ('0', '3', '6'):
      p = f'classifier.{name}'
      x = _fold(state, p, F.linear(x, state[f'{p}.weight'], state[f'{p}.bias']))
      if name != '6':
        x = F.relu(x)
      stats[p] = _channel_std(x)
  return stats


def calibrate(state: dict[str, Any], arch: str, images: np.ndarray,
              width_mult: float = 1.0) -> dict[str, float]:
  """Calibrates `state` in place on `images` f32 `[N, H, W, 3]` (the model's input scale).

  Returns the mean per-channel std of each layer's output activation (after its ReLU /
  residual add), the check that nothing vanishes or explodes.
  """
  torch = _torch()
  if images.ndim != 4 or images.shape[0] < 2 or images.shape[-1] != 3:
    raise FakeWeightsError(f'calibration images must be [N>=2, H, W, 3], got {images.shape}')
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32))
  if arch == 'mobilenet_v2':
    return _calibrate_mobilenet_v2(state, x, width_mult)
  return _calibrate_vgg16(state, x)


class _WriteErrors:
  """The file torch.save writes through, keeping the first OSError of a write: torch turns it
  into an opaque RuntimeError."""

  def __init__(self, f):
    self.f, self.error = f, None

  def write(self, b) -> int:
    try:
      return self.f.write(b)
    except OSError as e:
      self.error = self.error or e
      raise

  def flush(self) -> None:
    try:
      self.f.flush()
    except OSError as e:
      self.error = self.error or e
      raise


def save_pth(state: dict[str, Any], path: str | os.PathLike) -> Path:
  """`torch.save(state_dict)`, atomically (`io.atomic_write_stream`); a full disk is one
  FakeWeightsError line (torch reports it as 'enforce fail at inline_container.cc:
  unexpected pos') and leaves no file."""
  torch = _torch()
  path = Path(path)

  def write(f) -> None:
    out = _WriteErrors(f)
    try:
      torch.save(collections.OrderedDict((k, v.contiguous()) for k, v in state.items()), out)
    except RuntimeError:
      if out.error is None:
        raise
      raise out.error from None

  try:
    io.atomic_write_stream(path, write)
  except OSError as e:
    raise FakeWeightsError(f'{path}: cannot write ({e.strerror or e}); free some space or '
                           'write to another disk') from None
  return path


def make_state(arch: str, images: np.ndarray, width_mult: float = 1.0, fc_dim: int = 4096,
               seed: int = 0) -> tuple[dict[str, Any], dict[str, float]]:
  """(calibrated torchvision-layout state_dict, per-layer activation stds)."""
  state = init_state(layout(arch, width_mult, fc_dim), seed)
  return state, calibrate(state, arch, images, width_mult)
