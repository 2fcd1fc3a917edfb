"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{variables,opt,meta}`.

- `variables`: `{'params', 'batch_stats'}` — all that inference needs;
- `opt`: `{'step', 'opt_state'}`;
- `meta`: JSON with the model config, so a checkpoint from another architecture is refused
  with a one-line error instead of an opaque shape mismatch.
Keeps the latest `keep` checkpoints plus the best one by `best_metric` (higher is better).
Saves are async; `wait()` (or `close()`) before exit. Multi-process safe (orbax coordinates).
"""
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_pp

from aesthetics_jax import models
from aesthetics_jax.configs import default as default_config

# Model config keys whose change makes parameters incompatible.
MODEL_KEYS = ('arch', 'width_mult', 'fc_dim', 'num_buckets', 'num_tags')


class WorkdirError(ValueError):
  """One-line user error: the workdir has no config.json or no (such) checkpoint."""


class CheckpointMismatchError(ValueError):
  """One-line user error: the workdir holds a checkpoint of another model."""


def model_signature(model_config: Mapping[str, Any]) -> dict:
  return {k: model_config[k] for k in MODEL_KEYS if k in model_config}


def mismatch_message(workdir: str | os.PathLike, saved: Mapping, wanted: Mapping) -> str:
  diff = ', '.join(f'{k}={saved.get(k)!r} (checkpoint) vs {wanted.get(k)!r} (config)'
                   for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
  return (f'{workdir}: existing checkpoint was trained with a different model ({diff}); '
          'use a fresh --workdir or the matching --config')


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for (variables, opt, meta)."""

  def __init__(self, workdir: str | os.PathLike, keep: int = 2, best_metric: str = '',
               enable_async: bool = True, read_only: bool = False):
    self.workdir = Path(workdir)
    self.best_metric = best_metric
    policies = [ocp_pp.LatestN(n=max(int(keep), 1))]
    if best_metric:
      policies.append(ocp_pp.BestN(
          get_metric_fn=lambda m: float(m.get(best_metric, float('-inf'))),
          reverse=False, n=1, keep_checkpoints_without_metrics=False))
    best_fn = ((lambda m: float(m.get(best_metric, float('-inf')))) if best_metric else None)
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode='max',  # for best_step(); retention is the policy below
        preservation_policy=ocp_pp.AnyPreservationPolicy(policies),
        enable_async_checkpointing=enable_async, create=not read_only, read_only=read_only)
    self.manager = ocp.CheckpointManager(
        (self.workdir / 'checkpoints').absolute(), options=options,
        item_names=('variables', 'opt', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, variables: Any, opt: Any, meta: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None) -> bool:
    """Saves (async) unless `step` already exists; metrics feed the best-checkpoint policy."""
    if step in self.manager.all_steps():
      return False
    clean = None
    if metrics is not None:
      clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return self.manager.save(
        step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                      opt=ocp.args.StandardSave(opt),
                                      meta=ocp.args.JsonSave(dict(meta))),
        metrics=clean, force=True)

  def restore_meta(self, step: int) -> dict:
    return dict(self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])

  def check_model(self, step: int, model_config: Mapping[str, Any]) -> None:
    """Raises CheckpointMismatchError if checkpoint `step` holds another model."""
    saved = self.restore_meta(step).get('model', {})
    wanted = model_signature(model_config)
    saved = {k: saved.get(k) for k in wanted}
    if saved != wanted:
      raise CheckpointMismatchError(mismatch_message(self.workdir, saved, wanted))

  def restore(self, step: int, abstract_variables: Any, abstract_opt: Any | None = None
              ) -> tuple[Any, Any | None]:
    """Restores into abstract trees (ShapeDtypeStruct with shardings); opt optional."""
    items = {'variables': ocp.args.StandardRestore(abstract_variables)}
    if abstract_opt is not None:
      items['opt'] = ocp.args.StandardRestore(abstract_opt)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointMismatchError(
          f'{self.workdir}: checkpoint {step} does not match this model ({first[:200]}); '
          'use a fresh --workdir or the matching --config') from e
    # Orbax may restore a stored array whose shape differs from the target: check ourselves.
    for name in items:
      want = abstract_variables if name == 'variables' else abstract_opt
      bad = _shape_mismatch(want, out[name])
      if bad:
        raise CheckpointMismatchError(
            f'{self.workdir}: checkpoint {step} does not match this model ({name}/{bad}); '
            'use a fresh --workdir or the matching --config')
    return out['variables'], out.get('opt') if abstract_opt is not None else None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _shape_mismatch(want: Any, got: Any) -> str:
  """'' if both trees have the same structure and leaf shapes, else the first difference."""
  w = jax.tree_util.tree_flatten_with_path(want)[0]
  g = dict(jax.tree_util.tree_flatten_with_path(got)[0])
  if len(w) != len(g):
    return f'{len(g)} arrays stored, {len(w)} expected'
  for path, leaf in w:
    other = g.get(path)
    key = jax.tree_util.keystr(path)
    if other is None:
      return f'{key} missing'
    if tuple(other.shape) != tuple(leaf.shape):
      return f'{key} has shape {tuple(other.shape)}, expected {tuple(leaf.shape)}'
  return ''


def abstract_like(tree: Any) -> Any:
  """Pytree of ShapeDtypeStruct (with each leaf's sharding) to restore into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=getattr(x, 'sharding', None)),
                      tree)


def config_path(workdir) -> Path:
  return Path(workdir) / 'config.json'


def load_config(workdir) -> ml_collections.ConfigDict:
  """The config a training run wrote to `workdir/config.json`, over today's defaults.

  Keys added since the run was trained take their default (`configs/default.py`); keys the
  library no longer has are dropped, so old workdirs keep evaluating.
  """
  path = config_path(workdir)
  if not path.exists():
    raise WorkdirError(f'{path}: not found; is --workdir a training workdir '
                       '(launch/train.py writes it)?')
  try:
    saved = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise WorkdirError(f'{path}: not valid JSON ({e}); restore it from a copy or retrain '
                       'in a fresh --workdir') from None
  config = default_config.get_config()
  _merge(config, saved)
  return config


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
  """Latest (or `step`) checkpoint of a workdir → (model, variables, config, step).

  variables are host-local jax arrays `{'params', 'batch_stats'}` on the default device.
  """
  config = load_config(workdir)
  model = models.create_model(config.model)
  ckpt = Checkpointer(workdir, read_only=True, enable_async=False)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise WorkdirError(f'{Path(workdir) / "checkpoints"}: no checkpoint; train first '
                         '(python -m launch.train --workdir=...)')
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise WorkdirError(f'{Path(workdir) / "checkpoints"}: no checkpoint at step {step}; '
                         f'available: {sorted(steps)}')
    ckpt.check_model(step, config.model)
    abstract = models.abstract_variables(model, int(config.input.image_size))
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev),
                            abstract)
    variables, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return model, variables, config, int(step)
