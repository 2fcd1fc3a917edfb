"""Atomic writes and paths, local or on cloud storage (etils.epath).

Workdirs (trainer, checkpoints, logs, evaluation, predict) go through `path`: `gs://bucket/run`
stays a URL for etils.epath and orbax. Reaching gs:// needs `gcsfs` (etils.epath's fsspec
backend; TensorFlow's also serves) and `google-cloud-storage` (orbax asks the bucket for its
layout; tensorboardX writes events with it): `require_backend` names what is missing in one
line before any work.

A reader never sees a half-written file: local files are written to a unique temporary name
in the same folder, flushed and renamed into place (`os.replace` is atomic on POSIX); on
object stores (gs://, s3://) a single upload is already all-or-nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import errno
import json
import math
import os
import re
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import IO, Any, Callable

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  """A local or cloud path (`gs://bucket/run` stays a URL, not a local folder `gs:/...`)."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  return '://' not in os.fspath(p)


# Modules (and their pip packages) a cloud scheme needs; each entry: any one of the modules.
_BACKENDS = {
    'gs': ((('gcsfs', 'tensorflow'), 'gcsfs'),
           (('google.cloud.storage',), 'google-cloud-storage')),
    's3': ((('s3fs', 'tensorflow'), 's3fs'),),
    'az': ((('adlfs',), 'adlfs'),),
}


def installed(module: str) -> bool:
  """Whether `module` can be imported (without importing it)."""
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # a missing parent package (google.cloud)
    return False


def missing_backend(p: PathLike) -> list[str]:
  """The pip packages this environment lacks to read and write `p` ([] when local)."""
  text = os.fspath(p)
  if is_local(text):
    return []
  needs = _BACKENDS.get(text.split('://', 1)[0], ())
  return [package for modules, package in needs if not any(map(installed, modules))]


def require_backend(p: PathLike, what: str, error: type[Exception]) -> None:
  """Raises `error` (one line) if `p` is a cloud URL this environment cannot write."""
  missing = missing_backend(p)
  if missing:
    raise error(f'{os.fspath(p)}: the {what} is on {os.fspath(p).split("://")[0]}:// but '
                f'{" and ".join(missing)} {"is" if len(missing) == 1 else "are"} not '
                f'installed; pip install {" ".join(missing)} (or pass a local path)')


def utf8_problem(p: PathLike, name: str) -> str | None:
  """One-line reason why folder `p` (made absolute: the current folder counts), given as
  `name` ('--workdir', 'workdir'), is no UTF-8 name; None if it is. Checkpoints (orbax /
  tensorstore) and dataset files (array_record) are opened by C++ that takes UTF-8 names only:
  such a folder failed at the first save or restore with pybind11's "Unable to cast Python
  instance of type <class 'str'> to C++ type '?'"."""
  if not p or not is_local(p):
    return None
  full = os.path.abspath(os.path.expanduser(os.fspath(p)))
  try:
    full.encode('utf-8')
  except UnicodeEncodeError:
    shown = os.fsencode(full).decode('utf-8', 'backslashreplace')
    return (f'{name}={shown} is not a UTF-8 name: checkpoints and dataset files cannot be '
            'opened under it; rename the folder (or pass a link to it with a UTF-8 name)')
  return None


def atomic_write_bytes(p: PathLike, data: bytes, durable: bool = True) -> epath.Path:
  """Writes `data` to `p` atomically (parents created); returns the path.

  durable: fsync before the rename, so the file survives a power loss too (~2 ms a file
    here). Bulk writers of regenerable data (dataset generators) pass False: the rename
    alone already protects readers and a killed process.
  """
  return _atomic_write(p, lambda f: f.write(data), 'wb', durable)


def atomic_write_stream(p: PathLike, write: Callable[[IO], Any], mode: str = 'wb',
                        durable: bool = True) -> epath.Path:
  """`write(f)` into a hidden sibling of `p`, renamed over `p` when it returns: what
  `atomic_write_bytes` does, for writers that stream (np.savez, torch.save). The file gets
  the mode a plain open() gives (0666 less the umask; mkstemp's 0600 hid shared weights).
  Such files are large: the siblings that killed writers of `p` left are removed first
  (`remove_dead_temps`)."""
  remove_dead_temps(p)
  return _atomic_write(p, write, mode, durable)


