"""torchvision ImageNet weights → Flax variables of `aesthetics_jax.models`, and merging.

Files:
  - raw torchvision state_dicts, read by `weight_files.read_arrays` (`.pth`/`.pt`,
    `.safetensors`, `.npz`, told apart by content); timm's
    `mobilenetv2_100` (_035 ... _140) / `vgg16` names become torchvision's (`_from_timm`);
  - converted files (`launch/convert_weights.py`): `.npz` (or `.safetensors`) whose keys are
    '/'-joined Flax paths such as `params/encoder/features_0/conv/kernel`, plus `<file>.json`
    describing arch and width.
Conversion: conv OIHW → HWIO (depthwise (C,1,3,3) → (3,3,1,C)); BN weight/bias/running_mean/
running_var → scale/bias/mean/var (num_batches_tracked dropped); Linear (out,in) → (in,out);
VGG's fc6 rows permuted from torch's NCHW flatten order to our NHWC flatten order.

Every problem a user can fix raises `PretrainedError` whose message is one line naming the
file, the key, and the fix.
"""
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np
from absl import logging
from flax import traverse_util
from flax.core import unfreeze

from aesthetics_jax import io
from aesthetics_jax.configs.default import ARCHS
from aesthetics_jax.models import mobilenet_v2 as mnv2
from aesthetics_jax.models import vgg
from aesthetics_jax.models import weight_files
# Part of this module's interface: the error every loader raises, and the raw reader.
from aesthetics_jax.models.weight_files import (  # pylint: disable=unused-import
    PretrainedError, read_arrays)

# Heads that are new for our tasks, and ImageNet's classifiers (never loaded by default).
DEFAULT_DONT_LOAD = (r'^params/head/(score|tags|logit)/', r'^params/head/(classifier|fc8)/')
FORMAT = 'aesthetics_jax.flax_flat_v1'


# ---------------------------------------------------------------------------------------
# Conversion plan: torch key → (flax key, transform). Shapes and arrays share one plan, so
# tests can check full-size models' shapes without materialising 528 MB of VGG weights.
# ---------------------------------------------------------------------------------------

def _leaf(kind: str, torch_leaf: str) -> Optional[tuple[str, str, str]]:
  """(collection, flax leaf, transform) for one torch parameter of a conv/bn/linear."""
  table = {
      'conv': {'weight': ('params', 'kernel', 'oihw'), 'bias': ('params', 'bias', 'id')},
      'bn': {'weight': ('params', 'scale', 'id'), 'bias': ('params', 'bias', 'id'),
             'running_mean': ('batch_stats', 'mean', 'id'),
             'running_var': ('batch_stats', 'var', 'id'),
             'num_batches_tracked': None},
      'linear': {'weight': ('params', 'kernel', 'linear'), 'bias': ('params', 'bias', 'id')},
      'fc6': {'weight': ('params', 'kernel', 'fc6'), 'bias': ('params', 'bias', 'id')},
  }[kind]
  if torch_leaf not in table:
    raise KeyError(torch_leaf)
  return table[torch_leaf]


def _mobilenet_module(key: str, expanded: set[int]) -> tuple[str, str, str]:
  """torch key → (flax module path, kind, torch leaf) for torchvision mobilenet_v2."""
  m = re.fullmatch(r'features\.(\d+)\.([01])\.(\w+)', key)
  if m:  # stem (features.0) and last 1x1 conv (features.18): Conv2dNormActivation
    i, sub, leaf = int(m[1]), int(m[2]), m[3]
    return f'encoder/features_{i}/{("conv", "bn")[sub]}', ('conv', 'bn')[sub], leaf
  m = re.fullmatch(r'features\.(\d+)\.conv\.(\d+)(?:\.(\d+))?\.(\w+)', key)
  if m:
    i, j, leaf = int(m[1]), int(m[2]), m[4]
    names = (['expand'] if i in expanded else []) + ['depthwise', 'project/conv', 'project/bn']
    if j >= len(names):
      raise KeyError(key)
    name = names[j]
    if m[3] is not None:  # Conv2dNormActivation inside the block: .0 conv, .1 bn
      if name not in ('expand', 'depthwise') or m[3] not in '01':
        raise KeyError(key)
      return (f'encoder/features_{i}/{name}/{("conv", "bn")[int(m[3])]}',
              ('conv', 'bn')[int(m[3])], leaf)
    if name not in ('project/conv', 'project/bn'):
      raise KeyError(key)
    return f'encoder/features_{i}/{name}', name.split('/')[1], leaf
  m = re.fullmatch(r'classifier\.1\.(\w+)', key)
  if m:
    return 'head/classifier', 'linear', m[1]
  raise KeyError(key)


