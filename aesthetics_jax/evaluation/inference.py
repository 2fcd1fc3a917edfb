"""Inference on image files: scores, CAMs, suggested boxes and crops (library of launch.predict).

`Predictor` restores a checkpoint once and runs one jitted function per batch:
features → head → CAMs for the aesthetic target (+ all 10 score buckets and the top
predicted tag for the two-headed MobileNetV2), all from ONE feature map (the encoder runs once).
The evaluation job (`evaluation/run.py`) reuses the same jitted function over the test split.

Boxes are `(y0, x0, y1, x1)`, end-exclusive, in ORIGINAL image pixel coordinates
(`crop.image_boxes`: the map is brought back to the original aspect before boxes are taken).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from aesthetics_jax.evaluation import ground_truth
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop
from aesthetics_jax.report import figures
from aesthetics_jax.data import preprocess
from aesthetics_jax import parallel
from aesthetics_jax.train import checkpoints
from aesthetics_jax import models
from aesthetics_jax.models import outputs as outputs_lib


class PredictError(ValueError):
  """One-line user error about a single input image."""


def non_finite_rows(*parts: dict[str, np.ndarray]) -> np.ndarray:
  """bool [N]: rows with a NaN/inf in any floating field of the given `{name: [N, ...]}`
  dicts (predictions, maps). Such outputs are never reported as numbers."""
  bad = None
  for part in parts:
    for v in part.values():
      v = np.asarray(v)
      if v.ndim == 0 or not np.issubdtype(v.dtype, np.floating):
        continue
      row = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
      bad = row if bad is None else bad | row
  return np.zeros((0,), bool) if bad is None else bad


def target_names(arch: str) -> tuple[str, ...]:
  """CAM targets computed per image, in output order along the target axis."""
  return ('aesthetic', 'bucket', 'top_tag') if arch == 'mobilenet_v2' else ('aesthetic',)


def split_maps(maps: np.ndarray, arch: str) -> dict[str, np.ndarray]:
  """[B, T, h, w] (targets as in `target_names`) → {'aesthetic': [B,h,w], 'bucket':
  [B,10,h,w], 'top_tag': [B,h,w]} (the last two for MobileNetV2 only)."""
  out = {'aesthetic': maps[:, 0]}
  if arch == 'mobilenet_v2':
    out['bucket'] = maps[:, 1:11]
    out['top_tag'] = maps[:, 11]
  return out


def layer_maps(model, variables, layers: Sequence[str], method: str, first: jax.Array,
               x: jax.Array, target_fn):
  """(outputs, maps) from the activation `first` at `layers[0]` (call inside jit).

  One layer: raw maps [B,T,h,w] at it. Several: each activation feeds the next segment
  (`features_between`), one vjp yields every layer's gradients, and the maps are fused as
  pytorch-grad-cam does (`cam.fuse_layers`): [B,T,S,S], min-max scaled per map.
  x: the model input [B,S,S,3] (ScoreCAM re-runs the model on masked copies of it).
  """
  steps = [functools.partial(model.apply, variables, after=a, until=b,
                             method='features_between')
           for a, b in zip(layers[:-1], layers[1:])]
  steps.append(functools.partial(model.apply, variables, layer=layers[-1], method='rest'))
  outputs = first
  for step in steps:
    outputs = step(outputs)
  kw = (dict(model_fn=lambda im: model.apply(variables, im), images=x)
        if method == 'scorecam' else {})
  maps = cam.compute_layers(method, steps, first, target_fn, **kw)
  return outputs, (maps[0] if len(maps) == 1 else cam.fuse_layers(maps, x.shape[1:3]))


def make_forward(model, arch: str, method: str, normalize: str | None,
                 names: Sequence[str] | None = None, layers: Sequence[str] | str | None = None):
  """jitted `(variables, x) -> (predict_outputs dict [B,...], maps f32 [B,T,h,w])`.

  x: uint8 [B,S,S,3], or model input f32 [B,S,S,3] when `normalize is None` (eval batches).
  layers: torchvision module paths of the CAM layers (`config.eval.cam_layers`); empty or None:
    the encoder's output (`model.default_layer`). Unknown names raise a one-line ValueError here.
  One layer: raw maps [B,T,h,w] at that layer; the encoder runs once up to the layer
  (`features_until`), the rest of the network and its vjp run on that activation. Several
  layers: the network runs once, each layer's activation feeding the next segment
  (`features_between`), one vjp yields every layer's gradients, and the maps are fused as
  pytorch-grad-cam does (`cam.fuse_layers`): [B,T,S,S], already min-max scaled per map.
  """
  names = tuple(names or target_names(arch))
  layers = models.resolve_layers(model, layers)
  target_fn = cam.targets_for(arch, names)
  # Encoder in micro-batches on CPU (~3x there, same result; whole batch on accelerators).
  chunk, num_shards = parallel.default_chunk(), jax.device_count()

  @jax.jit
  def forward(variables, x):
    if normalize is not None:
      x = preprocess.to_model_input(x, normalize=normalize)
    first = parallel.map_batch(
        lambda xi: model.apply(variables, xi, layers[0], method='features_until'), x, chunk,
        num_shards)
    outputs, maps = layer_maps(model, variables, layers, method, first, x, target_fn)
    return outputs_lib.predict_outputs(outputs, arch), maps

  return forward


def load_image(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as uint8 [H,W,3]; PredictError (one line) if missing or corrupt."""
  p = Path(path)
  if not p.is_file():
    raise PredictError(f'{p}: no such file; check the path')
  try:
    return preprocess.decode_image(p.read_bytes())
  except Exception as e:  # any decoder failure is a user-facing, per-file error
    cause = type(e.__cause__ or e).__name__
    raise PredictError(f'{p}: not a readable image ({cause}); pass a valid JPEG/PNG file')


