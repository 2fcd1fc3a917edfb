"""Notebook interface: load a trained workdir once, then score, map, box, crop and overlay images.

  import aesthetics_jax
  m = aesthetics_jax.load('/runs/mnv2')          # the checkpoint training selected; step=, ...
  m.score('photo.jpg')                           # dict: mean_score, score_std, distribution, ...
  m.cam(img, target='low')                       # f32 [H, W] in [0, 1] at the image's size
  m.cam(img, target=['aesthetic', 'bucket:3'])   # {target: map}, one forward pass for all
  m.boxes(img)                                   # {'aesthetic': Box(x0, y0, x1, y1), ...}
  m.crop(img, aspect='4:3')                      # PIL image (None if the map points nowhere)
  m.overlay(img, target='tag:Floral')            # PIL image: map, boxes and a legend

Images: a path, a file's bytes, a PIL image or a uint8 array [H, W(, 1|3|4)]; `score` and `cam`
also take a list or a generator (batched through the model; a list comes back). Targets
(`Model.targets`): 'aesthetic' (the predicted score; 'high' is the same), 'low' (its
negative), and for MobileNetV2 'bucket:<k>' (score bucket 1..10), 'bucket' (all 10 maps),
'tag:<name or id>' (an AVA tag, e.g. 'tag:Floral', 'tag:12'), 'top_tag' (each image's most
probable tag). Methods: `cam.METHODS` ('gradcam++' = 'gradcampp'). Layers: torchvision
module paths ('features.14'; several are fused), default (also for [] or ''): the
checkpoint's `config.eval.cam_layers`.

Built on `evaluation.predictor` (the Predictor `aesthetics-predict` uses) and
`evaluation.forward.make_forward`: per method and layer choice, one compiled function computes
every standard target's map and one every tag's, each compiled on first use and then cached.
"""
from __future__ import annotations

# Every command applies the XLA:CPU settings of `cpu_backend` before JAX starts; a notebook
# gets them here, when it imports this interface before its first JAX computation (XLA reads
# its flags when the backend starts; once it has, this does nothing). Without them the
# MobileNetV2 224-px forward ran about half as fast on the 2-core EPYC (README, 2026-12-04).
from aesthetics_jax import cpu_backend  # noqa: E402  (os and sys only: JAX not started)
cpu_backend.configure()

import difflib
import itertools
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from aesthetics_jax import io as io_lib
from aesthetics_jax import models
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import forward
from aesthetics_jax.evaluation import image_files
from aesthetics_jax.evaluation import image_inputs
from aesthetics_jax.evaluation import predictor as predictor_lib
from aesthetics_jax.evaluation import records
from aesthetics_jax.explain import cam as cam_lib
from aesthetics_jax.explain import crop as crop_lib
from aesthetics_jax.report import overlays
from aesthetics_jax.train import checkpoint_errors
from aesthetics_jax.train import restore

ImageLike = image_inputs.ImageLike
to_array = image_inputs.to_array  # public: users call aesthetics_jax.api.to_array
Images = Sequence[ImageLike] | Iterator[ImageLike]  # a list, tuple or generator of images


class Box(NamedTuple):
  """End-exclusive pixel box in PIL's order: `pil_image.crop(box)` crops it."""
  x0: int
  y0: int
  x1: int
  y1: int

  @classmethod
  def from_yxyx(cls, b: Sequence[int]) -> 'Box':
    y0, x0, y1, x1 = (int(v) for v in b)
    return cls(x0, y0, x1, y1)


def _is_batch(x: Any) -> bool:
  """A list or tuple of images, or an iterator of them (a generator, map(...)): read as the
  model goes, a batch at a time. An open file is an iterator too (of lines): not a batch."""
  return isinstance(x, (list, tuple)) or (isinstance(x, Iterator) and not hasattr(x, 'read'))


def _check_names(value: Any, what: str, example: str) -> None:
  """None, a str, or a list / tuple of str (an empty one is the caller's to judge): anything
  else used to end in a TypeError deep inside (`list(3)`, `3.split`)."""
  if value is None or isinstance(value, str):
    return
  if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
    return
  raise ValueError(f'{what}={value!r}: pass a name or a list of names, e.g. {example}')


