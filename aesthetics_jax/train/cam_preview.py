"""Grad-CAM overlays of a few fixed test images, logged to TensorBoard at each evaluation.

The same images every time (the first `n` of the test split, eval-preprocessed to S²), so the
maps can be compared across steps. One jitted function (encoder features, head vjp, per-image
min-max) is compiled once; it runs on one local device of the writing process, with the
replicated train state's local copy, so other processes do no extra work.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from aesthetics_jax.data import preprocess
from aesthetics_jax.explain import cam
from aesthetics_jax.report import overlays

METHOD = 'gradcam'
TARGET = 'aesthetic'


def make_cam_fn(model, arch: str, normalize: str) -> Callable[[Any, np.ndarray], jax.Array]:
  """jitted `(variables, images uint8 [N,S,S,3]) -> maps f32 [N,h,w]` in [0, 1] per image."""
  target_fn = cam.targets_for(arch, (TARGET,))

  @jax.jit
  def cam_fn(variables, images):
    x = preprocess.to_model_input(images, normalize=normalize)
    feats = model.apply(variables, x, train=False, method='features')
    head_fn = lambda a: model.apply(variables, a, train=False, method='head')  # noqa: E731
    maps = cam.compute(METHOD, head_fn, feats, target_fn)[:, 0]
    return cam.normalize(maps, 'per_image')

  return cam_fn


def local_copy(tree: Any) -> Any:
  """Replicated global arrays → this process's copy on its first local device."""
  return jax.tree.map(lambda a: a.addressable_data(0), tree)


class CamPreview:
  """`preview(variables) -> {'cam/<image_id>': uint8 [S,S,3]}` for the first `n` test images."""

  def __init__(self, model, config, test_source: Sequence, n: int):
    size = int(config.input.image_size)
    rows = range(min(int(n), len(test_source)))
    records = [test_source[i] for i in rows]
    self.image_ids = [int(r['image_id']) for r in records]
    self.images = np.stack([preprocess.preprocess_eval_np(r['image'], size) for r in records])
    self._cam_fn = make_cam_fn(model, str(config.model.arch),
                               str(config.input.normalize))

  def __call__(self, variables: Any) -> dict[str, np.ndarray]:
    maps = np.asarray(self._cam_fn(local_copy(variables), self.images))
    return {f'cam/{i}': overlays.overlay(img, m)
            for i, img, m in zip(self.image_ids, self.images, maps)}