def _vgg_module(key: str) -> tuple[str, str, str]:
  m = re.fullmatch(r'features\.(\d+)\.(\w+)', key)
  if m:
    return f'encoder/features_{m[1]}', 'conv', m[2]
  m = re.fullmatch(r'classifier\.(\d)\.(\w+)', key)
  if m and m[1] in ('0', '3', '6'):
    name = {'0': 'fc6', '3': 'fc7', '6': 'fc8'}[m[1]]
    return f'head/{name}', 'fc6' if name == 'fc6' else 'linear', m[2]
  raise KeyError(key)


def detect_arch(keys: Iterable[str], source: str = '<state_dict>') -> str:
  """'mobilenet_v2' if the torch keys have inverted-residual `.conv.` blocks, else 'vgg16'."""
  keys = list(keys)
  if any(re.fullmatch(r'features\.\d+\.conv\.\d+.*', k) for k in keys):
    return 'mobilenet_v2'
  if any(re.fullmatch(r'features\.\d+\.weight', k) for k in keys):
    return 'vgg16'
  prefixes = sorted({m[1] for k in keys if (m := re.match(r'(.+?\.)features\.\d+\.', k))})
  if len(prefixes) > 1:  # e.g. a model and its EMA copy in one flat dict
    raise PretrainedError(
        f'{source}: layers under {len(prefixes)} prefixes ({", ".join(map(repr, prefixes[:4]))})'
        ": several models' weights in one state_dict; save one model's state_dict() and pass that")
  if prefixes:  # a LightningModule's backbone beside its own head
    other = next(k for k in keys if not k.startswith(prefixes[0]))
    raise PretrainedError(
        f'{source}: layers under {prefixes[0]!r} beside other keys such as {other!r}: a network '
        f'inside a larger model; save that part alone (e.g. '
        f'model.{prefixes[0].rstrip(".")}.state_dict()) and pass it')
  raise PretrainedError(
      f'{source}: keys such as {keys[:2]} are not a torchvision or timm mobilenet_v2 or vgg16 '
      'state_dict')


# Prefixes that wrappers give every key: DataParallel / DDP, Lightning, torch.compile.
_WRAPPER_PREFIXES = ('module.', 'model.', '_orig_mod.')


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
  """Keys without the prefix that every one shares: a wrapper's, nested ('model.module.',
  '_orig_mod.' was refused), or a LightningModule attribute's ('backbone.') when torchvision's
  or timm's layer names follow it."""
  state = dict(state)
  while state and all(isinstance(k, str) and '.' in k for k in state):
    heads = {k.split('.', 1)[0] for k in state}
    if len(heads) != 1:
      break
    p = heads.pop() + '.'
    rest = {k[len(p):]: v for k, v in state.items()}
    if p not in _WRAPPER_PREFIXES and not any(k.startswith(('features.', 'conv_stem.'))
                                              for k in rest):
      break
    state = rest
  return state


# timm's names for the same layers (`timm.create_model('mobilenetv2_100' | 'vgg16')`, whose
# `.tv_in1k` VGG16 weights are torchvision's): MobileNetV2 blocks numbered per stage, their
# convs named by role; VGG's fc6/fc7 as 7x7 / 1x1 convs. Checked against timm 1.0.31.
_TIMM_DS = {'conv_dw': 'conv.0.0', 'bn1': 'conv.0.1', 'conv_pw': 'conv.1', 'bn2': 'conv.2'}
_TIMM_IR = {'conv_pw': 'conv.0.0', 'bn1': 'conv.0.1', 'conv_dw': 'conv.1.0', 'bn2': 'conv.1.1',
            'conv_pwl': 'conv.2', 'bn3': 'conv.3'}


def _flatten_rows(v: Any) -> Any:
  """(out, C, H, W) conv weight → (out, C*H*W) Linear weight, in torch's NCHW flatten order;
  for a shape tuple, the shape."""
  if isinstance(v, tuple):
    return (v[0], math.prod(v[1:])) if len(v) > 1 else v
  return np.reshape(v, (np.shape(v)[0], -1)) if np.ndim(v) > 1 else v


