"""The control that proves the explanation path: labels decided only by a small patch.

A tiny VGG is trained for a few hundred steps on images whose label is set by one small
checkerboard patch at a random position (`data.control`); the REAL evaluate path then loads
the masks (found through the dataset's metadata, with no `ava_dir` in the config), resizes,
normalises, boxes and plays the pointing game. Grad-CAM of the low target must point at the
patch and its box must overlap it. The negative control runs the same path with every mask
handed to another image: the same maps must then miss, so a high score cannot come from the
path itself (a centre bias, a resize offset, a mask that always matches).

If this test fails, the study's faithfulness numbers mean nothing.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from aesthetics_jax.configs import demo
from aesthetics_jax.data import control, dataset
from aesthetics_jax.evaluation import run as eval_run
from aesthetics_jax.train import trainer

SIZE, PATCH = 48, 12
# The evaluations below check localisation only: the rest of the evaluation (deletion/insertion
# curves, explorer) is left out, as it is covered by tests/test_evaluate.py.
LOCALIZATION_ONLY = {'eval.faithfulness_images': 0, 'eval.explorer': False}


def control_config(data_dir: Path):
  c = demo.get_config('vgg16')
  c.data.data_dir, c.data.ava_dir = str(data_dir), ''   # masks come from the metadata
  c.input.image_size = c.input.resize_size = SIZE
  c.input.balanced = True
  c.num_train_steps = 150
  c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 150
  c.optim.warmup_steps = 10
  c.log_cam_images = 0
  c.eval.batch_size = 32
  # 24×24 map at 48 px (block 2; the encoder output is 1×1): a 12-px patch spans 6 cells.
  c.eval.cam_layers = ('features.8',)
  c.eval.cam_methods = ('gradcam',)
  c.eval.faithfulness_images = 8    # the curves are not what this control checks
  c.eval.split_point_fit_images = 64
  c.eval.bootstrap_samples = 50
  c.eval.num_example_images = 2
  c.eval.box_threshold = 0.5   # half maximum: a tight box for a small region
  return c


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('control')
  ava_dir = control.generate(tmp / 'ava', num_train=256, num_test=64, size=SIZE, patch=PATCH)
  dataset.prepare(ava_dir, tmp / 'tfds', 'style')
  workdir = tmp / 'run'
  res = trainer.train_and_evaluate(control_config(tmp / 'tfds'), workdir)
  return tmp, workdir, res


def test_model_learns_the_patch(trained):
  _, _, res = trained
  assert res['binary_accuracy'] >= 0.95, res


def test_gradcam_points_at_the_patch_and_boxes_it(trained):
  tmp, workdir, _ = trained
  m = eval_run.evaluate(workdir, write_html=False, overrides=LOCALIZATION_ONLY)
  f = m['localization']['gradcam']
  assert m['cam_map_size'] == [24, 24] and m['cam_layers'] == ['features.8']
  assert str(tmp / 'ava' / 'defect_masks') in m['localization_masks']
  assert f['num_defective'] >= 20
  assert f['pointing_game'] >= 0.9, f
  assert f['box_iou'] >= 0.5, f
  assert f['pointing_game'] >= m['pointing_game_centre_baseline'] + 0.5
  assert f['mask_mass'] >= 3 * m['mask_mass_area_baseline']


def test_masks_of_other_images_are_missed(trained):
  """Negative control: each image gets another image's patch mask; the pointing game must
  fall to about the patch's area share, far below the real score."""
  tmp, workdir, _ = trained
  src, dst = tmp / 'ava' / 'defect_masks', tmp / 'shuffled_masks'
  dst.mkdir(exist_ok=True)
  files = sorted(src.glob('*.png'))
  rng = np.random.default_rng(1)
  for f, g in zip(files, rng.permutation(files)):
    shutil.copy(g, dst / f.name)
  m = eval_run.evaluate(workdir, write_html=False,
                        overrides={**LOCALIZATION_ONLY, 'eval.masks_dir': str(dst)})
  f = m['localization']['gradcam']
  assert f['pointing_game'] <= 0.35, f
  assert f['box_iou'] <= 0.25, f
