"""Moved (2026-12): the overlays to `report.overlays`, the charts to `report.charts`.

This module did both jobs and switched matplotlib to the Agg backend on import, which changed
the backend of anyone importing `aesthetics_jax.api`. Its names still resolve here, with a
DeprecationWarning naming their new module.
"""
from __future__ import annotations

import importlib
import warnings


def __getattr__(name: str):
  if not name.startswith('__'):
    for module in ('overlays', 'charts'):
      mod = importlib.import_module(f'aesthetics_jax.report.{module}')
      if hasattr(mod, name):
        warnings.warn(f'aesthetics_jax.report.figures.{name} moved to '
                      f'aesthetics_jax.report.{module}.{name}', DeprecationWarning, stacklevel=2)
        return getattr(mod, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