def _from_timm(state: dict[str, Any]) -> dict[str, Any]:
  """timm keys → torchvision keys (anything else unchanged, for the usual key errors)."""
  if 'conv_stem.weight' in state:  # MobileNetV2
    blocks = sorted({(int(m[1]), int(m[2])) for k in state
                     if (m := re.match(r'blocks\.(\d+)\.(\d+)\.', k))})
    index = {b: i + 1 for i, b in enumerate(blocks)}  # features.0 is the stem
    head = len(blocks) + 1
    fixed = {'conv_stem': 'features.0.0', 'bn1': 'features.0.1', 'conv_head': f'features.{head}.0',
             'bn2': f'features.{head}.1', 'classifier': 'classifier.1'}
    out = {}
    for k, v in state.items():
      m = re.fullmatch(r'blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)', k)
      if m:
        s, b = int(m[1]), int(m[2])
        names = _TIMM_IR if f'blocks.{s}.{b}.conv_pwl.weight' in state else _TIMM_DS
        if m[3] in names:
          k = f'features.{index[s, b]}.{names[m[3]]}.{m[4]}'
      elif (m := re.fullmatch(r'(\w+)\.(\w+)', k)) and m[1] in fixed:
        k = f'{fixed[m[1]]}.{m[2]}'
      out[k] = v
    return out
  if 'pre_logits.fc1.weight' in state:  # VGG: ConvMlp fc1 (7x7 conv), fc2 (1x1), head.fc
    names = {'pre_logits.fc1': 'classifier.0', 'pre_logits.fc2': 'classifier.3',
             'head.fc': 'classifier.6'}
    out = {}
    for k, v in state.items():
      module, _, leaf = k.rpartition('.')
      if module in names:
        k, v = f'{names[module]}.{leaf}', _flatten_rows(v) if leaf == 'weight' else v
      out[k] = v
    return out
  return state


def _canonical(state: Mapping[str, Any]) -> dict[str, Any]:
  """A state_dict's keys as torchvision names them: wrapper prefixes off, timm renamed."""
  return _from_timm(_strip_prefix(state))


# Rank each transform needs (torchvision layout), for a one-line error on a damaged file.
_RANKS = {'oihw': (4, 'conv weight (O, I, H, W)'), 'linear': (2, 'Linear weight (out, in)'),
          'fc6': (2, 'Linear weight (out, in)'), 'id': (1, 'bias / BatchNorm vector')}


def _other_arch(source: str | os.PathLike, found: str, arch: str) -> PretrainedError:
  """Weights of `found` where `arch` was asked for: by convert_weights' --arch, or by a
  training config (where 'pass --arch=...' named a flag it does not have)."""
  return PretrainedError(f'{source}: holds {found} weights, not {arch}; pass {arch} weights, or '
                         f'use {found}: aesthetics-convert-weights --arch={found}, or a {found} '
                         f'training config (config.model.arch={found})')


def _plan(shapes: Mapping[str, tuple], arch: str, source: str = '<state_dict>'):
  """[(torch key, flax key, transform, meta)] for every convertible torch parameter."""
  if arch not in ARCHS:
    raise PretrainedError(f'--arch={arch!r}: use one of {ARCHS}')
  found = detect_arch(shapes, source)
  if found != arch:
    raise _other_arch(source, found, arch)
  expanded = {int(m[1]) for k in shapes
              if (m := re.fullmatch(r'features\.(\d+)\.conv\.3\.weight', k))}
  meta = {}  # filled after the loop, once every shape's rank is known to be right
  plan = []
  for key in shapes:
    try:
      if arch == 'mobilenet_v2':
        module, kind, leaf = _mobilenet_module(key, expanded)
      else:
        module, kind, leaf = _vgg_module(key)
      target = _leaf(kind, leaf)
    except KeyError:
      raise PretrainedError(
          f'{source}: unexpected key {key!r} for a torchvision {arch} state_dict '
          f'(is --arch right?)') from None
    if target is None:
      continue
    coll, flax_leaf, transform = target
    rank, what = _RANKS[transform]
    if len(shapes[key]) != rank:  # else transpose fails with "axes don't match array"
      raise PretrainedError(
          f'{source}: {key} has shape {tuple(shapes[key])}, but a {what} has {rank} dims; '
          f'the file is damaged or not a torchvision {arch} state_dict: re-export it')
    if 0 in shapes[key]:  # an empty conv made fc6's permutation divide by zero
      raise PretrainedError(f'{source}: {key} has shape {tuple(shapes[key])}, with no values; '
                            'the file is damaged: re-export it')
    top, rest = module.split('/', 1)
    plan.append((key, f'{coll}/{top}/{rest}/{flax_leaf}', transform, meta))
  if arch == 'vgg16':
    convs = sorted((int(m[1]), k) for k in shapes
                   if (m := re.fullmatch(r'features\.(\d+)\.weight', k)))
    meta['channels'] = shapes[convs[-1][1]][0]  # C of the last conv, for fc6's permutation
  return plan


