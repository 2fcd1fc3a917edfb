"""What a training workdir records about its run, and the checks that a resumed run matches
it: the model and recipe in config.json (`RECIPE_KEYS`), the data's identity, the validation
split (validation_ids.json), the machine (environment.json) and the finished run's result
(result.json, returned by a rerun instead of testing again). Moved out of trainer.py, which
keeps the steps and the loop.
"""
from __future__ import annotations

import filecmp
import os
import sys

import jax
import ml_collections
from absl import logging

from aesthetics_jax import environment, io
from aesthetics_jax.data import sampling
from aesthetics_jax.data import validation
from aesthetics_jax.models import weight_files
from aesthetics_jax.train import checkpoints as ckpt_lib
from aesthetics_jax.train import optim
from aesthetics_jax.train.errors import TrainingError


# What a resumed run must share with the checkpoints it continues, besides the model: the
# input the model sees and the loss it minimises. Changing one midway trains a mixture of two
# recipes that no config describes (config.json is rewritten with the new values). The step
# count, the optimiser's settings and every evaluation key may change on resume.
RECIPE_KEYS = ('data.subset', 'input.image_size', 'input.resize_size', 'input.normalize',
               'input.random_flip', 'input.balanced', 'input.weighting', 'input.weight_factor',
               'input.weight_band', 'loss.emd_r', 'loss.tag_weight', 'model.freeze_encoder')


# Paths config.json keeps for the commands that read it later (evaluate, predict,
# aesthetics_jax.load: the dataset, the untrained control's weights, the region masks).
PATH_KEYS = ('data.data_dir', 'data.ava_dir', 'model.init_weights', 'eval.masks_dir')


def saved_config(config: ml_collections.ConfigDict) -> dict:
  """`config` as config.json records it: local relative `PATH_KEYS` made absolute. They were
  kept as typed, so a run trained with --config.data.data_dir=tfds could be evaluated only
  from the folder it was trained in ('tfds: no prepared dataset ava/style' elsewhere)."""
  out = config.to_dict()
  for key in PATH_KEYS:
    section, name = key.split('.')
    value = str(out[section][name])
    if value and io.is_local(value):
      out[section][name] = os.path.abspath(os.path.expanduser(value))
  return out


def _dotted(tree: dict, key: str):
  for part in key.split('.'):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return list(tree) if isinstance(tree, tuple) else tree


def _warn(msg: str) -> None:
  """A warning on stderr, where a user watching the run sees it, and in the INFO log (at
  WARNING it went to the terminal too: every resume warning was shown twice). Not stdout:
  it went into aesthetics-control's table (`> table.md`) and before train's JSON line."""
  logging.info('%s', msg)
  print(msg, file=sys.stderr, flush=True)


def _same_file_content(a: str, b: str) -> bool:
  try:
    return filecmp.cmp(a, b, shallow=False)  # stops at the first differing block
  except OSError:
    return False


# The starting weights' bytes, recorded when a run starts (process 0): a resume that named the
# same path after the file was exported again went on unchecked, and evaluate built its
# untrained control from the new file.
WEIGHTS_RECORD = 'init_weights.json'


def _weights_file(value: str, arch: str) -> str | None:
  """The local file `config.model.init_weights=value` reads (a folder's `<arch>.npz`), its
  real path; None when empty, remote or no file: loading says why, where it is needed."""
  if not value or not io.is_local(value):
    return None
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  try:
    path = pretrained.resolve_weights_path(value, arch)
  except pretrained.PretrainedError:
    return None
  return os.path.realpath(path) if os.path.isfile(path) else None


def recorded_weights(workdir) -> dict | None:
  """`WEIGHTS_RECORD` of a workdir ({'init_weights', 'file', 'bytes', 'sha256'}), None if it
  has none (no starting weights, or trained before it was kept); one line if damaged."""
  path = workdir / WEIGHTS_RECORD
  if not path.exists():
    return None
  return ckpt_lib.read_json_object(
      path, ckpt_lib.WorkdirError, 'it records the starting weights the checkpoints were '
      'trained from: restore it from a copy, or delete it to go on unchecked')


def changed_weights(workdir, value: str, arch: str) -> str:
  """Why `config.model.init_weights=value` is not the starting weights `workdir` recorded
  (other bytes), or '' (the same, or nothing to compare)."""
  now = _weights_file(value, arch)
  rec = recorded_weights(workdir) if now else None
  if not rec or not rec.get('sha256'):
    return ''
  digest = weight_files.sha256(now)
  if digest == rec['sha256']:
    return ''
  return (f'its checkpoints started from weights of SHA-256 {rec["sha256"][:12]} '
          f'({rec.get("file")}), and {now} now holds others (SHA-256 {digest[:12]})')


