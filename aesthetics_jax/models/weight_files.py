"""Reading weights files into numpy arrays: torch checkpoints (`.pth`, `.pt`, `.pth.tar`,
`.bin`, `.ckpt`; the optional torch extra, imported lazily), `.safetensors` (safetensors.numpy,
no torch) and `.npz`, told apart by content, then by extension.

A file is checked before anything large is read: missing, unreadable, empty, damaged, or
declaring more array bytes than any weights of these models (MAX_WEIGHTS_BYTES, from its
headers) is a one-line `PretrainedError` naming the file and the fix. A state_dict wrapped in
a training checkpoint (`state_dict`, `model`, `model_ema`, ... keys) is unwrapped; a pickled
model is refused without unpickling it. Keys come back as stored; `pretrained` maps them.
"""
import hashlib
import math
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from absl import logging

TORCH_HINT = "install the torch extra: pip install -e '.[torch]'"


class PretrainedError(ValueError):
  """One-line, user-fixable problem with a weights file."""

  def __init__(self, message: str):
    # A path with a line break (a line of a file list, a pasted name) printed the error on
    # two lines, and the commands print an error's first line only.
    super().__init__(message.replace('\r', '\\r').replace('\n', '\\n'))


def _missing(path: Path, what: str) -> PretrainedError:
  """'no such file', with a hint when the path has white space or control characters."""
  text = str(path)
  if text != text.strip() or not text.isprintable():
    return PretrainedError(f'{what} {text!r}: no such file; it has white space or control '
                           'characters at its ends or within (pasted, or a line of a list? '
                           'strip() it)')
  return PretrainedError(f'{path}: {what} not found')


# Keys under which training code wraps a state_dict: torch's examples, Lightning, timm's
# train.py (`state_dict`, `state_dict_ema`), DDP / EMA helpers. The first present wins.
_WRAPPER_KEYS = ('state_dict', 'model', 'model_state_dict', 'model_state', 'module', 'net',
                 'network', 'model_ema', 'state_dict_ema', 'ema')


def first_line(e: BaseException) -> str:
  """The first line of an error, without terminal colour codes (torch's weights_only errors
  bold some words); a long one cut to its first sentence ("... This is an internal miniz
  error. If you are seeing this error, ...")."""
  text = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip()
  line = text.splitlines()[0] if text else ''
  if len(line) > 120:
    line = line.split('. ')[0]
  return line if len(line) <= 160 else line[:157] + '...'


_DAMAGED_FIX = 'download or export it again'


_DIGESTS: dict[tuple, str] = {}


def sha256(path: str | os.PathLike) -> str:
  """The file's SHA-256 (hex), memoised by (path, size, mtime): a resume checks the starting
  weights twice (by name, then by content). VGG16's 0.55 GB: ~0.5 s."""
  path = os.path.abspath(path)
  st = os.stat(path)
  key = (path, st.st_size, st.st_mtime_ns)
  if key not in _DIGESTS:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      while chunk := f.read(1 << 22):
        h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
  return _DIGESTS[key]


def _wrapping_key(path: Path, name: str) -> Optional[str]:
  """The key of the dict torch.save wrote under which the pickled class `name` sits (read
  from the pickle's opcodes, nothing unpickled), None if the file is no such dict."""
  try:
    with zipfile.ZipFile(path) as z:
      ops = pickletools.genops(z.read(next(n for n in z.namelist() if n.endswith('data.pkl'))))
      if [next(ops)[0].name, next(ops)[0].name] != ['PROTO', 'EMPTY_DICT']:
        return None
      key = None
      for op, arg, _ in ops:
        if op.name.endswith('UNICODE'):
          key = arg
        elif op.name == 'GLOBAL' and arg.replace(' ', '.') == name:
          return key
  except Exception:  # pylint: disable=broad-except  (a legacy or damaged file: no key)
    return None
  return None


