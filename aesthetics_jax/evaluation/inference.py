"""Moved (2026-12): this module did four jobs; its names now live in
`forward` (make_forward, layer_maps_many, target_names, ...), `image_files` (load_image,
overlay_grid, crop_image, WORK_SIDE, PredictError, ...), `records` (score_fields, box_fields,
to_json_line, ...) and `predictor` (Predictor, check_box_threshold). They still resolve here,
with a DeprecationWarning naming their new module.
"""
from __future__ import annotations

from aesthetics_jax import moved

_NEW = 'aesthetics_jax.evaluation.'
# Looked up without importing the others: `records` and `image_files` load no JAX.
__getattr__ = moved.forwarder(__name__, {
    **moved.table(_NEW + 'forward', (
        'make_forward', 'layer_maps', 'layer_maps_many', 'method_passes', 'features_until_fn',
        'target_names', 'split_maps')),
    **moved.table(_NEW + 'image_files', (
        'load_image', 'overlay_grid', 'crop_image', 'rgb_icc_profile', 'with_icc',
        'PredictError', 'WORK_SIDE', 'WORK_MAX_PIXELS', 'OVERLAY_MAX_SIDE', 'OVERLAY_MIN_SIDE',
        'EXTREME_ASPECT', 'CROP_MAX_PIXELS')),
    **moved.table(_NEW + 'records', (
        'score_fields', 'box_fields', 'non_finite_rows', 'output_stem', 'write_error',
        'to_json_line', 'DEFAULT_TOP_K')),
    **moved.table(_NEW + 'predictor', ('Predictor', 'check_box_threshold')),
})
