r"""CAM parity against pytorch-grad-cam: live comparison and the committed CI fixtures.

Two kinds of models, all 7 methods, identical weights and inputs on both sides; prints max
|diff| of the normalised maps (pytorch-grad-cam's output order) and the per-image correlation:
  * toy models (conv feature extractor 32x32x3 -> 8x8x16, then (a) a GAP + linear head, where
    Grad-CAM reduces to CAM, and (b) a flatten + MLP head like VGG's classifier, where gradients
    vary over positions), several random seeds;
  * torchvision's FULL MobileNetV2 and VGG16 (torchvision's random init, random BatchNorm affine
    with statistics calibrated on data), converted with `aesthetics_jax.models.pretrained`, at
    intermediate layers (pytorch-grad-cam's `target_layers`: `features.14`, `features.18`;
    `features.22`, `features.28` (a conv), `features.29`) and one fused pair per model.
`--write` stores the fixtures that tests/test_cam.py checks without torch:
  tests/fixtures/cam_parity.npz         toy weights, inputs and expected maps (seed 0);
  tests/fixtures/cam_layers_parity.npz  pytorch-grad-cam's maps of the committed small
    torchvision models (mobilenet_v2_w025.safetensors, vgg_tiny.safetensors; parity_io.npz's
    inputs) at an intermediate layer and a fused pair (`FIXTURE_LAYERS`).
  Both store EigenCAM with the sign fixed by |max| >= |min| (`FIXTURE_EIGEN_SIGN`), not
  LAPACK's, so that a numpy release cannot flip it.

  python -m launch.check_cam_parity                  # live: toy seeds + torchvision models
  python -m launch.check_cam_parity --write          # regenerate both fixtures
  python -m launch.check_cam_parity --models=toy     # toy models only ('torchvision' likewise)

Needs the optional torch extras (`pip install .[torch]`); the JAX side below does not.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile

import numpy as np

METHOD_CLASSES = {
    'gradcam': 'GradCAM', 'gradcampp': 'GradCAMPlusPlus', 'hirescam': 'HiResCAM',
    'xgradcam': 'XGradCAM', 'layercam': 'LayerCAM', 'eigencam': 'EigenCAM',
    'scorecam': 'ScoreCAM',
}
HEADS = ('gap', 'mlp')
NUM_CLASSES = {'gap': 5, 'mlp': 4}
FIXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures')
FIXTURE = os.path.join(FIXTURES_DIR, 'cam_parity.npz')
LAYERS_FIXTURE = os.path.join(FIXTURES_DIR, 'cam_layers_parity.npz')
# Live check on the full torchvision models: CAM layer sets (one entry = one map per method).
LIVE_LAYERS = {
    'mobilenet_v2': (('features.14',), ('features.18',), ('features.14', 'features.18')),
    # features.28: a conv layer, whose maps follow pytorch-grad-cam's in-place-ReLU convention
    # (they differed by up to 1.0 before `RECTIFIED_LAYERS`).
    'vgg16': (('features.22',), ('features.28',), ('features.29',),
              ('features.22', 'features.29')),
}
# Committed fixture on the small random models at 64 px: layers where no method's map is flat
# (features.14 of MobileNetV2 is 2x2 there and every gradient map is rectified to zero), and
# few channels (ScoreCAM runs the model once per channel: features.18 has 1280). VGG16's
# features.28 is a conv, whose output torchvision's ReLU(inplace=True) overwrites after
# pytorch-grad-cam's hook saw it (`RECTIFIED_LAYERS`).
FIXTURE_LAYERS = {
    'mobilenet_v2': (('features.13',), ('features.3', 'features.13')),
    'vgg16': (('features.22',), ('features.15', 'features.29'), ('features.28',)),
}
TOLERANCE = 5e-4
# EigenCAM's sign is the SVD's, which follows numpy's LAPACK build: a fixture recorded with one
# numpy release can hold the opposite sign from the next (seen: numpy 2.4.6 flipped a VGG16
# map of the layers fixture). Live checks compare the stock sign (both sides call the same
# numpy in one process; `test_cam.py` checks our projection against numpy's SVD directly);
# the committed fixtures store EigenCAM with the sign flipped so that |max| >= |min| on both
# sides ('max_abs'), so they test everything but the build-dependent sign.
FIXTURE_EIGEN_SIGN = 'max_abs'


# ---------------------------------------------------------------------------------------------
# JAX twins of the torch toy models (NHWC; weights in torch layout from the npz).


def jax_features(w: dict, x):
  """`[B,32,32,3] -> [B,8,8,16]`: (conv3x3 + ReLU + maxpool2) x 2, as torch computes it."""
  import jax
  import jax.numpy as jnp

  def conv(x, k, b):
    k = jnp.transpose(jnp.asarray(k), (2, 3, 1, 0))  # OIHW -> HWIO
    y = jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     precision=jax.lax.Precision.HIGHEST)
    return y + jnp.asarray(b)

  def pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')

  x = pool(jax.nn.relu(conv(x, w['conv0.weight'], w['conv0.bias'])))
  return pool(jax.nn.relu(conv(x, w['conv1.weight'], w['conv1.bias'])))


def jax_head(w: dict, head: str, A):
  """`[B,8,8,16] -> logits [B,K]`; 'mlp' flattens in torch's (C,h,w) order."""
  import jax
  import jax.numpy as jnp
  hp = jax.lax.Precision.HIGHEST
  p = f'{head}.'
  if head == 'gap':
    return jnp.dot(A.mean(axis=(1, 2)), jnp.asarray(w[p + 'fc.weight']).T, precision=hp) + w[
        p + 'fc.bias']
  flat = jnp.transpose(A, (0, 3, 1, 2)).reshape(A.shape[0], -1)
  hid = jax.nn.relu(jnp.dot(flat, jnp.asarray(w[p + 'fc1.weight']).T, precision=hp)
                    + w[p + 'fc1.bias'])
  return jnp.dot(hid, jnp.asarray(w[p + 'fc2.weight']).T, precision=hp) + w[p + 'fc2.bias']