def _fc6_dims(shape: tuple, channels: int, source: str, key: str) -> tuple[int, int, int]:
  out, inp = shape
  p = math.isqrt(inp // channels) if inp % channels == 0 else 0
  if p * p * channels != inp:
    raise PretrainedError(f'{source}: {key} has {inp} inputs, not C*P*P for C={channels}')
  return out, channels, p


def _transform_shape(shape: tuple, transform: str, meta: dict, source: str, key: str) -> tuple:
  if transform == 'oihw':
    o, i, h, w = shape
    return (h, w, i, o)
  if transform in ('linear', 'fc6'):
    if transform == 'fc6':
      _fc6_dims(shape, meta['channels'], source, key)
    return (shape[1], shape[0])
  return tuple(shape)


def _check_values(x: np.ndarray, source: str, key: str) -> np.ndarray:
  """`x` as float32 if it holds finite floats. Integer or bool weights were cast silently, and
  NaN / inf weights trained for a while before 'non-finite loss ... lower the learning rate'."""
  x = np.asarray(x)
  if not (x.dtype.kind == 'f' or x.dtype.kind == 'V' and 'float' in x.dtype.name):  # bfloat16
    if x.dtype.kind == 'V' and x.dtype.names is None:  # was 'damaged or not ... float'
      raise PretrainedError(
          f'{source}: {key} holds {x.dtype} values, untyped bytes: how np.save stores bfloat16 '
          '(or another ml_dtypes type), whose type it loses; save the arrays as float32 '
          '(np.asarray(x, np.float32)) and pass that file')
    raise PretrainedError(f'{source}: {key} holds {x.dtype} values, not floats; the file is '
                          'damaged or not an ImageNet float state_dict: pass the float weights')
  x = x.astype(np.float32, copy=False)
  bad = x.size - int(np.count_nonzero(np.isfinite(x)))
  if bad:
    raise PretrainedError(f'{source}: {key} holds NaN or inf ({bad} of {x.size} values); the '
                          'file is damaged: download or export it again')
  return x


def _transform(x: np.ndarray, transform: str, meta: dict, source: str, key: str) -> np.ndarray:
  x = _check_values(x, source, key)
  if transform == 'oihw':
    return np.ascontiguousarray(x.transpose(2, 3, 1, 0))
  if transform == 'linear':
    return np.ascontiguousarray(x.T)
  if transform == 'fc6':
    out, c, p = _fc6_dims(x.shape, meta['channels'], source, key)
    # torch input index = c*P*P + h*P + w (NCHW flatten); ours = (h*P + w)*C + c (NHWC).
    return np.ascontiguousarray(x.reshape(out, c, p, p).transpose(2, 3, 1, 0).reshape(-1, out))
  return x


def torch_to_flax_shapes(shapes: Mapping[str, Sequence[int]], arch: str) -> dict[str, tuple]:
  """torch state_dict shapes → {flax key: shape} (no arrays needed)."""
  shapes = _canonical({k: tuple(v) for k, v in shapes.items()})
  return {fk: _transform_shape(shapes[tk], t, meta, '<shapes>', tk)
          for tk, fk, t, meta in _plan(shapes, arch)}


def torch_to_flax(state: Mapping[str, np.ndarray], arch: Optional[str] = None,
                  source: str = '<state_dict>') -> dict[str, np.ndarray]:
  """torchvision state_dict (numpy arrays) → {'/'-joined flax key: float32 array}."""
  state = _canonical(state)
  arch = arch or detect_arch(state, source)
  shapes = {k: tuple(np.shape(v)) for k, v in state.items()}
  return {fk: _transform(state[tk], t, meta, source, tk)
          for tk, fk, t, meta in _plan(shapes, arch, source)}


# ---------------------------------------------------------------------------------------
# Converted files: folders, sidecars
# ---------------------------------------------------------------------------------------

def convert_command(arch: str, out: str | os.PathLike) -> str:
  """The command that writes `<out>/<arch>.npz` (for error messages)."""
  return (f'aesthetics-convert-weights --arch={arch} --source=<torchvision {arch} .pth or '
          f'.safetensors> --out={out}')


def resolve_weights_path(path: str | os.PathLike, arch: Optional[str] = None) -> Path:
  """A weights file as given, or for a folder (`convert_weights --out=FOLDER`) the file
  `FOLDER/<arch>.npz` it wrote.

  Without `arch`, a folder must hold exactly one converted `<arch>.npz` (ARCHS). Raises
  PretrainedError (one line: the folder, what it holds, the command that fills it).
  """
  path = Path(path).expanduser()
  if not path.is_dir():
    return path
  wanted = [arch] if arch else list(ARCHS)
  found = [path / f'{a}.npz' for a in wanted if (path / f'{a}.npz').is_file()]
  if len(found) == 1:
    return found[0]
  held = sorted(p.name for p in path.iterdir() if not p.name.startswith('.'))
  holds = f'holds {", ".join(held[:6])}{" ..." if len(held) > 6 else ""}' if held else 'is empty'
  if found:  # no arch given and both archs present
    raise PretrainedError(f'{path}: a weights folder with {" and ".join(f.name for f in found)}; '
                          'name the file, e.g. --config.model.init_weights='
                          f'{found[0]}')
  want = arch or '|'.join(ARCHS)
  raise PretrainedError(f'{path}: a folder without {want}.npz (it {holds}); write it with '
                        f'{convert_command(arch or "<arch>", path)}, or pass the weights file')


def _is_flax_flat(keys: Iterable[str]) -> bool:
  keys = list(keys)
  return bool(keys) and all(isinstance(k, str) and k.split('/', 1)[0] in ('params', 'batch_stats')
                            for k in keys)


# The MobileNetV2 widths that infer_width_mult recognises, the usual ones first.
_WIDTHS = [1.0, 0.75, 0.5, 0.35, 0.25, 1.4, 1.3, 0.1] + [round(0.05 * i, 2) for i in range(1, 61)]


def _vgg_width(kernels: list) -> float:
  """The width multiplier of VGG16 conv kernels [H, W, in, out] (`vgg.conv_layers`): the first
  conv's out/64 when it gives every layer's channels, else the shortest decimal that does
  (make-fake-weights --width_mult=0.2 has 13, 26, 51, ...: 13/64 = 0.2031 gives 52 for 51,
  and the converter called the file damaged). Neither: out/64, for the shape check to name."""
  first = round(kernels[0][-1] / 64, 4)
  if any(k is None for k in kernels):
    return first
  outs = [k[-1] for k in kernels]
  fits = lambda w: [c for _, c in vgg.conv_layers(w)] == outs  # noqa: E731
  if fits(first):
    return first
  # scaled_channels rounds c·w: each layer bounds w to within half a channel of c / its base.
  lo = max((c - 0.5) / base for c, (_, base) in zip(outs, vgg.conv_layers()))
  hi = min((c + 0.5) / base for c, (_, base) in zip(outs, vgg.conv_layers()))
  for digits in range(1, 5):
    scale = 10 ** digits
    for k in range(math.floor(lo * scale), math.ceil(hi * scale) + 1):
      if fits(round(k / scale, digits)):
        return round(k / scale, digits)
  return first


def infer_width_mult(flat: Mapping[str, Any], arch: str) -> Optional[float]:
  """The width multiplier whose channel counts match converted weights (None if none)."""
  shape = lambda k: tuple(np.shape(flat[k])) if k in flat else None
  if arch == 'vgg16':
    s = shape('params/encoder/features_0/kernel')
    return None if s is None else _vgg_width(
        [shape(f'params/encoder/features_{i}/kernel') for i, _ in vgg.conv_layers()])
  stem = shape('params/encoder/features_0/conv/kernel')
  if stem is None:
    return None
  for w in _WIDTHS:
    specs = mnv2.block_specs(w)
    if mnv2.stem_channels(w) != stem[-1]:
      continue
    outs = [shape(f'params/encoder/features_{i}/project/conv/kernel') for i in range(1, 18)]
    if all(o is not None and o[-1] == s[2] for o, s in zip(outs, specs)):
      return w
  return None


def _sidecar_fix(path: Path) -> str:
  return (f'delete it (arch and width_mult are then read from {path.name}) or convert the '
          'weights again with aesthetics-convert-weights')


def _read_sidecar(side: Path, path: Path) -> dict:
  """The `<file>.json` that convert_weights writes beside `path`; PretrainedError if damaged."""
  fix = _sidecar_fix(path)
  try:
    meta = json.loads(side.read_text())
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise PretrainedError(f'{side}: not valid JSON ({type(e).__name__}: '
                          f'{weight_files.first_line(e)}); {fix}') from None
  except OSError as e:  # was a bare PermissionError (exit 1), where the weights file's is this
    raise PretrainedError(f'{side}: cannot be read ({e.strerror or weight_files.first_line(e)});'
                          ' fix its permissions, or delete it (arch and width_mult are then '
                          f'read from {path.name})') from None
  if not isinstance(meta, dict):
    raise PretrainedError(f'{side}: holds a JSON {type(meta).__name__}, not an object with '
                          f'arch and width_mult; {fix}')
  if 'arch' in meta and meta['arch'] not in ARCHS:  # else e.g. convert writes `resnet.npz`
    raise PretrainedError(f'{side}: arch={meta["arch"]!r} is not one of {ARCHS}; {fix}')
  return meta


# What else a file of the detected family may be, for the error naming a key it should not have.
_VARIANTS = {'vgg16': "vgg11 / vgg13 / vgg19, or a BatchNorm vgg*_bn",
             'mobilenet_v2': "a deeper timm mobilenetv2_110d / _120d, or another network"}


def _check_layout(keys: Iterable[str], arch: str, source: str) -> None:
  """torchvision's `arch` has exactly these keys: another VGG depth was converted as vgg16
  (its extra convs then 'not in the model' at training), and a state_dict with a layer
  missing was written with width_mult=None. The classifiers and BN counters may be absent
  (headless exports, old files); whether the model needs fc6/fc7 is load_pretrained's to say.
  """
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  expected = list(fake_imagenet.layout(arch))  # key names do not depend on the width
  keys = set(keys)
  unexpected = sorted(keys - set(expected))
  for k in unexpected:  # 'module.X' beside 'X': two models, or one saved twice
    parts = k.split('.')
    same = next(('.'.join(parts[i:]) for i in range(1, len(parts))
                 if '.'.join(parts[i:]) in keys), None)
    if same:
      raise PretrainedError(
          f"{source}: holds {same!r} twice, also as {k!r}: several models' weights in one "
          "state_dict; save one model's state_dict() and pass that")
  if unexpected:
    raise PretrainedError(
        f'{source}: key {unexpected[0]!r}{_more(unexpected)} is not in torchvision\'s {arch} '
        f'(is it {_VARIANTS[arch]}?); pass {arch} weights')
  missing = [k for k in expected if k not in keys and k.startswith('features.')
             and not k.endswith('.num_batches_tracked')]
  if missing:
    raise PretrainedError(
        f'{source}: no {missing[0]}{_more(missing)} of torchvision\'s {arch}: the file is '
        'incomplete (a partial or truncated export); save the whole model.state_dict() again')


def _check_shapes(state: Mapping[str, Any], arch: str, width: Optional[float],
                  source: str) -> None:
  """Each encoder layer has torchvision's shape at the file's width (for MobileNetV2 weights
  of no known width, the nearest). A damaged or edited layer was converted, exit 0, and
  training blamed the config (or said to set width_mult=None)."""
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel

  def wrong(w: float) -> tuple[list[str], dict]:
    want = fake_imagenet.layout(arch, w)
    return [k for k in want if k.startswith('features.') and k in state
            and tuple(np.shape(state[k])) != want[k]], want

  if width is None:
    if arch != 'mobilenet_v2':
      return
    width = min(_WIDTHS, key=lambda w: len(wrong(w)[0]))
  bad, want = wrong(width)
  if bad:
    raise PretrainedError(
        f'{source}: {bad[0]} has shape {tuple(np.shape(state[bad[0]]))}, but torchvision\'s '
        f'{arch} of width_mult={width} (its other layers\' width) has {want[bad[0]]}'
        f'{_more(bad)}: the file is damaged or edited; re-export it')


def _flat_arch(flat: Mapping[str, Any]) -> Optional[str]:
  """The arch of converted weights by any encoder layer: VGG's convs hold their kernel
  directly, MobileNetV2's in conv / bn submodules. By the stem alone, a VGG16 file without it
  was 'mobilenet_v2 weights'."""
  layers = {m[1] for k in flat if (m := re.match(r'\w+/encoder/features_\d+/(\w+)', k))}
  if layers == {'kernel', 'bias'} or layers == {'kernel'}:
    return 'vgg16'
  return 'mobilenet_v2' if layers and not layers & {'kernel', 'bias'} else None


def _check_sidecar(meta: dict, flat: Mapping[str, Any], held: Optional[str], side: Path,
                   path: Path) -> None:
  """The sidecar must describe the arrays beside it: one naming another arch or width (copied
  from other weights, hand-edited) made a MobileNetV2 file read as VGG16 (and converted to
  `vgg16.npz`), or gave the wrong width in every error hint."""
  fix = _sidecar_fix(path)
  if 'arch' in meta and held and meta['arch'] != held:
    raise PretrainedError(f'{side}: says arch={meta["arch"]}, but {path.name} holds {held} '
                          f'weights; {fix}')
  width = meta.get('width_mult')
  if width is None:  # not in it, or a width the converter could not name
    return
  if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
    raise PretrainedError(f'{side}: width_mult={width!r} is not a positive number; {fix}')
  found = infer_width_mult(flat, held) if held else None
  if found is not None and abs(found - width) > 1e-6:
    raise PretrainedError(f'{side}: says width_mult={width}, but {path.name} holds width '
                          f'{found} weights; {fix}')


def read_weights(path: str | os.PathLike, arch: Optional[str] = None
                 ) -> tuple[dict[str, np.ndarray], dict]:
  """Any supported file → ({flax key: array}, meta {'arch', 'width_mult', ...}).

  Raw torchvision state_dicts are converted on the fly (by their keys, not the extension).
  `path` may be a folder written by `convert_weights --out=FOLDER` (`resolve_weights_path`).
  """
  path = resolve_weights_path(path, arch)
  arrays = read_arrays(path)
  stray = sorted(k for k in arrays if not _is_flax_flat([k]))
  if stray and len(stray) < len(arrays):  # was 'keys such as [params/...] are not torchvision'
    raise PretrainedError(
        f'{path}: a converted file (params/ and batch_stats/ keys) that also holds '
        f'{stray[0]!r}{_more(stray)}; remove those keys, or convert the weights again with '
        'aesthetics-convert-weights')
  if _is_flax_flat(arrays):
    flat = {k: _check_values(v, str(path), k) for k, v in arrays.items()}
    meta = {}
    side = path.with_suffix(path.suffix + '.json')
    if side.is_file():
      meta = _read_sidecar(side, path)
    held = _flat_arch(flat)
    _check_sidecar(meta, flat, held, side, path)
    meta['arch'] = held or meta.get('arch', 'mobilenet_v2')
    if arch and meta['arch'] != arch:
      raise _other_arch(path, meta['arch'], arch)
  else:
    state = _canonical(arrays)  # timm's names as torchvision's (a no-op on those)
    found = detect_arch(state, str(path)) if state else None
    if found is None:
      raise PretrainedError(f'{path}: holds no arrays (an empty state_dict or archive); save '
                            'the whole model.state_dict() and pass that file')
    if arch in (None, found):  # else torch_to_flax names the arch the file holds
      _check_layout(state, found, str(path))
    flat = torch_to_flax(state, arch or found, str(path))
    meta = {'arch': arch or found}
    meta['width_mult'] = infer_width_mult(flat, meta['arch'])
    _check_shapes(state, meta['arch'], meta['width_mult'], str(path))
  if 'width_mult' not in meta:  # the sidecar's, checked against the arrays above
    meta['width_mult'] = infer_width_mult(flat, meta['arch'])
  for k, v in flat.items():  # sqrt(var + eps) of a negative one: NaN from the frozen encoder
    if k.startswith('batch_stats/') and k.endswith('/var') and (neg := int(np.sum(v < 0))):
      raise PretrainedError(f'{path}: {k} holds {neg} negative variances (of {np.size(v)}); '
                            'the file is damaged: download or export it again')
  return flat, meta


def has_vgg_fc(path: str | os.PathLike) -> bool:
  """Whether a converted VGG16 .npz holds fc6 (a features-only export does not)."""
  with np.load(path) as z:  # the zip's directory only
    return any(k.startswith('params/head/fc6/') for k in z.files)


def save_flat(flat: Mapping[str, np.ndarray], path: str | os.PathLike, meta: dict) -> Path:
  """Writes `{flax key: array}` to `path` (.npz) and `path.json`, both atomically. A disk
  without room for the arrays is one line before any is written, nothing left behind."""
  path = Path(path)
  arrays = {k: np.asarray(v) for k, v in flat.items()}

  def write(f) -> None:
    regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)  # not a FIFO the .npz streams to
    if regular:
      io.reserve_space(f, sum(v.nbytes for v in arrays.values()))  # VGG16: 0.55 GB
    np.savez(f, **arrays)
    if regular:
      f.truncate()  # the reserved blocks past the archive's end (its headers are not counted)

  meta = {'format': FORMAT, **meta, 'num_arrays': len(flat),
          'num_params': int(sum(np.size(v) for k, v in flat.items() if k.startswith('params/')))}
  try:
    io.atomic_write_stream(path, write)
    io.atomic_write_text(path.with_suffix(path.suffix + '.json'),
                         json.dumps(meta, indent=1, sort_keys=True) + '\n')
  except OSError as e:  # was "[Errno 28] No space left on device: '<path>'"
    if e.errno not in io.NO_ROOM_ERRNOS:
      raise
    raise PretrainedError(f'{e.filename or path}: cannot write ({e.strerror}); free some space '
                          'or write to another disk') from None
  return path


