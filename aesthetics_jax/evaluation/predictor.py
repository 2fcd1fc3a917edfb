"""Prediction on image files: scores, CAMs, suggested boxes and crops (library of predict).

`Predictor` restores a checkpoint once and runs one jitted function per batch
(`forward.make_forward`): features → head → CAMs, all from ONE feature map. Boxes are
`(y0, x0, y1, x1)`, end-exclusive, in ORIGINAL image pixel coordinates of the displayed image
(EXIF orientation applied; `crop.image_boxes`: the map is brought back to the original aspect
before boxes are taken). The images it reads and cuts: `image_files`; its records: `records`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import numbers
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from PIL import Image

from aesthetics_jax import cpu_backend
from aesthetics_jax import io as io_lib
from aesthetics_jax import memory_fit
from aesthetics_jax import models
from aesthetics_jax import parallel
from aesthetics_jax.data import decoder
from aesthetics_jax.data import demo as demo_data
from aesthetics_jax.evaluation import ground_truth
from aesthetics_jax.evaluation import overrides as overrides_lib
from aesthetics_jax.evaluation import forward as forward_lib
from aesthetics_jax.evaluation.forward import make_forward, split_maps
from aesthetics_jax.evaluation.image_files import (CROP_MAX_PIXELS, EXTREME_ASPECT,
                                                   WORK_MAX_PIXELS, WORK_SIDE,
                                                   PredictError, crop_image, crop_suffix,
                                                   encode_crop, load_image, model_input,
                                                   overlay_grid, read_bytes)
from aesthetics_jax.evaluation.records import (DEFAULT_TOP_K, box_fields, non_finite_rows,
                                               output_stem, score_fields, write_error)
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop
from aesthetics_jax.report import overlays
from aesthetics_jax.train import config_checks
from aesthetics_jax.train import restore


# Threads of `predict_files`. Each may hold a crop's full-resolution decode (up to
# `image_files.CROP_MAX_PIXELS`, ~110 MB): a few bound the transient memory on a many-core host.
MAX_FILE_WORKERS = 4
# Working copies (decoded photos, up to WORK_MAX_PIXELS x 3 = 25 MB each) one batch holds at
# once while its overlays and crops are drawn from them: --batch_size=96 held 96 (2.1 GB peak
# for 12 MP photos, against 0.8 GB at 8), so a larger one runs its files in groups this big.
WORKING_COPIES_BYTES = 1 << 29
# The `eval.*` keys prediction reads; an override of another one changes nothing here.
READS = ('eval.box_threshold', 'eval.cam_layers', 'eval.cam_method')


class Predictor:
  """A restored model ready for `run` / `run_forward` (arrays) and `predict_files` (paths)."""

  def __init__(self, workdir: str | os.PathLike, step: int | None = None,
               cam_method: str | None = None, cam_layers: Sequence[str] | str | None = None,
               overrides: dict[str, Any] | None = None, batch_flag: str = 'batch_size'):
    """`cam_method` / `cam_layers` (torchvision module paths, e.g. ('features.14',
    'features.18')) default to the checkpoint's `config.eval.cam_method` / `.cam_layers`;
    `overrides`: dotted `eval.*` keys for this predictor (`{'eval.box_threshold': 0.4}`);
    `batch_flag`: what a batch too large for the memory is named by (`memory_fit`)."""
    self.batch_flag = batch_flag
    self.model, self.variables, self.config, self.step = restore.restore_for_inference(
        workdir, step)
    overrides_lib.apply(self.config, overrides)  # eval.* only; one-line OverrideError
    self.arch = str(self.config.model.arch)
    self.size = int(self.config.input.image_size)
    self.method = cam.canonical_method(cam_method or str(self.config.eval.cam_method))
    self.threshold = check_box_threshold(self.config.eval.box_threshold)
    # The trainer's value rules (as evaluate's): predict and the API took any value of a key
    # they do not read (--config.eval.batch_size=0) without a word.
    values = overrides_lib.flat_keys(self.config)
    for key in overrides or {}:
      if problem := config_checks.value_problem(key, values[key]):
        raise overrides_lib.OverrideError(problem)
    # --config.eval.explorer=False or a misplaced eval.batch_size were taken without a word.
    self.unused_overrides = [k for k in overrides or {} if k not in READS]
    # AVA's 66 names when the dataset that recorded them is not at hand (a moved workdir).
    self.tag_names = ground_truth.tag_names(self.config) or dict(
        enumerate(demo_data.TAG_NAMES, start=1))
    # load_config fills cam_layers for checkpoints written before it existed: () = the
    # encoder's output.
    asked = models.layer_names(cam_layers)  # --cam_layers=, names none: the config's
    self.cam_layers = models.resolve_layers(self.model,
                                            asked or tuple(self.config.eval.cam_layers))
    self.mesh = parallel.make_mesh()
    self.forward = make_forward(self.model, self.arch, self.method,
                                str(self.config.input.normalize), layers=self.cam_layers,
                                num_shards=self.shards(self.method))
    # Replicated over the mesh: the batch axis of the inputs is sharded over all devices.
    self.variables = parallel.replicate(jax.device_get(self.variables), self.mesh)
    self._one_device = None  # (mesh, variables) for host-callback methods, made when needed

  def unused_note(self, batch: str, prefix: str = '') -> str | None:
    """The one line naming overrides that change nothing here, each key after `prefix`
    (`batch`: how this caller sets its batch size), or None."""
    if not self.unused_overrides:
      return None
    keys = lambda ks: ', '.join(prefix + k for k in ks)  # noqa: E731
    return (f'{keys(self.unused_overrides)} change nothing here: prediction reads '
            f'{keys(READS)} (its batch size: {batch})')

  def one_cell_note(self) -> str | None:
    """Why every map will be empty when the CAM layer's grid is 1x1 at this model's input
    (`forward.one_cell_note`), for predict to say up front; else None."""
    return forward_lib.one_cell_note(self.model, self.variables, self.cam_layers, self.size)

  def run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """uint8 [B,S,S,3] → (predict_outputs fields [B,...], maps by target [B,(10,)h,w]: raw at
    one CAM layer, fused at the input size [B,(10,)S,S] for several)."""
    pred, maps = self.run_forward(x, self.forward)
    return pred, split_maps(maps, self.arch)

  def shards(self, method: str) -> int:
    """Devices a batch for CAM `method` (canonical) is sharded over: `make_forward`'s
    num_shards."""
    return forward_lib.callback_safe_mesh(self.mesh, (method,)).size

  def placement(self, method: str) -> tuple[Any, Any]:
    """(mesh, variables replicated on it) for CAM `method` (canonical): every device, or one
    for a method with a host callback over several CPU devices
    (`forward.callback_safe_mesh`)."""
    mesh = forward_lib.callback_safe_mesh(self.mesh, (method,))
    if mesh.size == self.mesh.size:
      return self.mesh, self.variables
    if self._one_device is None:
      self._one_device = (mesh, parallel.replicate(jax.device_get(self.variables), mesh))
    return self._one_device

  def run_forward(self, x: np.ndarray, forward, method: str | None = None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """uint8 [B,S,S,3] through a `make_forward` function of this model (any targets, layers;
    CAM `method`, canonical, default this predictor's) → (predict_outputs fields [B,...],
    maps [B,T,h,w]) on the host."""
    mesh, variables = self.placement(method or self.method)
    x, b = parallel.pad_to_multiple(x, mesh.size)
    xs = jax.device_put(x, parallel.data_sharding(mesh))
    pred, maps = memory_fit.call(forward, variables, xs, flag=self.batch_flag,
                                 batch=int(x.shape[0]))  # one line if it cannot fit
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
           'boxes': boxes, 'empty': d['empty']['aesthetic']}
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
    # Merged once scaled: boxes a pixel apart in the photo coincide on the smaller overlay.
    shown = overlays.merge_coinciding({k: crop.scale_box(v, image.size, hw)
                                       for k, v in vis['boxes'].items()})
    img = overlays.draw_boxes(overlays.overlay(small, vis['aesthetic_map']), shown,
                              width=overlays.box_width(hw))
    title = f'map: aesthetic ({self.method})' + (overlays.EMPTY_NOTE if vis.get('empty') else '')
    return overlays.fold_with_legend(img, title, overlays.legend_names(shown, hw))

  def predict_files(self, paths: Sequence[str], overlay_dir: str | None = None,
                    crop_dir: str | None = None, aspect: str | None = None,
                    batch_size: int = 8, top_k: int = DEFAULT_TOP_K,
                    crop_format: str = 'auto', workers: int = 0) -> Iterator[dict]:
    """Yields one JSON-able dict per path, in order; a bad file yields {'path', 'error'}.

    crop_format: 'auto' (JPEG crops of JPEG files, PNG otherwise), 'jpeg' or 'png'
    (`image_files.encode_crop`). workers: threads that decode the images and draw, encode
    and write their overlays and crops (0: one per CPU core, at most `MAX_FILE_WORKERS`);
    PIL and zlib release the GIL there, which is most of a photo's time outside the model.
    """
    crop_suffix(crop_format, None)  # a bad value fails before any work
    if aspect:
      crop.parse_aspect(aspect)
    if crop_dir and not aspect:
      aspect = None  # crop_dir alone: crop the suggested (average / aesthetic) box
    workers = workers or min(cpu_backend.host_cpu_count(), MAX_FILE_WORKERS)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='predict-files')
    drawn = bool(overlay_dir or crop_dir)  # else a working copy is dropped once preprocessed
    if drawn:
      batch_size = min(batch_size, max(1, WORKING_COPIES_BYTES // (WORK_MAX_PIXELS * 3)))
    try:
      for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        loaded = list(pool.map(functools.partial(self._load, keep=drawn), chunk))
        errors = {j: r for j, r in enumerate(loaded) if isinstance(r, str)}
        results = {}
        order = [j for j in range(len(chunk)) if j not in errors]
        if order:
          pred, maps = self.run(np.stack([loaded[j][1] for j in order]))
          non_finite = non_finite_rows(pred, maps)
          futures = {}
          for k, j in enumerate(order):
            if non_finite[k]:  # never print NaN as a score (nor as invalid JSON)
              errors[j] = (f'{chunk[j]}: the model output is not finite (NaN/inf) for this '
                           f'image; checkpoint {self.step} holds non-finite weights or '
                           'training diverged: pass another --step or retrain')
              continue
            futures[j] = pool.submit(self._finish, chunk[j], loaded[j][0], pred, maps, k,
                                     output_stem(start + j, chunk[j]), overlay_dir, crop_dir,
                                     aspect, top_k, crop_format)
          results = {j: f.result() for j, f in futures.items()}
        for j, p in enumerate(chunk):
          if j in errors:
            yield {'path': str(p), 'error': errors[j]}
          else:
            yield {'path': str(p), **results[j]}
    finally:  # also when the reader stops early (the generator is closed)
      pool.shutdown(wait=True, cancel_futures=True)

  def _load(self, path: str, keep: bool = True) -> tuple[decoder.Decoded, np.ndarray] | str:
    """(the working copy, the model input uint8 [S,S,3]) of a file, or its one-line error. The
    input is evaluation's (`image_files.model_input`). keep=False: no working copy is made
    (nothing is drawn), the returned one has no pixels."""
    try:
      data = read_bytes(path)
      image, x = model_input(data, self.size, str(path))
      if not keep:
        return dataclasses.replace(image, image=np.zeros((0, 0, 3), np.uint8)), x
      if image.reduced or image.image.shape[0] * image.image.shape[1] > WORK_MAX_PIXELS:
        image = load_image(data, max(self.size, WORK_SIDE), what=str(path))
      # else the whole image, as the working copy would be: decoded once
    except PredictError as e:
      return str(e)
    return image, x

  def _finish(self, path: str, image: decoder.Decoded, pred: dict[str, np.ndarray],
              maps: dict[str, Any], k: int, stem: str, overlay_dir: str | None,
              crop_dir: str | None, aspect: str | None, top_k: int, crop_format: str) -> dict:
    """Row k's record, with its overlay and crop written (or the reason they were not)."""
    rec, vis = self.describe(image.size, pred, maps, k, aspect, top_k)
    if overlay_dir:
      out = Path(overlay_dir) / f'{stem}_cam.png'
      try:
        overlays.save_png(out, self.overlay_image(image, vis),
                          compress_level=overlays.FAST_PNG_LEVEL)
        rec['overlay'] = str(out)
      except OSError as e:  # a full disk loses this picture, not the scores
        rec['overlay_error'] = write_error(out, e, 'overlay_dir')
    # With --aspect the crop is that window or nothing: never a box of another shape.
    cut = (vis['boxes'].get('crop') if aspect else
           vis['boxes'].get('average', vis['boxes'].get('aesthetic')))
    if crop_dir and cut is None:  # an empty map points nowhere: nothing to cut
      rec['crop'] = None
    elif crop_dir:
      suffix = crop_suffix(crop_format, image.format)
      out = Path(crop_dir) / f'{stem}_crop{suffix}'
      try:
        piece = crop_image(path, image, cut)
        io_lib.atomic_write_bytes(out, encode_crop(piece, suffix, path))
        rec['crop'] = str(out)
        if (note := reduced_crop_note(piece.size, cut)):
          rec['crop_note'] = note
      except PredictError as e:  # the file changed since it was scored
        rec['crop_error'] = str(e)
      except OSError as e:
        rec['crop_error'] = write_error(out, e, 'crop_dir')
    return rec


