"""In-memory AVA-like data sources and a tiny input config (resize 40, crop 32).

Shared by the preprocess / sampling / pipeline tests and imported by the subprocesses of
test_multiprocess_input.py (which put tests/ on sys.path).
"""
import io

import numpy as np
from PIL import Image

from aesthetics_jax.configs import default

HIGH_VOTES = np.array([0, 0, 1, 2, 4, 6, 4, 2, 1, 0], np.int32)   # mean 6.0 (in band)
LOW_VOTES = np.array([1, 2, 4, 6, 4, 2, 1, 0, 0, 0], np.int32)    # mean 4.0 (outside)


def encode_image(rng, h, w, mode='RGB', fmt='JPEG', **kw) -> bytes:
  """Random pixels [h, w] converted to PIL `mode`, encoded as `fmt`."""
  a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  img = Image.fromarray(a, 'RGB').convert(mode)
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def make_source(n=16, high_every=4, seed=0):
  """n records; 3 of every 4 high (mean 6.0), 1 low (mean 4.0): a 3:1 dataset."""
  rng = np.random.default_rng(seed)
  recs = []
  for i in range(n):
    low = i % high_every == 0
    recs.append({'image': encode_image(rng, 48 + (i % 5) * 7, 56 + (i % 3) * 9, quality=90),
                 'image_id': 1000 + i,
                 'votes': (LOW_VOTES if low else HIGH_VOTES).copy(),
                 'tags': np.array([i % 66 + 1, 0 if i % 2 else 7], np.int32),
                 'challenge_id': 3})
  return recs


class CountingSource(list):
  """A list that counts random accesses (to prove metadata is read once)."""

  def __init__(self, *a):
    super().__init__(*a)
    self.reads = 0

  def __getitem__(self, i):
    self.reads += 1
    return super().__getitem__(i)


def tiny_config(**input_kw):
  c = default.get_config()
  c.batch_size = 8
  c.eval.batch_size = 8
  c.input.resize_size = 40
  c.input.image_size = 32
  c.input.num_workers = 2
  c.input.prefetch = 1
  for k, v in input_kw.items():
    c.input[k] = v
  return c


def take(it, n):
  """The first n batches of iterator `it` as numpy dicts; closes `it`."""
  out = [next(it) for _ in range(n)]
  it.close()
  return [{k: np.asarray(v) for k, v in b.items()} for b in out]
