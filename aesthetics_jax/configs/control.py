"""The localisation control (`aesthetics-control`, `tests/test_control.py`): a tiny VGG trained on
images whose label is decided only by a small checkerboard patch (`data/control.py`).

  aesthetics-control --workdir=W [--seeds=0,1,2,3,4]      (python -m launch.control)

48 px images with a 12 px patch; 150 steps of batch 32 (Adam, lr 1e-3) train every seed tried
to 100% test accuracy. CAMs at `features.8`, the ReLU after VGG16's conv2_2: a 24x24 map at
48 px (the encoder's output is 1x1 there), so the 12 px patch spans 6x6 cells.

Config argument: `smoke` (2 steps; for the command's tests: a smoke model learns nothing).
"""
import ml_collections

from aesthetics_jax import configs
from aesthetics_jax.configs import default
from aesthetics_jax.configs import demo

SIZE, PATCH = 48, 12


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = configs.parse_arg(arg, 'control', ('smoke',))
  c = demo.get_config('vgg16')
  c.data.data_dir, c.data.ava_dir = '', ''  # the masks come from the dataset's metadata
  c.input.image_size = c.input.resize_size = SIZE
  c.input.balanced = True
  c.num_train_steps = 150
  c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 150
  c.optim.warmup_steps = 10
  c.log_cam_images = 0
  c.eval.batch_size = 32
  c.eval.cam_layers = ('features.8',)
  # Every map method but ScoreCAM (one forward pass per channel): they share the one vjp.
  c.eval.cam_methods = ('gradcam', 'gradcampp', 'hirescam', 'xgradcam', 'layercam', 'eigencam')
  # Localisation is what the control checks: no deletion/insertion curves, no explorer.
  c.eval.faithfulness_images = 0
  c.eval.explorer = False
  c.eval.split_point_fit_images = 64
  c.eval.bootstrap_samples = 50
  c.eval.num_example_images = 2
  c.eval.box_threshold = 0.5   # half maximum: a tight box for a small region
  return apply_smoke(c) if 'smoke' in args else c


def apply_smoke(c: ml_collections.ConfigDict,
                keep: dict | None = None) -> ml_collections.ConfigDict:
  """`default.apply_smoke` (2 steps, batch 8) at the control's image size, then `keep` (the
  user's dotted --config.KEY overrides, which smoke used to overwrite silently)."""
  default.apply_smoke(c)
  c.input.image_size = c.input.resize_size = SIZE
  c.update_from_flattened_dict(dict(keep or {}))
  return c