def _unpickling_problem(path: Path, e: BaseException) -> str:
  """The one line for a .pth that torch.load(weights_only=True) refused."""
  found = re.search(r'GLOBAL ([\w.]+)', str(e))
  if found and found[1].startswith('numpy.'):  # was '(torch.save(model)?) ... .state_dict()'
    return (f'{path}: numpy arrays pickled by torch.save ({found[1]}), not tensors; unpickling '
            'could run code, so they are refused: save torch tensors (torch.from_numpy) or an '
            '.npz (np.savez) and pass that')
  if found:  # pickled Python objects, not only tensors: torch.save(model) ...
    key = _wrapping_key(path, found[1])  # {'model': model, 'epoch': ...}: was '.state_dict()'
    where = f' under {key!r} of a checkpoint dict' if key else ''
    return (f'{path}: a pickled {found[1]} object{where} (torch.save(model)?), not a state_dict '
            'of tensors; unpickling it could run code, so it is refused: if you trust the file, '
            f"torch.save(torch.load(f, weights_only=False){f'[{key!r}]' if key else ''}"
            ".state_dict(), 'w.pth') and pass w.pth")
  # torch's own text suggests weights_only=False, which is no fix for a damaged file.
  return (f'{path}: not a readable torch checkpoint (damaged, truncated, or not written by '
          f'torch.save); {_DAMAGED_FIX}')


def _unwrap(obj: Any, path: Path) -> dict:
  """The state_dict inside a training checkpoint ({'state_dict': ...}, {'model': ...})."""
  for _ in range(3):  # e.g. {'model': {'state_dict': ...}}
    if not isinstance(obj, dict) or not obj or any(hasattr(v, 'numpy') for v in obj.values()):
      break
    present = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
    key = present[0] if present else None
    if len(present) > 1:  # timm's train.py: the weights and their EMA; which was read went unsaid
      logging.warning('%s holds %s: reading %r (the first of %s); to use another, save '
                      "torch.load(f)[KEY] as its own file and pass that", path,
                      ' and '.join(repr(k) for k in present), key, ', '.join(_WRAPPER_KEYS))
    if key is None:
      nested = [k for k, v in obj.items() if isinstance(v, dict)]  # the one dict inside
      if len(nested) != 1:
        keys = ', '.join(repr(k) for k in list(obj)[:6])
        raise PretrainedError(
            f'{path}: a dict of {keys}{" ..." if len(obj) > 6 else ""} with no tensors at its '
            'top level and no one state_dict inside; save model.state_dict() and pass that')
      key = nested[0]
    obj = obj[key]
  if not isinstance(obj, dict):
    raise PretrainedError(f'{path}: expected a state_dict, got {type(obj).__name__}; save '
                          'model.state_dict() and pass that')
  return obj


