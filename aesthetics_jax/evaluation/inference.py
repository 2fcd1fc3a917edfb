"""Moved (2026-12): this module did four jobs; its names now live in
`forward` (make_forward, layer_maps_many, target_names, ...), `image_files` (load_image,
overlay_grid, crop_image, WORK_SIDE, PredictError, ...), `records` (score_fields, box_fields,
to_json_line, ...) and `predictor` (Predictor, check_box_threshold). They still resolve here,
with a DeprecationWarning naming their new module.
"""
from __future__ import annotations

import importlib
import warnings

_MODULES = ('forward', 'image_files', 'records', 'predictor')


def __getattr__(name: str):
  if not name.startswith('__'):
    for module in _MODULES:  # in order: where a name is defined before where it is imported
      mod = importlib.import_module(f'aesthetics_jax.evaluation.{module}')
      if hasattr(mod, name):
        warnings.warn(f'aesthetics_jax.evaluation.inference.{name} moved to '
                      f'aesthetics_jax.evaluation.{module}.{name}', DeprecationWarning,
                      stacklevel=2)
        return getattr(mod, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
