"""Where the frozen-encoder feature cache lives: host RAM, or memory-mapped files on disk.

`Layout` is the cache's size: K train views of N rows plus M test rows, one view being the
model's cacheable form (`model.cache_features`: MobileNetV2 [C], VGG16 [P, P, C]) in a storage
dtype. A cache over `ram_budget_bytes` is written to `<directory>/<key>/{train,test}.bin`
(np.memmap) instead of RAM:
  - built in place (rows are written as batches are encoded; never a second full copy),
  - into `<key>.partial/` first, its blocks allocated up front (a full disk is an error before
    encoding, not SIGBUS mid-build); `manifest.json` is written last and the folder renamed to
    `<key>/`, so an interrupted build is never read back (a failed or stopped build deletes it;
    a killed one's is deleted by the next build, whatever its key),
  - reused by a later run (resume) whose key — model, encoder weights, input settings, data,
    K, dtype — is the same; entries with other keys are deleted once a new one is committed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aesthetics_jax import cpu_backend
from aesthetics_jax import io as io_lib
from aesthetics_jax.train.errors import TrainingError

DTYPES = ('auto', 'float32', 'float16', 'bfloat16')
_NUMPY = {'float32': np.dtype(np.float32), 'float16': np.dtype(np.float16),
          'bfloat16': np.dtype(jnp.bfloat16)}
FORMAT_VERSION = 1
_ENTRY = re.compile(r'^[0-9a-f]{16}(\.partial)?$')


def storage_dtype(name: str, view_shape: tuple[int, ...]) -> np.dtype:
  """numpy dtype of `config.cache.dtype` for views of `view_shape`.

  'auto': float32 for pooled vectors (MobileNetV2: 5 KB a view, nothing to gain), float16 for
  feature maps (VGG16: half of float32; f16's 10-bit mantissa is 8x finer than bf16's, and
  post-ReLU VGG features are far below its 65504 limit — overflow is checked while encoding).
  """
  if name == 'auto':
    return _NUMPY['float32' if len(view_shape) == 1 else 'float16']
  if name not in _NUMPY:
    raise TrainingError(f'config.cache.dtype={name!r}; use one of {DTYPES}')
  return _NUMPY[name]


def _fmt_bytes(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024 or unit == 'GiB':
      if unit == 'B':
        return f'{n:.0f} {unit}'
      # Three digits past 10,000 GiB, as config_checks' sizes: num_train_views=10**20 printed
      # '6675720214843750.0 GiB'.
      return f'{n:.1f} {unit}' if n < 10_000 else f'{n:.3g} {unit}'
    n /= 1024
  raise AssertionError


@dataclasses.dataclass(frozen=True)
class Layout:
  """Sizes of a cache: train `[K, N, *view_shape]`, test `[M, *view_shape]`, validation
  `[V, *view_shape]` in `dtype`."""
  num_views: int
  num_train: int
  num_test: int
  view_shape: tuple[int, ...]
  dtype: np.dtype
  ram_budget_bytes: int
  num_validation: int = 0

  @property
  def bytes_per_view(self) -> int:
    return int(np.prod(self.view_shape)) * self.dtype.itemsize

  @property
  def bytes_per_image(self) -> int:
    return self.bytes_per_view * self.num_views

  @property
  def total_bytes(self) -> int:
    return self.bytes_per_view * (self.num_views * self.num_train + self.num_test
                                  + self.num_validation)

  @property
  def on_disk(self) -> bool:
    return self.total_bytes > self.ram_budget_bytes

  @property
  def encoder_passes(self) -> int:
    return self.num_views * self.num_train + self.num_test + self.num_validation

  def describe(self, where: str = '') -> str:
    """One line: bytes per view / image / total, RAM or disk, encoder passes."""
    place = (f'on disk, memory-mapped{f" ({where})" if where else ""}' if self.on_disk
             else 'in RAM')
    return (f'feature cache: {self.dtype.name} {list(self.view_shape)} = '
            f'{_fmt_bytes(self.bytes_per_view)} per view, {_fmt_bytes(self.bytes_per_image)} '
            f'per train image (K={self.num_views} views); {self.num_train} train x '
            f'{self.num_views} + {self.num_test} test + {self.num_validation} validation = '
            f'{_fmt_bytes(self.total_bytes)} {place} '
            f'(RAM budget {_fmt_bytes(self.ram_budget_bytes)}: config.cache.ram_budget_gb); '
            f'{self.encoder_passes} encoder passes once (K*N + M + V)')

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {'train': (self.num_views, self.num_train) + self.view_shape,
            'test': (self.num_test,) + self.view_shape,
            'validation': (self.num_validation,) + self.view_shape}


def digest(parts: Any) -> str:
  """16 hex digits of sha256 over JSON-able `parts` (the cache key)."""
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def tree_digest(tree: Any) -> str:
  """sha256 of every leaf of a (host or replicated) array tree: paths, shapes, dtypes, bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.asarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)}|{a.shape}|{a.dtype}|'.encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _bytes_under(directory: Path) -> int:
  """Bytes of the files under `directory` (0 if absent): its entries, which a build deletes
  or reuses."""
  total = 0
  for root, _, files in os.walk(directory):
    for name in files:
      try:
        total += os.stat(os.path.join(root, name)).st_size
      except OSError:
        pass
  return total


