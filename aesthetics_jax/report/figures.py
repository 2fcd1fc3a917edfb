"""Moved (2026-12): the overlays to `report.overlays`, the charts to `report.charts`.

This module did both jobs and switched matplotlib to the Agg backend on import, which changed
the backend of anyone importing `aesthetics_jax.api`. Its names still resolve here, with a
DeprecationWarning naming their new module.
"""
from __future__ import annotations

from aesthetics_jax import moved

__getattr__ = moved.forwarder(__name__, {
    **moved.table('aesthetics_jax.report.overlays', (
        'BOX_COLOURS', 'LEGEND_MIN_WIDTH', 'LEGEND_BACKGROUND', 'FOLD_ASPECT',
        'FOLD_TARGET_ASPECT', 'overlay', 'box_width', 'fold_count', 'fold', 'fold_with_legend',
        'draw_boxes', 'save_png', 'full_frame', 'aesthetic_title', 'add_legend')),
    **moved.table('aesthetics_jax.report.charts', (
        'FEW_IMAGES', 'examples_figure', 'intensity_scatter', 'bucket_maps_figure',
        'concentration_figure', 'image_bucket_maps_figure', 'curves_figure')),
})
