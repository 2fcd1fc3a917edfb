"""A training workdir read back for inference: its config (over today's defaults) and the
weights of its latest (or a given) checkpoint, verified.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections

from aesthetics_jax import io
from aesthetics_jax import models
from aesthetics_jax.configs import default as default_config
from aesthetics_jax.train.checkpoint_errors import (CheckpointMismatchError,
                                                    CorruptCheckpointError, WorkdirError,
                                                    read_json_object)
from aesthetics_jax.train.checkpoints import MISMATCH_HINT, Checkpointer, step_folders


def config_path(workdir) -> Path:
  return io.path(workdir) / 'config.json'


def load_config(workdir) -> ml_collections.ConfigDict:
  """The config a training run wrote to `workdir/config.json`, over today's defaults.

  Keys added since the run was trained take their default (`configs/default.py`); keys the
  library no longer has are dropped, so old workdirs keep evaluating.
  """
  path = config_path(workdir)
  if not path.exists():
    if runs := workdirs_below(workdir):
      raise WorkdirError(f'{path}: not found; {workdir} holds the training workdirs '
                         f'{", ".join(runs)}: pass --workdir={os.path.join(workdir, runs[0])}')
    raise WorkdirError(f'{path}: not found; is --workdir a training workdir '
                       '(aesthetics-train writes it)?')
  saved = read_json_object(path, WorkdirError,
                           'restore it from a copy or retrain in a fresh --workdir')
  config = default_config.get_config()
  _merge(config, saved)
  return config


def workdirs_below(folder) -> list[str]:
  """Names of the training workdirs (a config.json inside) right below a local `folder`,
  sorted: the demo's --workdir holds two (mobilenet_v2, vgg16), and passing it to predict,
  evaluate or the API only said it was not a training workdir."""
  if not io.is_local(folder) or not os.path.isdir(folder):
    return []
  try:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_dir() and os.path.isfile(os.path.join(e.path, 'config.json')))
  except OSError:  # unreadable: no hint, the error stands
    return []


def _merge(config: ml_collections.ConfigDict, saved: Mapping[str, Any]) -> None:
  for key, value in saved.items():
    if key not in config:
      continue
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
      _merge(config[key], value)
    else:
      try:
        config[key] = value
      except TypeError:  # e.g. a float saved where today's default is an int
        with config.ignore_type():
          config[key] = value


def restore_for_inference(workdir, step: int | None = None):
  """The checkpoint training selected (the best by `config.best_metric` on its periodic
  evaluations, else the newest), or `step`, of a workdir → (model, variables, config, step).

  variables are host-local jax arrays `{'params', 'batch_stats'}` on the default device.
  A workdir still being trained deletes its older checkpoints (config.keep_checkpoints) as it
  saves newer ones: the latest can vanish while it is read, which was reported as a corrupt
  checkpoint ('retrain') or another model's. The newer one is read instead.
  """
  io.require_backend(workdir, 'workdir', WorkdirError)
  workdir = io.path(workdir)
  config = load_config(workdir)
  model = models.create_model(config.model)
  for attempt in range(_ROTATION_RETRIES + 1):
    try:
      variables, chosen = _restore_step(workdir, model, config, step)
      return model, variables, config, chosen
    except (CorruptCheckpointError, CheckpointMismatchError) as e:
      if not getattr(e, 'rotated', False):
        raise
      if step is not None:
        raise WorkdirError(f'{workdir / "checkpoints"}: checkpoint {step} was deleted while it '
                           'was read (a run still training keeps only its newest '
                           'config.keep_checkpoints); pass a step it keeps, or omit --step')
      if attempt == _ROTATION_RETRIES:
        raise WorkdirError(f'{workdir / "checkpoints"}: the newest checkpoint was deleted '
                           f'while it was read {attempt + 1} times (a run still training '
                           'replaces it faster than it is read); rerun when it has finished')
  raise AssertionError('unreachable')


def selected_step(workdir) -> int | None:
  """The step `restore_for_inference` takes by default (None without checkpoints): what an
  earlier evaluation must be of to be current."""
  workdir = io.path(workdir)
  ckpt = _reader(workdir, load_config(workdir))
  try:
    return ckpt.selected_step()
  finally:
    ckpt.close()


def _reader(workdir, config) -> Checkpointer:
  """A read-only Checkpointer of `workdir` that knows training's `best_metric` (its
  `selected_step`)."""
  return Checkpointer(workdir, best_metric=str(config.best_metric), read_only=True,
                      enable_async=False)


# Reads of the newest checkpoint that a live trainer may replace under them.
_ROTATION_RETRIES = 5


def _restore_step(workdir, model, config, step: int | None):
  """(variables, step) of `step` (None: the one training selected, `selected_step`). An error
  whose step a newer one replaced meanwhile (or whose folder is gone) carries
  `rotated = True`."""
  ckpt = _reader(workdir, config)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise WorkdirError(f'{workdir / "checkpoints"}: no checkpoint; train first '
                         '(aesthetics-train --workdir=...)')
    if step is None:
      # Training tests (result.json) and reports the best; evaluating the newest instead gave
      # metrics of other weights than those training reported.
      step = ckpt.selected_step()
    elif step not in steps:
      raise WorkdirError(f'{workdir / "checkpoints"}: no checkpoint at step {step}; '
                         f'available: {sorted(steps)}')
    abstract = models.abstract_variables(model, int(config.input.image_size))
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev),
                            abstract)
    try:
      ckpt.check_model(step, config.model)
      variables, _ = ckpt.restore(step, abstract)
    except (CorruptCheckpointError, CheckpointMismatchError) as e:
      if _rotated_away(workdir, step, newest=step == max(steps)):
        e.rotated = True
        raise
      if isinstance(e, CheckpointMismatchError):
        # config.json names the model here (no --config changes it): the checkpoint is
        # another run's, so training's fix ('the matching --config') does not apply.
        raise CheckpointMismatchError(str(e).replace(
            MISMATCH_HINT, f'{config_path(workdir)} names the model, so that checkpoint is '
            "another run's: move it back to its own workdir and pass that one")) from None
      raise CorruptCheckpointError(f'{e}; {ckpt.intact_hint(step)}', step) from e
  finally:
    ckpt.close()
  return variables, int(step)


def _rotated_away(workdir, step: int, newest: bool) -> bool:
  """Whether checkpoint `step` is gone or, if it was the newest, a newer one exists (a trainer
  saves the next checkpoint before it deletes the one it replaces)."""
  try:
    steps = step_folders(workdir / 'checkpoints')
  except OSError:
    return False
  return step not in steps or (newest and max(steps) > step)
