"""Fixtures shared by several test modules (computed once per session)."""
import pytest

import checkpoint_fixture


@pytest.fixture(scope='session')
def evaluated(tmp_path_factory):
  """`evaluate()` of an initialised MobileNetV2 on a tiny demo dataset (16 train / 10 test
  images at 64 px, two CAM methods): (workdir, metrics). Shared by test_evaluate.py and the
  browser checks of its report and explorer (test_browser.py); about a minute on 2 cores."""
  from aesthetics_jax.data import dataset
  from aesthetics_jax.data import demo as demo_data
  from aesthetics_jax.evaluation import run as eval_run
  tmp = tmp_path_factory.mktemp('evaluate')
  demo_data.generate(tmp / 'ava', 16, 10, seed=1)
  dataset.prepare(tmp / 'ava', tmp / 'tfds', 'style')
  config = checkpoint_fixture.smoke_config('mobilenet_v2', tmp / 'tfds', tmp / 'ava', 64)
  config.data.max_test_images = 0  # the whole (tiny) test split
  wd = checkpoint_fixture.write_init_checkpoint(tmp / 'mnv2', config)
  m = eval_run.evaluate(wd, overrides={
      'eval.cam_methods': ('gradcam', 'eigencam'), 'eval.faithfulness_images': 6,
      'eval.bootstrap_samples': 50, 'eval.faithfulness_steps': 4, 'eval.num_example_images': 2})
  return wd, m
