r"""Converts torchvision ImageNet weights to this library's Flax variables.

  aesthetics-convert-weights --arch=mobilenet_v2 --source=mobilenet_v2-b0353104.pth \
      --out=weights/
  aesthetics-train --config=mobilenet_v2_emd --config.model.init_weights=weights/ ...

(`--config.model.init_weights` takes the folder, read as `<folder>/<config arch>.npz`, or the
file itself, `weights/mobilenet_v2.npz`.)

(`python -m launch.convert_weights` from a checkout.)

--source: a torchvision (or timm mobilenetv2_100 / _050 / vgg16) state_dict as .pth (needs
`pip install -e '.[torch]'`), .safetensors or .npz, told apart by content (so
checkpoint.pth.tar, pytorch_model.bin, .ckpt are read too). --out: a directory (writes
<arch>.npz) or a .npz path; `<file>.json` beside the .npz (e.g. weights/mobilenet_v2.npz.json)
records arch and width_mult. A problem prints one line on stderr: exit 2 for a bad flag (a
missing --source, an --out that cannot be written or that names --source), 1 for a failed
conversion (a damaged or foreign weights file, a full disk: no file is left).
"""
import os

from absl import flags

from aesthetics_jax.cli import common
from aesthetics_jax.configs.default import ARCHS

_ARCH = flags.DEFINE_enum('arch', None, list(ARCHS), 'Architecture of --source.')
_SOURCE = flags.DEFINE_string('source', None, 'torchvision weights: .pth, .safetensors, .npz.')
_OUT = flags.DEFINE_string('out', None, 'Output directory, or a .npz file path.')
flags.mark_flags_as_required(['arch', 'source', 'out'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('convert_weights', f'unexpected arguments {argv[1:]}')
  source = _SOURCE.value
  if not os.path.isfile(source):
    what = ('a folder' if os.path.isdir(source) else
            # /dev/null, a pipe (`<(...)`), a socket: torch.load and np.load need to seek.
            'not a regular file (a device or a pipe, which cannot be read twice): save it '
            'to a file and'
            if os.path.exists(source) else 'no such file')
    if source != source.strip() or not source.isprintable():  # else printed on two lines
      source, what = repr(source), f'{what} (white space or control characters: strip() it)'
    common.usage_error('convert_weights', f'--source={source}: {what}; pass a '
                       'torchvision weights file (.pth, .safetensors or .npz)')
  out = _OUT.value  # a .npz file, or a folder that gets <arch>.npz
  ext = os.path.splitext(out.rstrip('/'))[1].lower()
  if ext in ('.safetensors', '.pth', '.pt', '.bin', '.npy') and not os.path.isdir(out):
    # Was made a folder of that name, holding <arch>.npz.
    common.usage_error('convert_weights', f'--out={out}: the converter writes .npz files; '
                       'pass a folder (it gets <arch>.npz) or a path ending in .npz')
  # As pretrained.convert_file decides: a .NPZ path is a file too.
  common.check_outputs('convert_weights', local_only=True, **(
      {'files': {'out': out}} if ext == '.npz' else {'folders': {'out': out}}))
  # The file convert_file writes for `out` (its rule, kept here so that it is checked before
  # JAX loads); the converter is handed this path, so what is checked is what is written.
  target = out if ext == '.npz' else os.path.join(out, f'{_ARCH.value}.npz')
  if os.path.isfile(target) and os.path.samefile(target, source):  # was replaced by its output
    common.usage_error('convert_weights', f'--out={out} would overwrite --source={source} (the '
                       'file being converted); pass another --out')
  # The converter (JAX, flax) loads after the checks: a bad flag answers at once.
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  try:
    path, meta = pretrained.convert_file(_SOURCE.value, target, _ARCH.value)
  except (pretrained.PretrainedError, OSError) as e:
    common.fail('convert_weights', e)
  print(f'Wrote {path} ({meta["arch"]}, width_mult={meta["width_mult"]}) and {path}.json')
  if meta['arch'] == 'vgg16' and not pretrained.has_vgg_fc(path):
    print(f'note: {_SOURCE.value} has no fc6 / fc7 (classifier.0 / classifier.3): the vgg16 '
          'configs start from them, so training refuses this file; convert the whole '
          'torchvision vgg16 state_dict')


def run_cli() -> None:
  """`aesthetics-convert-weights`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
