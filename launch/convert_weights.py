r"""Converts torchvision ImageNet weights to this library's Flax variables.

  python -m launch.convert_weights --arch=mobilenet_v2 --source=mobilenet_v2-7ebf99e0.pth \
      --out=weights/
  python -m launch.train --config=configs/mobilenet_v2_emd.py \
      --config.model.init_weights=weights/mobilenet_v2.npz ...

--source: a torchvision state_dict as .pth (needs `pip install -e '.[torch]'`), .safetensors
or .npz. --out: a directory (writes <arch>.npz) or a .npz path; `<out>.json` beside it
records arch and width_mult. Any problem prints one line on stderr and exits 1.
"""
import sys

from absl import app
from absl import flags

from aesthetics_jax.models import pretrained

_ARCH = flags.DEFINE_enum('arch', None, list(pretrained.ARCHS), 'Architecture of --source.')
_SOURCE = flags.DEFINE_string('source', None, 'torchvision weights: .pth, .safetensors, .npz.')
_OUT = flags.DEFINE_string('out', None, 'Output directory, or a .npz file path.')
flags.mark_flags_as_required(['arch', 'source', 'out'])


def main(argv):
  if len(argv) > 1:
    print(f'convert_weights: unexpected arguments {argv[1:]}', file=sys.stderr)
    sys.exit(1)
  try:
    path, meta = pretrained.convert_file(_SOURCE.value, _OUT.value, _ARCH.value)
  except (pretrained.PretrainedError, OSError) as e:
    print(f'convert_weights: {e}'.splitlines()[0], file=sys.stderr)
    sys.exit(1)
  print(f'Wrote {path} ({meta["arch"]}, width_mult={meta["width_mult"]}) and {path}.json')


if __name__ == '__main__':
  app.run(main)