def jax_maps(w: dict, images: np.ndarray, head: str, cats, methods=tuple(METHOD_CLASSES),
             eigen_sign: str = 'pytorch_grad_cam') -> dict:
  """pytorch-grad-cam-ordered maps `[B,H,W]` per method for per-image categories `cats [B]`
  (`eigen_sign`: see `cam.eigen_projection`)."""
  import jax
  import jax.numpy as jnp
  from aesthetics_jax.explain import cam

  x = jnp.asarray(images, jnp.float32)
  A = jax_features(w, x)
  head_fn = lambda a: jax_head(w, head, a)
  target_fn = lambda out: out  # all K classes at once (vmapped cotangents)
  model_fn = lambda im: head_fn(jax_features(w, im))
  cats = np.asarray(cats)
  out = {}
  for m in methods:
    raw = jax.jit(lambda a, im, m=m: cam.compute(m, head_fn, a, target_fn, model_fn=model_fn,
                                                  images=im, eigen_sign=eigen_sign))(A, x)
    sel = raw[np.arange(len(cats)), cats]  # [B, h, w]
    out[m] = np.asarray(cam.torch_like(sel, x.shape[1:3]))
  return out


def compare(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
  """(max |diff|, min per-image Pearson correlation) of `[B,H,W]` maps."""
  diff = float(np.abs(expected - got).max())
  corrs = []
  for e, g in zip(expected, got):
    if e.std() == 0 or g.std() == 0:  # an all-zero map (everything rectified away)
      corrs.append(1.0 if np.abs(e - g).max() <= 5e-4 and e.std() == g.std() else 0.0)
    else:
      corrs.append(float(np.corrcoef(e.ravel(), g.ravel())[0, 1]))
  return diff, min(corrs)


# ---------------------------------------------------------------------------------------------
# Torch side (imported lazily: CI has no torch).


@contextlib.contextmanager
def torch_eigen_sign(sign: str = 'pytorch_grad_cam'):
  """pytorch-grad-cam's EigenCAM with its stock projection ('pytorch_grad_cam') or the same
  projection flipped per image so that |max| >= |min| ('max_abs', as `cam.eigen_projection`)."""
  if sign == 'pytorch_grad_cam':
    yield
    return
  if sign != 'max_abs':
    raise ValueError(f'eigen sign {sign!r}')
  from pytorch_grad_cam import eigen_cam
  stock = eigen_cam.get_2d_projection

  def canonical(activations):
    p = stock(activations)  # [B, h, w]
    flip = np.abs(p.min(axis=(1, 2))) > np.abs(p.max(axis=(1, 2)))
    return np.where(flip[:, None, None], -p, p).astype(np.float32)

  eigen_cam.get_2d_projection = canonical
  try:
    yield
  finally:
    eigen_cam.get_2d_projection = stock


def torch_run(seed: int, size: int = 32, eigen_sign: str = 'pytorch_grad_cam'):
  """Random torch models + inputs; pytorch-grad-cam maps for each image's predicted class
  (its default target). Returns (weights, images NHWC, expected {'head/method'}, cats {head})."""
  import torch
  import pytorch_grad_cam
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  nn = torch.nn

  torch.manual_seed(seed)
  features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
  hs = size // 4
  heads = {
      'gap': nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)),
      'mlp': nn.Sequential(nn.Flatten(), nn.Linear(16 * hs * hs, 16), nn.ReLU(), nn.Linear(16, 4)),
  }
  w = {'conv0.weight': features[0].weight, 'conv0.bias': features[0].bias,
       'conv1.weight': features[3].weight, 'conv1.bias': features[3].bias,
       'gap.fc.weight': heads['gap'][2].weight, 'gap.fc.bias': heads['gap'][2].bias,
       'mlp.fc1.weight': heads['mlp'][1].weight, 'mlp.fc1.bias': heads['mlp'][1].bias,
       'mlp.fc2.weight': heads['mlp'][3].weight, 'mlp.fc2.bias': heads['mlp'][3].bias}
  w = {k: v.detach().numpy().astype(np.float32) for k, v in w.items()}
  # Smooth-ish inputs (a bright blob on noise) so maps have structure.
  g = torch.Generator().manual_seed(seed + 1)
  images = torch.rand(2, 3, size, size, generator=g)
  yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
  for b, (cy, cx) in enumerate([(size // 3, size // 4), (2 * size // 3, 3 * size // 4)]):
    images[b] += 1.5 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
  expected, cats = {}, {}
  for head in HEADS:
    model = nn.Sequential()
    model.add_module('features', features)
    model.add_module('head', heads[head])
    model.eval()
    with torch.no_grad():
      cats[head] = model(images).argmax(-1).numpy()
    targets = [ClassifierOutputTarget(int(c)) for c in cats[head]]
    for m, cls in METHOD_CLASSES.items():
      with torch_eigen_sign(eigen_sign), getattr(pytorch_grad_cam, cls)(
          model=model, target_layers=[model.features]) as c:
        if m == 'scorecam':
          c.batch_size = 16
        expected[f'{head}/{m}'] = np.asarray(c(input_tensor=images, targets=targets), np.float32)
  return w, images.permute(0, 2, 3, 1).numpy().astype(np.float32), expected, cats


# ---------------------------------------------------------------------------------------------
# Torchvision models at any layer: JAX side.


def layers_key(layers) -> str:
  """('features.6', 'features.14') -> 'features.6+features.14' (fixture / report key)."""
  return '+'.join(layers)


def jax_layer_maps(model, variables, images: np.ndarray, layers, cats,
                   methods=tuple(METHOD_CLASSES), scorecam_batch: int = 16,
                   eigen_sign: str = 'pytorch_grad_cam') -> dict:
  """pytorch-grad-cam-ordered maps `[B,H,W]` per method at `layers` (fused if several) for
  per-image ImageNet-head categories `cats [B]`, computed as `forward.make_forward` does:
  the network runs once from the first layer and one vjp gives every layer's gradients."""
  import functools
  import jax
  import jax.numpy as jnp
  from aesthetics_jax import models
  from aesthetics_jax.explain import cam

  layers = models.resolve_layers(model, layers)
  x = jnp.asarray(images, jnp.float32)
  cats = jnp.asarray(np.asarray(cats), jnp.int32)
  target_fn = lambda out: jnp.take_along_axis(out['imagenet_logits'], cats[:, None], axis=1)

  # One jit for all methods: the gradient methods share one forward pass and one vjp.
  @jax.jit
  def maps(variables, x):
    steps = [functools.partial(model.apply, variables, after=a, until=b,
                               method='features_between')
             for a, b in zip(layers[:-1], layers[1:])]
    steps.append(functools.partial(model.apply, variables, layer=layers[-1], method='rest'))
    first = model.apply(variables, x, layers[0], method='features_until')
    raw = cam.compute_layers_many(methods, steps, first, target_fn,
                                  model_fn=lambda im: model.apply(variables, im), images=x,
                                  batch_size=scorecam_batch, eigen_sign=eigen_sign,
                                  rectified=[lay in model.RECTIFIED_LAYERS for lay in layers])
    return {m: cam.fuse_layers([r[:, 0] for r in raw[m]], x.shape[1:3]) for m in methods}

  return {m: np.asarray(v) for m, v in maps(variables, x).items()}


def jax_model(arch: str, width: float = 1.0, fc_dim: int = 4096, num_classes: int = 1000):
  """Our model with torchvision's ImageNet classifier (`imagenet_classes`), float32."""
  from aesthetics_jax import models
  cfg = models.model_config(arch=arch, width_mult=width, fc_dim=fc_dim, vgg_pool_size=7,
                            dropout=0.5, dtype='float32', depthwise='auto')
  return models.create_model(cfg, imagenet_classes=num_classes)


def jax_variables(model, state: dict, arch: str, size: int) -> dict:
  """Variables of `model` with every torchvision tensor of `state` (numpy) converted by
  `pretrained.torch_to_flax`; the unused aesthetic heads keep their initial values."""
  from aesthetics_jax import models
  from aesthetics_jax.models import pretrained
  flat = pretrained.flatten_variables(models.init_variables(model, image_size=size))
  converted = pretrained.torch_to_flax(state, arch)
  extra = sorted(set(converted) - set(flat))
  if extra:
    raise ValueError(f'converted key {extra[0]} is not in the JAX model; check width/fc_dim')
  flat.update(converted)
  return pretrained.unflatten_variables(flat)


# Maps in [0, 1] are stored as uint16 (step 1.5e-5, far below TOLERANCE), as differences
# along rows (mod 2^16, lossless): smooth maps then compress ~2.5x better than float32.
MAP_SCALE = 65535


def encode_map(m: np.ndarray) -> np.ndarray:
  q = np.round(np.clip(m, 0, 1) * MAP_SCALE).astype(np.uint16)
  return np.diff(q, axis=-1, prepend=np.uint16(0))


def decode_map(stored: np.ndarray) -> np.ndarray:
  return np.cumsum(stored, axis=-1, dtype=np.uint16).astype(np.float32) / MAP_SCALE


def load_layers_fixture(path: str = LAYERS_FIXTURE) -> dict:
  """{'x': [B,H,W,3], '<arch>/cats': [B], '<arch>/<layers_key>/<method>': f32 [B,H,W]}."""
  with np.load(path) as z:
    return {k: decode_map(z[k]) if z[k].dtype == np.uint16 else z[k] for k in z.files}


def fixture_models(size: int = 64):
  """{arch: (model, variables)} of the committed small torchvision weights (no torch)."""
  import json
  from aesthetics_jax.models import pretrained
  meta = json.loads(open(os.path.join(FIXTURES_DIR, 'fixtures.json')).read())
  out = {}
  for arch, key in (('mobilenet_v2', 'mobilenet_v2'), ('vgg16', 'vgg')):
    m = meta[key]
    model = jax_model(arch, m['width_mult'], meta['vgg']['fc_dim'], m['num_classes'])
    state = pretrained.read_arrays(os.path.join(FIXTURES_DIR, m['file']))
    out[arch] = (model, jax_variables(model, state, arch, size))
  return out


# ---------------------------------------------------------------------------------------------
# Torchvision models at any layer: torch side (pytorch-grad-cam).


def torch_layer_maps(tmodel, images: np.ndarray, layers, cats, methods=tuple(METHOD_CLASSES),
                     scorecam_batch: int = 16, eigen_sign: str = 'pytorch_grad_cam') -> dict:
  """pytorch-grad-cam's maps `[B,H,W]` with `target_layers = [tmodel.features[i] ...]`, in the
  model's dtype (float64 after `.double()`; the last scale/resize is float32 in any case)."""
  import torch
  import pytorch_grad_cam
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
      next(tmodel.parameters()).dtype)
  modules = [tmodel.features[int(name.split('.')[1])] for name in layers]
  targets = [ClassifierOutputTarget(int(c)) for c in cats]
  out = {}
  for m in methods:
    with torch_eigen_sign(eigen_sign), getattr(pytorch_grad_cam, METHOD_CLASSES[m])(
        model=tmodel, target_layers=modules) as c:
      c.batch_size = scorecam_batch
      out[m] = np.asarray(c(input_tensor=x, targets=targets), np.float32)
  return out


def torch_predict(tmodel, images: np.ndarray) -> np.ndarray:
  """Argmax class per image `[B]` (pytorch-grad-cam's default target)."""
  import torch
  with torch.no_grad():
    logits = tmodel(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
  return logits.argmax(-1).numpy()


def smooth_images(seed: int, n: int, size: int) -> np.ndarray:
  """[n, size, size, 3] f32: noise plus two bright blobs per image, so maps have structure."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  x = rng.uniform(size=(n, size, size, 3)).astype(np.float32)
  for b in range(n):
    for cy, cx in rng.uniform(0.15, 0.85, size=(2, 2)) * size:
      blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
      x[b] += 1.5 * blob[..., None] * rng.uniform(0.3, 1.0, size=3)
  return x.astype(np.float32)


def torch_full_model(arch: str, seed: int, calibration: np.ndarray):
  """torchvision mobilenet_v2 / vgg16 (full width, 1000 classes): torchvision's random init;
  MobileNetV2's BatchNorm gets a random affine and running statistics of `calibration`."""
  import torch
  import torchvision
  torch.manual_seed(seed)
  tmodel = getattr(torchvision.models, arch)(weights=None)
  bns = [m for m in tmodel.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for bn in bns:
      bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
      bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.2)
      bn.reset_running_stats()
      bn.momentum = None  # cumulative average over the calibration batch
    if bns:
      tmodel.train()
      tmodel(torch.from_numpy(np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))))
  return tmodel.eval()


def state_numpy(tmodel) -> dict:
  return {k: v.detach().float().numpy() for k, v in tmodel.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def fixture_torch_models() -> dict:
  """{arch: torch model} of the committed small weights (make_fixtures.py's definitions)."""
  import json
  import torch
  import torchvision
  from safetensors.numpy import load_file
  spec = importlib.util.spec_from_file_location(
      'make_fixtures', os.path.join(FIXTURES_DIR, 'make_fixtures.py'))
  make_fixtures = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_fixtures)
  meta = json.loads(open(os.path.join(FIXTURES_DIR, 'fixtures.json')).read())
  mnv2 = torchvision.models.mobilenet_v2(width_mult=meta['mobilenet_v2']['width_mult'],
                                         num_classes=meta['mobilenet_v2']['num_classes'])
  tvgg = make_fixtures.TinyVGG(meta['vgg']['width_mult'], meta['vgg']['fc_dim'],
                               meta['vgg']['num_classes'])
  out = {}
  for arch, key, tmodel in (('mobilenet_v2', 'mobilenet_v2', mnv2), ('vgg16', 'vgg', tvgg)):
    state = load_file(os.path.join(FIXTURES_DIR, meta[key]['file']))
    tmodel.load_state_dict({k: torch.from_numpy(v.astype(np.float32) if v.dtype.kind == 'f'
                                                else v) for k, v in state.items()})
    out[arch] = tmodel.eval()
  return out


def write_layers_fixture(path: str = LAYERS_FIXTURE) -> None:
  """pytorch-grad-cam's maps of the committed small models on parity_io.npz's inputs."""
  with np.load(os.path.join(FIXTURES_DIR, 'parity_io.npz')) as z:
    x = z['x'].astype(np.float32)
  arrays = {'x': x}
  for arch, tmodel in fixture_torch_models().items():
    cats = torch_predict(tmodel, x)
    arrays[f'{arch}/cats'] = cats.astype(np.int32)
    for layers in FIXTURE_LAYERS[arch]:
      for m, v in torch_layer_maps(tmodel, x, layers, cats,
                                   eigen_sign=FIXTURE_EIGEN_SIGN).items():
        arrays[f'{arch}/{layers_key(layers)}/{m}'] = encode_map(v)
  _savez(path, arrays)


def _savez(path: str, arrays: dict) -> None:
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, suffix='.npz')
  with os.fdopen(fd, 'wb') as f:
    np.savez_compressed(f, **arrays)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def check_torchvision(sizes: dict, batch: int, scorecam_batch: int, seed: int = 0) -> dict:
  """{(arch, layers_key, method): (max |diff|, min corr, torch f32 error, our error)} on the
  full torchvision models, `batch` images of `sizes[arch]` pixels.

  Deep random networks can make a map ill-conditioned (a small maximum after large
  cancellations over channels), so float32 rounding alone moves it by more than TOLERANCE. The
  float32 errors (max |diff| to pytorch-grad-cam run in float64: torch's, ours) tell rounding
  from a real difference; ScoreCAM (softmax weights, well-conditioned) skips the costly float64
  run (None).
  """
  import copy
  import time
  results = {}
  for arch, layer_sets in LIVE_LAYERS.items():
    t0 = time.time()
    images = smooth_images(seed + 1, batch, sizes[arch])
    calibration = smooth_images(seed + 2, 16, sizes[arch])
    tmodel = torch_full_model(arch, seed, calibration)
    tmodel64 = copy.deepcopy(tmodel).double()
    cats = torch_predict(tmodel, images)
    model = jax_model(arch)
    variables = jax_variables(model, state_numpy(tmodel), arch, sizes[arch])
    for layers in layer_sets:
      expected = torch_layer_maps(tmodel, images, layers, cats, scorecam_batch=scorecam_batch)
      exact = torch_layer_maps(tmodel64, images, layers, cats,
                               methods=tuple(m for m in METHOD_CLASSES if m != 'scorecam'))
      got = jax_layer_maps(model, variables, images, layers, cats, scorecam_batch=scorecam_batch)
      for m in METHOD_CLASSES:
        f32 = (float(np.abs(expected[m] - exact[m]).max()),
               float(np.abs(got[m] - exact[m]).max())) if m in exact else (None, None)
        results[(arch, layers_key(layers), m)] = compare(expected[m], got[m]) + f32
      print(f'{arch} {layers_key(layers)}: done ({time.time() - t0:.0f} s)', flush=True)
  return results


