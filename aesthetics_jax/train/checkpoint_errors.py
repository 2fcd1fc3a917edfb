"""The one-line errors of a workdir and its checkpoints, and the words for their causes.

JAX-free: the commands catch these without loading the trainer. `storage_cause` and
`damage_detail` find what a failed write or read ran into inside orbax / TensorStore's
wrapped errors ('No space left on device', 'DATA_LOSS: ...').
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path


class CheckpointError(ValueError):
  """One-line user error about a workdir or its checkpoints (the commands print it)."""


class WorkdirError(CheckpointError):
  """The workdir has no config.json / no (such) checkpoint, or cannot be used."""


class WorkdirBusyError(WorkdirError):
  """Another live trainer holds the workdir's lock."""


class CheckpointMismatchError(CheckpointError):
  """The workdir holds a checkpoint of another model."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint's files are missing, truncated or altered since they were saved."""

  def __init__(self, message: str, step: int | None = None):
    super().__init__(message)
    self.step = step


class CheckpointSaveError(CheckpointError):
  """Writing a checkpoint failed (disk full, read-only storage, ...): training must stop."""


def first_line(e: BaseException, limit: int = 200) -> str:
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def _chain(e: BaseException | None) -> list[BaseException]:
  out: list[BaseException] = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or e.__context__
  return out


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def storage_cause(e: BaseException) -> str:
  """What a failed write or read ran into, in words ('No space left on device', ...).

  Orbax / TensorStore report OS errors as text inside ValueErrors, so the strerror of the
  usual suspects is also looked for in the messages.
  """
  for x in _chain(e):
    if isinstance(x, OSError) and x.errno:
      return os.strerror(x.errno)
  text = ' '.join(str(x) for x in _chain(e))
  for code in _STORAGE_ERRNOS:
    if os.strerror(code) in text:
      return os.strerror(code)
  return first_line(e)


# TensorStore status codes / orbax phrases of a checkpoint whose files are damaged or gone.
_DAMAGE_MARKERS = ('NOT_FOUND', 'OUT_OF_RANGE', 'DATA_LOSS', 'FAILED_PRECONDITION',
                   'Error reading', 'Error opening', 'was not found in the checkpoint')
_TS_STATUS = re.compile(r'\b(NOT_FOUND|OUT_OF_RANGE|DATA_LOSS|FAILED_PRECONDITION|'
                        r'INVALID_ARGUMENT): (.{1,400}?)(?= \[tensorstore_spec|\n|$)')


def damage_detail(e: BaseException) -> str | None:
  """The storage-level reason inside an orbax restore error, or None if it is not one."""
  chain = _chain(e)
  if any(isinstance(x, (OSError, json.JSONDecodeError)) for x in chain):
    return storage_cause(e)
  text = '\n'.join(str(x) for x in chain)
  if not any(m in text for m in _DAMAGE_MARKERS):
    return None
  found = _TS_STATUS.findall(text)
  if found:  # the innermost status names the cause, e.g. 'Data corruption detected'
    return f'{found[-1][0]}: {found[-1][1].strip()}'[:240]
  return first_line(e)


def read_json_object(path: Path, error: type[CheckpointError] = WorkdirError,
                     hint: str = '') -> dict:
  """A JSON object file; any problem is `error('<path>: <what>; <hint>')` on one line."""
  hint = f'; {hint}' if hint else ''
  try:
    text = path.read_bytes().decode('utf-8')
  except FileNotFoundError:
    raise error(f'{path}: not found{hint}') from None
  except UnicodeDecodeError:
    raise error(f'{path}: not valid JSON (not UTF-8 text){hint}') from None
  except OSError as e:
    raise error(f'{path}: cannot be read ({storage_cause(e)}){hint}') from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise error(f'{path}: not valid JSON ({e}){hint}') from None
  if not isinstance(obj, dict):
    raise error(f'{path}: not valid JSON here (a {type(obj).__name__}, not an object){hint}')
  return obj
