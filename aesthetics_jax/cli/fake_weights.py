"""Stand-in ImageNet weights as the user has them: a torchvision `.pth` per architecture.

`make_weights(out_dir, arch, ...)` renders calibration images (demo scenes, the paper configs'
[0, 1] input scale), builds the calibrated state_dict (`models.fake_imagenet`) and writes
`<out_dir>/<arch>-synthetic.pth` plus `.json` (how it was made, per-layer activation stds).
Used by aesthetics-make-fake-weights and aesthetics-paper-run (no flags here).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import time

import numpy as np
from PIL import Image

from aesthetics_jax.data import demo as demo_data
from aesthetics_jax.io import atomic_write_text


def file_name(arch: str) -> str:
  return f'{arch}-synthetic.pth'


def calibration_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  """f32 `[n, size, size, 3]` in [0, 1] (the paper configs' input scale): demo scenes of
  qualities spread over AVA's range, resized to size² as evaluation does."""
  qs = np.linspace(3.5, 7.0, n)
  out = [np.asarray(Image.fromarray(demo_data.render_image([seed, k, 7], float(q))['image'])
                    .resize((size, size), Image.BILINEAR), np.float32) / 255.0
         for k, q in enumerate(qs)]
  return np.stack(out)


# Upper bounds: calibration holds every image's activations at once (VGG16's first layer at
# 448 px: 51 MB an image at full width), and width 2 already makes a 2 GB VGG16 file. The seed:
# what numpy's and torch's generators take (a negative or 2**64 one was a traceback).
LIMITS = {'width_mult': (0.0, 2.0), 'fc_dim': (1, 8192), 'calibration_images': (2, 64),
          'image_size': (32, 448), 'seed': (0, 2 ** 64 - 1)}


def range_problem(width_mult: float, fc_dim: int, num_images: int,
                  image_size: int, seed: int = 0) -> str | None:
  """One line naming the first flag out of `LIMITS` and its range, or None (no JAX needed:
  the command answers a bad flag at once)."""
  values = {'width_mult': width_mult, 'fc_dim': fc_dim, 'calibration_images': num_images,
            'image_size': image_size, 'seed': seed}
  for name, v in values.items():
    lo, hi = LIMITS[name]
    ok = lo < v <= hi if name == 'width_mult' else lo <= v <= hi  # also refuses NaN
    if not ok:
      rng = f'in (0, {hi:g}]' if name == 'width_mult' else f'from {lo} to {hi}'
      return f'--{name}={v}: pass a value {rng}'
  return None


def check_args(width_mult: float, fc_dim: int, num_images: int, image_size: int,
               seed: int = 0) -> None:
  """FakeWeightsError (one line, naming the flag and its range) for values out of `LIMITS`."""
  problem = range_problem(width_mult, fc_dim, num_images, image_size, seed)
  if problem:
    from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
    raise fake_imagenet.FakeWeightsError(problem)


def make_weights(out_dir: str | os.PathLike, arch: str, *, width_mult: float = 1.0,
                 fc_dim: int = 4096, num_images: int = 16, image_size: int = 224,
                 seed: int = 0) -> tuple[Path, dict]:
  """Writes `<out_dir>/<arch>-synthetic.pth` (+ `.json`); returns (path, info)."""
  # The models (JAX) load here: the flag checks above need none.
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  check_args(width_mult, fc_dim, num_images, image_size, seed)
  t0 = time.perf_counter()
  images = calibration_images(num_images, image_size, seed)
  state, stds = fake_imagenet.make_state(arch, images, width_mult, fc_dim, seed)
  path = fake_imagenet.save_pth(state, Path(out_dir) / file_name(arch))
  info = {'arch': arch, 'width_mult': width_mult, 'fc_dim': fc_dim if arch == 'vgg16' else None,
          'calibration_images': num_images, 'image_size': image_size, 'seed': seed,
          'bytes': path.stat().st_size, 'seconds': round(time.perf_counter() - t0, 2),
          'activation_std': {k: round(v, 4) for k, v in stds.items()},
          'note': 'random torchvision-initialised weights with calibrated activation '
                  'statistics; a stand-in for ImageNet weights, not ImageNet weights'}
  atomic_write_text(Path(f'{path}.json'), json.dumps(info, indent=1) + '\n')
  return path, info