def _check_method(method: Any) -> None:
  if method is not None and not isinstance(method, str):
    raise ValueError(f"method={method!r}: pass one CAM method name, e.g. 'gradcam'; methods: "
                     f'{", ".join(cam_lib.METHODS)}')


def _check_step(step: Any) -> None:
  if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))):
    raise ValueError(f'step={step!r}: pass a checkpoint step as an int, or None for the one '
                     'training selected')


def _check_batch_size(batch_size: Any) -> int:
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f'batch_size={batch_size!r}: pass a positive int (images per forward pass)')
  return int(batch_size)


def _check_top_k(top_k: Any) -> int:
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f'top_k={top_k!r}: pass an int >= 0 (tags listed per image)')
  return int(top_k)


def _check_errors(errors: Any) -> bool:
  """errors= of score/cam: True for 'keep'."""
  if errors not in ('raise', 'keep'):
    raise ValueError(f"errors={errors!r}: use 'raise' (stop at an image that cannot be read) "
                     "or 'keep' (its {'error': ...} in its place, the others scored)")
  return errors == 'keep'


def _check_aspect(aspect: Any) -> str | float | None:
  """None (no aspect window) or a valid aspect: 0, '' or False were falsy, so read as None,
  and gave no 'crop' box (crop(): the suggested box) instead of an error."""
  if aspect is None:
    return None
  try:
    crop_lib.parse_aspect(aspect)
  except ValueError as e:
    raise ValueError(f'{e} (aspect=None: no aspect window)') from None
  return aspect


def _check_one(x: Any, call: str) -> None:
  if _is_batch(x):
    raise ValueError(f'{call} takes one image, not a {type(x).__name__} of them: call it per '
                     'image (score and cam take lists)')


class _Image(NamedTuple):
  """One input: its displayed (H, W), in which maps, boxes and crops are; `model`, uint8
  [h, w, 3] the model input is resized from; `full`, uint8 [H, W, 3] (None unless asked)."""
  size: tuple[int, int]
  model: np.ndarray
  full: np.ndarray | None


