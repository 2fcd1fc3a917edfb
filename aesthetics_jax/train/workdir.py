"""A training workdir: checked before any work, locked against a second trainer.

`claim(workdir)` (a context manager, process 0 only in multi-process jobs; local folders):
1. the workdir must be a folder this process can write: otherwise one-line `WorkdirError`
   before any data is read or anything compiled;
2. `workdir/.lock` is created with O_CREAT|O_EXCL and holds the holder's pid, host, start
   time (and its kernel start tick, so a recycled pid is not mistaken for the holder).
   A live holder → `WorkdirBusyError` naming it; a holder that is gone (same host, no such
   process) → the lock is taken over, said in one log line. A lock from another host cannot
   be checked from here: it is refused, naming the file to delete if that job is gone;
3. on exit (also on errors) the lock is released, and a workdir this call created and in
   which nothing was written is removed again.
Why: orbax's temporary checkpoint directories and metrics.jsonl assume one writer; two
trainers on one workdir deleted each other's half-written checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from absl import logging

from aesthetics_jax import io
from aesthetics_jax.train.checkpoint_errors import WorkdirBusyError, WorkdirError, storage_cause

LOCK_NAME = '.lock'
# A lock file without readable content younger than this may be mid-creation by its holder.
_FRESH_SECONDS = 10.0


def _proc_start(pid: int) -> str | None:
  """The kernel's start tick of process `pid` (Linux /proc), None where unavailable."""
  try:
    stat = Path(f'/proc/{pid}/stat').read_text()
  except OSError:
    return None
  return stat.rsplit(')', 1)[-1].split()[19]  # field 22: starttime (after "pid (comm)")


def _holder_alive(info: dict) -> bool:
  """False only when the holder is provably gone: same host, and no such process (or a
  different process that reuses its pid)."""
  if info.get('host') != socket.gethostname():
    return True
  pid = int(info.get('pid', -1))
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, owned by another user
  started = info.get('proc_start')
  now = _proc_start(pid)
  return not (started and now and started != now)


class WorkdirLock:
  """`<workdir>/.lock`: exclusive ownership of a workdir by one trainer process (or, with
  `holder`, by one process of another job, e.g. a whole aesthetics-paper-run)."""

  def __init__(self, workdir: str | os.PathLike, holder: str = 'trainer'):
    self.path = Path(workdir) / LOCK_NAME
    self.holder = holder
    self.token = uuid.uuid4().hex
    self.held = False

  def read(self) -> dict | None:
    """The lock's record ({} when there is no lock, None when it cannot be read)."""
    try:
      info = json.loads(self.path.read_text())
    except FileNotFoundError:
      return {}
    except (OSError, ValueError):
      return None
    return info if isinstance(info, dict) else None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirBusyError / WorkdirError (one line)."""
    for _ in range(3):  # a lost race with another taker is retried
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        self._clear_stale()
        continue
      except OSError as e:
        raise WorkdirError(f'{self.path}: cannot create the workdir lock ({storage_cause(e)}); '
                           'pass a writable --workdir') from None
      info = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S'),
              'proc_start': _proc_start(os.getpid()), 'token': self.token}
      with os.fdopen(fd, 'w') as f:
        f.write(json.dumps(info))
        f.flush()
        os.fsync(f.fileno())
      self.held = True
      return
    raise WorkdirBusyError(f'{self.path}: another process keeps taking this workdir\'s lock; '
                           'use another --workdir')

  def _clear_stale(self) -> None:
    """Removes the existing lock if its holder is gone; else raises WorkdirBusyError."""
    info = self.read()
    if info == {}:
      return  # released meanwhile
    if info is None:  # unreadable: stale unless it may still be being written
      try:
        age = time.time() - self.path.stat().st_mtime
      except FileNotFoundError:
        return
      if age < _FRESH_SECONDS:
        raise WorkdirBusyError(f'{self.path}: another {self.holder} is starting in this '
                               'workdir; wait for it or use another --workdir')
      holder = 'an unreadable lock'
    elif _holder_alive(info):
      raise WorkdirBusyError(
          f'{self.path.parent} is in use by another {self.holder} (pid {info.get("pid")} on '
          f'{info.get("host")}, since {info.get("started")}); wait for it to finish or use '
          f'another --workdir (if that process is gone, delete {self.path})')
    else:
      holder = f'pid {info.get("pid")} on {info.get("host")}, which is no longer running'
    # Re-read just before removing: another taker may have replaced the stale lock already.
    if self.read() != info:
      return
    try:
      self.path.unlink()
    except FileNotFoundError:
      return
    logging.warning('%s: taking over the stale workdir lock of %s', self.path, holder)

  def release(self) -> None:
    """Removes the lock if this object still holds it (never another process's)."""
    if not self.held:
      return
    self.held = False
    info = self.read()
    if info and info.get('token') == self.token:
      with contextlib.suppress(FileNotFoundError):
        self.path.unlink()


def training_now(workdir: str | os.PathLike) -> dict | None:
  """The lock record (`pid`, `host`, `started`) of the trainer holding a local `workdir` now,
  or None (no lock, an unreadable one, or its holder gone). Another host's holder counts."""
  if not io.is_local(workdir):
    return None
  info = WorkdirLock(workdir).read()
  return info if info and _holder_alive(info) else None


def prepare(workdir: Path) -> bool:
  """Creates `workdir` if needed and checks it is writable; returns whether it was created.

  WorkdirError (one line) for a path that is a file, or a folder that cannot be created or
  written (read-only file system, permissions).
  """
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f'{workdir}: exists and is not a folder; pass a folder as --workdir')
  created = not workdir.exists()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:  # a parent is a file, read-only file system, permissions
    raise WorkdirError(f'{workdir}: cannot create the workdir ({storage_cause(e)}); pass a '
                       'writable --workdir') from None
  try:
    _probe(workdir, 'workdir')
  except WorkdirError:
    remove_if_empty(workdir, created)
    raise
  return created


