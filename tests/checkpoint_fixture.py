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
  from configs import demo  # pylint: disable=import-outside-toplevel
  c = demo.get_config(arch + ',smoke')
  c.data.data_dir, c.data.ava_dir = str(data_dir), str(ava_dir)
  c.input.image_size = image_size
  c.input.resize_size = image_size + 8
  return c


def random_variables(abstract, seed: int = 0):
  """Random numpy variables shaped like `abstract` without compiling `model.init` (which
  costs tens of seconds on a loaded 2-core machine): kernels ~ N(0, 1/fan_in), BatchNorm
  scale 1 / bias 0 / mean 0 / var 1, biases 0."""
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name in ('var', 'scale'):
      return np.ones(x.shape, x.dtype)
    if name in ('mean', 'bias') or len(x.shape) < 2:
      return np.zeros(x.shape, x.dtype)
    fan_in = int(np.prod(x.shape[:-1]))
    return (rng.standard_normal(x.shape) / np.sqrt(fan_in)).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, abstract)


def write_init_checkpoint(workdir: Path, config, step: int | None = None) -> Path:
  """`workdir/config.json` + an orbax checkpoint of initial variables at `step`."""
  from aesthetics_jax import models  # pylint: disable=C0415
  from aesthetics_jax.train import checkpoints  # pylint: disable=C0415
  from aesthetics_jax.train import trainer  # pylint: disable=C0415
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  step = int(config.num_train_steps if step is None else step)
  (workdir / 'config.json').write_text(json.dumps(config.to_dict(), default=str))
  model = models.create_model(config.model)
  variables = random_variables(trainer.abstract_variables(model, config), int(config.seed))
  ck = checkpoints.Checkpointer(workdir, enable_async=False)
  ck.save(step, variables, {'step': np.int32(step)},
          {'model': checkpoints.model_signature(config.model)})
  ck.close()
  return workdir
