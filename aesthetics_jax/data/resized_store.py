"""Training images decoded and resized once, when the dataset is prepared: uint8 [N, R, R, 3].

The training pipeline's first step on every image is deterministic (decode, then resize to
R² = `config.input.resize_size`²; the random crop and flip come after it), so it can be done
once per dataset instead of once per run and epoch. `build` writes it as one `.npy` file per
(split, R) beside the TFDS dataset; `attach` gives the pipeline a source whose rows also have
`resized(i)` (a memory-mapped row), and the pipeline then crops from it instead of decoding:
the batches are bit-identical to decoding (tests), the first epoch costs a copy per image
instead of a JPEG decode and a resize (~2 ms of a core each on a 2-core EPYC against the
model's ~13.5 ms: what kept the model fed by decoding at ~0.8 of its rate), and an accelerator
host's cores feed many more images a second.

Size: R² x 3 bytes an image, 192 KiB at R = 256 (1.75 GB for the 8,900 style-subset training
images). The file is written under a temporary name and renamed when complete, so a killed or
failed build leaves nothing that `attach` would use (a disk that fills is an ENOSPC OSError,
the temporary file removed: rows are written, not memory-mapped, which died of SIGBUS); one
made from another dataset (a record beside it holds the TFDS dataset's `fingerprint`) or whose
shape does not match its split (a truncated copy) is ignored with a warning, and the pipeline
decodes.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import tqdm
from absl import logging

from aesthetics_jax import cpu_backend
from aesthetics_jax import io as io_lib
from aesthetics_jax.data import decoder
from aesthetics_jax.data import resize

# Beside the TFDS dataset folder (`<data_dir>/ava/<subset>/<version>`), not inside it:
# `<data_dir>/ava/<subset>/resized/<version>-<split>-<R>.npy`.
FOLDER = 'resized'


def path(dataset_dir: str | os.PathLike, split: str, size: int) -> Path:
  """The store of `split` at R = `size` for the TFDS dataset folder `dataset_dir`."""
  d = Path(dataset_dir)
  return d.parent / FOLDER / f'{d.name}-{split}-{int(size)}.npy'


def fingerprint(dataset_dir: str | os.PathLike) -> str:
  """What ties a store to the dataset it was made from: the sha256 of the TFDS folder's
  `dataset_info.json` (its splits' example counts and bytes) and of the `build_id` that each
  prepare writes into its `metadata.json`, so that a dataset prepared again in the same place
  (another AVA root, other images: even swapped ones, of the same sizes) never uses the old
  images. ('' without dataset_info.json; a dataset prepared before build ids has none.)"""
  d = Path(dataset_dir)
  info = d / 'dataset_info.json'
  if not info.is_file():
    return ''
  h = hashlib.sha256(info.read_bytes())
  try:
    meta = json.loads((d / 'metadata.json').read_text())
  except (OSError, ValueError):
    meta = {}
  build = meta.get('build_id') if isinstance(meta, dict) else None
  if isinstance(build, str) and build:
    h.update(f'\0build_id {build}'.encode())
  return h.hexdigest()


def _sidecar(file: Path) -> Path:
  return file.with_suffix('.json')


def build(source: Sequence, size: int, out: str | os.PathLike, workers: int = 0,
          progress: bool = True, desc: str = 'resized images', dataset: str = '') -> Path:
  """Writes every row of `source` (records with JPEG/PNG 'image' bytes) decoded and resized
  to size² (`resize.resize_train_np`, as the pipeline would) to `out`, atomically, and
  beside it `<out>.json` with `dataset` (its `fingerprint`), the shape and the decoder's
  `RULE`.

  workers: decode threads (0: one per CPU core). Returns `out`. A disk that fills is an
  OSError (ENOSPC), with nothing left behind.
  """
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f'.{out.name}.{os.getpid()}.tmp')
  n, size = len(source), int(size)
  shape = (n, size, size, 3)

  def one(i: int) -> np.ndarray:
    rec = source[i]
    return resize.resize_train_np(rec['image'], size, f"image_id {int(rec['image_id'])} (row {i})")

  try:
    # Plain writes, in row order, not a memory map: a page of a map that the disk has no room
    # for kills the process with SIGBUS (exit 135, this file left behind); a write says ENOSPC.
    with open(tmp, 'wb') as f:
      np.lib.format.write_array_header_1_0(f, {'descr': '|u1', 'fortran_order': False,
                                               'shape': shape})
      io_lib.reserve_space(f, f.tell() + n * size * size * 3)
      w = workers or cpu_backend.host_cpu_count()
      # Rows in windows of 16 per thread: bounded futures (AVA's 255,000 rows made 255,000 at
      # once) and memory, and a bad image stops the build within a window.
      with concurrent.futures.ThreadPoolExecutor(w) as pool, \
          tqdm.tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, n, 16 * w):
          for row in pool.map(one, range(start, min(n, start + 16 * w))):
            f.write(row.tobytes())
            bar.update()
      f.flush()
      os.fsync(f.fileno())
    _sidecar(out).unlink(missing_ok=True)  # an older store's record never vouches for this one
    os.replace(tmp, out)
    # Written last: a store without it (a build killed before) is not used.
    io_lib.atomic_write_text(_sidecar(out), json.dumps(
        {'dataset': dataset, 'rows': n, 'size': size, 'decoder': decoder.RULE}) + '\n')
  finally:
    tmp.unlink(missing_ok=True)
  return out


def load(file: str | os.PathLike, rows: int, size: int, dataset: str = '') -> np.ndarray | None:
  """The store in `file`, memory-mapped read-only, if it holds `rows` images of size² made
  from `dataset` (a `fingerprint`) by this decoder `RULE`; else None (no file: silently; one
  of another dataset, rule or shape, an unfinished or a damaged one: with a warning)."""
  file = Path(file)
  if not file.is_file():
    return None
  try:
    made = json.loads(_sidecar(file).read_text())
  except (OSError, ValueError):
    made = None
  if not isinstance(made, dict) or made.get('dataset') != dataset:
    logging.warning('%s: not made from this dataset (%s); decoding the training images '
                    'instead (rerun aesthetics-prepare-data to rebuild it)', file,
                    'no record of its build' if not isinstance(made, dict) else
                    'prepared again since')
    return None
  if made.get('decoder') != decoder.RULE:  # its pixels are not the ones the decoder gives now
    logging.warning('%s: decoded by an earlier rule (%s: before colour profiles were applied); '
                    'decoding the training images instead (rerun aesthetics-prepare-data to '
                    'rebuild it)', file, made.get('decoder', 'unnamed'))
    return None
  try:
    store = np.load(file, mmap_mode='r')
  except (ValueError, OSError) as e:
    logging.warning('%s: unreadable (%s); decoding the training images instead (rerun '
                    'aesthetics-prepare-data to rebuild it)', file, e)
    return None
  want = (int(rows), int(size), int(size), 3)
  if store.shape != want or store.dtype != np.uint8:
    logging.warning('%s: holds %s %s, not the %s uint8 of this split; decoding the training '
                    'images instead (rerun aesthetics-prepare-data to rebuild it)', file,
                    store.dtype, store.shape, want)
    return None
  return store


class WithResized(Sequence):
  """`source`'s records, and `resized(i)`: row i decoded and resized to R² (uint8 [R, R, 3],
  a read-only memory-mapped row of `store`; R = `resized_size`)."""

  def __init__(self, source: Sequence, store: np.ndarray):
    if len(store) != len(source):
      raise ValueError(f'resized store of {len(store)} rows for a source of {len(source)}')
    self.source, self.store, self.resized_size = source, store, int(store.shape[1])

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]

  def __getitems__(self, indices):
    getitems = getattr(self.source, '__getitems__', None)
    return list(getitems(indices)) if getitems is not None else [self.source[i] for i in indices]

  def resized(self, i: int) -> np.ndarray:
    return self.store[int(i)]


def attach(source: Sequence, dataset_dir: str | os.PathLike, split: str,
           size: int) -> Sequence:
  """`source` as a `WithResized` when `dataset_dir` has a matching store for `split` at
  `size`; else `source` itself."""
  store = load(path(dataset_dir, split, size), len(source), size, fingerprint(dataset_dir))
  return source if store is None else WithResized(source, store)


def resized_fn(source: Sequence, size: int):
  """`source.resized` when it has resized rows at `size` (through row views such as
  `validation.Rows`, which forward it); else None."""
  fn = getattr(source, 'resized', None)
  return fn if fn is not None and getattr(source, 'resized_size', None) == int(size) else None