class Predictor:
  """A restored model ready for `predict_arrays` / `predict_files`."""

  def __init__(self, workdir: str | os.PathLike, step: int | None = None,
               cam_method: str | None = None, cam_layers: Sequence[str] | str | None = None,
               overrides: dict[str, Any] | None = None):
    """`cam_method` / `cam_layers` (torchvision module paths, e.g. ('features.14',
    'features.18')) default to the checkpoint's `config.eval.cam_method` / `.cam_layers`;
    `overrides`: dotted `eval.*` keys for this predictor (`{'eval.box_threshold': 0.4}`)."""
    self.model, self.variables, self.config, self.step = checkpoints.restore_for_inference(
        workdir, step)
    self.config.update_from_flattened_dict(dict(overrides or {}))
    self.arch = str(self.config.model.arch)
    self.size = int(self.config.input.image_size)
    self.method = cam_method or str(self.config.eval.cam_method)
    self.threshold = float(self.config.eval.box_threshold)
    self.tag_names = ground_truth.tag_names(self.config)
    # load_config fills cam_layers for checkpoints written before it existed: () = the
    # encoder's output.
    self.cam_layers = models.resolve_layers(self.model,
                                            cam_layers or tuple(self.config.eval.cam_layers))
    self.forward = make_forward(self.model, self.arch, self.method,
                                str(self.config.input.normalize), layers=self.cam_layers)
    self.mesh = parallel.make_mesh()
    self.num_devices = self.mesh.devices.size
    # Replicated over the mesh: the batch axis of the inputs is sharded over all devices.
    self.variables = parallel.replicate(jax.device_get(self.variables), self.mesh)

  def run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """uint8 [B,S,S,3] → (predict_outputs fields [B,...], maps by target [B,(10,)h,w]: raw at
    one CAM layer, fused at the input size [B,(10,)S,S] for several)."""
    x, b = parallel.pad_to_multiple(x, self.num_devices)
    xs = jax.device_put(x, parallel.data_sharding(self.mesh))
    pred, maps = self.forward(self.variables, xs)
    pred = {k: np.asarray(v)[:b] for k, v in pred.items()}
    return pred, {k: v[:b] for k, v in split_maps(np.asarray(maps), self.arch).items()}

  def describe(self, image: np.ndarray, pred: dict[str, np.ndarray], maps: dict[str, Any],
               i: int, aspect: str | None = None) -> tuple[dict, dict]:
    """JSON fields and box/overlay data for image i of a batch (image: original uint8)."""
    h, w = image.shape[:2]
    rec: dict[str, Any] = {}
    if 'mean_score' in pred and self.arch == 'mobilenet_v2':
      rec['mean_score'] = round(float(pred['mean_score'][i]), 4)
      rec['distribution'] = [round(float(v), 4) for v in pred['distribution'][i]]
    if 'p_high' in pred:
      rec['p_high'] = round(float(pred['p_high'][i]), 4)
    rec['label'] = 'high' if int(pred['label_pred'][i]) == 1 else 'low'
    if 'tag_probs' in pred:
      rec['top_tag'] = int(np.argmax(pred['tag_probs'][i])) + 1  # AVA tag ids start at 1
      if rec['top_tag'] in self.tag_names:
        rec['top_tag_name'] = self.tag_names[rec['top_tag']]
    d = crop.image_boxes(maps['aesthetic'][i], maps['top_tag'][i] if 'top_tag' in maps else None,
                         (h, w), self.threshold, aspect)
    boxes = {k: v.tolist() for k, v in d['boxes'].items()}
    # An empty map points nowhere: say so instead of suggesting the whole frame.
    rec['map'] = 'empty' if d['empty']['aesthetic'] else 'ok'
    rec['box'] = boxes.get('average', boxes.get('aesthetic'))
    rec['boxes'] = boxes
    vis = {'aesthetic_map': d['aesthetic_map'], 'attribute_map': d['attribute_map'],
           'boxes': boxes}
    return rec, vis

  def predict_files(self, paths: Sequence[str], overlay_dir: str | None = None,
                    crop_dir: str | None = None, aspect: str | None = None,
                    batch_size: int = 8) -> Iterator[dict]:
    """Yields one JSON-able dict per path, in order; a bad file yields {'path', 'error'}."""
    if aspect:
      crop.parse_aspect(aspect)
    if crop_dir and not aspect:
      aspect = None  # crop_dir alone: crop the suggested (average / aesthetic) box
    for start in range(0, len(paths), batch_size):
      chunk = list(paths[start:start + batch_size])
      images, errors = {}, {}
      for j, p in enumerate(chunk):
        try:
          images[j] = load_image(p)
        except PredictError as e:
          errors[j] = str(e)
      results = {}
      if images:
        order = sorted(images)
        x = np.stack([preprocess.preprocess_eval_np(images[j], self.size) for j in order])
        pred, maps = self.run(x)
        non_finite = non_finite_rows(pred, maps)
        for k, j in enumerate(order):
          if non_finite[k]:  # never print NaN as a score (nor as invalid JSON)
            errors[j] = (f'{chunk[j]}: the model output is not finite (NaN/inf) for this image; '
                         f'checkpoint {self.step} holds non-finite weights or training '
                         'diverged: pass another --step or retrain')
            continue
          rec, vis = self.describe(images[j], pred, maps, k, aspect)
          stem = f'{start + j:04d}_{Path(chunk[j]).stem}'
          if overlay_dir:
            img = figures.overlay(images[j], vis['aesthetic_map'])
            img = figures.draw_boxes(img, {k2: v for k2, v in vis['boxes'].items()},
                                     width=max(2, max(images[j].shape[:2]) // 200))
            out = Path(overlay_dir) / f'{stem}_cam.png'
            figures.save_png(out, img)
            rec['overlay'] = str(out)
          if crop_dir and rec['box'] is not None:
            y0, x0, y1, x1 = vis['boxes'].get('crop', rec['box'])
            out = Path(crop_dir) / f'{stem}_crop.png'
            figures.save_png(out, images[j][y0:y1, x0:x1])
            rec['crop'] = str(out)
          results[j] = rec
      for j, p in enumerate(chunk):
        if j in errors:
          yield {'path': str(p), 'error': errors[j]}
        else:
          yield {'path': str(p), **results[j]}


def to_json_line(rec: dict) -> str:
  """One valid JSON line (JSON has no NaN: a non-finite number becomes an error record)."""
  try:
    return json.dumps(rec, sort_keys=False, allow_nan=False)
  except ValueError:
    return json.dumps({'path': rec.get('path'), 'error': 'non-finite number in the output'})
