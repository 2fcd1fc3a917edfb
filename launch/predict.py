r"""Scores images with a trained checkpoint and suggests crops from its class activation maps.

  python -m launch.predict --workdir=W [--step=N] [--overlay_dir=O] \
      [--crop_dir=C --aspect=4:3] [--cam_layers=features.14,features.18] photo1.jpg ...

Prints one JSON line per image, in argument order:
  {"path", "mean_score", "distribution"[10] (MobileNetV2) | "p_high" (VGG16), "label",
   "top_tag" (MobileNetV2), "box": [y0, x0, y1, x1], "boxes": {...}, "overlay", "crop"}
Boxes are end-exclusive, in original-image pixels; `box` is the average of the aesthetic and
attribute boxes for MobileNetV2 (the aesthetic box for VGG16); `boxes.crop` is the best box of
`--aspect` (when given). An unreadable or missing image, or one whose model output is not
finite, prints `{"path", "error"}` instead and the others carry on (a NaN is never printed).
Exit code: 0 if at least one image was scored, 1 if every image failed or the workdir / flags
/ checkpoint are unusable (one line on stderr, no traceback).
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from aesthetics_jax.configs import default
from launch import config_args

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
_OVERLAY_DIR = flags.DEFINE_string('overlay_dir', None, 'Write CAM overlays with boxes here.')
_CROP_DIR = flags.DEFINE_string('crop_dir', None, 'Write suggested crops here.')
_ASPECT = flags.DEFINE_string('aspect', None, 'Crop aspect W:H, e.g. 4:3 (default: free box).')
_CAM_METHOD = flags.DEFINE_string('cam_method', None, 'CAM method (default: config.eval).')
_CAM_LAYERS = flags.DEFINE_list(
    'cam_layers', None, 'CAM layers as torchvision module paths, fused if several, e.g. '
    'features.14,features.18 (default: config.eval.cam_layers, () = the encoder output).')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Images per forward pass.')
_CONFIG = config_flags.DEFINE_config_dict(
    'config', default.get_config(),
    'Overrides of the restored config for this run: --config.eval.KEY=VALUE (e.g. '
    '--config.eval.box_threshold=0.4).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  logging.set_verbosity(logging.ERROR)
  paths = argv[1:]
  if not paths:
    print('predict: no images given; pass image paths after the flags', file=sys.stderr)
    sys.exit(1)
  # After flag parsing: importing JAX is slow.
  from aesthetics_jax.evaluation import inference  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.explain import crop  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  checkpoints.quiet_orbax_errors()  # a damaged checkpoint is one CheckpointError line
  try:
    if _ASPECT.value:
      crop.parse_aspect(_ASPECT.value)
    predictor = inference.Predictor(
        _WORKDIR.value, _STEP.value, _CAM_METHOD.value, _CAM_LAYERS.value,
        overrides=config_flags.get_override_values(flags.FLAGS['config']))
  except (ValueError, RuntimeError, OSError) as e:  # one-line user errors (no checkpoint, ...)
    print(f'predict: {e}'.splitlines()[0], file=sys.stderr)
    sys.exit(1)
  ok = 0
  for rec in predictor.predict_files(paths, _OVERLAY_DIR.value, _CROP_DIR.value, _ASPECT.value,
                                     batch_size=max(1, _BATCH.value)):
    ok += 'error' not in rec
    print(inference.to_json_line(rec), flush=True)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  config_args.check(sys.argv, 'predict', ('eval.',))
  app.run(main)
