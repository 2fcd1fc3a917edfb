"""What a user may pass as an image (the notebook interface's inputs): a path (`~` expanded), a
file's bytes, a PIL image, or a uint8 array [H, W(, 1|3|4)] → uint8 [H, W, 3] through the
shared decoder's rules, or a one-line ValueError naming what to pass instead. Moved out of
api.py, which keeps the Model and its argument checks.
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from PIL import Image

from aesthetics_jax.data import decoder
from aesthetics_jax.evaluation import image_files

ImageLike = str | os.PathLike | bytes | Image.Image | np.ndarray


def image_path(x: str | os.PathLike) -> str:
  """An image path as a str: '~' expanded as a shell would (it was 'no such file'); a bytes
  PathLike decoded (a TypeError from pathlib); '' (which read as '.', 'not a regular file'), a
  NUL byte (a bare 'embedded null byte') and a URL (mangled to 'https:/...: no such file')
  one-line errors naming the path."""
  p = os.fspath(x)
  p = os.fsdecode(p) if isinstance(p, bytes) else p
  if not p:
    raise ValueError("image path '' is empty: pass a file's path")
  if '\0' in p:
    raise ValueError(f'image path {p!r} holds a NUL byte: pass a file\'s path')
  if os.path.exists(p):
    return p
  if re.match(r'[a-z][a-z0-9+.-]*://', p, re.I):
    raise ValueError(f'{p}: a URL; images are read from local files: download it first (its '
                     'bytes can be passed too)')
  p = os.path.expanduser(p)
  if not os.path.exists(p) and (p != p.strip() or not p.isprintable()):
    # A line read from a list of files keeps its '\n': the error printed it, on two lines.
    raise ValueError(f'image path {p!r}: no such file; it has white space or control '
                     'characters at its ends or within (a line of a file list? strip() it)')
  return p


def as_input(x: Any) -> Any:
  """A file's content as bytes; the buffer of an array (memoryview(a)) as that array, not as a
  file's bytes ('not an image'); a path as `image_path`'s str."""
  if isinstance(x, (str, os.PathLike)):
    return image_path(x)
  if isinstance(x, memoryview) and x.ndim > 1:
    return np.asarray(x)
  if isinstance(x, (bytes, bytearray, memoryview)):  # a file's content (JPEG, PNG, ...)
    return bytes(x)
  return x


def to_array(x: ImageLike) -> np.ndarray:
  """A path, encoded bytes, PIL image or array → uint8 [H, W, 3]; one-line ValueError
  otherwise."""
  x = as_input(x)
  if isinstance(x, (str, os.PathLike, bytes)):
    # Full resolution (maps, boxes and crops are in the file's pixels), EXIF-upright, through
    # the shared decoder's byte / pixel caps; PredictError (a ValueError) for missing, corrupt,
    # oversized or too small files.
    return image_files.load_image(x, target=None, budget=None).image
  if isinstance(x, Image.Image):
    check_open(x)
    # The file decoder's rules (16-bit and float modes scaled to their white level, not
    # clipped by convert('RGB'); NaN refused; EXIF-upright; pixel cap; >= 32 px a side).
    return decoder.decode(x, min_side=decoder.MIN_SIDE, what='PIL image').image
  if hasattr(x, 'read'):  # an open file or io.BytesIO
    raise ValueError(f'{type(x).__name__}: pass its bytes (f.read()), its path, or a PIL '
                     'image (Image.open(f))')
  a = checked_array(x)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, axis=-1)
  if a.shape[-1] == 4:  # its alpha as a file's (composited, not dropped: decoder.to_rgb)
    return np.asarray(decoder.to_rgb(Image.fromarray(np.ascontiguousarray(a), 'RGBA')))
  return np.ascontiguousarray(a)


def cast_hint(a: np.ndarray) -> str:
  """The cast to uint8 for this array's values: the one hint for all ('x * 255' for floats in
  [0, 1]) wrapped floats in [0, 255] around (300 -> 44) when followed, and NaN went unsaid."""
  if a.dtype.kind == 'b':
    return 'e.g. x.astype(np.uint8) * 255'
  if a.dtype.kind not in 'iuf' or a.size == 0:
    return 'e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]'
  if a.dtype.kind == 'f' and not np.isfinite(a).all():
    return 'it holds NaN or inf: replace them (np.nan_to_num) before casting'
  lo, hi = float(a.min()), float(a.max())
  if a.dtype.kind == 'f' and 0 <= lo and hi <= 1:
    return 'values in [0, 1]: (x * 255).round().astype(np.uint8)'
  if 0 <= lo and hi <= 255:
    return 'values in [0, 255]: x.round().astype(np.uint8)' if a.dtype.kind == 'f' else (
        'values in [0, 255]: x.astype(np.uint8)')
  return (f'values in [{lo:g}, {hi:g}]: scale them to 0..255 first, e.g. '
          '(255 * (x - x.min()) / (x.max() - x.min())).round().astype(np.uint8)')


def check_open(img: Image.Image) -> None:
  """A PIL image whose file was closed before its pixels were read decoded to 'cannot decode
  image (ValueError: Operation on closed image); re-export or re-download it' (or, after a
  `with Image.open(p) as im:` block, 'AssertionError: '): the file is fine, the fix is not."""
  # Not loaded and no file left to load from: the end of a `with` block before load().
  unread = getattr(img, 'fp', None) is None
  try:
    closed = img.im is None and unread  # Pillow raises the close()'s error here
  except ValueError:
    closed = True
  except AssertionError:  # Pillow >= 11 asserts where older ones give None: not loaded yet
    closed = unread
  if closed:
    # close() drops even loaded pixels; the end of a `with` block keeps them.
    raise ValueError('PIL image: closed before its pixels were read (im.close(), or the end of '
                     '`with Image.open(p) as im:`); call im.load() inside the block, pass '
                     'im.copy() made before im.close(), or pass its path')


def checked_array(x: Any) -> np.ndarray:
  """`x` as an array that `to_array` takes (uint8 [H, W(, 3|4)], >= MIN_SIDE a side), not yet
  converted (no copy of an ndarray); its one-line ValueError otherwise."""
  if not (isinstance(x, np.ndarray) or hasattr(x, '__array__')
          or hasattr(x, '__array_interface__')):
    # None, a number, a dict, a set: np.asarray made them 'an image array of dtype object'
    # (or int64), whose fix (cast to uint8) was no fix.
    raise ValueError(f'image of type {type(x).__name__}: pass a path, a file\'s bytes, a PIL '
                     'image or a uint8 array [H, W(, 3|4)]')
  try:
    a = np.asarray(x)
  except (TypeError, RuntimeError, ValueError) as e:
    # A torch tensor on a GPU ('can't convert cuda:0 device type tensor to numpy') or one that
    # requires grad ("Can't call numpy() on Tensor that requires grad") raised from inside.
    raise ValueError(f'image of type {type(x).__name__} cannot be read as an array '
                     f'({str(e).splitlines()[0] if str(e) else type(e).__name__}); pass a uint8 '
                     'numpy array, e.g. x.detach().cpu().numpy() for a torch tensor') from None
  if a.dtype.kind in 'OUS':  # an array of paths or of images, not an image
    raise ValueError(f'image array has dtype {a.dtype}: for several images pass a list '
                     '(x.tolist()) of paths, PIL images or uint8 arrays [H, W(, 3|4)]')
  if a.dtype == np.uint16:
    raise ValueError('image array has dtype uint16; pass uint8 [H, W, 3], e.g. '
                     '(x >> 8).astype(np.uint8) for 16-bit data (or a PIL image / the file, '
                     'which are scaled to their white level)')
  if a.dtype != np.uint8:
    raise ValueError(f'image array has dtype {a.dtype}; pass uint8 [H, W, 3] ({cast_hint(a)}), '
                     'a path, encoded bytes or a PIL image')
  if a.ndim == 3 and a.shape[-1] == 1:  # grey with its channel axis, as [H, W]
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
    # The two layouts a notebook holds besides [H, W, C]: a batch, and torch's channels first.
    hint = ''
    if a.ndim == 4:
      hint = ('; a batch? pass x[0] for one image, list(x) for each (score and cam take '
              'lists)')
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4):
      hint = '; channels first? pass x.transpose(1, 2, 0)'
    raise ValueError(f'image array has shape {a.shape}; pass [H, W], [H, W, 3] or [H, W, 4]'
                     f'{hint}')
  if min(a.shape[:2]) < decoder.MIN_SIDE:  # as a file of that size is refused
    raise ValueError(f'image array of {a.shape[0]}x{a.shape[1]} px is under '
                     f'{decoder.MIN_SIDE} px a side; the model needs a larger image')
  return a


def precheck(x: Any) -> None:
  """What one image of a list can be refused for without decoding it (its type, an array's
  dtype and shape, a missing file, a PIL image's size): a list is checked so before its first
  batch runs, where a bad last image ended the call after every other one was scored."""
  x = as_input(x)
  if isinstance(x, (str, os.PathLike)):
    if not os.path.isfile(x):
      image_files.load_image(x)  # fails at stat(): its one-line error for the path
  elif isinstance(x, bytes):
    if not x:
      to_array(x)
  elif isinstance(x, Image.Image):
    check_open(x)
    if min(x.size) < decoder.MIN_SIDE:
      to_array(x)
  elif hasattr(x, 'read'):
    to_array(x)
  else:
    checked_array(x)


def at_index(i: int, fn, *args, **kwargs):
  """fn(*args) for image i of a list; its ValueError names the image ('images[3]: ...'): a
  list's error named no image (an array's 'under 32 px a side' was any of them)."""
  try:
    return fn(*args, **kwargs)
  except ValueError as e:
    raise ValueError(f'images[{i}]: {e}') from None
