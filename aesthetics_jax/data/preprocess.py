"""Per-image preprocessing after `decoder`: resize (→ random crop/flip) on the host, then to
float.

Antialiased bilinear resize, random crop/flip. Images stay uint8 on the host and in transfer
(4x less work than float32); `to_model_input` turns them into float32 in [0, 1] (optionally
ImageNet mean/std normalised) under `jax.jit`. Bytes or PIL images given to the functions
here are decoded by `decoder.decode_record` (reduced while both sides stay >= the size they
are resized to).

Determinism: the input pipeline's crop offsets and mirrors of a whole global batch are drawn
at once, `augment_draws(seed, step, batch_size, ...)`, and global batch position j takes row j,
so augmentations depend on neither workers nor processes; `train_crop_np` draws one image's
from the generator it is given.
"""
from __future__ import annotations

import functools
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from aesthetics_jax import moved
from aesthetics_jax.data import decoder
from aesthetics_jax.data import resize
from aesthetics_jax.data.resize import resize_train_np  # noqa: F401  (part of this module's API)
from aesthetics_jax.data.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ('none', 'imagenet')

# Stream tag mixed into the seed so augmentations draw a random stream independent of the
# sampler's (data/sampling.py) for the same (seed, step).
_AUGMENT_STREAM = 0xA06E17

# Host-only, in `resize` (JAX-free: the benchmark's PyTorch children use it); part of this API.
preprocess_eval_np = resize.preprocess_eval_np


def _check_crop(resize_size: int, image_size: int) -> None:
  if image_size > resize_size:
    raise InputError(f'config.input.image_size={image_size} > config.input.resize_size='
                     f'{resize_size}; set resize_size >= image_size')


def train_view_crops_np(img: bytes | Image.Image | np.ndarray, resize_size: int, image_size: int,
                        rngs: Sequence[np.random.Generator], random_flip: bool = False,
                        what: str = 'image') -> list[tuple[np.ndarray, bool]]:
  """`train_crop_np` for several crops of one image, decoded and resized once: K (crop view
  uint8 [image_size, image_size, 3], mirror) pairs; the feature cache's K views of a row
  (mirrored on the device, as the pipeline's). `img` already uint8 [R, R, 3] (R =
  resize_size: a prepared resized row) is cropped as it is."""
  _check_crop(resize_size, image_size)
  resized = img if _is_resized(img, resize_size) else resize_train_np(img, resize_size, what)
  return [train_crop_np(resized, resize_size, image_size, rng, random_flip) for rng in rngs]


def _is_resized(img, resize_size: int) -> bool:
  """Whether `img` is already resize_train_np's output: uint8 [R, R, 3]."""
  return (isinstance(img, np.ndarray) and img.dtype == np.uint8
          and img.shape == (resize_size, resize_size, 3))


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
  return mirror_np(*train_crop_np(img, resize_size, image_size, rng, random_flip, what))


def mirror_np(a: np.ndarray, flip: bool) -> np.ndarray:
  """uint8 [H, W, 3] mirrored left-right if `flip` (host side), as a contiguous copy."""
  return np.ascontiguousarray(a[:, ::-1] if flip else a)


def train_crop_np(img: np.ndarray | bytes | Image.Image, resize_size: int, image_size: int,
                  rng: np.random.Generator, random_flip: bool = False,
                  what: str = 'image') -> tuple[np.ndarray, bool]:
  """`preprocess_train_np` without the flip: (the crop, whether to mirror it), from the same
  draws of `rng`. The crop is uint8 [image_size, image_size, 3], a view of `img` when `img`
  is already resized.

  The input pipeline mirrors on the device, inside `to_model_input`: numpy's copy of a
  mirrored view moves 3-byte pixels one at a time (~0.36 ms per 224² image on a 2-core EPYC,
  against 0.007 ms for the crop alone), most of the pipeline's CPU once images are cached.
  """
  _check_crop(resize_size, image_size)
  y, x = rng.integers(0, resize_size - image_size + 1, size=2)
  return (crop_np(img, resize_size, image_size, (y, x), what),
          bool(random_flip and rng.random() < 0.5))


def crop_np(img: np.ndarray | bytes | Image.Image, resize_size: int, image_size: int,
            offset: Sequence[int], what: str = 'image') -> np.ndarray:
  """Resize to resize_size² (skipped when `img` is already uint8 [resize_size, resize_size, 3],
  e.g. from the pipeline's ResizedCache), then the image_size² crop whose top-left corner is
  `offset` (y, x). Returns uint8 [image_size, image_size, 3], a view of the resized image."""
  if _is_resized(img, resize_size):
    a = img
  else:
    pil = (Image.fromarray(img, 'RGB') if isinstance(img, np.ndarray)
           else decoder.decode_record(img, resize_size, what))
    a = np.asarray(resize.square(pil, resize_size), dtype=np.uint8)
  y, x = int(offset[0]), int(offset[1])
  return a[y:y + image_size, x:x + image_size]


def augment_draws(seed: int, step: int, batch_size: int, resize_size: int, image_size: int,
                  random_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """The training crop offsets and mirrors of every position of global batch `step`.

  One generator per (seed, step) draws the whole batch at once: a generator per image cost
  ~40 us (its seed hashing), a third of the pipeline's host time per cached image. Position j
  takes row j whichever process or worker makes it; the crops do not depend on
  `random_flip`.
  Returns: offsets i64 [batch_size, 2] (y, x), each in [0, resize_size - image_size]; mirror
  bool [batch_size] (all False without `random_flip`).
  """
  _check_crop(resize_size, image_size)
  rng = np.random.default_rng([_AUGMENT_STREAM, seed, step])
  offsets = rng.integers(0, resize_size - image_size + 1, size=(batch_size, 2))
  mirror = rng.random(batch_size) < 0.5
  return offsets, mirror & bool(random_flip)


@functools.partial(jax.jit, static_argnames=('normalize',))
def to_model_input(x: jax.Array, normalize: str = 'none',
                   flip: jax.Array | None = None) -> jax.Array:
  """uint8 [B, H, W, 3] → float32 in [0, 1]; `normalize='imagenet'` → (x - mean) / std.

  flip: bool [B] or None: image b is mirrored left-right where flip[b] (`train_crop_np`'s
  deferred flip), in the same pass as the conversion.
  """
  if flip is not None:
    chex.assert_shape(flip, x.shape[:1])
    x = jnp.where(flip.reshape(flip.shape + (1,) * (x.ndim - 1)), jnp.flip(x, axis=-2), x)
  y = x.astype(jnp.float32) * (1.0 / 255.0)
  if normalize == 'imagenet':
    y = (y - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  elif normalize != 'none':
    raise InputError(f"config.input.normalize={normalize!r}; use one of {NORMALIZE_MODES}")
  return y


# The decoder's names lived here until 2026-12 (`preprocess.decode`, `DecodeError`,
# `MAX_PIXELS`, ...): code that used them keeps working, with a DeprecationWarning.
__getattr__ = moved.forwarder(__name__, moved.table(
    'aesthetics_jax.data.decoder', (n for n in vars(decoder) if not n.startswith('_'))))
