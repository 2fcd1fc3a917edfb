"""Synthetic AVA-like JPEGs for benchmarks (no dataset needed)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aesthetics_jax.data import resize


def synthetic_jpegs(n: int, seed: int = 0, scale: float = 1.0) -> list[bytes]:
  """AVA-like JPEGs: about 500x350 (landscape and portrait; sides x `scale`), quality 90,
  photo-like texture."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    w, h = (500, 333 + int(rng.integers(0, 40))) if i % 3 else (333, 500)
    w, h = int(w * scale), int(h * scale)
    # smooth colour field + mid-frequency detail + sensor-like noise: realistic file sizes
    coarse = rng.random((h // 32 + 2, w // 32 + 2, 3)) * 255
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h),
                                                                    Image.Resampling.BICUBIC),
                     np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    img += 25 * np.sin(xx / rng.uniform(3, 12) + yy / rng.uniform(3, 12))[..., None]
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, 'JPEG', quality=90)
    out.append(buf.getvalue())
  return out


def photos(n: int, size: int, seed: int = 0) -> np.ndarray:
  """n photo-like eval inputs f32 [n, size, size, 3] in [0, 1]: synthetic JPEGs (as the input
  benchmark uses) decoded and resized like the eval pipeline, so maps and bf16 errors are
  those of image-like inputs, not of white noise."""
  datas = synthetic_jpegs(min(n, 16), seed=seed)
  imgs = [resize.preprocess_eval_np(datas[i % len(datas)], size) for i in range(n)]
  x = np.stack(imgs).astype(np.float32) / 255.0
  # Different images even when the JPEG pool repeats: flip / roll the repeats.
  for i in range(len(datas), n):
    x[i] = np.roll(x[i][:, ::-1] if (i // len(datas)) % 2 else x[i], 17 * i, axis=1)
  return x
