"""Prepares of one dataset running at once: a shared flock on `<data_dir>/ava/<subset>/` and
the clean-up of what killed prepares left there.

Several prepares may share a dataset folder (two terminals, a retried job): each holds a shared
flock on its LOCK_FILE for as long as it runs. The first to find no other running removes
TFDS's `incomplete.*` folders and the resized store's `.*.tmp` files older than its start
(a `kill -9` or a lost machine leaves them, and nothing else removed them), and the last out
removes the lock file. Without locks (a read-only data_dir, a filesystem without flock)
nothing is removed.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
import shutil
import time
from typing import Iterator

import tensorflow_datasets as tfds

from aesthetics_jax.data import resized_store

try:
  import fcntl
except ImportError:  # not POSIX: prepares run unmarked, and leftovers stay
  fcntl = None

# In <data_dir>/ava/<subset>/ while prepares of that dataset run: each holds a shared flock on
# it. A prepare killed outright (kill -9, a lost machine) leaves TFDS's `incomplete.*` folder
# and the store's `resized/.*.tmp` behind, which nothing removed, rerun after rerun.
LOCK_FILE = '.prepare.lock'


@contextlib.contextmanager
def running(data_dir: str | os.PathLike, subset: str = 'style') -> Iterator[None]:
  """Marks a prepare of `ava/<subset>` under `data_dir` as running for the block. The first
  to find no other running removes what killed prepares left (`_remove_leftovers`); the last
  out removes the lock file. Without a lock (a read-only data_dir, no flock) nothing is
  removed."""
  folder = Path(data_dir) / 'ava' / subset
  fd = _lock(folder, time.time())
  try:
    yield
  finally:
    if fd is not None:
      _unlock(fd, folder / LOCK_FILE)


def _lock(folder: Path, started: float) -> int | None:
  """A descriptor holding a shared flock on `folder`/LOCK_FILE, or None."""
  if fcntl is None:
    return None
  for _ in range(100):  # a prepare leaving may remove the file between our open and flock
    try:
      folder.mkdir(parents=True, exist_ok=True)
      fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # read-only, or a file where the folder goes (prepare says so next)
      return None
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
      except BlockingIOError:  # another prepare runs
        fcntl.flock(fd, fcntl.LOCK_SH)
        alone = False
      if not _is_lock_file(fd, folder / LOCK_FILE):
        os.close(fd)
        continue
      if alone:
        _remove_leftovers(folder, started)
        fcntl.flock(fd, fcntl.LOCK_SH)
      return fd
    except OSError:  # no locks on this filesystem
      os.close(fd)
      return None
  return None


def _is_lock_file(fd: int, path: Path) -> bool:
  """Whether `fd` is still the file at `path` (not one a prepare leaving has unlinked)."""
  try:
    a, b = os.fstat(fd), os.stat(path)
  except OSError:
    return False
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlock(fd: int, path: Path) -> None:
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if _is_lock_file(fd, path):
      path.unlink()  # the last prepare out: no lock file stays in the dataset's folder
  except OSError:  # another prepare still runs (or the file is gone): it stays
    pass
  finally:
    os.close(fd)


def _remove_leftovers(folder: Path, started: float) -> None:
  """Removes, in `folder` (<data_dir>/ava/<subset>), TFDS's `incomplete.*` folders and the
  resized store's `.*.tmp` files older than `started` (what killed prepares left): called only
  while no other prepare holds the lock."""
  def stale(p: Path) -> bool:
    try:
      return p.lstat().st_mtime < started
    except OSError:
      return False
  for p in folder.glob(f'{tfds.core.constants.INCOMPLETE_PREFIX}*'):
    if p.is_dir() and not p.is_symlink() and stale(p):
      shutil.rmtree(p, ignore_errors=True)
  for p in (folder / resized_store.FOLDER).glob('.*.tmp'):
    if stale(p):
      p.unlink(missing_ok=True)
