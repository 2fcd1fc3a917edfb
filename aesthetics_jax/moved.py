"""Names that moved to another module, still found where they were, with a DeprecationWarning.

`forwarder(old, table)` is a module `__getattr__` (PEP 562) for the old module: `table` maps
each moved name to the module now holding it, imported only when the name is asked for (a
forwarder of JAX-free names loads no JAX). Used by the modules split in 2026-12: preprocess
(-> data.decoder), parallel (-> cpu_backend), report.figures, train.checkpoints,
evaluation.inference and data.dataset (-> data.selection).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Mapping
import warnings


def table(module: str, names: Iterable[str]) -> dict[str, str]:
  """{name: module} for each of `names`."""
  return dict.fromkeys(names, module)


def forwarder(old: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
  """A `__getattr__` for module `old` resolving the names of `moved` ({name: new module})."""

  def __getattr__(name: str) -> Any:
    if name in moved:
      warnings.warn(f'{old}.{name} moved to {moved[name]}.{name}', DeprecationWarning,
                    stacklevel=2)
      return getattr(importlib.import_module(moved[name]), name)
    raise AttributeError(f'module {old!r} has no attribute {name!r}')

  return __getattr__
