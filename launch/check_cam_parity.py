r"""CAM parity against pytorch-grad-cam: live comparison and the committed CI fixture.

Builds small torch models (conv feature extractor 32x32x3 -> 8x8x16, then (a) a GAP + linear
head, where Grad-CAM reduces to CAM, and (b) a flatten + MLP head like VGG's classifier, where
gradients vary over positions), runs pytorch-grad-cam for every method on identical weights and
inputs, recomputes the maps with `aesthetics_jax.explain.cam` and prints max |diff| and the per-image
correlation. `--write` also stores weights, inputs and expected maps in
tests/fixtures/cam_parity.npz, which tests/test_cam.py checks without torch.

  python -m launch.check_cam_parity                # live: several random models
  python -m launch.check_cam_parity --write        # regenerate the fixture (seed 0)

Needs the optional torch extras (`pip install .[torch]`); the JAX toy models below do not.
"""
from __future__ import annotations

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
FIXTURE = os.path.join(os.path.dirname(__file__), '..', 'tests', 'fixtures', 'cam_parity.npz')


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
  hid = jax.nn.relu(jnp.dot(flat, jnp.asarray(w[p + 'fc1.weight']).T, precision=hp) + w[p + 'fc1.bias'])
  return jnp.dot(hid, jnp.asarray(w[p + 'fc2.weight']).T, precision=hp) + w[p + 'fc2.bias']


def jax_maps(w: dict, images: np.ndarray, head: str, cats, methods=tuple(METHOD_CLASSES)) -> dict:
  """pytorch-grad-cam-ordered maps `[B,H,W]` per method for per-image categories `cats [B]`."""
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
                                                  images=im))(A, x)
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


def torch_run(seed: int, size: int = 32):
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
      with getattr(pytorch_grad_cam, cls)(model=model, target_layers=[model.features]) as c:
        if m == 'scorecam':
          c.batch_size = 16
        expected[f'{head}/{m}'] = np.asarray(c(input_tensor=images, targets=targets), np.float32)
  return w, images.permute(0, 2, 3, 1).numpy().astype(np.float32), expected, cats


def write_fixture(path: str, w: dict, images: np.ndarray, expected: dict, cats: dict) -> None:
  arrays = {f'w/{k}': v for k, v in w.items()}
  arrays.update({f'cats/{k}': v.astype(np.int32) for k, v in cats.items()})
  arrays['images'] = images
  arrays.update({f'expected/{k}': v for k, v in expected.items()})
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, suffix='.npz')
  with os.fdopen(fd, 'wb') as f:
    np.savez_compressed(f, **arrays)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def load_fixture(path: str = FIXTURE):
  """(weights, images [B,H,W,3], expected {'head/method': [B,H,W]}, cats {head: [B]}) from
  the committed npz."""
  with np.load(path) as z:
    w = {k[2:]: z[k] for k in z.files if k.startswith('w/')}
    exp = {k[9:]: z[k] for k in z.files if k.startswith('expected/')}
    cats = {k[5:]: z[k] for k in z.files if k.startswith('cats/')}
    return w, z['images'], exp, cats


def main(argv) -> None:
  from absl import flags
  del argv
  F = flags.FLAGS
  try:
    import pytorch_grad_cam  # noqa: F401
  except ImportError:
    print('check_cam_parity: torch / grad-cam are not installed; run `pip install .[torch]` '
          '(or `pip install grad-cam`)', file=sys.stderr)
    sys.exit(1)
  worst = {}
  for seed in range(F.num_seeds):
    w, images, expected, cats = torch_run(seed, F.size)
    if F.write and seed == 0:
      write_fixture(F.fixture, w, images, expected, cats)
      print(f'wrote {os.path.abspath(F.fixture)} ({os.path.getsize(F.fixture)} bytes)')
    for head in HEADS:
      got = jax_maps(w, images, head, cats[head])
      for m in METHOD_CLASSES:
        d, c = compare(expected[f'{head}/{m}'], got[m])
        flat = sum(int(e.std() == 0) for e in expected[f'{head}/{m}'])
        if flat:
          print(f'seed {seed} {head}/{m}: {flat} all-zero map(s)')
        pd, pc = worst.get((head, m), (0.0, 1.0))
        worst[(head, m)] = (max(pd, d), min(pc, c))
  print(f'pytorch-grad-cam parity over {F.num_seeds} random model(s), {F.size}x{F.size} inputs, '
        f'{F.size // 4}x{F.size // 4}x16 maps (worst case):')
  print(f"{'head':5s} {'method':10s} {'max|diff|':>10s} {'min corr':>12s}")
  ok = True
  for (head, m), (d, c) in worst.items():
    flag = '' if d <= 5e-4 and c >= 0.9999 else '  FAIL'
    ok &= not flag
    print(f'{head:5s} {m:10s} {d:10.2e} {c:12.8f}{flag}')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_integer('num_seeds', 5, 'random torch models to compare')
  flags.DEFINE_integer('size', 32, 'input size (maps are size/4)')
  flags.DEFINE_bool('write', False, 'write the seed-0 fixture for tests/test_cam.py')
  flags.DEFINE_string('fixture', FIXTURE, 'fixture path')
  app.run(main)
