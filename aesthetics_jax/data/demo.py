"""Procedural demo dataset in the exact AVA layout, with ground-truth defect masks.

`generate(out_dir, num_train, num_test, seed)` writes

  AVA.txt, tags.txt (66 AVA tag names), challenges.txt,
  style_image_lists/{train,test}.jpgl, images/<id>.jpg,
  defect_masks/<id>.png   uint8 0/255, image size: where defects were applied (0 = clean),
  demo_meta.csv           per image: split, latent quality, damage, defects, subject, ground,
  demo_manifest.json      written last, atomically: parameters + summary; its presence with
                          the same parameters means "complete", so a rerun reuses the data.

How quality is made (and why it is learnable at 64-96 px):
  * Each image gets a latent quality q, stratified over N(5.42, 0.68²) per split, so the
    split's mean scores look like AVA's (mean ≈ 5.4, ~72% above 5).
  * Damage D = clip((5.6 - q) / 1.4 + ε, 0, 1.2), ε ~ N(0, 0.04²), sets the defect's severity
    (0.35-1) and area (8-30% of the frame; a second defect above D = 0.9): the defects are
    what make an image's quality. Images with q >~ 5.57 (~40%) are clean; every image with
    mean score <= 5 has a defect.
    Defects are blur, noise, JPEG blocking, over/under-exposure, colour cast (applied inside an
    ellipse/rectangle region placed ANYWHERE in the frame) and poor subject placement (subject
    cut by the border; the region is the subject); every defect is sized relative to the
    image, so it survives a resize to 64 px. Version 2 aimed blur/blocking at the subject,
    which sits near the centre, and covered up to 60% of the frame: the centre pixel alone
    hit 69% of the regions, so no map could beat a centre point; here it hits ~32%.
  * No global cue by default: two clean images of different q are the same pixels, so the
    defects are the only visible quality. Version 3 made colour vividness rise with q
    (`vivid_gain=0.1`, still available: `--vivid_gain`); against the fixed scene palettes that
    cue alone let demo MobileNetV2 models reach LCC ~0.8 without using the defects, and their
    low-target Grad-CAM pointed at the defect less often than a centre point in 2 of 3 seeds
    (0.13 / 0.29 / 0.36 vs 0.36 at 400 steps; without the cue 0.38 / 0.55 / 0.62; README,
    "Explanations").
  * Votes: 100-300 voters, discretised normal around q with spread ≈ 1.4 (AVA-like).
Scenes: sky/ground gradients with textured ground (grass, sand, water, field rows) and one
subject (flower, building, person, ball, tree, or none); tags follow the content.
Everything derives from (seed, image id), so the same seed gives the same bytes.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
import time
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageFilter
from scipy import special

from aesthetics_jax.data import ava
from aesthetics_jax.io import atomic_write_json, atomic_write_text

GENERATOR_VERSION = 4
MANIFEST = 'demo_manifest.json'

# ids 1..36 follow AVA's tags.txt; the rest are plausible AVA/dpchallenge categories.
TAG_NAMES = (
    'Abstract', 'Action', 'Advertisement', 'Animals', 'Architecture', 'Astrophotography',
    'Black and White', 'Blur', 'Candid', 'Children', 'Cityscape', 'Still Life', 'Emotive',
    'Family', 'Fashion', 'Floral', 'Food and Drink', 'Humorous', 'Interior', 'Landscape',
    'Macro', 'Nature', 'Nude', 'Persuasive', 'Portraiture', 'Seascapes',
    'Science and Technology', 'Snapshot', 'Sports', 'Travel', 'Urban', 'Vintage', 'Water',
    'Rural', 'Self Portrait', 'Sky', 'Photojournalism', 'Traditional Art', 'Political',
    'Transportation', 'Textures', 'Diptych / Triptych', 'History', 'Street', 'Performance',
    'Wedding', 'Photo-Impressionism', 'Military', 'Infrared', 'Digital Art',
    'High Dynamic Range (HDR)', 'Panoramic', 'Lensbaby', 'Camera Phones', 'Pinhole/Zone',
    'Studio', 'Insects', 'Music', 'Horror', 'Maternity', 'Seasons', 'Overlays', 'Night',
    'Silhouettes', 'Reflections', 'Minimalism')
assert len(TAG_NAMES) == ava.NUM_TAGS
TAG_ID = {name: i for i, name in enumerate(TAG_NAMES, start=1)}

CHALLENGES = (
    (1, 'Free_Study 2004'), (12, 'Rule of Thirds'), (37, 'Shadows_and_Light'),
    (58, 'Macro II'), (103, 'Urban Decay'), (144, 'Portraits_Self'), (211, 'Blue'),
    (256, 'Landscapes_with_Water'), (389, 'Minimalism III'), (512, 'Free Study 2006'),
    (777, 'Architecture_Interior or Exterior'), (1024, 'Sky and Clouds'))

SUBJECTS = ('flower', 'building', 'person', 'ball', 'tree', 'none')
# Primary tags per subject (first one most likely) and secondary tags per ground.
SUBJECT_TAGS = {
    'flower': ('Floral', 'Nature', 'Macro'),
    'building': ('Architecture', 'Urban', 'Cityscape'),
    'person': ('Portraiture', 'Candid', 'Fashion', 'Self Portrait'),
    'ball': ('Sports', 'Abstract', 'Still Life'),
    'tree': ('Nature', 'Landscape', 'Rural'),
    'none': ('Landscape', 'Sky', 'Minimalism'),
}
GROUND_TAGS = {'grass': ('Nature', 'Rural'), 'sand': ('Travel', 'Landscape'),
               'water': ('Water', 'Seascapes', 'Reflections'), 'field': ('Rural', 'Landscape')}
DEFECTS = ('blur', 'noise', 'jpeg', 'overexpose', 'underexpose', 'cast', 'placement')

Q_MEAN, Q_STD = 5.42, 0.68       # latent quality ~ AVA's mean-score distribution
Q_CLEAN = 5.6                    # above this an image is (almost always) defect-free
D_SCALE = 1.4
# Defect regions: total area share 8% + 22% * damage (at most 30%), so a map that points at
# the region has room to beat a uniform map; a second defect only for damage > 0.9.
AREA_MIN, AREA_SLOPE, AREA_MAX = 0.08, 0.22, 0.3
SEVERITY_MIN = 0.35   # the mildest defect still shows at 64 px
# Colour vividness per unit of q: a global cue that competes with the local defects (module
# docstring). 0 = none (the demo's default since version 4); version 3 used 0.1.
VIVID_GAIN = 0.0


class DemoDataError(ValueError):
  """Bad parameters or an unwritable output folder; `str()` is one line with the fix."""


# ----------------------------------------------------------------------------------------
# Small image helpers (float32 HxWx3 in [0, 255]).

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int,
                  channels: int = 1) -> np.ndarray:
  """Value noise in [-1, 1], `[h, w, channels]`, feature size ≈ min(h, w) / cells."""
  ch = max(2, int(round(cells * h / min(h, w))))
  cw = max(2, int(round(cells * w / min(h, w))))
  small = rng.uniform(0, 255, (ch, cw, channels)).astype(np.uint8)
  mode = 'L' if channels == 1 else 'RGB'
  img = Image.fromarray(small[..., 0] if channels == 1 else small, mode)
  big = np.asarray(img.resize((w, h), Image.BICUBIC), np.float32)
  big = big.reshape(h, w, channels)
  return big / 127.5 - 1.0


def _to_pil(x: np.ndarray) -> Image.Image:
  return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))


def _ellipse(yy, xx, cy, cx, ry, rx):
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


# ----------------------------------------------------------------------------------------
# Scene rendering.

_SKIES = (  # (top, horizon) colours
    ((40, 90, 190), (150, 195, 240)), ((70, 40, 120), (250, 150, 80)),
    ((120, 130, 140), (200, 205, 210)), ((20, 60, 150), (120, 180, 235)),
    ((30, 30, 80), (220, 110, 120)))
_GROUNDS = {'grass': (60, 130, 45), 'sand': (205, 180, 120), 'water': (35, 90, 150),
            'field': (150, 120, 50)}
_SUBJECT_COLOURS = ((220, 40, 60), (250, 200, 30), (200, 60, 200), (240, 240, 240),
                    (255, 120, 20), (40, 160, 220))


def _render_scene(rng, h, w, subject, ground, cx, cy, scale):
  """Returns (image f32 [h,w,3], subject mask bool [h,w], horizon as a fraction of h)."""
  yy = (np.arange(h, dtype=np.float32) / h)[:, None]
  xx = (np.arange(w, dtype=np.float32) / w)[None, :]
  horizon = rng.uniform(0.4, 0.7) if subject != 'none' else rng.uniform(0.55, 0.8)
  top, bottom = (np.array(c, np.float32) for c in _SKIES[rng.integers(len(_SKIES))])
  t = np.clip(yy / horizon, 0, 1)[..., None]
  img = top * (1 - t) + bottom * t + np.zeros((1, w, 1), np.float32)
  clouds = _smooth_noise(rng, h, w, rng.uniform(3, 6))
  img += 40 * np.clip(clouds, 0, 1) * (yy < horizon)[..., None]
  # Fine cloud texture, so blur and blocking have detail to destroy in the sky too.
  img += 25 * _smooth_noise(rng, h, w, rng.uniform(25, 40)) * (yy < horizon)[..., None]
  # Ground: base colour, darker towards the bottom, with texture at a scale that survives
  # downsampling (so blur has detail to destroy).
  base = np.array(_GROUNDS[ground], np.float32) * rng.uniform(0.8, 1.15)
  g = np.clip((yy - horizon) / (1 - horizon), 0, 1)
  ground_col = base * (1.0 - 0.35 * g[..., None])
  tex = _smooth_noise(rng, h, w, rng.uniform(40, 70))
  if ground == 'field':
    rows = np.sin(2 * np.pi * (xx * rng.uniform(10, 20) + 6 * g ** 1.5))[..., None]
    tex = 0.5 * tex + 0.8 * rows
  elif ground == 'water':
    waves = np.sin(2 * np.pi * (yy * rng.uniform(25, 40) + 0.3 * tex[..., 0]))
    tex = 0.4 * tex + 0.7 * waves[..., None]
  ground_img = ground_col + 38 * tex
  below = (yy >= horizon)[..., None]
  img = np.where(below, ground_img, img)

  s = scale * min(h, w)  # subject size in pixels
  py, px = cy * h, cx * w
  m = np.zeros((h, w), bool)
  # Draw only inside the subject's bounding box (every shape fits in it): ~3x faster.
  y0, y1 = max(0, int(py - 1.0 * s)), min(h, int(py + 1.7 * s) + 1)
  x0, x1 = max(0, int(px - 0.8 * s)), min(w, int(px + 0.8 * s) + 1)
  if subject == 'none' or y1 <= y0 or x1 <= x0:
    return img, m, horizon
  Y = np.arange(y0, y1, dtype=np.float32)[:, None]
  X = np.arange(x0, x1, dtype=np.float32)[None, :]
  full_img, full_m = img, m
  img, m = img[y0:y1, x0:x1], m[y0:y1, x0:x1]  # views: writes land in the full arrays
  col = np.array(_SUBJECT_COLOURS[rng.integers(len(_SUBJECT_COLOURS))], np.float32)
  if subject == 'flower':
    stem = (np.abs(X - px) < max(1.5, s * 0.04)) & (Y > py) & (Y < py + 1.6 * s)
    img[stem] = (40, 120, 30)
    n_pet = int(rng.integers(5, 9))
    ang0 = rng.uniform(0, np.pi)
    for k in range(n_pet):
      a = ang0 + 2 * np.pi * k / n_pet
      pm = _ellipse(Y, X, py + 0.45 * s * np.sin(a), px + 0.45 * s * np.cos(a),
                    0.3 * s, 0.3 * s)
      shade = 0.8 + 0.2 * np.cos(a)
      img[pm] = col * shade
      m |= pm
    centre = _ellipse(Y, X, py, px, 0.22 * s, 0.22 * s)
    img[centre] = (90, 60, 20)
    dots = centre & (np.sin(X * 1.3) * np.sin(Y * 1.3) > 0.3)
    img[dots] = (250, 210, 60)
    m |= centre | stem
  elif subject == 'building':
    bw, bh = 0.9 * s, 1.8 * s
    by, bx = py - bh / 2, px - bw / 2
    bm = (Y >= by) & (Y < by + bh) & (X >= bx) & (X < bx + bw)
    wall = np.array((170, 160, 150), np.float32) * rng.uniform(0.6, 1.1)
    img[bm] = wall
    cell = max(4.0, s / 6)
    wy = ((Y - by) % cell) < 0.55 * cell
    wx = ((X - bx) % cell) < 0.5 * cell
    win = bm & wy & wx & (Y > by + 0.3 * cell)
    img[win] = (40, 50, 70)
    lit = win & (((Y // cell) * 7 + (X // cell) * 3) % 5 == 0)
    img[lit] = (250, 230, 140)
    m |= bm
  elif subject == 'person':
    body = _ellipse(Y, X, py + 0.35 * s, px, 0.75 * s, 0.35 * s)
    head = _ellipse(Y, X, py - 0.6 * s, px, 0.22 * s, 0.2 * s)
    stripes = body & (np.sin(Y * (12 / max(s, 1)) * np.pi) > 0)
    img[body] = col
    img[stripes] = col * 0.55
    img[head] = (225, 180, 150)
    hair = head & (Y < py - 0.68 * s)
    img[hair] = (60, 40, 30)
    m |= body | head
  elif subject == 'ball':
    bm = _ellipse(Y, X, py, px, 0.5 * s, 0.5 * s)
    shade = 1.0 - 0.5 * np.clip(((Y - py + 0.2 * s) ** 2 + (X - px + 0.2 * s) ** 2) / (s * s), 0, 1)
    seams = np.abs(np.sin((X - px) / max(s, 1) * 9)) < 0.25
    img[...] = np.where(bm[..., None], col * shade[..., None], img)
    img[bm & seams] = (30, 30, 30)
    m |= bm
  elif subject == 'tree':
    trunk = (np.abs(X - px) < 0.1 * s) & (Y > py) & (Y < py + 1.2 * s)
    img[trunk] = (90, 60, 30)
    crown = _ellipse(Y, X, py - 0.2 * s, px, 0.7 * s, 0.6 * s)
    leaves = _smooth_noise(rng, y1 - y0, x1 - x0, 50 * min(y1 - y0, x1 - x0) / min(h, w))[..., 0]
    img[crown] = np.array((40, 120, 40), np.float32) + 45 * leaves[crown][:, None]
    m |= crown | trunk
  return full_img, full_m, horizon


# ----------------------------------------------------------------------------------------
# Defects: each is f(region crop f32, severity, rng, short side) -> defected crop.

def _blur(x, sev, rng, short):
  r = short * (0.03 + 0.05 * sev)
  return np.asarray(_to_pil(x).filter(ImageFilter.GaussianBlur(r)), np.float32)


def _noise(x, sev, rng, short):
  h, w, _ = x.shape
  grain = max(1, int(round(short / 45)))  # grains survive a resize to 64 px
  n = rng.standard_normal((-(-h // grain), -(-w // grain), 3)).astype(np.float32)
  n = np.repeat(np.repeat(n, grain, 0), grain, 1)[:h, :w]
  lum = n.mean(axis=2, keepdims=True)
  return x + (25 + 55 * sev) * (0.6 * lum + 0.4 * n)


def _jpeg(x, sev, rng, short):
  h, w, _ = x.shape
  f = max(1, int(round(short / 90)))  # coarse blocks: 8*f px
  small = _to_pil(x).resize((max(8, w // f), max(8, h // f)), Image.BILINEAR)
  buf = io.BytesIO()
  small.save(buf, 'JPEG', quality=int(round(12 - 10 * sev)))
  dec = Image.open(io.BytesIO(buf.getvalue())).convert('RGB').resize((w, h), Image.NEAREST)
  return np.asarray(dec, np.float32)


def _overexpose(x, sev, rng, short):
  x = np.clip(x, 0, 255)
  return 255 * (1 - (1 - x / 255) ** (1.8 + 2.5 * sev)) + 40 * sev


def _underexpose(x, sev, rng, short):
  return x * (0.55 - 0.4 * sev)


def _cast(x, sev, rng, short):
  casts = np.array([(1.0, -0.2, -0.8), (-0.8, 1.0, -0.5), (-0.6, -0.2, 1.0), (1.0, -0.7, 1.0),
                    (0.8, 0.8, -1.0)], np.float32)
  c = casts[rng.integers(len(casts))]
  return x + (45 + 75 * sev) * c


_REGION_DEFECTS = {'blur': _blur, 'noise': _noise, 'jpeg': _jpeg, 'overexpose': _overexpose,
                   'underexpose': _underexpose, 'cast': _cast}


def _region(rng, h, w, area):
  """Boolean mask of one defect region covering ≈ `area` of the frame, centred anywhere
  (centre uniform in [0.15, 0.85]², then moved inside the frame)."""
  aspect = np.exp(rng.uniform(-0.5, 0.5))
  rh = min(1.0, np.sqrt(area * aspect))
  rw = min(1.0, area / rh)
  cy, cx = rng.uniform(0.15, 0.85, 2)
  cy = float(np.clip(cy, rh / 2, 1 - rh / 2))
  cx = float(np.clip(cx, rw / 2, 1 - rw / 2))
  yy = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
  xx = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
  if rng.uniform() < 0.5:
    return (np.abs(yy - cy) <= rh / 2) & (np.abs(xx - cx) <= rw / 2)
  # Ellipse with the same area: radii scaled by sqrt(4/pi) and clipped by the frame.
  k = np.sqrt(4 / np.pi)
  return _ellipse(yy, xx, cy, cx, k * rh / 2, k * rw / 2)


def _apply_in_region(img, mask, fn, sev, rng, short):
  ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
  if ys.size == 0:
    return img
  pad = int(short * 0.06) + 2  # context so blur does not smear the crop border
  y0, y1 = max(0, ys[0] - pad), min(img.shape[0], ys[-1] + 1 + pad)
  x0, x1 = max(0, xs[0] - pad), min(img.shape[1], xs[-1] + 1 + pad)
  crop = img[y0:y1, x0:x1]
  out = fn(crop, sev, rng, short)
  m = mask[y0:y1, x0:x1, None]
  img[y0:y1, x0:x1] = np.where(m, out, crop)
  return img


# ----------------------------------------------------------------------------------------
# One image.

def _image_size(rng) -> tuple[int, int]:
  long = int(rng.integers(240, 401))
  ratio = float(rng.choice([1.0, 1.25, 4 / 3, 1.5, 1.6]))
  short = max(160, int(round(long / ratio)))
  orient = rng.integers(3)  # 0 landscape, 1 portrait, 2 square-ish
  if orient == 2:
    return long, int(np.clip(long + rng.integers(-10, 11), 160, 400))
  return (short, long) if orient == 0 else (long, short)


def _damage(q: float, rng) -> float:
  return float(np.clip((Q_CLEAN - q) / D_SCALE + rng.normal(0, 0.04), 0.0, 1.2))


def render_image(image_seed, q: float, vivid_gain: float = VIVID_GAIN) -> dict[str, Any]:
  """Renders one image of latent quality q (`vivid_gain`: the global cue, module docstring).

  Returns: `image uint8 [H,W,3]`, `mask uint8 [H,W]` (0/255), `subject`, `ground`,
  `defects` (list of names), `damage`, `grayscale`.
  """
  rng = np.random.default_rng(image_seed)
  h, w = _image_size(rng)
  short = min(h, w)
  subject = SUBJECTS[rng.choice(len(SUBJECTS), p=[0.2, 0.2, 0.2, 0.12, 0.13, 0.15])]
  ground = ('grass', 'sand', 'water', 'field')[rng.integers(4)]
  d = _damage(q, rng)
  n_def = 0 if d <= 0.02 else 1 + int(d > 0.9)
  defects = [str(x) for x in rng.choice(DEFECTS, size=n_def, replace=False,
                                        p=[0.18, 0.17, 0.17, 0.13, 0.13, 0.12, 0.10])]
  if subject == 'none' and 'placement' in defects:
    defects[defects.index('placement')] = 'blur'
  sev = min(1.0, SEVERITY_MIN + (1 - SEVERITY_MIN) * d)
  # Composition: rule-of-thirds placement for a good image; cut by the border for a bad one.
  scale = rng.uniform(0.22, 0.32)
  if 'placement' in defects:
    scale *= 1.0 + 0.4 * sev
    cx = rng.choice([-0.02, 1.02]) + rng.uniform(-0.06, 0.06)
    cy = rng.uniform(0.2, 0.8)
  else:
    cx = rng.choice([1 / 3, 2 / 3, 0.5]) + rng.uniform(-0.04, 0.04)
    cy = rng.uniform(0.42, 0.58)
  img, subj_mask, horizon = _render_scene(rng, h, w, subject, ground, cx, cy, scale)
  # Global cue: vividness (saturation and contrast) rises with quality when vivid_gain > 0.
  vivid = float(np.clip(0.8 + vivid_gain * (q - Q_MEAN), 0.5, 1.25))
  grey = img.mean(axis=2, keepdims=True)
  img = grey + vivid * (img - grey)
  img = 128 + (0.9 + 0.1 * vivid) * (img - 128)
  grayscale = bool(rng.uniform() < 0.07)
  if grayscale:
    img = np.repeat(img @ np.array([[0.299], [0.587], [0.114]], np.float32), 3, axis=2)
  mask = np.zeros((h, w), bool)
  region_defects = [x for x in defects if x != 'placement']
  if 'placement' in defects:
    mask |= subj_mask
  if region_defects:
    total = min(AREA_MAX, AREA_MIN + AREA_SLOPE * min(d, 1.0))
    if 'placement' in defects:
      total = max(0.06, total - subj_mask.mean())
    for name in region_defects:
      area = total / len(region_defects) * rng.uniform(0.8, 1.2)
      # Anywhere in the frame, not on the subject: a centre point must not find it for free
      # (the subject sits near the centre or a third; version 2 aimed defects at it and the
      # centre pixel hit 69% of them).
      region = _region(rng, h, w, max(0.04, area))
      img = _apply_in_region(img, region, _REGION_DEFECTS[name], sev, rng, short)
      mask |= region
  return {
      'image': np.clip(img + 0.5, 0, 255).astype(np.uint8),
      'mask': (mask * np.uint8(255)).astype(np.uint8),
      'subject': subject, 'ground': ground, 'defects': defects, 'damage': d,
      'grayscale': grayscale,
  }


def _choose_tags(rng, subject, ground, grayscale) -> tuple[int, int]:
  primary = SUBJECT_TAGS[subject]
  t1 = TAG_ID[primary[min(rng.geometric(0.55) - 1, len(primary) - 1)]]
  pool = [TAG_ID[t] for t in primary + GROUND_TAGS[ground]]
  if grayscale:
    pool = [TAG_ID['Black and White']] * 4 + pool
  if subject == 'none' or rng.uniform() < 0.15:
    pool += [TAG_ID['Sky']] * 2
  pool = [t for t in pool if t != t1]
  t2 = int(rng.choice(pool)) if rng.uniform() < 0.75 else 0
  return t1, t2


def sample_votes(rng, q: float) -> np.ndarray:
  """int64 `[10]`: 100-300 voters, discretised normal around q, spread ≈ 1.4 (AVA-like)."""
  n = int(rng.integers(100, 301))
  spread = float(np.clip(rng.normal(1.42, 0.22), 0.9, 2.2))
  k = np.arange(1, 11, dtype=np.float64)
  # Truncation at 1 and 10 pulls the mean inwards; aim the centre outwards to compensate.
  centre = q + 0.12 * (q - 5.5) ** 3 / (1 + abs(q - 5.5) ** 2)
  p = np.exp(-0.5 * ((k - centre) / spread) ** 2)
  return rng.multinomial(n, p / p.sum()).astype(np.int64)


def _stratified_quality(rng, n: int) -> np.ndarray:
  """n latent qualities whose empirical distribution tracks N(Q_MEAN, Q_STD²) closely."""
  u = (rng.permutation(n) + rng.uniform(0.05, 0.95, n)) / max(n, 1)
  return np.clip(Q_MEAN + Q_STD * special.ndtri(u), 2.0, 8.8)


# ----------------------------------------------------------------------------------------
# Dataset.

# Kept images at most (AVA has 255,000): the ids are drawn from 1000..999,999 with the
# untagged, missing and spare ones beside them, and a larger count was a numpy traceback.
MAX_IMAGES = 500_000


def check_args(num_train: int, num_test: int, seed: int,
               vivid_gain: float | None = None) -> None:
  """DemoDataError (one line) for arguments no dataset can be made with (both generators)."""
  if num_train < 1 or num_test < 1:
    raise DemoDataError(f'num_train and num_test must be >= 1, got {num_train} and '
                        f'{num_test} (pass positive counts)')
  if num_train + num_test > MAX_IMAGES:
    raise DemoDataError(f'num_train + num_test = {num_train + num_test:,} is more than the '
                        f'generator makes ({MAX_IMAGES:,}; AVA has 255,000); pass smaller counts')
  if seed < 0:
    raise DemoDataError(f'seed must be >= 0, got {seed} (pass a non-negative integer)')
  if vivid_gain is not None and not 0 <= vivid_gain <= 0.5:
    raise DemoDataError(f'vivid_gain must be in [0, 0.5], got {vivid_gain} (0 = no global '
                        'cue; 0.1 = generator version 3)')


def _params(num_train, num_test, seed, vivid_gain) -> dict[str, Any]:
  return {'num_train': int(num_train), 'num_test': int(num_test), 'seed': int(seed),
          'vivid_gain': float(vivid_gain), 'generator_version': GENERATOR_VERSION}


def read_manifest(out_dir: os.PathLike | str) -> dict[str, Any] | None:
  """The manifest of a complete dataset in out_dir, or None."""
  path = Path(out_dir) / MANIFEST
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def earlier_files(out_dir: Path) -> set[int]:
  """Ids whose image (and mask) an earlier complete generation wrote into out_dir: its
  manifest's `image_ids` (and paper-size's `corrupt_ids`). Read before the manifest goes."""
  man = read_manifest(out_dir) or {}
  try:
    return {int(i) for k in ('image_ids', 'corrupt_ids') for i in man.get(k) or ()}
  except (TypeError, ValueError):  # not a manifest this package wrote: remove nothing
    return set()


def remove_earlier(out_dir: Path, earlier: set[int], ids: Iterable[int]) -> None:
  """Removes the files of `earlier` ids that this generation (`ids`) does not write: a root
  regenerated smaller or with another seed kept every earlier image, unlisted (a paper-size
  root regenerated at a tenth of its size kept GBs). Only ids the earlier manifest lists, so
  nothing this package did not write is touched."""
  for i in sorted(earlier - {int(i) for i in ids}):
    (out_dir / 'images' / f'{i}.jpg').unlink(missing_ok=True)
    (out_dir / 'defect_masks' / f'{i}.png').unlink(missing_ok=True)


def _is_complete(out_dir: Path, params) -> dict[str, Any] | None:
  man = read_manifest(out_dir)
  if not man or man.get('params') != params:
    return None
  ids = man.get('image_ids', [])
  for i in ids:
    if not ((out_dir / 'images' / f'{i}.jpg').is_file()
            and (out_dir / 'defect_masks' / f'{i}.png').is_file()):
      return None
  for name in ('AVA.txt', 'tags.txt', 'challenges.txt', 'demo_meta.csv',
               'style_image_lists/train.jpgl',
               'style_image_lists/test.jpgl'):
    if not (out_dir / name).is_file():
      return None
  return man


def write_metadata(out_dir: Path, records: list, ids, meta_rows: list[str]) -> None:
  """AVA.txt (in id order, as the real file is not grouped by split), demo_meta.csv
  (`meta_rows`, header first), tags.txt and challenges.txt of a generated root."""
  order = np.argsort(ids, kind='stable')
  ava.write_ava_txt(out_dir / 'AVA.txt', [records[j] for j in order])
  atomic_write_text(out_dir / 'demo_meta.csv', '\n'.join(meta_rows) + '\n')
  atomic_write_text(out_dir / 'tags.txt',
                    ''.join(f'{i} {n}\n' for i, n in enumerate(TAG_NAMES, 1)))
  atomic_write_text(out_dir / 'challenges.txt', ''.join(f'{i} {n}\n' for i, n in CHALLENGES))


def generate(out_dir: os.PathLike | str, num_train: int = 2000, num_test: int = 500,
             seed: int = 0, progress: bool = False,
             vivid_gain: float = VIVID_GAIN) -> dict[str, Any]:
  """Writes the demo dataset (layout in the module docstring) and returns its summary.

  Args:
    out_dir: AVA root to write (created if needed).
    num_train, num_test: images in the `style` subset's train / test split after its filter.
      A few extra images without tags, and a few listed ids absent from AVA.txt, are added
      so the filter has something to drop.
    seed: everything (ids, scenes, votes, bytes) is a function of the seed.
    progress: show a tqdm bar.
    vivid_gain: colour vividness per unit of latent quality, a global cue beside the
      defects (0 = none; 0.1 = generator version 3's).
  Returns:
    Summary: counts, `mean_of_means`, `std_of_means`, `frac_high`, `mean_vote_std`,
    `mean_num_votes`, `frac_with_defects`, `mean_defect_area`, `seconds`, `reused`.
  """
  check_args(num_train, num_test, seed, vivid_gain)
  out_dir = Path(out_dir)
  params = _params(num_train, num_test, seed, vivid_gain)
  done = _is_complete(out_dir, params)
  if done is not None:
    return dict(done['summary'], out_dir=str(out_dir), seconds=0.0, reused=True)
  try:
    return _generate(out_dir, num_train, num_test, seed, params, progress, vivid_gain)
  except OSError as e:
    where = e.filename or out_dir
    raise DemoDataError(f'{where}: cannot write the demo dataset ({e.strerror or e}) '
                        '(choose a writable --out_dir with ~50 MB free)') from None


def format_summary(s: dict[str, Any]) -> str:
  """A few human-readable lines for the launch script and the demo job."""
  verb = 'Reused' if s.get('reused') else 'Wrote'
  return (f"{verb} demo AVA dataset at {s['out_dir']}: {s['num_images']} images "
          f"(style train {s['num_train']}, test {s['num_test']}; +{s['num_untagged']} untagged, "
          f"+{s['num_listed_missing']} listed ids missing from AVA.txt)\n"
          f"  mean of means {s['mean_of_means']:.3f} (std {s['std_of_means']:.3f}), "
          f"high (mean > 5) {100 * s['frac_high']:.1f}%, mean vote std {s['mean_vote_std']:.3f}, "
          f"{s['mean_num_votes']:.0f} votes/image\n"
          f"  images with defects {100 * s['frac_with_defects']:.1f}%, mean defect area "
          f"{100 * s['mean_defect_area']:.1f}%; "
          + ('reused (complete, same parameters)' if s.get('reused')
             else f"generated in {s['seconds']:.1f} s"))


def _generate(out_dir: Path, num_train: int, num_test: int, seed: int, params,
              progress: bool, vivid_gain: float) -> dict[str, Any]:
  t0 = time.perf_counter()
  (out_dir / 'images').mkdir(parents=True, exist_ok=True)
  (out_dir / 'defect_masks').mkdir(exist_ok=True)
  (out_dir / 'style_image_lists').mkdir(exist_ok=True)
  earlier = earlier_files(out_dir)
  (out_dir / MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten last

  rng = np.random.default_rng([seed, 0xA7A])
  n_untag = [max(1, n // 50) for n in (num_train, num_test)]
  n_phantom = [max(1, n // 100) for n in (num_train, num_test)]
  n_total = num_train + num_test + sum(n_untag)
  pool = rng.choice(np.arange(1000, 1_000_000), size=n_total + sum(n_phantom) + 16,
                    replace=False)
  pool = [int(i) for i in pool if int(i) not in ava.KNOWN_BAD_IDS]
  ids = pool[:n_total]
  phantoms = pool[n_total:n_total + sum(n_phantom)]
  split_sizes = (num_train + n_untag[0], num_test + n_untag[1])
  q = np.concatenate([_stratified_quality(rng, n) for n in split_sizes])
  untagged = set(ids[:n_untag[0]]) | set(ids[split_sizes[0]:split_sizes[0] + n_untag[1]])
  remove_earlier(out_dir, earlier, ids)

  records: list[ava.AvaImage] = []
  defect_area = []
  meta_rows = ['image_id,split,latent_quality,damage,defects,subject,ground,grayscale']
  iterator = range(n_total)
  if progress:
    import tqdm  # pylint: disable=import-outside-toplevel
    iterator = tqdm.tqdm(iterator, desc='demo images', unit='img')
  for i in iterator:
    image_id = ids[i]
    r = render_image([seed, image_id, 1], float(q[i]), vivid_gain)
    vr = np.random.default_rng([seed, image_id, 2])
    votes = sample_votes(vr, float(q[i]))
    tags = () if image_id in untagged else _choose_tags(vr, r['subject'], r['ground'],
                                                         r['grayscale'])
    challenge = CHALLENGES[vr.integers(len(CHALLENGES))][0]
    records.append(ava.AvaImage(image_id, votes, tuple(t for t in tags if t), challenge))
    buf = io.BytesIO()
    Image.fromarray(r['image']).save(buf, 'JPEG', quality=90)
    # Plain writes: the manifest, written last, is what marks the folder complete (a rerun
    # after a crash rewrites every image), and an fsync per file would cost ~1.5x the time.
    (out_dir / 'images' / f'{image_id}.jpg').write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(r['mask'], 'L').save(buf, 'PNG', compress_level=1)
    (out_dir / 'defect_masks' / f'{image_id}.png').write_bytes(buf.getvalue())
    defect_area.append(float(r['mask'].mean() / 255))
    meta_rows.append(f"{image_id},{'train' if i < split_sizes[0] else 'test'},{q[i]:.4f},"
                     f"{r['damage']:.4f},{'+'.join(r['defects'])},{r['subject']},"
                     f"{r['ground']},{int(r['grayscale'])}")

  write_metadata(out_dir, records, ids, meta_rows)
  train_ids = ids[:split_sizes[0]] + phantoms[:n_phantom[0]]
  test_ids = ids[split_sizes[0]:] + phantoms[n_phantom[0]:]
  for name, lst in (('train', train_ids), ('test', test_ids)):
    lst = [lst[j] for j in rng.permutation(len(lst))]
    atomic_write_text(out_dir / 'style_image_lists' / f'{name}.jpgl',
                      ''.join(f'{i}\n' for i in lst))

  targets = ava.votes_to_targets(np.stack([r.votes for r in records]))
  means = targets['mean_score']
  summary = {
      'num_train': num_train, 'num_test': num_test, 'num_images': n_total,
      'num_untagged': len(untagged), 'num_listed_missing': len(phantoms),
      'mean_of_means': round(float(means.mean()), 4),
      'std_of_means': round(float(means.std()), 4),
      'frac_high': round(float(targets['label'].mean()), 4),
      'mean_vote_std': round(float(targets['std_score'].mean()), 4),
      'mean_num_votes': round(float(np.mean([r.num_votes for r in records])), 1),
      'frac_with_defects': round(float(np.mean(np.array(defect_area) > 0)), 4),
      'mean_defect_area': round(float(np.mean(defect_area)), 4),
      'seed': seed, 'vivid_gain': float(vivid_gain),
  }
  # No paths or timings in the manifest: the whole folder is byte-identical per seed.
  manifest = {'params': params, 'summary': summary, 'image_ids': sorted(ids)}
  atomic_write_json(out_dir / MANIFEST, manifest, indent=1)
  return dict(summary, out_dir=str(out_dir), seconds=round(time.perf_counter() - t0, 2),
              reused=False)