def write_fixture(path: str, w: dict, images: np.ndarray, expected: dict, cats: dict) -> None:
  arrays = {f'w/{k}': v for k, v in w.items()}
  arrays.update({f'cats/{k}': v.astype(np.int32) for k, v in cats.items()})
  arrays['images'] = images
  arrays.update({f'expected/{k}': v for k, v in expected.items()})
  _savez(path, arrays)


def load_fixture(path: str = FIXTURE):
  """(weights, images [B,H,W,3], expected {'head/method': [B,H,W]}, cats {head: [B]}) from
  the committed npz."""
  with np.load(path) as z:
    w = {k[2:]: z[k] for k in z.files if k.startswith('w/')}
    exp = {k[9:]: z[k] for k in z.files if k.startswith('expected/')}
    cats = {k[5:]: z[k] for k in z.files if k.startswith('cats/')}
    return w, z['images'], exp, cats


def _verdict(d: float, c: float, torch_err=None, our_err=None) -> str:
  """'' (parity), 'float32-limited' (torch's own float32 map is off by more than TOLERANCE and
  ours is as close to float64 as torch's, within 2x), or 'FAIL'."""
  if d <= TOLERANCE and c >= 0.9999:
    return ''
  if torch_err is not None and torch_err > TOLERANCE and our_err <= 2 * torch_err:
    return 'float32-limited'
  return 'FAIL'


