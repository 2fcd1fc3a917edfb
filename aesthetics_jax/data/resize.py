"""Resizing decoded images to the model's squares, on the host (PIL; no JAX: the dataset's
preparation uses it too). `preprocess` builds the crops and the model input on it."""
from __future__ import annotations

import numpy as np
from PIL import Image

from aesthetics_jax.data import decoder
from aesthetics_jax.data.errors import InputError


def square(img: Image.Image, size: int) -> Image.Image:
  """`img` resized to size x size (aspect not kept, as the paper's), antialiased bilinear."""
  if img.size == (size, size):
    return img
  w, h = img.size
  if h > w and h * size > decoder.BAND_PIXELS:
    # Pillow < 13 resamples the width first, through a size x h temporary: 0.7 GB for an
    # 8 x 781250 strip (predict's working copy of a 100 MP one). Height first it is w x size,
    # as Pillow 13 does itself here (python-pillow/Pillow#9549; the same pixels). Photos never
    # come here.
    img = img.resize((w, size), Image.Resampling.BILINEAR)
  # PIL's bilinear filter widens its support when downscaling, i.e. it is antialiased
  # (like torchvision's Resize(antialias=True)).
  return img.resize((size, size), Image.Resampling.BILINEAR)


def resize_train_np(img: bytes | Image.Image, resize_size: int,
                    what: str = 'image') -> np.ndarray:
  """The deterministic part of train preprocessing: decode (draft fast path) and resize to
  resize_size². `preprocess.preprocess_train_np` of its result equals it of `img`.
  Returns: uint8 [resize_size, resize_size, 3]."""
  return np.asarray(square(decoder.decode_record(img, resize_size, what), resize_size),
                    dtype=np.uint8)


def preprocess_eval_np(img: np.ndarray | bytes | Image.Image, size: int,
                       what: str = 'image') -> np.ndarray:
  """Eval preprocessing: resize to size² (aspect not kept, as in the paper).

  Args:
    img: uint8 [H, W, 3] (or encoded bytes / a PIL image, decoded with the draft fast path).
    size: output side S.
    what: names the image in decoding errors (e.g. its image_id).
  Returns:
    uint8 [S, S, 3].
  """
  if isinstance(img, np.ndarray):
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
      raise InputError(f'preprocess_eval_np: expected uint8 [H,W,3], got {img.dtype} '
                       f'{img.shape}; decode with decoder.decode_image() first')
    pil = Image.fromarray(img, 'RGB')
  else:
    pil = decoder.decode_record(img, size, what)
  return np.asarray(square(pil, size), dtype=np.uint8)
