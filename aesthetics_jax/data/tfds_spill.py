"""TFDS's example shuffler without TensorFlow, for splits over its 1 GB memory buffer.

While writing a split, TFDS (4.9) keeps serialized examples in memory up to
`shuffle.MAX_MEM_BUFFER_SIZE` (1 GB), then spills them to temporary bucket files through
`tf.io.gfile`; without TensorFlow installed that spill fails with "No module named
'tensorflow'". The style subset at the paper's scale (8,900 original JPEGs, ~1.3 GB) crosses
it. `gfile_without_tensorflow()` gives the shuffler the four `tf` names it uses (GFile, exists,
remove, ResourceExhaustedError) backed by etils.epath while a dataset is written; with
TensorFlow installed it changes nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import types
from typing import Iterator

from etils import epath


class _ResourceExhaustedError(OSError):
  """Stands in for tf.errors.ResourceExhaustedError (never raised by epath)."""

  @property
  def message(self) -> str:
    return str(self)


def _gfile(path, mode: str = 'r'):
  return epath.Path(path).open(mode)


def _exists(path) -> bool:
  return epath.Path(path).exists()


def _remove(path) -> None:
  epath.Path(path).unlink()


SHIM = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=_gfile, exists=_exists,
                                                         remove=_remove)),
    errors=types.SimpleNamespace(ResourceExhaustedError=_ResourceExhaustedError))


@contextlib.contextmanager
def gfile_without_tensorflow() -> Iterator[None]:
  """While active, TFDS's shuffler spills to disk through epath when TensorFlow is absent."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec('tensorflow') is not None or not hasattr(shuffle, 'tf'):
    yield
    return
  saved = shuffle.tf
  shuffle.tf = SHIM
  try:
    yield
  finally:
    shuffle.tf = saved
