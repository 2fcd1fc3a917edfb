"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{variables,opt,meta}`.

- `variables`: `{'params', 'batch_stats'}` — all that inference needs;
- `opt`: `{'step', 'opt_state'}`;
- `meta`: JSON with the model config, so a checkpoint from another architecture is refused
  with a one-line error instead of an opaque shape mismatch, and the crc32 of every saved
  array (`meta['checksums']`), written by orbax in the same commit as the arrays;
- `files.json` (ours, written once orbax has committed the step): size and crc32 of every
  file of the step, so that a flipped, truncated, emptied or deleted file is named exactly.
Restores verify both: a damaged checkpoint is a one-line `CorruptCheckpointError` naming the
step and the file (never silently wrong weights); `restore_latest_intact` lets training fall
back to the newest intact step. Checkpoints written before the checksums restore unverified.
Keeps the latest `keep` checkpoints plus the best one by `best_metric` (higher is better).
Saves are async; a failed save (disk full, read-only) is a `CheckpointSaveError` at the next
`check_saves()` / `save()` / `wait()`. Multi-process safe (orbax coordinates; process 0 writes
`files.json`). The workdir may be a cloud URL (`io.path`: etils.epath; orbax accepts it).

Beside it: the errors (`checkpoint_errors`, JAX-free; importable from here too), the checksums
and file manifests (`checkpoint_files`), a workdir read back for inference (`restore`) and
orbax's log filters (`orbax_logging`).
"""
import math
import os
from pathlib import Path
import shutil
from typing import Any, Iterable, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_pp

from aesthetics_jax import io
from aesthetics_jax import moved
from aesthetics_jax.train import orbax_logging
from aesthetics_jax.train.checkpoint_errors import (
    CheckpointError, CheckpointMismatchError, CheckpointSaveError, CorruptCheckpointError,
    WorkdirBusyError, WorkdirError, damage_detail, first_line, read_json_object, storage_cause)
from aesthetics_jax.train.checkpoint_files import (FILES_JSON, array_checksums, file_problem,
                                                   file_size, write_file_manifest)

# The errors the Checkpointer raises are importable from here too.
__all__ = ['CORRUPT_DIR', 'DIVERGED_DIR', 'MISMATCH_HINT', 'MODEL_KEYS',
           'CheckpointError', 'CheckpointMismatchError', 'CheckpointSaveError', 'Checkpointer',
           'CorruptCheckpointError', 'WorkdirBusyError', 'WorkdirError', 'abstract_like',
           'has_checkpoints', 'mismatch_message', 'model_signature', 'step_folders']

# Model config keys whose change makes parameters incompatible.
MODEL_KEYS = ('arch', 'width_mult', 'fc_dim', 'num_buckets', 'num_tags')
CORRUPT_DIR = 'corrupt_checkpoints'  # where training moves damaged steps it fell back from
# Where training moves a checkpoint whose weights gave a non-finite loss: resuming from it
# would diverge at its first step whatever the learning rate.
DIVERGED_DIR = 'diverged_checkpoints'


def _rank(metrics: Mapping[str, Any], best_metric: str) -> float:
  """A checkpoint's rank by `best_metric` (higher is better); missing or NaN ranks last.

  A correlation of constant predictions is NaN (`train.metrics.lcc`); as a sort key it broke
  orbax's ordering: an evaluation at NaN could be kept as the best and the best deleted.
  """
  value = float(metrics.get(best_metric, float('-inf')))
  return float('-inf') if math.isnan(value) else value


def model_signature(model_config: Mapping[str, Any]) -> dict:
  return {k: model_config[k] for k in MODEL_KEYS if k in model_config}


# The fix a mismatch error ends with, for a training run (restore.py words it for evaluate and
# predict, which take the model from config.json).
MISMATCH_HINT = 'use a fresh --workdir or the matching --config'


def mismatch_message(workdir: str | os.PathLike, saved: Mapping, wanted: Mapping) -> str:
  diff = ', '.join(f'{k}={saved.get(k)!r} (checkpoint) vs {wanted.get(k)!r} (config)'
                   for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
  return (f'{workdir}: existing checkpoint was trained with a different model ({diff}); '
          + MISMATCH_HINT)


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for (variables, opt, meta), with checksums."""

  def __init__(self, workdir: str | os.PathLike, keep: int = 2, best_metric: str = '',
               enable_async: bool = True, read_only: bool = False):
    self.workdir = io.path(workdir)
    self.directory = self.workdir / 'checkpoints'
    if io.is_local(workdir):
      self.directory = self.directory.absolute()
    self.best_metric = best_metric
    self.enable_async = enable_async
    self._pending: int | None = None  # step of a save not yet known to have succeeded
    self._failed = False               # a save failed and was reported
    self._keep = max(int(keep), 1)
    policies = [ocp_pp.LatestN(n=self._keep)]
    if best_metric:
      policies.append(ocp_pp.BestN(
          get_metric_fn=lambda m: _rank(m, best_metric),
          reverse=False, n=1, keep_checkpoints_without_metrics=False))
    best_fn = (lambda m: _rank(m, best_metric)) if best_metric else None
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode='max',  # for best_step(); retention is the policy below
        preservation_policy=ocp_pp.AnyPreservationPolicy(policies),
        enable_async_checkpointing=enable_async, create=not read_only, read_only=read_only,
        # What orbax sets itself for read_only, with a warning line per restore.
        **({'save_interval_steps': 0} if read_only else {}))
    # orbax warns "Given directory is read only" on every read-only restore (noise in every
    # notebook that loads a model), and on a step folder without a checkpoint.
    orbax_logging.drop_notices(read_only)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('variables', 'opt', 'meta'))

  def step_dir(self, step: int) -> Path:
    return self.directory / str(int(step))

  def prune(self) -> list[int]:
    """Deletes the steps the retention policy no longer keeps (all but the newest `keep` and
    the best); returns them. Orbax applies it on save only: a run killed just after its last
    save left the older steps, and the rerun, saving nothing, kept them for good (a VGG16
    checkpoint is GBs). One process (several would each delete)."""
    if jax.process_count() != 1:
      return []
    steps = sorted(self.all_steps())
    keep = set(steps[-self._keep:])
    best = self.best_step()
    if best is not None:
      keep.add(int(best))
    gone = [s for s in steps if s not in keep]
    for s in gone:
      self.manager.delete(s)
    return gone

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.best_metric else None

  def selected_step(self, fallback: int | None = None) -> int | None:
    """The step training selects and tests: the best by `best_metric` while it is kept, else
    `fallback` (default: the newest)."""
    best = self.best_step()
    if best is not None and best in self.all_steps():
      return int(best)
    return fallback if fallback is not None else self.latest_step()

  # ---------------------------------------------------------------------------------------
  # Saving.
  # ---------------------------------------------------------------------------------------

  def save(self, step: int, variables: Any, opt: Any, meta: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None) -> bool:
    """Saves (async) unless `step` already exists; metrics feed the best-checkpoint policy.

    Raises CheckpointSaveError if this or the previous save failed.
    """
    self.check_saves(block=True)
    if step in self.manager.all_steps():
      return False
    clean = None
    if metrics is not None:
      clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    meta = {**meta, 'checksums': {'variables': array_checksums(variables),
                                  'opt': array_checksums(opt)}}
    try:
      saved = self.manager.save(
          step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                        opt=ocp.args.StandardSave(opt),
                                        meta=ocp.args.JsonSave(dict(meta))),
          metrics=clean, force=True)
    except Exception as e:  # pylint: disable=broad-except
      if not isinstance(e, OSError) and storage_cause(e) == first_line(e):
        raise  # not a storage failure: a bug, keep its traceback
      self._failed = True
      raise self._save_error(step, e) from e
    if saved:
      self._pending = step
      if not self.enable_async:
        self.check_saves(block=True)
    return saved

  def check_saves(self, block: bool = False) -> None:
    """Raises CheckpointSaveError if the last save failed; once it has succeeded, records its
    files.json. Without `block` it returns at once while a save is still running: cheap enough
    to call every training step, so a failed save stops training at once."""
    step = self._pending
    if step is None or (not block and self.manager.is_saving_in_progress()):
      return
    self._pending = None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._failed = True
      raise self._save_error(step, e) from e
    if jax.process_index() != 0:
      return
    step_dir = self.step_dir(step)
    if not step_dir.is_dir():  # orbax logged the failure and skipped the commit
      self._failed = True
      raise self._save_error(step, None)
    try:
      write_file_manifest(step_dir)
    except OSError as e:
      self._failed = True
      raise self._save_error(step, e) from e

  def _save_error(self, step: int, e: BaseException | None) -> CheckpointSaveError:
    cause = storage_cause(e) if e is not None else 'not committed; see the log above'
    # From the folder: orbax's own list drops steps while it handles the failure.
    try:
      kept = [k for k in step_folders(self.directory) if k != step]
    except OSError:
      kept = []
    untouched = (f'checkpoint{"s" if len(kept) > 1 else ""} {", ".join(map(str, kept))} '
                 f'{"are" if len(kept) > 1 else "is"} untouched' if kept
                 else 'no earlier checkpoint')
    return CheckpointSaveError(
        f'saving checkpoint {step} in {self.directory} failed ({cause}); training stopped, '
        f'{untouched}; free space or fix the storage, then rerun to resume')

  def wait(self) -> None:
    """Blocks until the pending save is done; CheckpointSaveError if it failed."""
    self.check_saves(block=True)

  def close(self, raise_errors: bool = True) -> None:
    """Waits for the pending save and releases orbax; `raise_errors=False` (cleanup while
    another error propagates) logs a failed save instead of raising it."""
    try:
      self.check_saves(block=True)
    except CheckpointSaveError as e:
      if raise_errors:
        raise
      logging.error('%s', e)
    finally:
      try:
        self.manager.close()
      except Exception:  # pylint: disable=broad-except
        if raise_errors and not self._failed:
          raise

  # ---------------------------------------------------------------------------------------
  # Restoring and verifying.
  # ---------------------------------------------------------------------------------------

  def _corrupt(self, step: int, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f'checkpoint {step} is corrupt: {what}', step)

  def restore_meta(self, step: int) -> dict:
    path = self.step_dir(step) / 'meta' / 'metadata'  # where orbax's JsonSave writes it
    if not path.is_file() and path.parent.is_dir():  # another orbax layout: ask orbax
      try:
        return dict(self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])
      except Exception as e:  # pylint: disable=broad-except
        raise self._corrupt(step, f'{path.parent} cannot be read ({first_line(e)})') from e
    try:
      return read_json_object(path, CorruptCheckpointError)
    except CorruptCheckpointError as e:
      raise self._corrupt(step, str(e).replace(': not found', ' is missing')) from None

  def check_model(self, step: int, model_config: Mapping[str, Any]) -> None:
    """Raises CheckpointMismatchError if checkpoint `step` holds another model."""
    saved = self.restore_meta(step).get('model', {})
    wanted = model_signature(model_config)
    saved = {k: saved.get(k) for k in wanted}
    if saved != wanted:
      raise CheckpointMismatchError(mismatch_message(self.workdir, saved, wanted))

  def verify_files(self, step: int, items: Iterable[str]) -> None:
    """CorruptCheckpointError naming the first missing / truncated / altered file of `items`.

    With files.json every recorded file is checked (size, then crc32); a step without it
    (older code, or killed between orbax's commit and files.json) only gets the checks of
    the files orbax cannot do without.
    """
    step_dir, items = self.step_dir(step), tuple(items)
    for item in items:
      if not (step_dir / item).is_dir():
        raise self._corrupt(step, f'{step_dir / item} is missing')
    if not (step_dir / FILES_JSON).exists():
      self._check_structure(step, items)
      return
    try:
      listed = {str(rel): (int(size), int(crc)) for rel, (size, crc) in read_json_object(
          step_dir / FILES_JSON, CorruptCheckpointError)['files'].items()}
    except CorruptCheckpointError as e:
      raise self._corrupt(step, str(e)) from None
    except (KeyError, TypeError, ValueError, AttributeError):
      raise self._corrupt(step, f'{step_dir / FILES_JSON}: not a file list') from None
    for rel, (size, crc) in listed.items():
      if rel.split('/')[0] in items:
        problem = file_problem(step_dir / rel, size, crc)
        if problem:
          raise self._corrupt(step, f'{step_dir / rel} {problem}')

  def _check_structure(self, step: int, items: tuple[str, ...]) -> None:
    for item in items:
      d = self.step_dir(step) / item
      if item == 'meta':
        continue  # restore_meta reads and checks it
      for name in ('manifest.ocdbt', '_METADATA'):
        if not (d / name).is_file():
          raise self._corrupt(step, f'{d / name} is missing')
        if file_size(d / name) == 0:
          raise self._corrupt(step, f'{d / name} is empty')
      try:
        read_json_object(d / '_METADATA', CorruptCheckpointError)
      except CorruptCheckpointError as e:
        raise self._corrupt(step, str(e)) from None

  def restore(self, step: int, abstract_variables: Any, abstract_opt: Any | None = None
              ) -> tuple[Any, Any | None]:
    """Restores into abstract trees (ShapeDtypeStruct with shardings); opt optional.

    Verifies the files and then every restored array against the checksums saved with it:
    damage is a CorruptCheckpointError, another model a CheckpointMismatchError.
    """
    items = {'variables': ocp.args.StandardRestore(abstract_variables)}
    if abstract_opt is not None:
      items['opt'] = ocp.args.StandardRestore(abstract_opt)
    self.verify_files(step, (*items, 'meta'))
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      detail = damage_detail(e)
      if detail is not None:
        raise self._corrupt(step, f'{self.step_dir(step)} cannot be read ({detail})') from e
      if not isinstance(e, (ValueError, KeyError, TypeError)):
        raise
      raise CheckpointMismatchError(
          f'{self.workdir}: checkpoint {step} does not match this model ({first_line(e)}); '
          + MISMATCH_HINT) from e
    # Orbax may restore a stored array whose shape differs from the target: check ourselves.
    for name in items:
      want = abstract_variables if name == 'variables' else abstract_opt
      bad = _shape_mismatch(want, out[name])
      if bad:
        raise CheckpointMismatchError(
            f'{self.workdir}: checkpoint {step} does not match this model ({name}/{bad}); '
            + MISMATCH_HINT)
    saved = self.restore_meta(step).get('checksums') or {}
    for name in items:
      self._verify_arrays(step, name, out[name], saved.get(name) or {})
    return out['variables'], out.get('opt') if abstract_opt is not None else None

  def _verify_arrays(self, step: int, name: str, tree: Any, saved: Mapping[str, list]) -> None:
    now = array_checksums(tree)
    for key, (crc, dtype) in saved.items():
      got = now.get(key)
      if got is not None and got[1] == dtype and got[0] != crc:
        raise self._corrupt(step, f'{name}{key} differs from what was saved (checksum '
                                  f'mismatch; data under {self.step_dir(step) / name})')

  def intact_hint(self, bad_step: int) -> str:
    """'pass --step=N' for the newest other checkpoint whose files verify (cheap: no restore)."""
    for step in sorted(self.all_steps(), reverse=True):
      if step == bad_step:
        continue
      try:
        self.verify_files(step, ('variables', 'meta'))
        self.restore_meta(step)
      except CorruptCheckpointError:
        continue
      return f'pass --step={step} to use the newest intact checkpoint'
    return 'no other checkpoint is intact: retrain (aesthetics-train)'

  def restore_latest_intact(self, model_config: Mapping[str, Any], abstract_variables: Any,
                            abstract_opt: Any) -> tuple[int, Any, Any] | None:
    """(step, variables, opt) of the newest intact checkpoint; None when there is none.

    Damaged newer steps are moved to `workdir/corrupt_checkpoints/` (kept for inspection,
    out of orbax's way so that training redoes and re-saves those steps), said in one log
    line. A checkpoint of another model is a CheckpointMismatchError; every checkpoint
    damaged, a CorruptCheckpointError.
    """
    bad: list[CorruptCheckpointError] = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        self.check_model(step, model_config)
        variables, opt = self.restore(step, abstract_variables, abstract_opt)
      except CorruptCheckpointError as e:
        bad.append(e)
        continue
      if bad:
        self._set_aside(bad, step)
      return step, variables, opt
    if bad:
      raise CorruptCheckpointError(
          f'{bad[0]}; no older checkpoint is intact either: move {self.directory} away to '
          'train from scratch', bad[0].step)
    return None

  def _set_aside(self, bad: list[CorruptCheckpointError], resume: int) -> None:
    try:
      dest = self.set_aside([e.step for e in bad], CORRUPT_DIR)
    except OSError as err:
      raise WorkdirError(f'{bad[0]}; moving it to {self.workdir / CORRUPT_DIR} failed '
                         f'({storage_cause(err)})') from None
    steps = ', '.join(str(e.step) for e in bad)
    logging.warning('%s; resuming from checkpoint %d instead (moved step %s to %s)',
                    bad[0], resume, steps, dest)

  def set_aside(self, steps: Iterable[int], folder: str) -> Path:
    """Moves checkpoint `steps` to `workdir/folder/` (kept for inspection, out of orbax's
    way, so that a resume starts before them) and returns that folder. Every process calls
    it; process 0 moves. Raises OSError if a move fails."""
    dest = self.workdir / folder
    if jax.process_index() == 0:
      dest.mkdir(exist_ok=True)
      for step in steps:
        target, k = dest / str(step), 1
        while target.exists():
          target, k = dest / f'{step}.{k}', k + 1
        if io.is_local(dest):
          shutil.move(str(self.step_dir(step)), str(target))
        else:  # object stores: copy + delete, through epath
          self.step_dir(step).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices(f'aesthetics_jax:set_aside:{folder}')
    self.manager.reload()
    return dest


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


def step_folders(directory: str | os.PathLike) -> list[int]:
  """The steps of the step folders in `directory` (a workdir's `checkpoints/`), ascending,
  intact or not: read from the folder itself, as orbax's own list drops steps while it
  handles a failed save. OSError if the folder cannot be listed."""
  d = io.path(directory)
  # isascii: str.isdigit() also accepts '²' or Arabic-Indic digits, which int() refuses
  # or orbax never names a step by.
  return sorted(int(p.name) for p in d.iterdir()
                if p.name.isascii() and p.name.isdigit() and p.is_dir())


def has_checkpoints(workdir: str | os.PathLike) -> bool:
  """Whether `workdir/checkpoints/` holds any step folder (intact or not)."""
  d = io.path(workdir) / 'checkpoints'
  try:
    return d.is_dir() and bool(step_folders(d))
  except OSError:
    return False


# Moved out in 2026-12, still resolved here (with a DeprecationWarning).
__getattr__ = moved.forwarder(__name__, {
    **moved.table('aesthetics_jax.train.restore',
                  ('restore_for_inference', 'load_config', 'config_path')),
    **moved.table('aesthetics_jax.train.orbax_logging', ('quiet_orbax_errors',))})