class Model:
  """A restored checkpoint (see the module docstring); build it with `load`."""

  def __init__(self, predictor: predictor_lib.Predictor, batch_size: int = 8):
    self.predictor = predictor
    self.arch = predictor.arch
    self.method = predictor.method
    self.layers = predictor.cam_layers
    self.batch_size = batch_size  # checked by the setter
    self._forwards: dict[tuple, Any] = {}

  @property
  def batch_size(self) -> int:
    return self._batch_size

  @batch_size.setter
  def batch_size(self, value: int) -> None:
    # Checked when set, also as `m.batch_size = 0` in a notebook: that ended the next list in
    # range()'s 'arg 3 must not be zero' (a float: 'object cannot be interpreted as an integer').
    self._batch_size = _check_batch_size(value)

  def __repr__(self) -> str:
    return (f'Model({self.arch}, step {self.predictor.step}, {self.predictor.size} px, '
            f'method {self.method!r}, layers {list(self.layers)})')

  @property
  def targets(self) -> list[str]:
    if self.arch == 'vgg16':
      return ['aesthetic', 'low']
    return ['aesthetic', 'low', 'bucket', 'bucket:<1..10>', 'tag:<name or id>', 'top_tag']

  # -- targets, methods, layers ---------------------------------------------------------------

  def _tag_id(self, key: str) -> int:
    names = self.predictor.tag_names
    if not key:  # 'tag:' was "cam target tag:: no such tag name"
      raise ValueError("cam target 'tag:' names no tag; use 'tag:<name or id>', e.g. "
                       "'tag:Floral' or 'tag:13'")
    # An id, signed too ('tag:-1' was looked up as a name): targets_for checks its range.
    # \d is a decimal digit, as int() reads them ('²' is a digit that int() refuses).
    if re.fullmatch(r'[+-]?\d+', key):
      return int(key)
    by_name = {n.lower(): i for i, n in names.items()}
    if key.lower() in by_name:
      return by_name[key.lower()]
    near = difflib.get_close_matches(key, list(names.values()), n=3)
    hint = f'; did you mean {", ".join(near)}?' if near else '; see Model.predictor.tag_names'
    raise ValueError(f'cam target tag:{key}: no such tag name{hint}')

  def _example(self, several: bool = False) -> str:
    """Targets to show in an error: VGG16's own (it has no score buckets, no tags)."""
    other = "'low'" if self.arch == 'vgg16' else "'bucket:3'"
    return f"'aesthetic' or ['aesthetic', {other}]" if several else f"'aesthetic' or {other}"

  def _target(self, target: str) -> str:
    """A user's target → the name `cam.targets_for` takes ('tag:Floral' → 'tag:13')."""
    if not isinstance(target, str):
      raise ValueError(f'target={target!r}: pass a target name, e.g. {self._example()}; '
                       f'targets: {self.targets}')
    t = target.strip()
    # The family part as any case ('High', 'Tag:Floral', 'BUCKET:3'): tag names and methods
    # were case-blind already, 'High' was an error.
    head, colon, rest = t.partition(':')
    t = head.lower() + colon + rest
    if t == 'high':
      return 'aesthetic'
    # Not for VGG16, which has no tags: its error names what the user typed ('tag:Floral',
    # not 'tag:16'), and offers no tag names for a misspelled one.
    if t.startswith('tag:') and self.arch != 'vgg16':
      return f'tag:{self._tag_id(t[4:].strip())}'
    return t

  def _families(self) -> list[tuple[str, ...]]:
    """Target sets compiled as one function each, per (method, layers): every standard target
    in one (13 maps cost about one backward pass), all 66 tags in another. Asking for another
    target then never compiles again, and scores come with the first."""
    if self.arch == 'vgg16':
      return [('aesthetic', 'low')]
    return [('aesthetic', 'low', 'bucket', 'top_tag'),
            tuple(f'tag:{k}' for k in range(1, 67))]

  def _forward(self, names: tuple[str, ...], method: str | None, layer):
    _check_method(method)
    _check_names(layer, 'layer', "'features.14' or ['features.14', 'features.18']")
    method = cam_lib.canonical_method(method) if method else self.method
    # Empty ([], '', ',', ['']) is the default, as `load` reads it: resolve_layers gives the
    # model's last layer for it, not the checkpoint's config.eval.cam_layers (other maps).
    empty = not models.layer_names(layer)
    layers = self.layers if empty else models.resolve_layers(self.predictor.model, layer)
    key = (names, method, layers)
    if not any(k[1:] == key[1:] for k in self._forwards):
      # A 1x1 grid gave all-zero maps, None boxes and crops, and no word why (predict and
      # evaluate say it): once per method and layers, naming a finer layer.
      note = forward.one_cell_note(
          self.predictor.model, self.predictor.variables, layers, self.predictor.size,
          consequence='cam() gives zeros, boxes() and crop() None', flag="layer='{}'")
      if note:
        warnings.warn(note, UserWarning, stacklevel=_caller_level())
    if key not in self._forwards:  # compiled on first use: seconds on a CPU
      self._forwards[key] = forward.make_forward(
          self.predictor.model, self.arch, method, str(self.predictor.config.input.normalize),
          names=names, layers=layers, num_shards=self.predictor.shards(method))
    return self._forwards[key], method, layers

  def _load(self, x: ImageLike, full: bool = True) -> _Image:
    """A file's model input is made as `aesthetics-predict` and aesthetics-evaluate make it
    (`image_files.model_input`), so all three give the same scores and maps: resized from a
    full decode instead, a 4000x3000 JPEG scored 5.036 here and 5.060 in predict. `full`: the
    full resolution too (decoded again only if the model input's decode was reduced)."""
    x = image_inputs.as_input(x)  # a file's content: as the file
    if not isinstance(x, (str, os.PathLike, bytes)):
      a = image_inputs.to_array(x)
      return _Image(a.shape[:2], a, a)
    what = image_files.input_name(x)
    data = image_files.read_bytes(x)
    decoded, model = image_files.model_input(data, self.predictor.size, what)
    whole = None
    if full:
      whole = (decoded.image if not decoded.reduced else
               image_files.load_image(data, target=None, budget=None, what=what).image)
    return _Image(decoded.size, model, whole)

  def _load_input(self, x: ImageLike) -> _Image:
    """`_load` holding only the model input, uint8 [S, S, 3]: a batch held every image's
    working copy, up to 25 MB each (m.batch_size=96 over 96 12-16 MP photos: 1.9 GB peak,
    0.8 GB at 8). (A file's input is that size already; an array is resized here.)"""
    image = self._load(x, full=False)
    return _Image(image.size, preprocess.preprocess_eval_np(image.model, self.predictor.size),
                  None)

  def _batches(self, x: ImageLike | Images, keep: bool = False
               ) -> Iterator[list[_Image | str]]:
    """The images of `x` (one, or a list), loaded `batch_size` at a time as they are scored:
    loading the whole list first held every working copy at once (memory grew with the
    list). Their model inputs only: a large file's full-resolution decode (1.3 GB for 10k x
    10k, where the working copy takes 333 MB) is for crops and overlays. `keep`: an image of
    a list that cannot be read is its one-line error (a str) in its place, not a ValueError."""
    if isinstance(x, (set, frozenset)):  # its order is not the caller's: results unmatchable
      raise ValueError(f'images given as a {type(x).__name__}, which has no order: pass a list '
                       '(e.g. sorted(...)); results come in its order')
    keep = keep and _is_batch(x)

    def attempt(i: int, fn, *args, **kwargs):
      try:
        return image_inputs.at_index(i, fn, *args, **kwargs)
      except ValueError as e:
        if not keep:
          raise
        return str(e)

    bad: dict[int, str] = {}
    if isinstance(x, (list, tuple)):
      for i, v in enumerate(x):
        if (problem := attempt(i, image_inputs.precheck, v)) is not None:
          bad[i] = problem
    # A generator is pulled batch_size items at a time (it was 'image array of dtype object').
    xs = iter(x) if _is_batch(x) else iter([x])
    batch = list(itertools.islice(xs, self.batch_size))
    if not batch:
      raise ValueError('no images given: pass an image, or a non-empty list of them')
    done = 0
    while batch:
      if _is_batch(x):
        yield [bad[done + i] if done + i in bad else attempt(done + i, self._load_input, v)
               for i, v in enumerate(batch)]
      else:
        yield [self._load_input(batch[0])]
      done += len(batch)
      batch = list(itertools.islice(xs, self.batch_size))

  def _run(self, images: list[np.ndarray], names: tuple[str, ...], method, layer):
    """(predict fields [B,...], raw maps [B,T,h,w], method, layers): one forward pass over a
    batch (`_batches`)."""
    forward, method, layers = self._forward(names, method, layer)
    x = np.stack([preprocess.preprocess_eval_np(im, self.predictor.size) for im in images])
    pred, maps = self.predictor.run_forward(x, forward, method)
    if records.non_finite_rows(pred, {'maps': maps}).any():
      # As predict's error line: a NaN score came back as a number (label 'low'), a NaN map
      # gave full-frame boxes and crops (never silent) and overlay() an IndexError.
      raise ValueError(f'the model output is not finite (NaN/inf); checkpoint '
                       f'{self.predictor.step} holds non-finite weights or training diverged: '
                       'load another step= or retrain')
    return pred, maps, method, layers

  def _check_targets(self, names: Sequence[str]) -> None:
    """Target `names` as `cam.targets_for` takes them: its one-line ValueError, no compile."""
    if isinstance(names, (list, tuple)) and not names:
      raise ValueError(f'no target given: pass one or more of {self.targets}')
    cam_lib.targets_for(self.arch, names)

  def _maps(self, images: list[np.ndarray], names: Sequence[str], method=None, layer=None):
    """(predict fields, {map label ('bucket:3', 'tag:13', ...): raw maps [B,h,w]}, method,
    layers) of one batch for target `names` as `cam.targets_for` takes them (checked by the
    callers, before any image is read)."""
    wanted = set(cam_lib.target_names(self.arch, names))
    out = {}
    for family in self._families():
      labels = cam_lib.target_names(self.arch, family)
      if not wanted & set(labels):
        continue
      pred, maps, used_method, layers = self._run(images, family, method, layer)
      out.update({label: maps[:, j] for j, label in enumerate(labels) if label in wanted})
    return pred, out, used_method, layers

  # -- public ---------------------------------------------------------------------------------

  def score(self, x: ImageLike | Images, top_k: int = records.DEFAULT_TOP_K,
            errors: str = 'raise') -> dict | list[dict]:
    """Mean score, score_std, distribution [10], p_high, label and the top_k tags
    ({id, name, prob}) of MobileNetV2; p_high and label of VGG16. A list gives a list.
    errors='keep': an image of a list that cannot be read (corrupt, missing, too small) is
    `{'error': 'images[i]: ...'}` in its place and the others are scored; 'raise' (default):
    the call stops with that ValueError."""
    top_k = _check_top_k(top_k)

    def fields(batch: list[_Image]) -> list[dict]:
      pred, _, _, _ = self._maps([im.model for im in batch], ('aesthetic',))
      return [records.score_fields(pred, i, self.arch, self.predictor.tag_names, top_k)
              for i in range(len(batch))]
    return self._each(x, _check_errors(errors), fields)

  def _each(self, x: ImageLike | Images, keep: bool, fn) -> Any:
    """fn(batch of images) -> one result per image, over `_batches(x, keep)`: the images that
    could not be read get `{'error': ...}` in their place. A list gives a list."""
    out = []
    for whole in self._batches(x, keep):
      batch = [im for im in whole if not isinstance(im, str)]
      rows = iter(fn(batch) if batch else [])
      out += [{'error': im} if isinstance(im, str) else next(rows) for im in whole]
    return out if _is_batch(x) else out[0]

  def cam(self, x: ImageLike | Images, target: str | Sequence[str] = 'aesthetic',
          method: str | None = None, layer: str | Sequence[str] | None = None,
          errors: str = 'raise'):
    """Map(s) at each image's size, f32 in [0, 1] (min-max per map; all zero when the map
    points nowhere). target: a name → [H, W] ('bucket' → [10, H, W]); a list of names →
    {name: map}, all from one forward pass. A list of images gives a list. errors='keep': an
    image of a list that cannot be read is `{'error': 'images[i]: ...'}` in its place."""
    _check_names(target, 'target', self._example(several=True))
    targets = [target] if isinstance(target, str) else list(target)
    names = tuple(self._target(t) for t in targets)
    self._check_targets(names)  # before any image is read
    labels = [cam_lib.target_names(self.arch, n) for n in names]

    def maps_of(batch: list[_Image]) -> list:
      _, maps, _, _ = self._maps([im.model for im in batch], names, method, layer)
      results = []
      for i, im in enumerate(batch):
        by_target = {}
        for t, n, ls in zip(targets, names, labels):
          m = np.stack([maps[label][i] for label in ls])
          m = crop_lib.resize_maps(np.asarray(cam_lib.normalize(m, 'per_image')), im.size)
          by_target[t] = m if n == 'bucket' else m[0]
        results.append(by_target[target] if isinstance(target, str) else by_target)
      return results
    return self._each(x, _check_errors(errors), maps_of)

  def _boxes(self, image: _Image, target: str, method, layer, threshold, aspect) -> dict:
    """crop.image_boxes for one image: the paper's aesthetic + attribute (top tag) boxes for
    the default target of MobileNetV2, else the target's own box (named after it)."""
    name = self._target(target)
    self._check_targets((name,))  # VGG16's 'bucket': not defined there, no bucket hint
    paired = name == 'aesthetic' and self.arch == 'mobilenet_v2'
    if name == 'bucket':
      raise ValueError("boxes need one map: use target='bucket:<k>', not 'bucket'")
    names = ('aesthetic', 'top_tag') if paired else (name,)
    _, maps, method, layers = self._maps([image.model], names, method, layer)
    thr = (self.predictor.threshold if threshold is None
           else predictor_lib.check_box_threshold(threshold, 'threshold'))
    d = crop_lib.image_boxes(maps[cam_lib.target_names(self.arch, name)[0]][0],
                             maps['top_tag'][0] if paired else None,
                             image.size, thr, aspect)
    # Every documented name, None where a map points nowhere (never a silent full frame):
    # leaving the name out made README's boxes['average'] a KeyError (a 1x1 CAM grid).
    names = (('aesthetic', 'attribute', 'average') if paired else ('aesthetic',)) + (
        ('crop',) if aspect is not None else ())
    boxes = {(k if paired or k != 'aesthetic' else str(target)):
             Box.from_yxyx(d['boxes'][k]) if k in d['boxes'] else None for k in names}
    return {'boxes': boxes, 'map': d['aesthetic_map'], 'method': method, 'layers': layers,
            'empty': d['empty']['aesthetic']}

  def boxes(self, x: ImageLike, target: str = 'aesthetic', method: str | None = None,
            layer=None, threshold: float | None = None,
            aspect: str | None = None) -> dict[str, Box | None]:
    """Boxes in image pixels (`Box(x0, y0, x1, y1)`, end-exclusive; `img.crop(box)` works).

    Default target (MobileNetV2): 'aesthetic', 'attribute' (top tag) and 'average' (the
    paper's suggestion), as `aesthetics-predict` reports them; another target: its own box,
    named after it. With `aspect` ('4:3'), also 'crop': the window of that aspect holding the
    most map mass. Every name is always there: a map that points nowhere gives None for its
    boxes (never a silent full frame; 'average' is then the other map's box, as predict's).
    threshold: fraction of the map's maximum (default: the checkpoint's eval.box_threshold).
    """
    _check_one(x, 'boxes')
    aspect = _check_aspect(aspect)
    return self._boxes(self._load(x, full=False), target, method, layer, threshold,
                       aspect)['boxes']

  def crop(self, x: ImageLike, aspect: str | None = '4:3', target: str = 'aesthetic',
           method: str | None = None, layer=None) -> Image.Image | None:
    """The suggested crop as a PIL image: the `aspect` window with the most map mass, or with
    aspect=None the suggested box. None when the map points nowhere."""
    _check_one(x, 'crop')
    aspect = _check_aspect(aspect)
    x = image_inputs.as_input(x)  # its ICC profile is read from the same (expanded) path
    image = self._load(x)
    boxes = self._boxes(image, target, method, layer, None, aspect)['boxes']
    box = boxes.get('crop') if aspect is not None else boxes.get('average', boxes.get(str(target)))
    if box is None:
      return None
    cut = Image.fromarray(image.full).crop(tuple(box))
    # Cut from the decoded image, in sRGB: a file's sRGB profile goes with it, another does not.
    encoded = (str, os.PathLike, bytes, bytearray, memoryview)
    return image_files.with_icc(cut, x, converted=True) if isinstance(x, encoded) else cut

  def overlay(self, x: ImageLike, target: str = 'aesthetic', method: str | None = None,
              layer=None, boxes: bool = True, aspect: str | None = None) -> Image.Image:
    """The target's map over the image (jet), its boxes, and a legend strip below (at the
    image's full resolution; a narrow image is centred on a band as wide as the legend; a strip
    beyond 10:1 is folded into rows, or columns, about 2:1 overall, as predict's overlays)."""
    _check_one(x, 'overlay')
    aspect = _check_aspect(aspect)
    loaded = self._load(x)
    image = loaded.full
    d = self._boxes(loaded, target, method, layer, None, aspect)
    drawn = overlays.merge_coinciding({k: (b.y0, b.x0, b.y1, b.x1)
                                       for k, b in d['boxes'].items() if b is not None}
                                      ) if boxes else {}
    img = overlays.overlay(image, d['map'])
    img = overlays.draw_boxes(img, drawn, width=overlays.box_width(image.shape))
    title = f'map: {target} ({d["method"]}, {",".join(d["layers"])})' + (
        overlays.EMPTY_NOTE if d['empty'] else '')
    return Image.fromarray(overlays.fold_with_legend(
        img, title, overlays.legend_names(drawn, image.shape[:2])))