def writer_alive(pid: int) -> bool:
  """Whether the process `pid` (the writer a temporary file or folder is named by, on this
  host) may still run: True unless it is gone; a recycled pid, or one this process may not
  signal, counts as running (its file is kept: the safe side)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError):
    return True
  return True


def remove_dead_temps(p: PathLike) -> None:
  """Removes the hidden siblings of local file `p` (`_temp_name`) whose writer no longer runs
  on this host: kill -9 (or the OOM killer) during aesthetics-convert-weights or
  -make-fake-weights left `.vgg16.npz.<pid>.<id>.tmp` (0.55 GB, reserved up front) for good,
  one more each time. A sibling whose pid still runs is another writer's, and stays."""
  if not is_local(p):
    return
  # Through a link, as `_write_beside` writes: beside its target.
  folder, name = os.path.split(os.path.realpath(os.fspath(p)))
  stem = _temp_name(name).rsplit('.', 3)[0]  # '.' + the (cut) name, as every sibling's
  _remove_dead(folder, re.compile(re.escape(stem) + _TEMP_SUFFIX))


_TEMP_SUFFIX = r'\.(\d+)\.[0-9a-f]{8}\.tmp$'  # `_temp_name`'s, the writer's pid captured


def remove_dead_temps_in(folder: PathLike) -> None:
  """Removes the hidden temporary files (`_temp_name`) in local `folder` whose writer no
  longer runs on this host: kill -9 during evaluate or predict left them (the report's 1 MB
  among them), and the rerun that replaced their targets kept them for good. For a folder
  only the command that holds it writes in (evaluate's eval/, predict's claimed outputs)."""
  if is_local(folder):
    _remove_dead(os.fspath(folder), re.compile(r'\..+' + _TEMP_SUFFIX))


def _remove_dead(folder: str, pattern: re.Pattern) -> None:
  """Unlinks the files of `folder` whose name `pattern` matches and whose writer (its pid,
  group 1) no longer runs."""
  try:
    entries = list(os.scandir(folder))
  except OSError:
    return
  for e in entries:
    m = pattern.match(e.name)
    if m is None or not e.is_file(follow_symlinks=False) or writer_alive(int(m.group(1))):
      continue
    try:
      os.unlink(e.path)
    except OSError:
      pass


def _atomic_write(p: PathLike, write: Callable[[IO], Any], mode: str, durable: bool
                  ) -> epath.Path:
  out, tmp = _write_beside(p, write, mode, durable)
  if tmp is not None:
    _rename(tmp, out)
  return out


def _write_beside(p: PathLike, write: Callable[[IO], Any], mode: str, durable: bool
                  ) -> tuple[epath.Path, epath.Path | None]:
  """(the file `p` names, the hidden sibling holding what `write` wrote, to be renamed over
  it); the sibling is None where `p` was written directly (object stores, devices, pipes)."""
  out = path(p)
  out.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(p):
    with out.open(mode) as f:
      write(f)
    return out, None
  if os.path.islink(out):
    # Through a link to its target: replacing the link itself would leave the target stale.
    out = path(os.path.realpath(out))
    out.parent.mkdir(parents=True, exist_ok=True)  # a dangling link's folder, as a path's
  if os.path.exists(out) and not os.path.isfile(out):
    # A device or pipe (/dev/stdout, a FIFO) cannot be renamed over: write to it.
    with open(out, mode) as f:
      write(f)
    return out, None
  tmp = out.parent / _temp_name(out.name)

  def write_tmp() -> None:
    with open(tmp, mode) as f:
      write(f)
      if durable:
        f.flush()
        os.fsync(f.fileno())
  _named_for(out, tmp, write_tmp)
  return out, tmp


def _rename(tmp: epath.Path, out: epath.Path) -> None:
  _named_for(out, tmp, lambda: os.replace(tmp, out))


def _named_for(out: epath.Path, tmp: epath.Path, step: Callable[[], Any]) -> None:
  """`step()` on `tmp`, the hidden sibling of `out`; on any error `tmp` is removed, and an
  OSError naming no file (a full disk's) or naming `tmp` names `out`, the file the user asked
  for, in its one-line message."""
  try:
    step()
  except BaseException as e:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    if isinstance(e, OSError) and e.errno and e.filename in (None, str(tmp)):
      try:
        named = type(e)(e.errno, e.strerror or os.strerror(e.errno), str(out))
      except Exception:  # pylint: disable=broad-except  (an OSError subclass of its own)
        raise e from None
      raise named from e
    raise