def convert_file(source: str | os.PathLike, out: str | os.PathLike,
                 arch: Optional[str] = None) -> tuple[Path, dict]:
  """Converts a torchvision weights file; `out` is a .npz path or a directory.

  Returns (written .npz path, meta). The JSON beside it is `<out>.json`.
  """
  flat, meta = read_weights(source, arch)
  out = Path(out)
  if out.suffix.lower() != '.npz':
    out = out / f'{meta["arch"]}.npz'
  meta = {**meta, 'source': str(Path(source).name)}
  return save_flat(flat, out, meta), meta


# ---------------------------------------------------------------------------------------
# Merging into model variables
# ---------------------------------------------------------------------------------------

def flatten_variables(variables: Mapping) -> dict[str, Any]:
  return traverse_util.flatten_dict(unfreeze(variables), sep='/')


def unflatten_variables(flat: Mapping[str, Any]) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep='/')


def _more(items: list) -> str:
  return f' (and {len(items) - 1} more)' if len(items) > 1 else ''


def load_pretrained(variables: Mapping, path: str | os.PathLike,
                    dont_load: Sequence[str] = DEFAULT_DONT_LOAD,
                    arch: Optional[str] = None) -> dict:
  """Returns `variables` with every leaf replaced from `path`, except `dont_load` matches.

  Args:
    variables: the model's variables (`model.init(...)`), e.g. with fresh heads.
    path: converted .npz/.safetensors, or a raw torchvision .pth/.safetensors/.npz, or a
      folder written by `convert_weights --out=FOLDER` (its `<arch>.npz` is read).
    dont_load: regexes over '/'-joined keys ('params/head/score/kernel'); matching leaves
      keep their values in `variables` and matching file entries are ignored. Default: the
      new aesthetic/attribute/binary heads and ImageNet's 1000-way classifiers.
    arch: optional expected arch ('mobilenet_v2' | 'vgg16') for a clearer error.
  Raises:
    PretrainedError (one line) on missing, unexpected or mis-shaped keys.
  """
  path = resolve_weights_path(path, arch)   # errors below name the file, not its folder
  flat_file, meta = read_weights(path, arch)
  target = flatten_variables(variables)
  pats = [re.compile(p) for p in dont_load]
  skip = lambda k: any(p.search(k) for p in pats)
  file_keys = {k for k in flat_file if not skip(k)}
  want_keys = {k for k in target if not skip(k)}
  vgg_hint = (' (ImageNet VGG16: fc_dim=4096, vgg_pool_size=7)' if meta.get('arch') == 'vgg16'
              else '')
  config_hint = (f"file holds arch={meta.get('arch')} width_mult={meta.get('width_mult')}: set "
                 f"config.model.arch/width_mult{vgg_hint} to match, or convert the right "
                 "weights with aesthetics-convert-weights")
  # arch and width fix the encoder's every key and shape: a file of the model's own arch and
  # width that differs there was damaged or cut, and 'set config.model...' misled.
  model_arch = 'vgg16' if 'params/encoder/features_0/kernel' in target else 'mobilenet_v2'
  same = (meta.get('arch') == model_arch and meta.get('width_mult') is not None
          and meta.get('width_mult') == infer_width_mult(target, model_arch))
  # The model's arch, but shapes of no width: 'set config.model.width_mult' to None misled.
  no_width = meta.get('arch') == model_arch and meta.get('width_mult') is None
  fix = 'damaged or incomplete: convert the weights again with aesthetics-convert-weights'
  hint = lambda k: (
      f"file and model are both {model_arch} width_mult={meta['width_mult']}, so the file is "
      f'{fix}' if same and k.split('/')[1:2] == ['encoder'] else
      f"the file's {model_arch} layer shapes match no width_mult, so it is {fix}"
      if no_width and k.split('/')[1:2] == ['encoder'] else config_hint)
  missing = sorted(want_keys - file_keys)
  if missing and all(re.match(r'params/head/fc[67]/', k) for k in missing) and same:
    # A features-only export: 'set config.model.arch/width_mult' named the wrong fix.
    raise PretrainedError(f'{path}: holds VGG16\'s convolutions only, without the fc6 / fc7 '
                          'layers (torchvision classifier.0 / classifier.3) that the vgg16 '
                          'model starts from; convert the whole torchvision vgg16 state_dict')
  if missing:
    raise PretrainedError(f'{path}: missing key {missing[0]}{_more(missing)} needed by the '
                          f'model; {hint(missing[0])}')
  unexpected = sorted(file_keys - want_keys)
  if unexpected:
    raise PretrainedError(f'{path}: unexpected key {unexpected[0]}{_more(unexpected)} not in '
                          f'the model; {hint(unexpected[0])}')
  for k in sorted(want_keys):
    got, expected = tuple(np.shape(flat_file[k])), tuple(np.shape(target[k]))
    if got != expected:
      raise PretrainedError(f'{path}: key {k} has shape {got}, model expects {expected}; '
                            f'{hint(k)}')
  zero = sorted(k for k in want_keys if '/encoder/' in k and k.endswith('/kernel')
                and not np.any(flat_file[k]))
  if zero:  # ImageNet's never are: a frozen encoder then gives every image the same features
    logging.warning('%s: %d of the encoder\'s kernels are all zeros (%s%s): a frozen encoder '
                    'gives every image (nearly) the same features; check the weights file',
                    path, len(zero), zero[0], ' ...' if len(zero) > 1 else '')
  new = dict(target)
  for k in want_keys:
    leaf = target[k]
    value = np.asarray(flat_file[k], dtype=leaf.dtype)
    # Keep the target's placement (e.g. replicated NamedSharding over a multi-host mesh).
    sharding = getattr(leaf, 'sharding', None)
    if isinstance(leaf, jax.Array) and sharding is not None:
      new[k] = jax.make_array_from_callback(value.shape, sharding,
                                            lambda idx, value=value: value[idx])
    else:
      new[k] = value if isinstance(leaf, np.ndarray) else jax.numpy.asarray(value)
  out = unflatten_variables(new)
  for coll, tree in unfreeze(variables).items():  # e.g. VGG's empty 'batch_stats': {}
    out.setdefault(coll, tree)
  return out
