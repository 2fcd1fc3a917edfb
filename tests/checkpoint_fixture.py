"""Initialised (untrained) checkpoints for the evaluate / predict / demo tests.

Writing `config.json` plus one orbax checkpoint of freshly initialised variables takes a
second, where even a 2-step training run costs a minute of compilation on a 2-core machine;
restoring, scoring and mapping do not care whether the weights were trained.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def smoke_config(arch: str, data_dir='', ava_dir='', image_size: int = 32):
  from aesthetics_jax.configs import demo  # pylint: disable=import-outside-toplevel
  c = demo.get_config(arch + ',smoke')
  c.data.data_dir, c.data.ava_dir = str(data_dir), str(ava_dir)
  c.input.image_size = image_size
  c.input.resize_size = image_size + 8
  return c


def write_init_checkpoint(workdir: Path, config, step: int | None = None) -> Path:
  """`workdir/config.json` + an orbax checkpoint of initial variables at `step`."""
  from aesthetics_jax import models  # pylint: disable=C0415
  from aesthetics_jax.train import checkpoints  # pylint: disable=C0415
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  step = int(config.num_train_steps if step is None else step)
  (workdir / 'config.json').write_text(json.dumps(config.to_dict(), default=str))
  model = models.create_model(config.model)
  variables = models.init_variables(model, int(config.seed), int(config.input.image_size))
  ck = checkpoints.Checkpointer(workdir, enable_async=False)
  ck.save(step, variables, {'step': np.int32(step)},
          {'model': checkpoints.model_signature(config.model)})
  ck.close()
  return workdir
