r"""Writes stand-in ImageNet weights in the user's format: torchvision `.pth` state_dicts.

  aesthetics-make-fake-weights --out=weights/ [--archs=mobilenet_v2,vgg16]
  aesthetics-convert-weights --arch=mobilenet_v2 --source=weights/mobilenet_v2-synthetic.pth \
      --out=weights/
  (python -m launch.make_fake_weights from a checkout)

Each `<out>/<arch>-synthetic.pth` has exactly the keys and shapes that torchvision's
`mobilenet_v2()` / `vgg16()` save (full width by default: 14 MB / 528 MB), random weights as
torchvision initialises them, and BatchNorm statistics (MobileNetV2) or per-channel scales
(VGG16) calibrated on --calibration_images synthetic images at --image_size px, so activations
keep their scale through every layer (aesthetics_jax/models/fake_imagenet.py). They stand in
for ImageNet weights, which carry meaning these do not. `<file>.json` beside each records how
it was made. Needs torch (`pip install -e '.[torch]'`). A problem prints one line and exits 1.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import time

from absl import flags
import numpy as np
from PIL import Image

from aesthetics_jax.cli import common
from aesthetics_jax.data import demo as demo_data
from aesthetics_jax.io import atomic_write_text
from aesthetics_jax.models import fake_imagenet

_OUT = flags.DEFINE_string('out', None, 'Output folder (<arch>-synthetic.pth are written).')
_ARCHS = flags.DEFINE_list('archs', list(fake_imagenet.ARCHS), 'Architectures to write.')
_WIDTH = flags.DEFINE_float('width_mult', 1.0, 'Width multiplier (1.0 = the ImageNet files).')
_FC_DIM = flags.DEFINE_integer('fc_dim', 4096, 'VGG16 classifier width (4096 = ImageNet).')
_N_IMAGES = flags.DEFINE_integer('calibration_images', 16, 'Synthetic images to calibrate on.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Calibration image side in pixels.')
_SEED = flags.DEFINE_integer('seed', 0, 'Weights and calibration images follow it.')
flags.mark_flags_as_required(['out'])


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


def make_weights(out_dir: str | os.PathLike, arch: str, *, width_mult: float = 1.0,
                 fc_dim: int = 4096, num_images: int = 16, image_size: int = 224,
                 seed: int = 0) -> tuple[Path, dict]:
  """Writes `<out_dir>/<arch>-synthetic.pth` (+ `.json`); returns (path, info)."""
  if num_images < 2 or image_size < 32:
    raise fake_imagenet.FakeWeightsError(
        f'need --calibration_images >= 2 and --image_size >= 32, got {num_images} and '
        f'{image_size}')
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


def main(argv):
  if len(argv) > 1:
    common.usage_error('make_fake_weights', f'unexpected arguments {argv[1:]}')
  bad = sorted(set(_ARCHS.value) - set(fake_imagenet.ARCHS))
  if bad or not _ARCHS.value:
    common.usage_error('make_fake_weights', f'--archs={",".join(_ARCHS.value)}: use some of '
                       f'{",".join(fake_imagenet.ARCHS)}')
  common.check_outputs('make_fake_weights', folders={'out': _OUT.value})
  for arch in _ARCHS.value:
    try:
      path, info = make_weights(_OUT.value, arch, width_mult=_WIDTH.value, fc_dim=_FC_DIM.value,
                                num_images=_N_IMAGES.value, image_size=_IMAGE_SIZE.value,
                                seed=_SEED.value)
    except (fake_imagenet.FakeWeightsError, OSError) as e:
      common.fail('make_fake_weights', e)
    print(f'Wrote {path} ({info["bytes"] / 1e6:.1f} MB, {info["seconds"]:.1f} s); convert it '
          f'with: aesthetics-convert-weights --arch={arch} --source={path} --out={_OUT.value}')


def run_cli() -> None:
  """`aesthetics-make-fake-weights`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