def _check_init_weights(workdir, was, now: str, arch: str) -> None:
  """The starting weights a resume names must be those the checkpoints started from: the
  restored weights go on either way, but config.json takes the new path, and evaluate builds
  its untrained control from it (a control of another encoder than the one trained, without a
  word; the feature cache, keyed by it, was rebuilt for nothing). The same file by another
  name (its folder, a link), or the recorded bytes anywhere (`WEIGHTS_RECORD`: moved or
  copied), is the same start; a file that is gone cannot be compared: a warning. Other bytes
  at the same path are `check_same_weights`'s."""
  if was is None:
    return  # config.json from before the key was recorded
  was = str(was)
  if now and io.is_local(now):
    now = os.path.abspath(os.path.expanduser(now))  # as config.json records it
  if now == was:
    return
  now_file = _weights_file(now, arch)
  if now_file and now_file == _weights_file(was, arch):
    return  # `W` and `W/<arch>.npz` (init_weights takes either) were refused as two starts
  if now_file and (rec := recorded_weights(workdir)) and rec.get('sha256'):
    if rec['sha256'] == weight_files.sha256(now_file):
      return
  elif was and now and io.is_local(was) and io.is_local(now):
    if not os.path.exists(was):
      if jax.process_index() == 0:
        _warn(f'warning: {workdir}: its checkpoints started from {was}, which is gone; '
              f'config.model.init_weights={now} is taken as the same weights (evaluate builds '
              'its untrained control from it)')
      return
    if os.path.isfile(now) and _same_file_content(was, now):
      return
  describe = lambda p: p or "'' (no starting weights)"  # noqa: E731
  raise ckpt_lib.CheckpointMismatchError(
      f'{workdir}: its checkpoints started from config.model.init_weights={describe(was)} and '
      f'this run names {describe(now)}; a resume keeps the checkpoints\' weights, and '
      'evaluate would build its untrained control from the new file: pass the checkpoints\' '
      'value (or a copy of that file), or use a fresh --workdir')


def check_same_weights(workdir, config, is_main: bool,
                       deferred: list[tuple[os.PathLike, dict]] | None = None) -> None:
  """Records the starting weights' bytes (`WEIGHTS_RECORD`) when a run starts from a local
  file; refuses a resume whose file now holds other bytes than recorded (a file exported
  again in place went on unchecked). `deferred` as `check_same_data`'s."""
  value, arch = str(config.model.init_weights), str(config.model.arch)
  now = _weights_file(value, arch)
  if now is None:
    return
  if ckpt_lib.has_checkpoints(workdir) and recorded_weights(workdir) is not None:
    if why := changed_weights(workdir, value, arch):
      raise ckpt_lib.CheckpointMismatchError(
          f'{workdir}: {why}; a resume keeps the checkpoints\' weights, and evaluate would '
          'build its untrained control from the new ones: put the recorded file back, or '
          'use a fresh --workdir')
    return
  if is_main:  # a fresh run, or a workdir trained before the record was kept
    _write_or_defer(workdir / WEIGHTS_RECORD,
                    {'init_weights': value, 'file': now, 'bytes': os.path.getsize(now),
                     'sha256': weight_files.sha256(now)}, deferred)


def check_workdir_model(workdir, config) -> None:
  """Refuses a workdir whose config.json holds another model, or (once it has checkpoints)
  another recipe (`RECIPE_KEYS`); before touching checkpoints."""
  path = ckpt_lib.config_path(workdir)
  if ckpt_lib.has_checkpoints(workdir):
    # Without a readable config.json any recipe resumed unchecked, and config.json was
    # rewritten saying the whole run used it (evaluate refuses such a workdir).
    saved_config = ckpt_lib.read_json_object(
        path, ckpt_lib.CheckpointMismatchError, f'{workdir} holds checkpoints whose recipe '
        'cannot be checked without it: restore it from a copy, or train in a fresh --workdir')
  elif not path.exists():
    return
  else:
    try:
      saved_config = ckpt_lib.read_json_object(path)
    except ckpt_lib.WorkdirError as e:  # nothing trained yet: this run writes it
      logging.warning('%s; rewriting it', e)
      return
  saved = saved_config.get('model', {})
  if not isinstance(saved, dict):
    return
  want = ckpt_lib.model_signature(config.model)
  got = {k: saved.get(k) for k in want}
  if got != want:
    raise ckpt_lib.CheckpointMismatchError(ckpt_lib.mismatch_message(workdir, got, want))
  if not ckpt_lib.has_checkpoints(workdir):
    return  # nothing trained yet: this run's recipe is the run's
  now = config.to_dict()
  diff = [f'config.{k}={_dotted(saved_config, k)!r} (checkpoints) vs {_dotted(now, k)!r} (config)'
          for k in RECIPE_KEYS
          if _dotted(saved_config, k) is not None and _dotted(saved_config, k) != _dotted(now, k)]
  if diff:
    raise ckpt_lib.CheckpointMismatchError(
        f'{workdir}: its checkpoints were trained with {", ".join(diff)}; resuming would mix '
        'two recipes: use a fresh --workdir, or the checkpoints\' values')
  _check_init_weights(workdir, _dotted(saved_config, 'model.init_weights'),
                      str(config.model.init_weights), str(config.model.arch))
  was, now_bs = _dotted(saved_config, 'batch_size'), int(config.batch_size)
  if was is not None and was != now_bs and jax.process_index() == 0:
    # Allowed (fewer devices may need another size: config_checks says so), never silently:
    # the step's rows and crops are drawn by (seed, step, batch_size).
    msg = (f'warning: {workdir}: its checkpoints were trained with config.batch_size={was} '
           f'and this run uses {now_bs}: training goes on, but from the resumed step on it '
           'draws other images than one uninterrupted run at either size (an unbalanced '
           'epoch skips or repeats rows), and config.num_epochs counts steps of the new size')
    _warn(msg)