def _read_pth(path: Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise PretrainedError(f'{path}: reading .pth needs torch; {TORCH_HINT}') from None
  import argparse  # pylint: disable=g-import-not-at-top
  try:
    # timm's and many training scripts' checkpoints keep their argparse flags beside the
    # weights; a Namespace only sets attributes when unpickled.
    # torch's warnings about the storages it rebuilds (sparse, quantized, TypedStorage) came
    # as 4 lines before the command's one; what matters for weights is checked below.
    with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)
      obj = torch.load(str(path), map_location='cpu', weights_only=True)
  except OSError as e:
    if e.filename is not None:  # the file's own (permissions, I/O)
      raise
    # torch's zip reader on a truncated or damaged archive: "[Errno 22] Invalid argument".
    raise PretrainedError(_unpickling_problem(path, e)) from None
  except pickle.UnpicklingError as e:
    raise PretrainedError(_unpickling_problem(path, e)) from None
  except Exception as e:  # corrupt / non-checkpoint file
    raise PretrainedError(f'{path}: not a readable torch checkpoint ({type(e).__name__}: '
                          f'{first_line(e)}); {_DAMAGED_FIX}') from None
  obj = _unwrap(obj, path)
  odd = [k for k in obj if not isinstance(k, str)]
  if odd:  # a state_dict's keys are parameter names; anything else is some other dict
    raise PretrainedError(f'{path}: a dict with non-string keys such as {odd[0]!r}, not a '
                          'torchvision state_dict; save model.state_dict() and pass that')
  # Floats as float32 (numpy has no bfloat16); other dtypes kept, for _check_values to name.
  out = {}
  for k, v in obj.items():
    if not hasattr(v, 'numpy'):
      continue
    try:
      out[k] = (v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy()
    except Exception as e:  # pylint: disable=broad-except  (not a damaged file)
      raise PretrainedError(
          f'{path}: {k} is a {v.layout} {v.dtype} tensor on {v.device}, which cannot be read '
          f'as an array ({first_line(e)}); save a dense float model\'s state_dict()') from None
  return out


# The most array bytes a weights file may declare. The largest these models take is VGG16's
# 0.55 GB in float32 (1.1 GB as float64); a file declaring more is another network or a
# hostile one (a 64 KB compressed .npz can declare gigabytes of zeros), and is refused before
# any array is allocated.
MAX_WEIGHTS_BYTES = 2 << 30


def _npz_headers(z: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, tuple, np.dtype]]:
  """(member, shape, dtype) of each .npy in an .npz, from its header (a few bytes
  decompressed per member)."""
  out = []
  for info in z.infolist():
    if not info.filename.endswith('.npy'):
      continue
    with z.open(info) as f:
      version = np.lib.format.read_magic(f)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read(f)
    out.append((info, shape, dtype))
  return out


def _read_npz(z: zipfile.ZipFile) -> dict[str, Any]:
  """np.load(path)'s arrays, from the zip directory already parsed (np.load parses it again)."""
  out = {}
  for info in z.infolist():
    with z.open(info) as f:
      if info.filename.endswith('.npy'):
        out[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
      else:  # as np.load: the member's bytes
        out[info.filename] = f.read()
  return out


def _declared_bytes(path: Path, ext: str, z: Optional[zipfile.ZipFile]) -> int:
  """An upper bound of what reading `path` (its zip directory `z`, if a zip) allocates, known
  before reading it."""
  if ext == '.npz':
    heads = _npz_headers(z)
    pickled = [info.filename[:-4] for info, _, dtype in heads if dtype.hasobject]
    if pickled:  # was "cannot read weights (ValueError: Object arrays cannot be loaded ...)"
      raise PretrainedError(
          f'{path}: {pickled[0]} is an object array (pickled Python objects, not numbers); '
          'unpickling could run code, so it is refused: save numeric arrays, e.g. '
          'np.savez(f, **{k: v.numpy() for k, v in model.state_dict().items()})')
    return sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in heads)
  if ext == '.pth' and z is not None:  # torch.save's zip: a storage is read at its listed size
    return sum(i.file_size for i in z.infolist() if '/data/' in i.filename)
  return path.stat().st_size  # .safetensors (offsets must tile the file), legacy .pth


def _open_zip(path: Path, head: bytes) -> Optional[zipfile.ZipFile]:
  """`path`'s zip directory (`head`: its first bytes), parsed once for sniffing, bounding and
  reading (it was parsed three times an .npz); None if not a readable zip archive."""
  if head[:2] != b'PK':
    return None
  try:
    return zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, ValueError):
    return None  # damaged: the extension's reader says how