def _ram_problem(layout: Layout) -> str | None:
  ram = cpu_backend.physical_memory()
  if layout.on_disk or not ram or layout.total_bytes <= ram:
    return None
  return (f'config.cache.ram_budget_gb={layout.ram_budget_bytes / 2**30:g} keeps this '
          f'{_fmt_bytes(layout.total_bytes)} feature cache in RAM and this machine has '
          f'{_fmt_bytes(ram)}; lower it below the cache (over it the cache is memory-mapped '
          'from <workdir>/cache on disk)')


def room_problem(layout: Layout, directory: Path) -> str | None:
  """The one-line problem of a cache that cannot fit, before any work, or None: one in RAM
  larger than the machine's (`allocate_ram`), or one over the RAM budget larger than the free
  space of `directory`'s disk plus what `directory` already holds (a reusable entry
  included, so a resume is never refused), naming config.cache.num_train_views and the most
  views that fit. num_train_views=10**20 used to pass until the build, after the checkpoints
  and config.json were written: exit 1, the size in 16 digits."""
  if not layout.on_disk or layout.num_train < 1:
    return _ram_problem(layout)
  room = shutil.disk_usage(_nearest_existing(directory)).free + _bytes_under(directory)
  if layout.total_bytes <= room:
    return None
  fixed = layout.bytes_per_view * (layout.num_test + layout.num_validation)
  per_view = layout.bytes_per_view * layout.num_train
  # The most views of the cache on disk, or of one in RAM, whichever is more.
  fits = max((room - fixed) // per_view,
             (min(layout.ram_budget_bytes, cpu_backend.physical_memory() or 2**63) - fixed)
             // per_view)
  # float16 halves a float32 cache; one already in float16 can only be turned off.
  smaller = ("set config.cache.dtype='float16'" if layout.dtype.itemsize > 2 else
             'turn the cache off (config.cache.enabled=False)')
  fix = (f'lower it to at most {fits}' if fits >= 1 else
         f'even 1 view does not fit: free space, or {smaller}')
  return (f'config.cache.num_train_views={layout.num_views}: {layout.num_views} views of '
          f'{layout.num_train} training rows make a {_fmt_bytes(layout.total_bytes)} feature '
          f'cache, over the RAM budget (config.cache.ram_budget_gb), and {directory} has room '
          f'for {_fmt_bytes(room)}; {fix}')


def _nearest_existing(p: Path) -> Path:
  while not p.exists() and p != p.parent:
    p = p.parent
  return p


def allocate_ram(layout: Layout) -> dict[str, np.ndarray]:
  """The cache's arrays in host RAM. One larger than the machine's RAM (a raised
  config.cache.ram_budget_gb) was a MemoryError traceback, or the trainer killed by the OOM
  killer once encoding had filled it (hours at AVA's size)."""
  problem = _ram_problem(layout)
  if problem:
    raise TrainingError(problem)
  return {k: np.empty(s, layout.dtype) for k, s in layout.shapes().items()}


def _manifest(key: str, layout: Layout) -> dict:
  return {'version': FORMAT_VERSION, 'key': key, 'dtype': layout.dtype.name,
          'shapes': {k: list(s) for k, s in layout.shapes().items()}}


def open_committed(directory: Path, key: str, layout: Layout) -> dict[str, np.ndarray] | None:
  """The committed entry `<directory>/<key>/` as read-only memmaps, or None if absent or not
  what `layout` describes (sizes checked too: a truncated file is not used)."""
  entry = directory / key
  try:
    manifest = json.loads((entry / 'manifest.json').read_text())
  except (OSError, ValueError):
    return None
  if manifest != _manifest(key, layout):
    return None
  out = {}
  for name, shape in layout.shapes().items():
    path = entry / f'{name}.bin'
    want = int(np.prod(shape)) * layout.dtype.itemsize
    if not path.is_file() or path.stat().st_size != want:
      return None
    out[name] = (np.memmap(path, layout.dtype, 'r', shape=shape) if want
                 else np.empty(shape, layout.dtype))
  return out


class DiskWriter:
  """Writable memmaps in `<directory>/<key>.partial/`; `commit()` publishes them atomically."""

  def __init__(self, directory: Path, key: str, layout: Layout):
    self.directory, self.key, self.layout = directory, key, layout
    directory.mkdir(parents=True, exist_ok=True)
    self.partial = directory / f'{key}.partial'
    # Killed builds' folders, of this key or another (the settings changed since): never
    # reused, and their space counts against this build's.
    for p in directory.iterdir():
      if p.name.endswith('.partial') and _ENTRY.match(p.name) and p.is_dir():
        shutil.rmtree(p)
    free = shutil.disk_usage(directory).free
    if layout.total_bytes > free:
      raise self._no_room(f'{_fmt_bytes(free)} are free')
    self.partial.mkdir()
    self.arrays = {}
    try:
      for name, shape in layout.shapes().items():
        path = self.partial / f'{name}.bin'
        nbytes = int(np.prod(shape)) * layout.dtype.itemsize
        with open(path, 'wb') as f:
          io_lib.reserve_space(f, nbytes)  # not SIGBUS mid-build on a full disk
          f.truncate(nbytes)  # the size, also where allocating ahead is not supported
        self.arrays[name] = (np.memmap(path, layout.dtype, 'r+', shape=shape) if nbytes
                             else np.empty(shape, layout.dtype))
    except OSError as e:
      self.abort()
      if e.errno not in io_lib.NO_ROOM_ERRNOS:
        raise
      raise self._no_room(f'allocating it failed: {e.strerror}') from None

  def abort(self) -> None:
    """Removes the unfinished build (its files hold the whole cache's allocated size)."""
    self.arrays = {}
    shutil.rmtree(self.partial, ignore_errors=True)

  def _no_room(self, why: str) -> TrainingError:
    return TrainingError(
        f'{self.directory}: the feature cache needs {_fmt_bytes(self.layout.total_bytes)} on '
        f'disk and {why}; free space, or lower config.cache.num_train_views, '
        "or set config.cache.dtype='float16'")

  def commit(self) -> dict[str, np.ndarray]:
    """Flushes, writes the manifest last, renames `.partial` → `<key>`; read-only memmaps."""
    for a in self.arrays.values():
      if isinstance(a, np.memmap):
        a.flush()
    self.arrays = {}
    for path in self.partial.iterdir():
      with open(path, 'rb+') as f:
        os.fsync(f.fileno())
    tmp = self.partial / 'manifest.json.tmp'
    tmp.write_text(json.dumps(_manifest(self.key, self.layout)))
    os.replace(tmp, self.partial / 'manifest.json')
    final = self.directory / self.key
    if final.exists():  # a committed entry that did not match the layout
      shutil.rmtree(final)
    os.replace(self.partial, final)
    remove_stale(self.directory, keep=self.key)
    out = open_committed(self.directory, self.key, self.layout)
    assert out is not None
    return out


def remove_stale(directory: Path, keep: str) -> None:
  """Deletes cache entries (and partial builds) other than `keep` from `directory`."""
  for p in directory.iterdir():
    if p.name != keep and _ENTRY.match(p.name) and p.is_dir():
      shutil.rmtree(p, ignore_errors=True)
