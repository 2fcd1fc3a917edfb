"""How informative the suggested boxes are over the test split.

A box is only worth suggesting when the map it comes from points somewhere: this counts the
maps that point nowhere (`crop.empty_maps`), how many different boxes the split gets and how
many of them keep the whole frame — a tool whose every box is the full frame, or the same
box, suggests nothing.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from aesthetics_jax.evaluation import streaming


def run(test: streaming.SplitSummary,
        image_boxes: Sequence[tuple[tuple[int, int], Mapping]]) -> dict[str, Any]:
  """Box statistics of the aesthetic map (`box_aesthetic`).

  `empty_maps` (count and share), `distinct_boxes` among images with a non-empty map (on the
  S×S model-input grid), `full_frame_boxes` and `full_frame_box_share` among them; MobileNetV2
  also `empty_attribute_maps`. image_boxes: per test image ((H, W), `crop.image_boxes`' boxes),
  the boxes of per_image.csv and predict: the full frame is counted on them (on the S×S grid
  it was 232 of 300 where the CSV had 228).
  """
  empty = np.asarray(test.maps['empty_aesthetic'], bool)
  boxes = np.asarray(test.maps['box_aesthetic'])[~empty]
  full = np.array([tuple(int(v) for v in b['aesthetic']) == (0, 0, *hw)
                   for (hw, b), e in zip(image_boxes, empty) if not e], bool)
  n = int(empty.size)
  out = {'empty_maps': int(empty.sum()), 'empty_map_share': float(empty.mean()) if n else 0.0,
         'distinct_boxes': int(len({tuple(b) for b in boxes.tolist()})),
         'full_frame_boxes': int(full.sum()),
         'full_frame_box_share': float(full.mean()) if full.size else float('nan')}
  if 'empty_attribute' in test.maps:
    out['empty_attribute_maps'] = int(np.asarray(test.maps['empty_attribute'], bool).sum())
  return out