class Staged:
  """Files that land together. `write_bytes` / `write_text` write each to a hidden sibling of
  its target, as `atomic_write_bytes` does, but leave it there; `add(commit, discard)` joins
  another step to run then (a folder swapped into place); `commit()` renames every file into
  place and runs the steps, in order: renames need no room, so a disk that fills while the
  files are written leaves every earlier file as it was, not half of them replaced.
  `discard()` removes what was written. As a context manager: commit when the block ends,
  discard on an error. Object stores (no rename) get each file directly, as atomic writes do.
  """

  def __init__(self) -> None:
    self._steps: list[tuple[Callable[[], Any], Callable[[], Any]]] = []

  def __enter__(self) -> 'Staged':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.commit()
    else:
      self.discard()

  def add(self, commit: Callable[[], Any], discard: Callable[[], Any] = lambda: None) -> None:
    self._steps.append((commit, discard))

  def write_bytes(self, p: PathLike, data: bytes, durable: bool = True) -> epath.Path:
    out, tmp = _write_beside(p, lambda f: f.write(data), 'wb', durable)
    if tmp is not None:
      self.add(lambda: _rename(tmp, out), lambda: tmp.unlink(missing_ok=True))
    return out

  def write_text(self, p: PathLike, text: str, durable: bool = True) -> epath.Path:
    return self.write_bytes(p, text.encode('utf-8'), durable)

  def commit(self) -> None:
    """Runs every step; Ctrl-C or SIGTERM meanwhile acts once they have all run: raised between
    two renames, it left an evaluation's `eval/` part new and part old."""
    steps, self._steps = self._steps, []
    with signals_held():
      for i, (commit, _) in enumerate(steps):
        try:
          commit()
        except BaseException:
          self._steps = steps[i + 1:]  # what was not committed yet goes
          self.discard()
          raise

  def discard(self) -> None:
    steps, self._steps = self._steps, []
    for _, discard in reversed(steps):
      try:
        discard()
      except OSError:
        pass


_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
  """Ctrl-C and SIGTERM wait until the block ends, so that a few renames that land together are
  not cut in two: their handlers are swapped for one that notes the signal, which is raised
  again, to the handler in place before, once the block is over. (Blocking them with
  pthread_sigmask held them for this thread only: another thread took the signal and the
  handler still ran here.) Only on the main thread, the one Python runs handlers on; elsewhere
  a no-op."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  got: list[int] = []
  # A handler installed outside Python (getsignal: None) cannot be put back: left alone.
  old = {s: h for s in _HELD_SIGNALS if (h := signal.getsignal(s)) is not None}
  for s in old:
    signal.signal(s, lambda signum, frame: got.append(signum))
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    for s in dict.fromkeys(got):  # each once, in the order they came
      signal.raise_signal(s)


# A write that failed for want of room (disk full, over a quota, a file too large for it).
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def reserve_space(f: IO, nbytes: int) -> None:
  """Allocates the first `nbytes` of open file `f`'s blocks up front: a disk or quota without
  room fails now (OSError with one of NO_ROOM_ERRNOS), not after minutes of work, nor as
  SIGBUS in a write through a memory map of a sparse file. Best effort: a filesystem that
  cannot allocate ahead (EINVAL, EOPNOTSUPP) finds out at the writes instead."""
  if nbytes <= 0:
    return
  try:
    os.posix_fallocate(f.fileno(), 0, nbytes)
  except OSError as e:
    if e.errno in NO_ROOM_ERRNOS:
      raise


def _temp_name(name: str) -> str:
  """A unique hidden sibling name for `name`, within the 255-byte limit of a file name (a long
  but valid name plus the suffix would not be)."""
  suffix = f'.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
  head = name.encode('utf-8', 'surrogateescape')[:200].decode('utf-8', 'ignore')
  return f'.{head}{suffix}'


def atomic_write_text(p: PathLike, text: str, durable: bool = True) -> epath.Path:
  return atomic_write_bytes(p, text.encode('utf-8'), durable)


def atomic_write_json(p: PathLike, obj: Any, **kwargs) -> epath.Path:
  """JSON with `default=str` (numpy scalars, paths) unless `kwargs` say otherwise."""
  kwargs.setdefault('default', str)
  return atomic_write_text(p, json.dumps(obj, **kwargs))


def json_safe(v: Any) -> Any:
  """NaN/inf → None (recursively; numpy scalars → Python), so `json.dumps` writes valid JSON:
  an undefined number (a correlation over too few images) reads as null, never as NaN."""
  if isinstance(v, dict):
    return {k: json_safe(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [json_safe(x) for x in v]
  if hasattr(v, 'item') and getattr(v, 'ndim', None) == 0:  # numpy / jax scalars
    v = v.item()
  if isinstance(v, float):
    return v if math.isfinite(v) else None
  return v
