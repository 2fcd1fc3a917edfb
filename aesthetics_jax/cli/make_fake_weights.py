r"""Writes stand-in ImageNet weights in the user's format: torchvision `.pth` state_dicts.

  aesthetics-make-fake-weights --out=weights/ [--archs=mobilenet_v2,vgg16]
  aesthetics-convert-weights --arch=mobilenet_v2 --source=weights/mobilenet_v2-synthetic.pth \
      --out=weights/
  (python -m launch.make_fake_weights from a checkout)

Each `<out>/<arch>-synthetic.pth` has exactly the keys and shapes that torchvision's
`mobilenet_v2()` / `vgg16()` save (full width by default: 14 MB / 528 MB), random weights as
torchvision initialises them, and BatchNorm statistics (MobileNetV2) or per-channel scales
(VGG16) calibrated on --calibration_images synthetic images at --image_size px, so activations
keep their scale through every layer (aesthetics_jax/models/fake_imagenet.py,
aesthetics_jax/cli/fake_weights.py). They stand in
for ImageNet weights, which carry meaning these do not. `<file>.json` beside each records how
it was made. Needs torch (`pip install -e '.[torch]'`). A problem prints one line: exit 2 for
a bad flag, 1 for a failed write (a full disk: nothing half-written is left).
"""
import shlex

from absl import flags

from aesthetics_jax.cli import common
from aesthetics_jax.configs.default import ARCHS

_OUT = flags.DEFINE_string('out', None, 'Output folder (<arch>-synthetic.pth are written).')
_ARCHS = flags.DEFINE_list('archs', list(ARCHS), 'Architectures to write.')
_WIDTH = flags.DEFINE_float('width_mult', 1.0, 'Width multiplier (1.0 = the ImageNet files).')
_FC_DIM = flags.DEFINE_integer('fc_dim', 4096, 'VGG16 classifier width (4096 = ImageNet).')
_N_IMAGES = flags.DEFINE_integer('calibration_images', 16, 'Synthetic images to calibrate on.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Calibration image side in pixels.')
_SEED = flags.DEFINE_integer('seed', 0, 'Weights and calibration images follow it.')
flags.mark_flags_as_required(['out'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('make_fake_weights', f'unexpected arguments {argv[1:]}')
  bad = sorted(set(_ARCHS.value) - set(ARCHS))
  if bad or not _ARCHS.value:
    common.usage_error('make_fake_weights', f'--archs={",".join(_ARCHS.value)}: use some of '
                       f'{",".join(ARCHS)}')
  from aesthetics_jax.cli import fake_weights  # pylint: disable=import-outside-toplevel
  problem = fake_weights.range_problem(_WIDTH.value, _FC_DIM.value, _N_IMAGES.value,
                                       _IMAGE_SIZE.value, _SEED.value)
  if problem:
    common.usage_error('make_fake_weights', problem)
  common.check_outputs('make_fake_weights', folders={'out': _OUT.value}, local_only=True)
  # The models (JAX, flax) load after the flag checks: a bad flag answers at once.
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  for arch in dict.fromkeys(_ARCHS.value):  # once each: '--archs=vgg16,vgg16' wrote it twice
    try:
      path, info = fake_weights.make_weights(
          _OUT.value, arch, width_mult=_WIDTH.value, fc_dim=_FC_DIM.value,
          num_images=_N_IMAGES.value, image_size=_IMAGE_SIZE.value, seed=_SEED.value)
    except (fake_imagenet.FakeWeightsError, OSError) as e:
      common.fail('make_fake_weights', e)
    print(f'Wrote {path} ({info["bytes"] / 1e6:.1f} MB, {info["seconds"]:.1f} s); convert it '
          f'with: aesthetics-convert-weights --arch={arch} '
          f'--source={shlex.quote(str(path))} --out={shlex.quote(_OUT.value)}')


def run_cli() -> None:
  """`aesthetics-make-fake-weights`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