def _probe(folder: Path, what: str) -> None:
  """A real write: permission bits say nothing about read-only mounts (or root)."""
  try:
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=folder)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise WorkdirError(f'{folder}: the {what} is not writable ({storage_cause(e)}); pass a '
                       'writable --workdir') from None


def check_writable(folder: str | os.PathLike, what: str) -> None:
  """WorkdirError (one line) unless files can be written in `folder` — or, while it does not
  exist yet, in its nearest existing parent, where it would be created. Creates nothing:
  for jobs that write their results only at the end (evaluation)."""
  if not io.is_local(folder):  # object stores have no folders to probe: the writes will say
    io.require_backend(folder, what, WorkdirError)
    return
  target = Path(folder)
  while not target.exists() and target != target.parent:
    target = target.parent
  if not target.is_dir():
    raise WorkdirError(f'{target}: exists and is not a folder; the {what} cannot be written')
  _probe(target, what)


def remove_if_empty(workdir: Path, created: bool) -> None:
  """Removes a workdir this run created if no file was written in it (empty folders only)."""
  if not created or not workdir.is_dir():
    return
  if any(p.is_file() or p.is_symlink() for p in workdir.rglob('*')):
    return
  with contextlib.suppress(OSError):
    shutil.rmtree(workdir)


@contextlib.contextmanager
def claim(workdir: str | os.PathLike, active: bool = True,
          holder: str = 'trainer') -> Iterator[None]:
  """Checks and locks `workdir` for the duration (no-op unless `active`: process 0);
  `holder` names the job in the message another process gets."""
  io.require_backend(workdir, 'workdir', WorkdirError)
  if not active or not io.is_local(workdir):  # no O_EXCL on object stores (gs://): no lock
    yield
    return
  workdir = Path(workdir)
  created = prepare(workdir)
  lock = WorkdirLock(workdir, holder)
  try:
    lock.acquire()
    yield
  except BaseException:
    # The error that stopped the work is the one to report: a folder made read-only midway
    # failed the release too, and 'Operation not permitted: .../.lock' hid the failed write.
    with contextlib.suppress(OSError):
      lock.release()
    with contextlib.suppress(OSError):
      remove_if_empty(workdir, created)
    raise
  lock.release()
  remove_if_empty(workdir, created)