def warn_schedule_change(workdir, config, num_train: int, total: int, start: int) -> None:
  """Warns (process 0; before config.json is rewritten) when a resume changes the length of a
  cosine schedule (more config.num_train_steps or num_epochs, another batch_size): the
  learning rate restarts on the longer curve, and the run is not one uninterrupted run of
  `total` steps. Silent before: a 7-step run continued to 24 differed in every weight."""
  if start == 0 or jax.process_index() != 0:
    return
  saved = read_record(ckpt_lib.config_path(workdir))
  if saved is None:
    return
  before = ml_collections.ConfigDict(saved)
  try:
    was = optim.total_train_steps(before, num_train)
    old_lr = float(optim.make_schedule(before, was)(start))
  except (AttributeError, KeyError, TypeError, ValueError, TrainingError):
    return  # an old or hand-edited config.json: nothing to compare
  new_lr = float(optim.make_schedule(config, total)(start))
  cosine = 'cosine' in (str(before.optim.schedule), str(config.optim.schedule))
  if was == total or not cosine or old_lr == new_lr:
    return
  msg = (f'warning: {workdir} resumed at step {start} on a cosine schedule over {total} '
         f'steps where its checkpoints followed one over {was} (config.num_train_steps, '
         f'num_epochs or batch_size changed): the next step\'s learning rate is {new_lr:.3g}, '
         f'not {old_lr:.3g}; the run will not equal one uninterrupted {total}-step run')
  _warn(msg)


def record_environment(workdir, start: int, num_devices: int) -> None:
  """Adds this run's machine and the `num_devices` of its training mesh to
  W/environment.json; warns when a resume computes on other hardware, device count or
  libraries than the run before (on XLA:CPU the vector ISA alone changed what the demo trained
  to). A record that cannot be written does not stop training."""
  try:
    rec, changed = environment.record_run(workdir, start, 'train', num_devices)
  except OSError as e:
    logging.warning('%s not written (%s); training goes on', workdir / environment.FILE_NAME, e)
    return
  logging.info('environment: %s', environment.summary(rec))
  if changed and start > 0:
    msg = (f'warning: {workdir} resumed at step {start} on other hardware or libraries than '
           f'the run before ({"; ".join(changed)}): training goes on, but its numbers will not '
           'equal those of one uninterrupted run')
    _warn(msg)


# The finished run's return value: a rerun of the same run returns it instead of testing again.
RESULT_FILE = 'result.json'


def finished_result(workdir, ckpt: ckpt_lib.Checkpointer, total: int) -> dict | None:
  """The recorded result if this run already trained to `total` steps and tested; None
  otherwise (a longer run resumes; a run stopped before its test tests now). One process
  only: several would each have to see the same file to take the same branch."""
  if jax.process_count() > 1 or ckpt.latest_step() != total:
    return None
  try:
    result = ckpt_lib.read_json_object(workdir / RESULT_FILE)
  except ckpt_lib.WorkdirError:
    return None
  try:  # damaged since: it was returned, and only evaluate found out (exit 2)
    ckpt.verify_files(total, ('variables', 'meta'))
  except ckpt_lib.CorruptCheckpointError:
    return None  # _restore_or_init sets it aside and the run redoes it
  return result if result.get('step') == total else None


def read_record(path) -> dict | None:
  """A JSON record this run wrote into its workdir; None if absent or unreadable (warned:
  the run rewrites it)."""
  if not path.exists():
    return None
  try:
    return ckpt_lib.read_json_object(path)
  except ckpt_lib.WorkdirError as e:
    logging.warning('%s; rewriting it', e)
    return None