def _sniff(path: Path, head: bytes, z: Optional[zipfile.ZipFile]) -> Optional[str]:
  """'.pth', '.safetensors' or '.npz' by the file's first bytes (`z`: its zip directory), None
  if unsure. Checkpoints come as `checkpoint.pth.tar` (PyTorch's ImageNet example),
  `pytorch_model.bin` (Hugging Face), `.ckpt`, or a .safetensors renamed .pth: the extension
  alone refused or misread them."""
  if head.startswith(b'PK\x03\x04'):
    if z is None:
      return None
    names = z.namelist()
    if any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
      return '.pth'  # torch.save's zip format
    return '.npz' if names and all(n.endswith('.npy') for n in names) else None
  if head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05'):
    return '.pth'  # a pickle: torch.save's legacy format
  size = int.from_bytes(head[:8], 'little') if len(head) >= 9 else 0
  if head[8:9] == b'{' and 0 < size <= path.stat().st_size - 8:
    return '.safetensors'  # an 8-byte header length, then the JSON header
  return None


def _not_weights(head: bytes) -> Optional[str]:
  """What a text file passed as weights is (`head`: its first bytes), when it is a usual
  stand-in for them."""
  if head.startswith(b'version https://git-lfs.github.com/spec/'):
    return ('a Git LFS pointer, not the weights (cloned without git-lfs): run git lfs pull in '
            'the clone, or download the file itself')
  if head.lstrip().lower().startswith((b'<!doctype html', b'<html')):
    return ('an HTML page, not weights (a download that saved a login or error page?); '
            'download the file itself')
  return None


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Raw arrays of a torch checkpoint, .safetensors or .npz file (told apart by content, then
  by extension), keys as stored."""
  path = Path(path)
  if not path.is_file():
    raise _missing(path, 'weights file')
  ext = {'.pt': '.pth'}.get(path.suffix.lower(), path.suffix.lower())
  try:  # else zipfile.is_zipfile's False called it 'not a .npz file'
    with open(path, 'rb') as f:  # the first bytes, read once for the checks below
      head = f.read(64)
    z = _open_zip(path, head)
    ext = _sniff(path, head, z) or ext  # the content wins over the name
  except OSError as e:
    raise PretrainedError(f'{path}: cannot be read ({e.strerror or first_line(e)}); fix its '
                          'permissions, or copy it where you can read it') from None
  try:
    if path.stat().st_size == 0:  # else "EOFError: " or "header too small"
      raise PretrainedError(f'{path}: an empty file (0 bytes); download or convert it again')
    if (what := _not_weights(head)):  # was 'not a readable torch checkpoint (damaged ...)'
      raise PretrainedError(f'{path}: {what}')
    if ext == '.npz' and z is None:  # np.load would try it as a pickle
      raise PretrainedError(f'{path}: not a .npz file (no zip archive: damaged, truncated, '
                            'or another format); convert it again')
    declared = _declared_bytes(path, ext, z)
    if declared > MAX_WEIGHTS_BYTES:
      raise PretrainedError(
          f'{path}: declares {declared / 1e9:.3g} GB of arrays, more than any weights of these '
          f'models (VGG16: 0.55 GB as float32; the limit is {MAX_WEIGHTS_BYTES / 1e9:.3g} GB); '
          'it holds another network, or is damaged')
    if ext == '.pth':
      return _read_pth(path)
    if ext == '.safetensors':
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      try:
        return dict(load_file(str(path)))
      except AttributeError as e:  # "module 'numpy' has no attribute 'float8_e4m3fn'"
        found = re.search(r"attribute '(\w+)'", str(e))
        raise PretrainedError(
            f'{path}: holds {found[1] if found else "some"} tensors, a type numpy cannot read '
            '(the file is not damaged); save the weights as float32, float16 or bfloat16, or '
            'as a torch .pth') from None
    if ext == '.npz':
      return _read_npz(z)
  except PretrainedError:
    raise
  except Exception as e:
    raise PretrainedError(f'{path}: cannot read weights ({type(e).__name__}: '
                          f'{first_line(e)}); the file is damaged or truncated: '
                          f'{_DAMAGED_FIX}') from None
  finally:
    if z is not None:
      z.close()
  raise PretrainedError(f'{path}: neither a torch checkpoint, a .safetensors nor a .npz file by '
                        f'its content or its extension ({path.suffix!r}); pass one of those')
