"""Per-image preprocessing: decode → resize (→ random crop/flip) on the host, then to float.

Host side (numpy + PIL): JPEG decoding with PIL `draft()` (the JPEG decoder's DCT
downscaling, a large speed-up when the target is much smaller than the photo), antialiased
bilinear resize, random crop/flip. Images stay uint8 on the host and in transfer (4x less
work than float32); `to_model_input` turns them into float32 in [0, 1] (optionally ImageNet
mean/std normalised) under `jax.jit`.

Determinism: the crop/flip of one image depends only on the generator it is given;
`augment_rng(seed, step, position)` is the one the input pipeline gives global batch
position `position` at `step`, so augmentations do not depend on workers or processes.
"""
from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ('none', 'imagenet')

# Stream tag mixed into the seed so augmentations draw a random stream independent of the
# sampler's (data/sampling.py) for the same (seed, step).
_AUGMENT_STREAM = 0xA06E17


class InputError(ValueError):
  """A problem a user can fix (bad config, unreadable image); `str()` is one line."""


def _open(data: bytes | Image.Image, what: str = 'image') -> Image.Image:
  if isinstance(data, Image.Image):
    return data
  try:
    img = Image.open(io.BytesIO(data))
    img.size  # noqa: B018  (header parsed; pixel data decoded lazily)
    return img
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
    raise InputError(f'{what}: cannot read image ({type(e).__name__}: {e}); '
                     'check the file or re-run launch/prepare_data.py, which skips '
                     'unreadable images') from None


def _to_rgb(img: Image.Image, what: str = 'image') -> Image.Image:
  """Any PIL mode → RGB. Alpha is dropped (as torchvision's default loader does)."""
  try:
    if img.mode == 'RGB':
      img.load()
      return img
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
      # 16/32-bit grey: PIL's convert('RGB') clips instead of scaling; scale to 8 bit.
      a = np.asarray(img, dtype=np.float64)
      hi = 65535.0 if img.mode.startswith('I;16') else max(float(a.max()), 1.0)
      a = np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8)
      return Image.fromarray(a, 'L').convert('RGB')
    if img.mode == 'P' and 'transparency' in img.info:
      img = img.convert('RGBA')  # avoids PIL's palette-transparency warning
    return img.convert('RGB')
  except InputError:
    raise
  except Exception as e:
    raise InputError(f'{what}: cannot decode image ({type(e).__name__}: {e}); '
                     'the file is corrupt or truncated — re-run launch/prepare_data.py, '
                     'which skips such images') from None


def _decode_pil(data: bytes | Image.Image, min_size: int | None,
                what: str = 'image') -> Image.Image:
  """Decodes to an RGB PIL image; JPEGs are DCT-downscaled to no less than min_size²."""
  img = _open(data, what)
  if min_size is not None and img.format == 'JPEG':
    # draft() picks the largest scale 1/2, 1/4, 1/8 that keeps BOTH sides >= min_size,
    # so the antialiased resize below still has at least target resolution to work from.
    img.draft(None, (min_size, min_size))
  return _to_rgb(img, what)


def decode_image(data: bytes, min_size: int | None = None) -> np.ndarray:
  """Decodes any PIL-readable image (JPEG, PNG, grey, CMYK, palette, RGBA) to RGB.

  Args:
    data: encoded file bytes.
    min_size: if set, JPEGs may be decoded at a reduced scale whose sides are both
      >= min_size (fast path when the image is then resized to min_size² or smaller).
  Returns:
    uint8 [H, W, 3].
  """
  return np.asarray(_decode_pil(data, min_size), dtype=np.uint8)


def _resize(img: Image.Image, size: int) -> Image.Image:
  if img.size == (size, size):
    return img
  # PIL's bilinear filter widens its support when downscaling, i.e. it is antialiased
  # (like torchvision's Resize(antialias=True)).
  return img.resize((size, size), Image.Resampling.BILINEAR)


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
                       f'{img.shape}; decode with decode_image() first')
    pil = Image.fromarray(img, 'RGB')
  else:
    pil = _decode_pil(img, size, what)
  return np.asarray(_resize(pil, size), dtype=np.uint8)


def preprocess_train_np(img: np.ndarray | bytes | Image.Image, resize_size: int,
                        image_size: int, rng: np.random.Generator,
                        random_flip: bool = False, what: str = 'image') -> np.ndarray:
  """Train preprocessing: resize to resize_size², random image_size² crop, optional flip.

  Args:
    img: uint8 [H, W, 3], encoded bytes or a PIL image.
    rng: the only source of randomness (crop offsets, then flip).
    what: names the image in decoding errors (e.g. its image_id).
  Returns:
    uint8 [image_size, image_size, 3].
  """
  if image_size > resize_size:
    raise InputError(f'config.input.image_size={image_size} > config.input.resize_size='
                     f'{resize_size}; set resize_size >= image_size')
  if isinstance(img, np.ndarray):
    pil = Image.fromarray(img, 'RGB')
  else:
    pil = _decode_pil(img, resize_size, what)
  a = np.asarray(_resize(pil, resize_size), dtype=np.uint8)
  y, x = rng.integers(0, resize_size - image_size + 1, size=2)
  a = a[y:y + image_size, x:x + image_size]
  if random_flip and rng.random() < 0.5:
    a = a[:, ::-1]
  return np.ascontiguousarray(a)


def augment_rng(seed: int, step: int, position: int) -> np.random.Generator:
  """The crop/flip generator of global batch position `position` at `step`."""
  return np.random.default_rng([_AUGMENT_STREAM, seed, step, position])


@functools.partial(jax.jit, static_argnames=('normalize',))
def to_model_input(x: jax.Array, normalize: str = 'none') -> jax.Array:
  """uint8 [..., 3] → float32 in [0, 1]; `normalize='imagenet'` → (x - mean) / std."""
  y = x.astype(jnp.float32) * (1.0 / 255.0)
  if normalize == 'imagenet':
    y = (y - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  elif normalize != 'none':
    raise InputError(f"config.input.normalize={normalize!r}; use one of {NORMALIZE_MODES}")
  return y
