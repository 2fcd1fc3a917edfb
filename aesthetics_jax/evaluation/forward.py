"""The jitted forward of evaluation and prediction: features → head → CAMs, from one feature
map.

`make_forward` builds one function per (model, method, layers): the encoder runs once up to
the CAM layer, the rest of the network and its vjp run on that activation, for the aesthetic
target (+ all 10 score buckets and the top predicted tag for the two-headed MobileNetV2).
`Predictor` (prediction) and the evaluation job (`evaluation/run.py`, over the test split) use
it; `layer_maps_many` serves the evaluators that need several methods at once.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from aesthetics_jax import cpu_backend
from aesthetics_jax import models
from aesthetics_jax import parallel
from aesthetics_jax.data import preprocess
from aesthetics_jax.explain import cam
from aesthetics_jax.models import outputs as outputs_lib


# Methods with a host callback inside the jitted maps (EigenCAM's numpy SVD, for
# pytorch-grad-cam's sign): across several CPU devices the callback deadlocks, XLA aborting in
# its all-reduce after 40 s (`evaluation/run.eval_meshes`).
HOST_CALLBACK_METHODS = frozenset({'eigencam'})


def callback_safe_mesh(mesh, methods: Sequence[str]):
  """`mesh`, or a mesh of this process's first device when `methods` (canonical names) have a
  host callback and `mesh` spans several CPU devices."""
  if (mesh.size > 1 and jax.default_backend() == 'cpu'
      and HOST_CALLBACK_METHODS.intersection(methods)):
    return parallel.make_mesh(jax.local_devices()[:1])
  return mesh


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
               x: jax.Array, target_fn, num_shards: int = 1):
  """(outputs, maps) from the activation `first` at `layers[0]` (call inside jit).

  One layer: raw maps [B,T,h,w] at it. Several: each activation feeds the next segment
  (`features_between`), one vjp yields every layer's gradients, and the maps are fused as
  pytorch-grad-cam does (`cam.fuse_layers`): [B,T,S,S], min-max scaled per map.
  x: the model input [B,S,S,3] (ScoreCAM re-runs the model on masked copies of it).
  num_shards: devices the batch is sharded over (loops over rows stay on each device).
  """
  outputs, maps = layer_maps_many(model, variables, layers, (method,), first, x, target_fn,
                                  num_shards)
  return outputs, maps[method]


def layer_maps_many(model, variables, layers: Sequence[str], methods: Sequence[str],
                    first: jax.Array, x: jax.Array, target_fn, num_shards: int = 1):
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
  b = first.shape[0]
  # Several layers over several devices: the batch as [devices, B/devices] and the maps
  # vmapped over that leading axis. The vjp through the convs between the layers is vmapped
  # over the T targets, and JAX folds that axis into the conv's batch T-major ([T*B]), which
  # no batch sharding can split: XLA all-gathered it. Folded under a device axis, it is
  # [devices*T*B/devices], split by device.
  per_device = num_shards > 1 and len(layers) > 1 and b % num_shards == 0
  shards = 1 if per_device else num_shards

  def maps_of(first, x):
    kw = {}
    if 'scorecam' in methods:  # the full model on masked copies of x
      # On CPU one channel's B masked images per call, the encoder 2 images at a time (small
      # batches keep the caches warm, as features_fn); elsewhere 16 channels per call.
      chunk = parallel.default_chunk()
      encoder = parallel.features_fn(model, chunk, num_shards=shards)
      kw = dict(model_fn=lambda im: model.apply(variables, encoder(variables, im),
                                                method='head'),
                images=x, batch_size=1 if chunk > 0 else 16)
    return cam.compute_layers_many(tuple(methods), steps, first, target_fn, **kw,
                                   rectified=[lay in model.RECTIFIED_LAYERS for lay in layers])

  if per_device:
    split = lambda v: v.reshape((num_shards, b // num_shards) + v.shape[1:])  # noqa: E731
    many = jax.tree.map(lambda v: v.reshape((b,) + v.shape[2:]),
                        jax.vmap(maps_of)(split(first), split(x)))
  else:
    many = maps_of(first, x)
  return outputs, {m: maps[0] if len(maps) == 1 else cam.fuse_layers(maps, x.shape[1:3],
                                                                     num_shards)
                   for m, maps in many.items()}


def map_size(model, variables, layers: Sequence[str], size: int) -> tuple[int, int]:
  """(h, w) of the CAM at `layers` for an S×S input: the first layer's grid; fused layers
  come at S×S."""
  if len(layers) > 1:
    return size, size
  x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  a = jax.eval_shape(lambda v, x: model.apply(v, x, layers[0], method='features_until'),
                     variables, x)
  return int(a.shape[1]), int(a.shape[2])


def one_cell_note(model, variables, layers: Sequence[str], size: int, *,
                  consequence: str = '"map": "empty", with no box or crop',
                  flag: str = '--cam_layers={}') -> str | None:
  """Why every map is empty when the CAM grid is 1x1 at this input size (a constant map
  points nowhere: no box, no crop), naming the deepest layer whose grid is finer as `flag`
  (predict's by default; evaluate's is a config key) says it; else None."""
  if map_size(model, variables, layers, size) != (1, 1):
    return None
  hint = ''
  for lay in reversed(model.LAYERS[:model.LAYERS.index(layers[0])]):
    hw = map_size(model, variables, (lay,), size)
    if hw != (1, 1):
      hint = f'; pass {flag.format(lay)} ({hw[0]}x{hw[1]})'
      break
  return (f'CAM layer {layers[0]} gives a 1x1 map for this model\'s {size} px input: every map '
          f'is constant, so {consequence}{hint}')


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
                 names: Sequence[str] | None = None, layers: Sequence[str] | str | None = None,
                 num_shards: int | None = None):
  """jitted `(variables, x) -> (predict_outputs dict [B,...], maps f32 [B,T,h,w])`.

  x: uint8 [B,S,S,3], or model input f32 [B,S,S,3] when `normalize is None` (eval batches).
  layers: torchvision module paths of the CAM layers (`config.eval.cam_layers`); empty or None:
    the encoder's output (`model.default_layer`). Unknown names raise a one-line ValueError here.
  One layer: raw maps [B,T,h,w] at that layer; the encoder runs once up to the layer
  (`features_until`), the rest of the network and its vjp run on that activation. Several
  layers: the network runs once, each layer's activation feeding the next segment
  (`features_between`), one vjp yields every layer's gradients, and the maps are fused as
  pytorch-grad-cam does (`cam.fuse_layers`): [B,T,S,S], already min-max scaled per map.
  num_shards: devices of the mesh the batch is sharded over (default every device); the
    per-image loops run per device, with no collective (`parallel.map_batch`).
  """
  names = tuple(names or target_names(arch))
  layers = models.resolve_layers(model, layers)
  target_fn = cam.targets_for(arch, names)
  # Encoder in micro-batches on CPU (~3x there, same result; whole batch on accelerators).
  chunk, num_shards = parallel.default_chunk(), num_shards or jax.device_count()

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def forward(variables, x):
    if normalize is not None:
      x = preprocess.to_model_input(x, normalize=normalize)
    first = parallel.map_batch(
        lambda xi: model.apply(variables, xi, layers[0], method='features_until'), x, chunk,
        num_shards)
    outputs, maps = layer_maps(model, variables, layers, method, first, x, target_fn,
                               num_shards)
    return outputs_lib.predict_outputs(outputs, arch), maps

  return forward
