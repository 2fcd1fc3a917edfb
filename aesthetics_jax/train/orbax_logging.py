"""Orbax's log noise, filtered: its read-only notice on every restore, and, for the commands,
the echoes of a failed save or restore that reach the caller as one-line errors anyway.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import warnings

from absl import logging

from aesthetics_jax.train import errors


def _is_orbax_warning(record: std_logging.LogRecord, start: str) -> bool:
  return (record.levelno == std_logging.WARNING and f'{os.sep}orbax{os.sep}' in record.pathname
          and str(record.msg).startswith(start))


def drop_notices(read_only: bool) -> None:
  """Installs (once each) filters on absl's logger for orbax notices that tell a user nothing:
  'Metadata file does not exist: <step>/_CHECKPOINT_METADATA', for a step folder without a
  checkpoint in it (an empty or half-copied one), which training moves aside with its own
  warning and inference skips; and with `read_only`, 'Given directory is read only', which
  says only that we opened checkpoints to read them. Also 'Requested `tracked_metric`; did not
  provide metrics.' for every checkpoint saved between evaluations (and on SIGTERM): by design
  those steps are never the best, and the W line in every training's output explained nothing.
  And 'Attempted to create temporary directory <step>.orbax-checkpoint-tmp which already exists.
  Removing ...' when a rerun saves again the step whose save was killed midway: the unfinished
  save was never a checkpoint."""
  logger = logging.get_absl_logger()
  starts = {'_keep_no_metadata': 'Metadata file does not exist',
            '_keep_no_metrics': 'Requested `tracked_metric`',
            '_keep_no_stale_tmp': 'Attempted to create temporary directory'}
  if read_only:
    starts['_keep'] = 'Given directory is read only'
  for name, start in starts.items():
    if any(getattr(f, '__name__', '') == name for f in logger.filters):
      continue

    def keep(record: std_logging.LogRecord, start=start) -> bool:
      return not _is_orbax_warning(record, start)
    keep.__name__ = name
    logger.addFilter(keep)


def _is_orbax_record(record: std_logging.LogRecord) -> bool:
  return record.levelno >= std_logging.ERROR and (
      f'{os.sep}orbax{os.sep}' in record.pathname)


def _is_closed_loop_echo(exc: BaseException | None) -> bool:
  """TensorStore completing writes after orbax closed the event loop of a failed save."""
  return isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'


def _is_unretrieved_orbax_failure(record: std_logging.LogRecord) -> bool:
  """asyncio's '_GatheringFuture exception was never retrieved' for a write of orbax's save
  that failed (a full disk: one per array, each with its traceback, after the one line)."""
  exc = record.exc_info[1] if record.exc_info else None
  return 'exception was never retrieved' in str(record.msg) and errors.raised_in(exc, 'orbax')


def quiet_orbax_errors() -> None:
  """For the commands (cli/): drops the echoes of a failed save or restore that reach the
  caller as one-line CheckpointErrors anyway — orbax's ERROR logs (a traceback per thread and
  item), asyncio's 'exception was never retrieved' for its failed writes and TensorStore's
  'Event loop is closed' callbacks (dozens per failed save)."""
  logger = logging.get_absl_logger()
  if any(getattr(f, '__name__', '') == '_drop_orbax_errors' for f in logger.filters):
    return

  def _drop_orbax_errors(record: std_logging.LogRecord) -> bool:
    return not _is_orbax_record(record)
  logger.addFilter(_drop_orbax_errors)

  def _drop_unretrieved_orbax_failures(record: std_logging.LogRecord) -> bool:
    return not _is_unretrieved_orbax_failure(record)
  std_logging.getLogger('asyncio').addFilter(_drop_unretrieved_orbax_failures)

  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def _excepthook(kind, value, tb):
    if not _is_closed_loop_echo(value):
      excepthook(kind, value, tb)

  def _unraisablehook(unraisable):
    if not _is_closed_loop_echo(unraisable.exc_value):
      unraisablehook(unraisable)
  sys.excepthook, sys.unraisablehook = _excepthook, _unraisablehook
  # A save the storage refused leaves orbax's pending writes unawaited: six 'coroutine ...
  # was never awaited' warnings (with tracemalloc hints) after train's one line, at exit.
  warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)
