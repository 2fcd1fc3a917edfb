"""Atomic writes and paths, local or on cloud storage (etils.epath).

A reader never sees a half-written file: local files are written to a unique temporary name
in the same folder, flushed and renamed into place (`os.replace` is atomic on POSIX); on
object stores (gs://, s3://) a single upload is already all-or-nothing.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  """A local or cloud path (`gs://bucket/run` stays a URL, not a local folder `gs:/...`)."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  return '://' not in os.fspath(p)


def atomic_write_bytes(p: PathLike, data: bytes, durable: bool = True) -> epath.Path:
  """Writes `data` to `p` atomically (parents created); returns the path.

  durable: fsync before the rename, so the file survives a power loss too (~2 ms a file
    here). Bulk writers of regenerable data (dataset generators) pass False: the rename
    alone already protects readers and a killed process.
  """
  out = path(p)
  out.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(p):
    out.write_bytes(data)
    return out
  tmp = out.parent / f'.{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      if durable:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  return out


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