def check_same_data(workdir, config, is_main: bool,
                    deferred: list[tuple[os.PathLike, dict]] | None = None) -> None:
  """Records the training data's identity (`dataset.IDENTITY_FILE`: evaluation compares it) on
  a fresh run; refuses a resume on data prepared from another AVA root (the checkpoints were
  trained on the recorded one). With `deferred`, the record is appended there (path, JSON) for
  the caller to write once the run is sure to start (`write_deferred`)."""
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  current = dataset.identity(config.data.data_dir, str(config.data.subset))
  path = workdir / dataset.IDENTITY_FILE
  if path.exists() and ckpt_lib.has_checkpoints(workdir):
    # Rewritten from the current data, a damaged record used to let a resume (and every later
    # evaluation) through on data the checkpoints were not trained on.
    recorded = ckpt_lib.read_json_object(
        path, ckpt_lib.WorkdirError, 'it records the data the checkpoints were trained on: '
        f'restore it from a copy, or delete it to resume on --config.data.data_dir='
        f'{config.data.data_dir} unchecked')
  else:
    recorded = None
  if recorded is not None:
    why = dataset.identity_mismatch(recorded, current)
    if why:
      raise ckpt_lib.CheckpointMismatchError(
          f'{workdir}: cannot resume on --config.data.data_dir={config.data.data_dir}: {why}; '
          'resume on the recorded data, or train in a fresh --workdir')
    was, now = recorded.get('num_examples'), current['num_examples']
    if was and now and was != now and is_main:
      # The same AVA metadata prepared from other image files (some missing or damaged):
      # the steps draw rows by index, so they meet other images than before.
      sizes = lambda n: ' / '.join(f'{n.get(k, 0)} {k}' for k in ('train', 'test'))  # noqa: E731
      _warn(f'warning: {workdir}: resumed on --config.data.data_dir={config.data.data_dir}, '
            f'which holds {sizes(now)} images where the checkpoints\' data '
            f'({recorded.get("data_dir")}) held {sizes(was)} (the same AVA metadata, other '
            'image files): training goes on, but not on the data it started on')
    return
  if is_main:
    _write_or_defer(path, current, deferred)


def _write_or_defer(path: os.PathLike, record: dict,
                    deferred: list[tuple[os.PathLike, dict]] | None) -> None:
  if deferred is None:
    io.atomic_write_json(path, record, indent=1)
  else:
    deferred.append((path, record))


def write_deferred(deferred: list[tuple[os.PathLike, dict]]) -> None:
  """Writes the records `check_same_data` and `carve_validation` deferred."""
  for path, record in deferred:
    io.atomic_write_json(path, record, indent=1)


def carve_validation(train_all, config, workdir,
                     deferred: list[tuple[os.PathLike, dict]] | None = None):
  """(split, train source, its metadata, validation source, its metadata): the first
  `max_train_images` training rows minus the held-out validation rows (data/validation.py),
  recorded in `W/validation_ids.json` (process 0; appended to `deferred` when given, as by
  `check_same_data`) and checked against it on resume."""
  meta = sampling.read_metadata(train_all)
  limit = int(config.data.max_train_images)
  if 0 < limit < len(meta):
    meta = meta.take(limit)
  fraction, seed = float(config.data.validation_fraction), int(config.seed)
  try:
    split = validation.split_rows(meta.label, fraction, seed)
  except ValueError as e:
    raise TrainingError(str(e)) from None
  rec = validation.record(split, meta.image_id, fraction, seed)
  path = workdir / validation.RECORD_FILE
  if path.exists():
    saved = read_record(path)
    diff = validation.mismatch(saved, rec) if saved is not None else ''
    if diff and ckpt_lib.has_checkpoints(workdir):
      raise ckpt_lib.CheckpointMismatchError(
          f'{path}: this workdir was trained with another validation split ({diff}); rerun '
          'with its --config.seed / --config.data.validation_fraction or use a fresh --workdir')
  if jax.process_index() == 0:
    _write_or_defer(path, rec, deferred)
  if not split.enabled:
    # Also with a fraction > 0 when no class has 2 rows (a tiny max_train_images): the
    # warning used to blame validation_fraction=0.
    why = ('config.data.validation_fraction=0' if fraction == 0 else
           f'no class has 2 of the {len(meta)} training rows to hold one out'
           + (f' (config.data.max_train_images={limit})' if 0 < limit else ''))
    logging.warning('%s: no validation split; the periodic evaluations and the best '
                    'checkpoint use the TEST split', why)
  else:
    logging.info('Validation split: %d of %d training rows held out (seed %d, fraction %g); '
                 'ids in %s', split.validation.size, len(meta), seed, fraction, path)
  return (split, validation.Rows(train_all, split.train), meta.select(split.train),
          validation.Rows(train_all, split.validation), meta.select(split.validation))