def _workdir(workdir: Any) -> str:
  """A local workdir checked for what a notebook gets wrong, one line each: None or a number
  (a TypeError from os.fspath), bytes (pathlib's TypeError), '~' (not expanded), a missing
  folder or a file ('<it>/config.json: not found; is --workdir ...'), its checkpoints/
  folder. A cloud URL (gs://) is the restorer's to judge."""
  if not isinstance(workdir, (str, bytes, os.PathLike)):
    raise checkpoint_errors.WorkdirError(
        f"workdir={workdir!r}: pass a training workdir's path (a str or pathlib.Path)")
  p = os.fspath(workdir)
  p = os.fsdecode(p) if isinstance(p, bytes) else p
  if not p.strip():
    raise checkpoint_errors.WorkdirError(f"workdir={p!r} is empty: pass a training workdir's "
                                         'path')
  if not io_lib.is_local(p):
    return p
  p = p if os.path.exists(p) else os.path.expanduser(p)
  if problem := io_lib.utf8_problem(p, 'workdir'):
    raise checkpoint_errors.WorkdirError(problem)
  hint = 'pass the folder aesthetics-train wrote (its --workdir: config.json, checkpoints/)'
  shown = p if p.isprintable() else repr(p)  # a '\n' kept from a file: still one line
  if not os.path.exists(p):
    raise checkpoint_errors.WorkdirError(f'workdir {shown}: no such folder; {hint}')
  if not os.path.isdir(p):
    raise checkpoint_errors.WorkdirError(f'workdir {shown}: a file, not a folder; {hint}')
  if not os.path.exists(os.path.join(p, 'config.json')):
    # restore's own words here are the command's: '<p>/config.json: not found; is --workdir a
    # training workdir (aesthetics-train writes it)?'
    parent = os.path.dirname(os.path.abspath(p))
    if os.path.exists(os.path.join(parent, 'config.json')):
      raise checkpoint_errors.WorkdirError(
          f'workdir {shown}: no config.json here but in its parent; pass {parent}')
    if runs := restore.workdirs_below(p):  # the demo's --workdir: one workdir per model
      raise checkpoint_errors.WorkdirError(
          f'workdir {shown}: no config.json here but it holds the training workdirs '
          f'{", ".join(runs)}; pass {os.path.join(p, runs[0])}')
    raise checkpoint_errors.WorkdirError(
        f'workdir {shown}: no config.json, so not a training workdir; {hint}')
  return p


