"""Initialised (untrained) checkpoints for the evaluate / predict / demo tests.

Writing `config.json` plus one orbax checkpoint of freshly initialised variables takes a
second, where even a 2-step training run costs a minute of compilation on a 2-core machine;
restoring, scoring and mapping do not care whether the weights were trained.
"""
from pathlib import Path

import numpy as np



def smoke_config(arch: str, data_dir='', ava_dir='', image_size: int = 32):
  from aesthetics_jax.configs import demo  # pylint: disable=import-outside-toplevel
  c = demo.get_config(arch + ',smoke')
  c.data.data_dir, c.data.ava_dir = str(data_dir), str(ava_dir)
  c.input.image_size = image_size
  c.input.resize_size = image_size + 8
  return c


def write_init_checkpoint(workdir: Path, config, step: int | None = None,
                          aesthetic_sign: int = 0) -> Path:
  """`workdir/config.json` + an orbax checkpoint of initial variables at `step`.

  aesthetic_sign (MobileNetV2 only): +1 makes the score head's kernel rise with the bucket, so
  the mean score grows with every (non-negative) feature and the aesthetic Grad-CAM is
  positive wherever features are; -1 makes every gradient negative, so the ReLU'd map is all
  zero ("empty"). 0 keeps the random head, whose maps may be either.
  """
  from aesthetics_jax import io as io_lib  # pylint: disable=C0415
  from aesthetics_jax import models  # pylint: disable=C0415
  from aesthetics_jax.cli import stages  # pylint: disable=C0415
  from aesthetics_jax.train import checkpoints  # pylint: disable=C0415
  from aesthetics_jax.train import restore  # pylint: disable=import-outside-toplevel
  step = int(config.num_train_steps if step is None else step)
  model = models.create_model(config.model)
  variables = models.init_variables(model, int(config.seed), int(config.input.image_size))
  if aesthetic_sign:
    k = variables['params']['head']['score']['kernel']              # [C, 10]
    ramp = (np.arange(k.shape[1], dtype=np.float32) - 4.5) * 0.05
    variables['params']['head']['score']['kernel'] = np.float32(aesthetic_sign) * np.tile(
        ramp, (k.shape[0], 1))
  wd = Path(workdir)
  if stages.latest_step(wd) == step:  # written before (module fixtures share workdirs)
    return wd
  wd.mkdir(parents=True, exist_ok=True)
  io_lib.atomic_write_json(restore.config_path(wd), config.to_dict(), indent=2,
                           sort_keys=True)
  ck = checkpoints.Checkpointer(wd, enable_async=False)
  try:
    ck.save(step, variables, {'step': np.int32(step)},
            {'model': checkpoints.model_signature(config.model)})
  finally:
    ck.close()
  return wd