def reduced_crop_note(size: tuple[int, int], box: Sequence[int]) -> str | None:
  """The record's `crop_note` when the crop file (PIL `size`, (w, h)) is smaller than its
  box `(y0, x0, y1, x1)` (an image over `image_files.CROP_MAX_PIXELS` is cut from a reduced
  decode, to bound memory), else None: the box alone read as the crop's size."""
  bw, bh = int(box[3]) - int(box[1]), int(box[2]) - int(box[0])
  if tuple(size) == (bw, bh):
    return None
  return (f'the crop file is {size[0]}x{size[1]} px, the box {bw}x{bh}: an image over '
          f'{CROP_MAX_PIXELS // 10**6} MP is cropped from a copy reduced by '
          f'{bw / size[0]:.3g}, to bound memory (Model.crop cuts at full size)')


def check_box_threshold(value, name: str = 'config.eval.box_threshold') -> float:
  """`config.eval.box_threshold` (or the argument `name`) as a float in (0, 1), else
  ValueError (one line): at 0 or below every box is the whole frame, at 1 or above none
  exists. A str ('0.3') or a bool is refused, not read as a number: float() took them (the
  API's boxes(threshold='0.3') ran), where every other numeric argument is refused so."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f'{name}={value!r} is a {type(value).__name__}; pass a float in (0, 1), '
                     'the fraction of a map\'s peak a box encloses (default 0.2)')
  t = float(value)
  if not 0.0 < t < 1.0:  # NaN fails too
    raise ValueError(f'{name}={value!r}: must be in (0, 1), the fraction of a map\'s peak a '
                     'box encloses (default 0.2)')
  return t
