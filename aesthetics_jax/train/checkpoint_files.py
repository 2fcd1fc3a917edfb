"""Checksums of a checkpoint: of its arrays (in `meta`, committed with them by orbax) and of
its files (`files.json`, written once the step is committed), so that a flipped, truncated,
emptied or deleted file is named exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable
import zlib

import jax
import numpy as np

from aesthetics_jax import io
from aesthetics_jax.train.checkpoint_errors import storage_cause

FILES_JSON = 'files.json'          # per-step file manifest (ours, next to orbax's items)
# Rewritten by orbax after the commit, and tolerated by it when damaged: not in files.json.
UNLISTED = ('_CHECKPOINT_METADATA',)


def _local_value(x: Any) -> Any:
  """What this process can read of a leaf: itself, one replica, or None (sharded across
  processes: its owner checks its own shards' files instead)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return x.addressable_data(0) if x.is_fully_replicated else None
  return x


def array_checksums(tree: Any) -> dict[str, list]:
  """`{keystr: [crc32 of the bytes, dtype]}` of every leaf, on the host (cheap: ~2 GB/s)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  host = jax.device_get([_local_value(x) for _, x in leaves])
  out = {}
  for (path, _), value in zip(leaves, host):
    if value is None:
      continue
    a = np.ascontiguousarray(value)
    out[jax.tree_util.keystr(path)] = [zlib.crc32(a.reshape(-1).view(np.uint8)), str(a.dtype)]
  return out


def file_size(path: Path) -> int:
  """Bytes of a file, local (`os.stat_result`) or cloud (etils `StatResult`)."""
  st = path.stat()
  return int(st.st_size if hasattr(st, 'st_size') else st.length)


def file_crc(path: Path) -> int:
  crc = 0
  with path.open('rb') as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def files_under(folder: Path) -> Iterable[Path]:
  """Every file below `folder` (epath has no recursive glob: walk it, on any storage)."""
  for p in folder.iterdir():
    if p.is_dir():
      yield from files_under(p)
    else:
      yield p


def write_file_manifest(step_dir: Path) -> None:
  """`step_dir/files.json`: `{'files': {relative path: [size, crc32]}}` of the committed step."""
  files = {}
  for p in sorted(files_under(step_dir)):
    if p.name != FILES_JSON and p.name not in UNLISTED and p.name[0] != '.':
      files[p.relative_to(step_dir).as_posix()] = [file_size(p), file_crc(p)]
  io.atomic_write_json(step_dir / FILES_JSON, {'files': files})


def file_problem(path: Path, size: int, crc: int) -> str | None:
  """How a file differs from what files.json recorded (None: it does not)."""
  try:
    now = file_size(path)
  except FileNotFoundError:
    return 'is missing'
  except OSError as e:
    return f'cannot be read ({storage_cause(e)})'
  if now == 0 and size:
    return f'is empty (0 of {size} bytes)'
  if now < size:
    return f'is truncated ({now} of {size} bytes)'
  if now != size:
    return f'has {now} bytes where {size} were saved'
  try:
    same = file_crc(path) == crc
  except OSError as e:
    return f'cannot be read ({storage_cause(e)})'
  return None if same else 'does not match its saved checksum (its bytes changed on disk)'
