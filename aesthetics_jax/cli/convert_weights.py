r"""Converts torchvision ImageNet weights to this library's Flax variables.

  aesthetics-convert-weights --arch=mobilenet_v2 --source=mobilenet_v2-b0353104.pth \
      --out=weights/
  aesthetics-train --config=mobilenet_v2_emd --config.model.init_weights=weights/ ...

(`--config.model.init_weights` takes the folder, read as `<folder>/<config arch>.npz`, or the
file itself, `weights/mobilenet_v2.npz`.)

(`python -m launch.convert_weights` from a checkout.)

--source: a torchvision state_dict as .pth (needs `pip install -e '.[torch]'`), .safetensors
or .npz. --out: a directory (writes <arch>.npz) or a .npz path; `<out>.json` beside it
records arch and width_mult. Any problem prints one line on stderr and exits 1.
"""
from absl import flags

from aesthetics_jax.cli import common
from aesthetics_jax.models import pretrained

_ARCH = flags.DEFINE_enum('arch', None, list(pretrained.ARCHS), 'Architecture of --source.')
_SOURCE = flags.DEFINE_string('source', None, 'torchvision weights: .pth, .safetensors, .npz.')
_OUT = flags.DEFINE_string('out', None, 'Output directory, or a .npz file path.')
flags.mark_flags_as_required(['arch', 'source', 'out'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('convert_weights', f'unexpected arguments {argv[1:]}')
  try:
    path, meta = pretrained.convert_file(_SOURCE.value, _OUT.value, _ARCH.value)
  except (pretrained.PretrainedError, OSError) as e:
    common.fail('convert_weights', e)
  print(f'Wrote {path} ({meta["arch"]}, width_mult={meta["width_mult"]}) and {path}.json')


def run_cli() -> None:
  """`aesthetics-convert-weights`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
