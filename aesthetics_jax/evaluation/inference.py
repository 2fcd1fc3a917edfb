"""Moved (2026-12): this module did four jobs; its names now live in
`forward` (make_forward, layer_maps_many, target_names, ...), `image_files` (load_image,
overlay_grid, crop_image, WORK_SIDE, PredictError, ...), `records` (score_fields, box_fields,
to_json_line, ...) and `predictor` (Predictor, check_box_threshold). They still resolve here,
with a DeprecationWarning naming their new module.
"""
from __future__ import annotations

import importlib
import warnings

# Where each moved name lives now (looked up without importing the others: `records` and
# `image_files` load no JAX).
_MOVED = {
    **dict.fromkeys(('make_forward', 'layer_maps', 'layer_maps_many', 'method_passes',
                     'features_until_fn', 'target_names', 'split_maps'), 'forward'),
    **dict.fromkeys(('load_image', 'overlay_grid', 'crop_image', 'rgb_icc_profile', 'with_icc',
                     'PredictError', 'WORK_SIDE', 'WORK_MAX_PIXELS', 'OVERLAY_MAX_SIDE',
                     'OVERLAY_MIN_SIDE', 'EXTREME_ASPECT', 'CROP_MAX_PIXELS'), 'image_files'),
    **dict.fromkeys(('score_fields', 'box_fields', 'non_finite_rows', 'output_stem',
                     'write_error', 'to_json_line', 'DEFAULT_TOP_K'), 'records'),
    **dict.fromkeys(('Predictor', 'check_box_threshold'), 'predictor'),
}


def __getattr__(name: str):
  if name in _MOVED:
    module = f'aesthetics_jax.evaluation.{_MOVED[name]}'
    warnings.warn(f'aesthetics_jax.evaluation.inference.{name} moved to {module}.{name}',
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