def _caller_level() -> int:
  """`stacklevel` of the first frame outside this module: a warning names the user's line."""
  frame, level = sys._getframe(1), 1  # pylint: disable=protected-access
  while frame is not None and frame.f_code.co_filename == __file__:
    frame, level = frame.f_back, level + 1
  return level


def load(workdir: str | os.PathLike, step: int | None = None, *, method: str | None = None,
         layer: str | Sequence[str] | None = None,
         overrides: dict[str, Any] | None = None, batch_size: int = 8) -> Model:
  """Restores the checkpoint training selected (the best by `config.best_metric`, else the
  newest) of a training workdir, or `step`, for the calls above.

  method / layer: the defaults of `cam`, `boxes`, ... (else the checkpoint's config.eval);
  overrides: dotted `eval.*` keys, e.g. {'eval.box_threshold': 0.4} (others, misspelled
    keys and wrong types are a one-line ValueError).
  """
  workdir = _workdir(workdir)
  _check_step(step)
  _check_method(method)
  _check_names(layer, 'layer', "'features.14' or ['features.14', 'features.18']")
  batch_size = _check_batch_size(batch_size)
  method = cam_lib.canonical_method(method) if method else None
  predictor = predictor_lib.Predictor(workdir, step, method, layer, overrides=overrides)
  if note := predictor.unused_note('load(batch_size=...)'):
    warnings.warn(f'overrides {note}', UserWarning, stacklevel=_caller_level())
  return Model(predictor, batch_size=batch_size)
