"""Inference on image files: scores, CAMs, suggested boxes and crops (library of launch.predict).

`Predictor` restores a checkpoint once and runs one jitted function per batch:
features → head → CAMs for the aesthetic target (+ all 10 score buckets and the top
predicted tag for the two-headed MobileNetV2), all from ONE feature map (the encoder runs once).
The evaluation job (`evaluation/run.py`) reuses the same jitted function over the test split.

Boxes are `(y0, x0, y1, x1)`, end-exclusive, in ORIGINAL image pixel coordinates of the
displayed image (EXIF orientation applied; `crop.image_boxes`: the map is brought back to the
original aspect before boxes are taken); the JSON records name the corners instead
(`box_fields`: {"x0", "y0", "x1", "y1"}, PIL's crop order), so nobody has to remember the order.

Bounded memory for any input (`decoder.decode`'s byte and pixel caps): each file is decoded
reduced to a working copy (both sides >= `WORK_SIDE` where the image is larger, at most
`WORK_MAX_PIXELS` pixels: a pixel budget, so a 40x20000 strip keeps its 40 rows) that feeds the
model and the overlays; overlays are drawn with their long side <= `OVERLAY_MAX_SIDE`, a thin
strip's with its short side up to `OVERLAY_MIN_SIDE` instead (`overlay_grid`, at most
`OVERLAY_MAX_SIDE`² pixels); crops are cut from the image decoded again, at full resolution up to
`CROP_MAX_PIXELS` (36 MP, whatever the aspect: a 40x20000 strip is cut at full size too),
beyond it JPEGs DCT-reduced to that many pixels and other formats (which PIL decodes only at
full size) cut from the working copy.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from PIL import Image

from aesthetics_jax.evaluation import ground_truth
from aesthetics_jax.evaluation import overrides as overrides_lib
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop
from aesthetics_jax.report import overlays
from aesthetics_jax.data import demo as demo_data
from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax import cpu_backend
from aesthetics_jax import parallel
from aesthetics_jax.train import restore
from aesthetics_jax import models
from aesthetics_jax.models import outputs as outputs_lib


# Working copy of each image (model input, overlays): both sides >= WORK_SIDE where the image
# is larger, at most WORK_MAX_PIXELS pixels (which wins: a long panorama). A pixel budget, not a
# long side: a 4096-px long side left a 40x20000 JPEG strip 5x2500, a smear at the model's
# 224x224; it now stays 40x20000.
WORK_SIDE = 1024
# 2048 x 4096: about the largest copy the former 4096-px long side allowed (a 2048x4095 photo
# was kept whole), so the largest copy is as large as before, and every copy that cap did not
# shrink (all photos up to 2:1) is the same.
WORK_MAX_PIXELS = 2 * WORK_SIDE * 4096
OVERLAY_MAX_SIDE = 1024  # long side of --overlay_dir images
# A thinner overlay keeps this short side (or the image's own, never enlarged) within
# OVERLAY_MAX_SIDE² pixels, a square photo's overlay: a 40x20000 strip's was 2x1024.
OVERLAY_MIN_SIDE = 128
# Beyond this aspect ratio a record carries a `note`: the model's square input squashes the
# image so far (a 40x20000 strip 500 times) that its score and maps say little.
EXTREME_ASPECT = 5
# Crops are cut at full resolution up to this many pixels (6000², 36 MP), from a reduced
# decode beyond (see the module docstring).
CROP_MAX_PIXELS = 6000 * 6000


class PredictError(ValueError):
  """One-line user error about a single input image."""


DEFAULT_TOP_K = 5


def box_fields(box: Sequence[int] | None) -> dict[str, int] | None:
  """`(y0, x0, y1, x1)` → `{"x0", "y0", "x1", "y1"}` (end-exclusive image pixels)."""
  if box is None:
    return None
  y0, x0, y1, x1 = (int(v) for v in box)
  return {'x0': x0, 'y0': y0, 'x1': x1, 'y1': y1}


def score_fields(pred: dict[str, np.ndarray], i: int, arch: str, tag_names: dict[int, str],
                 top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
  """Image i's scores as JSON-able fields.

  MobileNetV2: `mean_score` (1..10), `score_std` (spread of the predicted distribution),
  `distribution` [10], `p_high`, `label`, `tags` (the top_k of 66: {id, name, prob}).
  VGG16: `p_high`, `label`.
  """
  rec: dict[str, Any] = {}
  if arch == 'mobilenet_v2':
    dist = np.asarray(pred['distribution'][i], np.float64)
    mean = float(pred['mean_score'][i])
    rec['mean_score'] = round(mean, 4)
    rec['score_std'] = round(float(np.sqrt(dist @ (np.arange(1, dist.size + 1) - mean) ** 2)), 4)
    rec['distribution'] = [round(float(v), 4) for v in dist]
  if 'p_high' in pred:
    rec['p_high'] = round(float(pred['p_high'][i]), 4)
  rec['label'] = 'high' if int(pred['label_pred'][i]) == 1 else 'low'
  if 'tag_probs' in pred and top_k > 0:
    probs = np.asarray(pred['tag_probs'][i])
    order = np.argsort(-probs, kind='stable')[:top_k]
    rec['tags'] = [{'id': int(k) + 1, 'name': tag_names.get(int(k) + 1, f'tag {int(k) + 1}'),
                    'prob': round(float(probs[k]), 4)} for k in order]  # AVA ids start at 1
  return rec


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
  outputs, maps = layer_maps_many(model, variables, layers, (method,), first, x, target_fn)
  return outputs, maps[method]


def layer_maps_many(model, variables, layers: Sequence[str], methods: Sequence[str],
                    first: jax.Array, x: jax.Array, target_fn):
  """(outputs, {method: maps}): `layer_maps` for several methods at once (call inside jit).
  The gradient methods share one vjp (`cam.compute_layers_many`): one trace and one backward
  pass, where a function per method compiles and runs each."""
  steps = [functools.partial(model.apply, variables, after=a, until=b,
                             method='features_between')
           for a, b in zip(layers[:-1], layers[1:])]
  steps.append(functools.partial(model.apply, variables, layer=layers[-1], method='rest'))
  outputs = first
  for step in steps:
    outputs = step(outputs)
  kw = {}
  if 'scorecam' in methods:  # the full model on masked copies of x
    # On CPU one channel's B masked images per call, the encoder 2 images at a time (small
    # batches keep the caches warm, as features_fn); elsewhere 16 channels per call.
    chunk = parallel.default_chunk()
    encoder = parallel.features_fn(model, chunk, num_shards=1)
    kw = dict(model_fn=lambda im: model.apply(variables, encoder(variables, im), method='head'),
              images=x, batch_size=1 if chunk > 0 else 16)
  many = cam.compute_layers_many(tuple(methods), steps, first, target_fn, **kw)
  return outputs, {m: maps[0] if len(maps) == 1 else cam.fuse_layers(maps, x.shape[1:3])
                   for m, maps in many.items()}


def method_passes(methods: Sequence[str], n: int,
                  scorecam_images: int) -> list[tuple[int, list[str]]]:
  """[(images, methods)], most images first: one pass over the first n images for every
  method that covers them all (their maps come from one call, sharing the decode and the
  encoder), and ScoreCAM, which re-runs the model once per channel, in a pass of its own over
  its first `scorecam_images` (none when that is 0)."""
  passes: dict[int, list[str]] = {}
  for method in methods:
    m_n = min(n, int(scorecam_images)) if method == 'scorecam' else n
    if m_n > 0:
      passes.setdefault(m_n, []).append(method)
  return sorted(passes.items(), reverse=True)


def features_until_fn(model, layer: str):
  """jitted `(variables, x f32 [B,S,S,3]) -> activation at `layer` [B,h,w,C]`, one per
  (model, layer, compiler options) in a process: the faithfulness and localization evaluators
  run the same encoder on batches of one shape and share its tracing and compilation (each
  built its own: ~3 s of a small MobileNetV2 evaluation on 2 cores)."""
  return _features_until_fn(model, layer,
                            cpu_backend.options_key(cpu_backend.encoder_options(model)))


@functools.lru_cache(maxsize=8)
def _features_until_fn(model, layer: str, options: tuple | None):
  @functools.partial(jax.jit, compiler_options=dict(options) if options else None)
  def features(variables, x):
    return model.apply(variables, x, layer, method='features_until')
  return features


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

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def forward(variables, x):
    if normalize is not None:
      x = preprocess.to_model_input(x, normalize=normalize)
    first = parallel.map_batch(
        lambda xi: model.apply(variables, xi, layers[0], method='features_until'), x, chunk,
        num_shards)
    outputs, maps = layer_maps(model, variables, layers, method, first, x, target_fn)
    return outputs_lib.predict_outputs(outputs, arch), maps

  return forward


def load_image(path: str | os.PathLike | bytes, target: int | None = WORK_SIDE,
               budget: int | None = WORK_MAX_PIXELS) -> decoder.Decoded:
  """Reads and decodes an image file, or a file's bytes (`decoder.read_file` /
  `decoder.decode`: size caps, reduced decoding to `target` within `budget` pixels, EXIF
  orientation). The defaults make the working copy (`aesthetics-predict` and the API feed the
  model from it); `target=None, budget=None`: full resolution.

  Returns `Decoded` (image uint8 [h,w,3], displayed size (H, W)); PredictError (one line: the
  path and the cause) for a missing, oversized, truncated, non-image, bomb or < 32 px file.
  """
  try:
    data, what = ((path, 'image bytes') if isinstance(path, bytes) else
                  (decoder.read_file(path), str(path)))
    return decoder.decode(data, target=target, budget=budget,
                             min_side=decoder.MIN_SIDE, what=what)
  except decoder.DecodeError as e:
    raise PredictError(str(e)) from None


def overlay_grid(hw: tuple[int, int]) -> tuple[int, int]:
  """(h', w') an overlay of an image of (H, W) pixels is drawn at: the aspect kept, the long side
  <= OVERLAY_MAX_SIDE, unless that leaves the short side under min(OVERLAY_MIN_SIDE, its own):
  then that short side (a 40x20000 strip: 40x20000, not 2x1024), within OVERLAY_MAX_SIDE²
  pixels (a 100x65000 one: 40x26107). Never enlarged (`crop.box_grid`)."""
  return crop.box_grid(hw, OVERLAY_MAX_SIDE, OVERLAY_MIN_SIDE)


def rgb_icc_profile(source: str | os.PathLike | bytes) -> bytes | None:
  """The ICC profile of an image file (a path or its bytes), if it describes RGB: a crop keeps
  its colours in Display P3 or Adobe RGB only with it (a CMYK file's profile does not fit the
  RGB crop, so it is dropped, as is every other error: a crop never fails for it)."""
  try:
    data = isinstance(source, (bytes, bytearray, memoryview))
    with Image.open(io.BytesIO(bytes(source)) if data else source) as im:
      icc = im.info.get('icc_profile')
  except Exception:  # pylint: disable=broad-except
    return None
  return icc if isinstance(icc, bytes) and icc[16:20] == b'RGB ' else None


def crop_image(path: str | os.PathLike, image: decoder.Decoded,
               box: Sequence[int]) -> Image.Image:
  """`box` (original pixels) cut from the image, an RGB PIL image: from the file decoded again
  (at full resolution up to CROP_MAX_PIXELS, reduced to about that many beyond), or from the
  working copy when that is the whole image, or when a re-decode would materialise a huge
  non-JPEG image (another full-size transient after the model's memory is in use)."""
  h, w = image.size
  if not image.reduced or (image.format != 'JPEG' and h * w > CROP_MAX_PIXELS):
    y0, x0, y1, x1 = crop.scale_box(box, image.size, image.image.shape[:2])
    return with_icc(Image.fromarray(image.image[y0:y1, x0:x1]), path)
  # A pixel budget, not a long side: a thin strip within it is cut at full size.
  max_side = None if h * w <= CROP_MAX_PIXELS else max(
      1, math.floor(max(h, w) * math.sqrt(CROP_MAX_PIXELS / (h * w))))
  try:  # cut and saved in PIL: no numpy copy of a full-resolution crop
    src, _ = decoder.decode_pil(decoder.read_file(path), max_side=max_side,
                                   what=str(path))
  except decoder.DecodeError as e:
    raise PredictError(str(e)) from None
  y0, x0, y1, x1 = crop.scale_box(box, image.size, src.size[::-1])
  return with_icc(src.crop((x0, y0, x1, y1)), path)


def with_icc(cut: Image.Image, source: str | os.PathLike | bytes | bytearray) -> Image.Image:
  """`cut` carrying the source's RGB ICC profile (PNG and JPEG writers embed info's)."""
  cut.info.pop('icc_profile', None)
  icc = rgb_icc_profile(source)
  if icc:
    cut.info['icc_profile'] = icc
  return cut


class Predictor:
  """A restored model ready for `run` / `run_forward` (arrays) and `predict_files` (paths)."""

  def __init__(self, workdir: str | os.PathLike, step: int | None = None,
               cam_method: str | None = None, cam_layers: Sequence[str] | str | None = None,
               overrides: dict[str, Any] | None = None):
    """`cam_method` / `cam_layers` (torchvision module paths, e.g. ('features.14',
    'features.18')) default to the checkpoint's `config.eval.cam_method` / `.cam_layers`;
    `overrides`: dotted `eval.*` keys for this predictor (`{'eval.box_threshold': 0.4}`)."""
    self.model, self.variables, self.config, self.step = restore.restore_for_inference(
        workdir, step)
    overrides_lib.apply(self.config, overrides)  # eval.* only; one-line OverrideError
    self.arch = str(self.config.model.arch)
    self.size = int(self.config.input.image_size)
    self.method = cam.canonical_method(cam_method or str(self.config.eval.cam_method))
    self.threshold = check_box_threshold(self.config.eval.box_threshold)
    # AVA's 66 names when the dataset that recorded them is not at hand (a moved workdir).
    self.tag_names = ground_truth.tag_names(self.config) or dict(
        enumerate(demo_data.TAG_NAMES, start=1))
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
    pred, maps = self.run_forward(x, self.forward)
    return pred, split_maps(maps, self.arch)

  def run_forward(self, x: np.ndarray, forward) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """uint8 [B,S,S,3] through a `make_forward` function of this model (any targets, method,
    layers) → (predict_outputs fields [B,...], maps [B,T,h,w]) on the host."""
    x, b = parallel.pad_to_multiple(x, self.num_devices)
    xs = jax.device_put(x, parallel.data_sharding(self.mesh))
    pred, maps = forward(self.variables, xs)
    return {k: np.asarray(v)[:b] for k, v in pred.items()}, np.asarray(maps)[:b]

  def describe(self, image: np.ndarray | tuple[int, int], pred: dict[str, np.ndarray],
               maps: dict[str, Any], i: int, aspect: str | None = None,
               top_k: int = DEFAULT_TOP_K) -> tuple[dict, dict]:
    """JSON fields and box/overlay data for image i of a batch; image: the original uint8
    [H,W,3] or its displayed (H, W) (`Decoded.size`): boxes come out in those pixels.

    vis['boxes'] keeps `(y0, x0, y1, x1)` for drawing and cropping; the record names corners.
    """
    h, w = image if isinstance(image, tuple) else image.shape[:2]
    rec = score_fields(pred, i, self.arch, self.tag_names, top_k)
    d = crop.image_boxes(maps['aesthetic'][i], maps['top_tag'][i] if 'top_tag' in maps else None,
                         (h, w), self.threshold, aspect)
    boxes = {k: v.tolist() for k, v in d['boxes'].items()}
    # An empty map points nowhere: say so instead of suggesting the whole frame.
    rec['map'] = 'empty' if d['empty']['aesthetic'] else 'ok'
    rec['box'] = box_fields(boxes.get('average', boxes.get('aesthetic')))
    rec['boxes'] = {k: box_fields(v) for k, v in boxes.items()}
    ratio = max(h, w) / max(1, min(h, w))
    if ratio > EXTREME_ASPECT:
      rec['note'] = (f'aspect {ratio:.0f}:1: the model sees the image squashed into a square, '
                     'so its score and maps say little about it')
    vis = {'aesthetic_map': d['aesthetic_map'], 'attribute_map': d['attribute_map'],
           'boxes': boxes}
    return rec, vis

  def overlay_image(self, image: decoder.Decoded | np.ndarray, vis: dict) -> np.ndarray:
    """The --overlay_dir picture: the aesthetic map and the boxes (original pixels) over the
    image, at its original aspect and `overlay_grid` size (long side <= OVERLAY_MAX_SIDE; a
    thin strip keeps a short side, and one over `overlays.FOLD_ASPECT`:1 is folded into rows,
    or columns, about 2:1 overall, `overlays.fold`), and, in a strip below, their legend (a
    narrow image is centred on a dark band as wide as the legend needs) → uint8 [h', w', 3].
    image: the `Decoded` working copy (or a uint8 [H,W,3] array at the size the boxes are
    in)."""
    if not isinstance(image, decoder.Decoded):
      image = decoder.Decoded(np.asarray(image), tuple(np.asarray(image).shape[:2]))
    hw = overlay_grid(image.size)
    small = image.image
    if small.shape[:2] != hw:
      small = np.asarray(Image.fromarray(small).resize((hw[1], hw[0]), Image.BILINEAR))
    shown = {k: crop.scale_box(v, image.size, hw) for k, v in vis['boxes'].items()}
    img = overlays.draw_boxes(overlays.overlay(small, vis['aesthetic_map']), shown,
                             width=overlays.box_width(hw))
    title = f'map: aesthetic ({self.method})'
    k = overlays.fold_count(hw)
    if k > 1:  # a strip: its pieces in rows (columns) that a window shows at a useful size
      img = overlays.fold(img, k)
      title += f'; folded in {k} {"columns" if hw[0] > hw[1] else "rows"}'
    return overlays.add_legend(img, title, list(shown))

  def predict_files(self, paths: Sequence[str], overlay_dir: str | None = None,
                    crop_dir: str | None = None, aspect: str | None = None,
                    batch_size: int = 8, top_k: int = DEFAULT_TOP_K) -> Iterator[dict]:
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
          images[j] = load_image(p, max(self.size, WORK_SIDE))
        except PredictError as e:
          errors[j] = str(e)
      results = {}
      if images:
        order = sorted(images)
        x = np.stack([preprocess.preprocess_eval_np(images[j].image, self.size) for j in order])
        pred, maps = self.run(x)
        non_finite = non_finite_rows(pred, maps)
        for k, j in enumerate(order):
          if non_finite[k]:  # never print NaN as a score (nor as invalid JSON)
            errors[j] = (f'{chunk[j]}: the model output is not finite (NaN/inf) for this image; '
                         f'checkpoint {self.step} holds non-finite weights or training '
                         'diverged: pass another --step or retrain')
            continue
          rec, vis = self.describe(images[j].size, pred, maps, k, aspect, top_k)
          stem = output_stem(start + j, chunk[j])
          if overlay_dir:
            out = Path(overlay_dir) / f'{stem}_cam.png'
            try:
              overlays.save_png(out, self.overlay_image(images[j], vis))
              rec['overlay'] = str(out)
            except OSError as e:  # a full disk loses this picture, not the scores
              rec['overlay_error'] = write_error(out, e, 'overlay_dir')
          # With --aspect the crop is that window or nothing: never a box of another shape.
          cut = (vis['boxes'].get('crop') if aspect else
                 vis['boxes'].get('average', vis['boxes'].get('aesthetic')))
          if crop_dir and cut is None:  # an empty map points nowhere: nothing to cut
            rec['crop'] = None
          elif crop_dir:
            out = Path(crop_dir) / f'{stem}_crop.png'
            try:
              overlays.save_png(out, crop_image(chunk[j], images[j], cut))
              rec['crop'] = str(out)
            except PredictError as e:  # the file changed since it was scored
              rec['crop_error'] = str(e)
            except OSError as e:
              rec['crop_error'] = write_error(out, e, 'crop_dir')
          results[j] = rec
      for j, p in enumerate(chunk):
        if j in errors:
          yield {'path': str(p), 'error': errors[j]}
        else:
          yield {'path': str(p), **results[j]}


def check_box_threshold(value, name: str = 'config.eval.box_threshold') -> float:
  """`config.eval.box_threshold` (or the argument `name`) as a float in (0, 1), else
  ValueError (one line): at 0 or below every box is the whole frame, at 1 or above none
  exists."""
  try:
    t = float(value)
  except (TypeError, ValueError):
    t = float('nan')
  if not 0.0 < t < 1.0:  # NaN fails too
    raise ValueError(f'{name}={value!r}: must be in (0, 1), the fraction of a map\'s peak a '
                     'box encloses (default 0.2)')
  return t


# Bytes of an input's name kept in its overlay / crop file name: with the index, the suffix and
# the atomic writer's temporary suffix, well under the 255-byte limit of a file name.
_STEM_BYTES = 150


def output_stem(index: int, path: str) -> str:
  """`0007_<the input's stem>` for the files written about input `index` (the index keeps two
  inputs with one name apart; the stem is cut to `_STEM_BYTES` bytes of UTF-8)."""
  stem = Path(path).stem.encode('utf-8', 'surrogateescape')[:_STEM_BYTES]
  return f'{index:04d}_{stem.decode("utf-8", "ignore")}'


def write_error(out: Path, e: OSError, flag: str) -> str:
  """One line for a file predict could not write."""
  return (f'{out}: not written ({e.strerror or type(e).__name__}); free space or pass another '
          f'--{flag}')


def _printable(x: Any) -> Any:
  """Strings with the lone surrogates that stand for a file name's non-UTF-8 bytes (Python's
  surrogateescape) as backslash escapes: 'caf\\xe9.jpg', not "caf\\udce9.jpg", which strict JSON
  readers refuse."""
  if isinstance(x, str):
    try:
      x.encode('utf-8')
      return x
    except UnicodeEncodeError:
      try:
        return x.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
      except UnicodeEncodeError:  # a surrogate that stands for no byte
        return x.encode('utf-8', 'backslashreplace').decode('utf-8')
  if isinstance(x, dict):
    return {k: _printable(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_printable(v) for v in x]
  return x


def to_json_line(rec: dict) -> str:
  """One valid JSON line (JSON has no NaN: a non-finite number becomes an error record; a
  non-UTF-8 file name is written with backslash escapes)."""
  rec = _printable(rec)
  try:
    return json.dumps(rec, sort_keys=False, allow_nan=False)
  except ValueError:
    return json.dumps({'path': rec.get('path'), 'error': 'non-finite number in the output'})