def _report(title: str, header: tuple[str, str], worst: dict) -> bool:
  print(title)
  print(f"{header[0]:14s} {header[1]:24s} {'method':10s} {'max|diff|':>10s} {'min corr':>12s}"
        f"{'torch f32 err':>15s} {'our f32 err':>12s}")
  ok = True
  fmt = lambda v: f'{v:.2e}' if v is not None else '-'
  for (a, b, m), (d, c, *errs) in worst.items():
    verdict = _verdict(d, c, *errs)
    ok &= verdict != 'FAIL'
    errs = errs or [None, None]
    print(f'{a:14s} {b:24s} {m:10s} {d:10.2e} {c:12.8f}{fmt(errs[0]):>15s}{fmt(errs[1]):>12s}'
          f'  {verdict}'.rstrip())
  print(f'parity: max|diff| <= {TOLERANCE:g} and corr >= 0.9999; f32 err = max|diff| to '
        'pytorch-grad-cam in float64')
  return ok


def main(argv) -> None:
  from absl import flags
  del argv
  F = flags.FLAGS
  if importlib.util.find_spec('pytorch_grad_cam') is None:
    print('check_cam_parity: torch / grad-cam are not installed; run `pip install .[torch]` '
          '(or `pip install grad-cam`)', file=sys.stderr)
    sys.exit(1)
  ok = True
  if F.write:
    write_layers_fixture(F.layers_fixture)
    print(f'wrote {os.path.abspath(F.layers_fixture)} '
          f'({os.path.getsize(F.layers_fixture)} bytes)')
  if 'toy' in F.models:
    worst = {}
    for seed in range(F.num_seeds):
      w, images, expected, cats = torch_run(seed, F.size)
      if F.write and seed == 0:
        write_fixture(F.fixture, *torch_run(seed, F.size, eigen_sign=FIXTURE_EIGEN_SIGN))
        print(f'wrote {os.path.abspath(F.fixture)} ({os.path.getsize(F.fixture)} bytes)')
      for head in HEADS:
        got = jax_maps(w, images, head, cats[head])
        for m in METHOD_CLASSES:
          d, c = compare(expected[f'{head}/{m}'], got[m])
          flat = sum(int(e.std() == 0) for e in expected[f'{head}/{m}'])
          if flat:
            print(f'seed {seed} {head}/{m}: {flat} all-zero map(s)')
          pd, pc = worst.get(('toy', head, m), (0.0, 1.0))
          worst[('toy', head, m)] = (max(pd, d), min(pc, c))
    ok &= _report(f'pytorch-grad-cam parity over {F.num_seeds} random toy model(s), '
                  f'{F.size}x{F.size} inputs, {F.size // 4}x{F.size // 4}x16 maps (worst case):',
                  ('model', 'head'), worst)
  if 'torchvision' in F.models:
    sizes = {'mobilenet_v2': F.mobilenet_size, 'vgg16': F.vgg_size}
    worst = check_torchvision(sizes, F.tv_batch, F.scorecam_batch)
    ok &= _report(f'pytorch-grad-cam parity, full torchvision models (random weights, '
                  f'calibrated BN), {F.tv_batch} images, MobileNetV2 at {F.mobilenet_size} px, '
                  f'VGG16 at {F.vgg_size} px (worst case):', ('arch', 'layers'), worst)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_list('models', ['toy', 'torchvision'], "'toy' and/or 'torchvision'")
  flags.DEFINE_integer('num_seeds', 5, 'random toy models to compare')
  flags.DEFINE_integer('size', 32, 'toy input size (maps are size/4)')
  # ScoreCAM runs the model once per channel (VGG16: 512 per layer): sizes for 2 CPU cores.
  flags.DEFINE_integer('mobilenet_size', 128, 'full MobileNetV2: input size')
  flags.DEFINE_integer('vgg_size', 64, 'full VGG16: input size')
  flags.DEFINE_integer('tv_batch', 2, 'torchvision models: images')
  flags.DEFINE_integer('scorecam_batch', 64, 'ScoreCAM: masked images per forward pass')
  flags.DEFINE_bool('write', False, 'write the fixtures for tests/test_cam.py')
  flags.DEFINE_string('fixture', FIXTURE, 'toy fixture path')
  flags.DEFINE_string('layers_fixture', LAYERS_FIXTURE, 'torchvision-layers fixture path')
  from aesthetics_jax.cli import common
  app.run(main, flags_parser=common.parse_flags)  # --help exits 0 (absl's exits 1)
