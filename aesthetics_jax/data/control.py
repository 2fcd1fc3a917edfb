"""A control dataset whose label is decided ONLY by a small patch at a random position.

Why: a study that asks whether class activation maps point at what made an image bad needs
proof that the whole path (training, CAM layer, normalisation, resize, boxes, masks, pointing
game) *can* find the answer when the answer is known. Here it is known by construction:
every image is a random smooth texture; "low" images (mean score ~3) carry one checkerboard
patch with 3-pixel squares (the cause) at a uniformly random position, "high" images (mean
score ~7) carry none.

Decoys (`decoys=True`, the default): every image also carries one or two checkerboards with
2-pixel squares, drawn independently of the label, at other random places. Why:
- Without them an UNTRAINED network's maps already point at the lone patch: any edge filter
  answers to it (measured at VGG `features.8`, 2-px patch: Grad-CAM++ 0.97-1.00 on three random
  initialisations). A hit then shows the patch is conspicuous, not that the maps follow what
  the model learned.
- The decoys are MORE conspicuous than the cause (finer squares, more edges): untrained maps
  mostly point at a decoy (Grad-CAM, HiResCAM, XGrad-CAM, LayerCAM: the cause on 0-50% of the
  low images over five initialisations; README, "Explanations"), so a hit has to come from
  training.
- Their number is independent of the label: with a fixed count (low = cause + 1 decoy, high =
  2 decoys) a model can tell the classes by counting decoys, and its maps then point at them
  (measured: 100% accurate models, cause hit 0.00-0.29). Here the patch count leaves half the
  images ambiguous, so an accurate model must detect the cause itself.
"""
from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from aesthetics_jax import io
from aesthetics_jax.data import ava

VERSION = 2     # 2: the cause has 3-px squares, with decoys; 1: a lone 2-px checkerboard
LOW_MEAN, HIGH_MEAN = 3.0, 7.0
TAG = 1          # one tag for all images (the style subset keeps images with a tag)
CHALLENGE = 1


def _votes(rng: np.random.Generator, mean: float, n: int = 100) -> np.ndarray:
  """Vote counts [10] with the given mean score (narrow spread)."""
  p = np.exp(-0.5 * ((np.arange(1, 11) - mean) / 0.8) ** 2)
  return rng.multinomial(n, p / p.sum())


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
  """Random smooth colour field f32 [S,S,3] in [0,255] (bilinear-upsampled 4×4 noise)."""
  cells = rng.uniform(40, 215, (4, 4, 3)).astype(np.float32)
  img = np.stack([np.asarray(Image.fromarray(cells[..., c]).resize((size, size),
                                                                   Image.BILINEAR))
                  for c in range(3)], -1)
  return img + rng.normal(0, 6, img.shape).astype(np.float32)


CAUSE_SQUARE, DECOY_SQUARE = 3, 2   # checkerboard square sides, pixels


def _patch(size: int, square: int) -> np.ndarray:
  """Black/white checkerboard f32 [P,P,1] with `square`-pixel squares: colourless."""
  yy, xx = np.mgrid[:size, :size]
  return (((yy // square + xx // square) % 2) * 255.0)[..., None].astype(np.float32)


def _places(rng: np.random.Generator, size: int, patch: int, n: int) -> list[tuple[int, int]]:
  """`n` (>= 0) top-left corners of non-overlapping patch x patch squares, uniformly at random."""
  for _ in range(10_000):
    yx = [tuple(int(v) for v in rng.integers(0, size - patch + 1, 2)) for _ in range(n)]
    if all(abs(a[0] - b[0]) >= patch or abs(a[1] - b[1]) >= patch
           for i, a in enumerate(yx) for b in yx[i + 1:]):
      return yx
  raise ValueError(f'no room for {n} patches of {patch} px in {size} px')


def render(rng: np.random.Generator, size: int, patch: int, low: bool, decoys: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
  """(image uint8 [S,S,3], mask bool [S,S]); the mask marks the cause (empty if not low),
  never a decoy."""
  img = _texture(rng, size)
  mask = np.zeros((size, size), bool)
  # Decoys: one or two, drawn independently of the label, so neither their number nor the
  # number of patches tells the class on its own.
  n_decoys = int(rng.integers(1, 3)) if decoys else 0
  places = _places(rng, size, patch, n_decoys + int(low))
  for k, (y, x) in enumerate(places):
    if low and k == 0:
      img[y:y + patch, x:x + patch] = _patch(patch, CAUSE_SQUARE)
      mask[y:y + patch, x:x + patch] = True
    else:
      img[y:y + patch, x:x + patch] = _patch(patch, DECOY_SQUARE)
  return np.clip(img, 0, 255).astype(np.uint8), mask


def generate(out_dir: os.PathLike | str, num_train: int = 400, num_test: int = 100,
             size: int = 64, patch: int = 16, low_fraction: float = 0.5,
             seed: int = 0, decoys: bool = True) -> Path:
  """Writes the control dataset to `out_dir` (an AVA root); returns it.

  Args:
    num_train, num_test: images in the style train / test lists (all tagged, all kept).
    size: image side in pixels (square, so resizing never distorts the patch).
    patch: patch side in pixels.
    low_fraction: share of images with the patch (label low).
    seed: everything is a function of the seed.
    decoys: one or two finer checkerboards in every image (module docstring).
  """
  if not 0 < patch < size:
    raise ValueError(f'patch={patch} must be between 1 and size-1={size - 1}')
  out = Path(out_dir)
  rng = np.random.default_rng([seed, 0xC0417])
  n = num_train + num_test
  images, lists = [], {'train': [], 'test': []}
  for k in range(n):
    image_id = 100_000 + k
    low = bool(rng.random() < low_fraction)
    img, mask = render(rng, size, patch, low, decoys)
    buf = _io.BytesIO()
    # PNG-quality JPEG: blocking artefacts must not blur the decoys' 2-pixel squares away.
    Image.fromarray(img).save(buf, 'JPEG', quality=98)
    io.atomic_write_bytes(out / 'images' / f'{image_id}.jpg', buf.getvalue(), durable=False)
    mbuf = _io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(mbuf, 'PNG')
    io.atomic_write_bytes(out / 'defect_masks' / f'{image_id}.png', mbuf.getvalue(),
                         durable=False)
    votes = _votes(rng, LOW_MEAN if low else HIGH_MEAN)
    images.append(ava.AvaImage(image_id=image_id, votes=votes, tags=(TAG,),
                               challenge_id=CHALLENGE))
    lists['train' if k < num_train else 'test'].append(image_id)
  ava.write_ava_txt(out / 'AVA.txt', images)
  io.atomic_write_text(out / 'tags.txt', ''.join(f'{t} Tag{t}\n' for t in range(1, 67)))
  io.atomic_write_text(out / 'challenges.txt', f'{CHALLENGE} Control\n')
  for split, ids in lists.items():
    io.atomic_write_text(out / 'style_image_lists' / f'{split}.jpgl',
                         ''.join(f'{i}\n' for i in ids))
  return out
