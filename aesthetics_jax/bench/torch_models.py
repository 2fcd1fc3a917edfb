"""The PyTorch reference models and pytorch-grad-cam calls, without JAX.

The peak-memory child of pytorch-grad-cam (`gradcam_setup`, run by `bench.memory`) imports
only this: a pytorch-grad-cam user's process holds no JAX, and loading it (through
`torch_ref`, which needs JAX for the rest) added ~150 MB to PyTorch's peak. `torch_ref`
re-exports these names.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from aesthetics_jax.bench.synthetic import photos

NUM_BUCKETS = 10


def set_threads(n: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  if n > 0:
    torch.set_num_threads(n)


def _randomize_bn(model, seed: int) -> None:
  import torch  # pylint: disable=import-outside-toplevel
  g = torch.Generator().manual_seed(seed + 7)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _calibrate_bn(model, seed: int) -> None:
  """Sets every BatchNorm's running statistics to those of photo-like inputs (one train-mode
  pass, cumulative average). With random weights and arbitrary statistics the activations of
  a deep net collapse to an input-independent constant, and every map would be flat; with
  data statistics, features (and maps) depend on the image, as with trained weights."""
  import torch  # pylint: disable=import-outside-toplevel
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for m in bns:
    m.reset_running_stats()
    m.momentum = None
  model.train()
  with torch.no_grad():
    model(to_nchw(photos(16, 112, seed=seed + 100), False))
  for m in bns:
    m.momentum = 0.1
  model.eval()


def mobilenet_v2(num_outputs: int = NUM_BUCKETS, seed: int = 0, channels_last: bool = False):
  """torchvision mobilenet_v2 (eval) whose classifier is Dropout + Linear(1280, num_outputs)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  m = torchvision.models.mobilenet_v2(weights=None)
  m.classifier[1] = torch.nn.Linear(m.last_channel, num_outputs)
  _randomize_bn(m, seed)
  _calibrate_bn(m, seed)
  # Scale the new head so that its logits have unit spread on image-like inputs: a saturated
  # softmax would make the mean-score gradient (and its Grad-CAM map) exactly zero.
  g = torch.Generator().manual_seed(seed + 11)
  with torch.no_grad():
    pooled = m.features(to_nchw(photos(4, 112, seed=seed + 101), False)).mean((2, 3))
    rms = float(pooled.pow(2).mean().sqrt()) or 1.0
    m.classifier[1].weight.normal_(0, 1.0 / (rms * m.last_channel ** 0.5), generator=g)
    m.classifier[1].bias.zero_()
  return m.to(memory_format=torch.channels_last) if channels_last else m


def vgg16(seed: int = 0, channels_last: bool = False):
  """torchvision vgg16 (eval) with a new Linear(4096, 1) high/low logit."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  m = torchvision.models.vgg16(weights=None)
  m.classifier[6] = torch.nn.Linear(4096, 1)
  m.eval()
  return m.to(memory_format=torch.channels_last) if channels_last else m


def to_nchw(x_nhwc: np.ndarray, channels_last: bool):
  """f32 [B,H,W,3] numpy → torch [B,3,H,W] (channels_last memory format if asked)."""
  import torch  # pylint: disable=import-outside-toplevel
  t = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
  return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def gradcam(tmodel):
  """pytorch-grad-cam GradCAM on `model.features[-1]` (the last 1x1 conv + BN + ReLU6)."""
  from pytorch_grad_cam import GradCAM  # pylint: disable=import-outside-toplevel
  return GradCAM(model=tmodel, target_layers=[tmodel.features[-1]])


def class_target(k: int):
  # pylint: disable-next=import-outside-toplevel
  from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
  return ClassifierOutputTarget(int(k))


def gradcam_maps(cam_obj, x, target_lists: Sequence[Sequence[Any]],
                 chunk: int = 0) -> list[np.ndarray]:
  """One pytorch-grad-cam call per target list (one target per image): [B,H,W] maps each;
  chunk > 0 = one call per chunk of `chunk` images (a user's loop over smaller batches)."""
  if chunk <= 0 or chunk >= x.shape[0]:
    return [cam_obj(input_tensor=x, targets=list(t)) for t in target_lists]
  return [np.concatenate([cam_obj(input_tensor=x[i:i + chunk], targets=list(t[i:i + chunk]))
                          for i in range(0, x.shape[0], chunk)]) for t in target_lists]


def gradcam_setup(batch: int, size: int, targets: str = 'one', channels_last: bool = True,
                  seed: int = 0, threads: int = 0, chunk: int = 0) -> Callable[[], Any]:
  """pytorch-grad-cam on MobileNetV2 (10-way head): one target or all 10 buckets per run,
  over chunks of `chunk` images if > 0."""
  set_threads(threads)
  tmodel = mobilenet_v2(NUM_BUCKETS, seed, channels_last)
  x = to_nchw(np.random.default_rng(seed).random((batch, size, size, 3), np.float32),
              channels_last)
  c = gradcam(tmodel)
  ks = [0] if targets == 'one' else list(range(NUM_BUCKETS))
  lists = [[class_target(k)] * batch for k in ks]
  return lambda: gradcam_maps(c, x, lists, chunk)


def _minmax(m):
  """pytorch-grad-cam's `scale_cam_image` per map of `[..., h, w]`: (m - min) / (1e-7 + max)."""
  m = m - m.amin((-2, -1), keepdim=True)
  return m / (1e-7 + m.amax((-2, -1), keepdim=True))


def torch_features(tmodel, compile_mode: str = '',
                cache: dict[tuple[int, str], Any] | None = None) -> Callable[[Any], Any]:
  """`tmodel.features`, or with `compile_mode` `torch.compile(tmodel.features, mode=...)`:
  the part of the hand-written Grad-CAM that dominates its time (the head and gradients at A
  stay eager). `cache`: one compiled module per (model, mode) across calls, so the one-target,
  10-bucket and study runs of a formulation reuse one compiled graph (a new torch.compile
  wrapper would compile again)."""
  if not compile_mode:
    return tmodel.features
  import torch  # pylint: disable=import-outside-toplevel
  key = (id(tmodel), compile_mode)
  if cache is None or key not in cache:
    fn = torch.compile(tmodel.features, mode=compile_mode)
    if cache is None:
      return fn
    cache[key] = fn
  return cache[key]


def handwritten_gradcam(tmodel, x, target_fn: Callable[[Any], Any], size: int, chunk: int = 0,
                        grads: str = 'batched', grad_mode: str = 'no_grad',
                        features: Callable[[Any], Any] | None = None) -> np.ndarray:
  """Grad-CAM at `tmodel.features`' output as a PyTorch user writes it for many targets:
  ONE forward of the features (under `grad_mode`: their graph is not needed for gradients at
  A), A made a leaf, the head (pool + classifier, torchvision's forward) on it, then the
  gradients of all T targets w.r.t. A in one `autograd.grad` call vmapped over one-hot
  grad_outputs (`grads='batched'`, is_grads_batched) or T calls (`'loop'`, retain_graph).
  Maps: spatial-mean weights, ReLU of the weighted sum, then pytorch-grad-cam's order
  (min-max, bilinear resize to `size` with cv2's half-pixel grid, ReLU, min-max).

  target_fn: head outputs [b, K] -> targets [b, T]. chunk > 0: the batch `chunk` images at a
  time. features: the features' forward to run (`torch_features`: compiled or not); None =
  `tmodel.features`. Returns float32 maps [B, T, size, size] on the host."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  if grads not in ('batched', 'loop'):
    raise ValueError(f"handwritten_gradcam: grads={grads!r}; use 'batched' or 'loop'")
  mode = torch.inference_mode if grad_mode == 'inference_mode' else torch.no_grad
  parts = [x[i:i + chunk] for i in range(0, x.shape[0], chunk)] if 0 < chunk else [x]
  feats = tmodel.features if features is None else features
  cams = []
  for p in parts:
    with mode():
      a = feats(p)
    # An inference tensor cannot require grad: clone it out of inference mode first.
    a = (a.clone() if grad_mode == 'inference_mode' else a).requires_grad_(True)
    with torch.enable_grad():
      y = target_fn(tmodel.classifier(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1)))
      t = y.shape[1]
      if grads == 'batched':
        eye = torch.eye(t, dtype=y.dtype, device=y.device)[:, None, :].expand(t, *y.shape)
        (g,) = torch.autograd.grad(y, a, grad_outputs=eye, is_grads_batched=True)
      else:
        g = torch.stack([torch.autograd.grad(y[:, k].sum(), a, retain_graph=k < t - 1)[0]
                         for k in range(t)])                                 # [T,b,C,h,w]
    with torch.no_grad():
      cams.append(torch.relu(torch.einsum('tbc,bchw->bthw', g.mean((3, 4)), a)))
  with torch.no_grad():
    cam = torch.cat(cams)
    b, t, h, w = cam.shape
    up = F.interpolate(_minmax(cam).reshape(b * t, 1, h, w), size=(size, size),
                       mode='bilinear', align_corners=False).reshape(b, t, size, size)
    out = _minmax(torch.relu(up))
  if out.device.type == 'cuda':
    torch.cuda.synchronize()
  return out.cpu().numpy()


def class_targets(ks: Sequence[int]) -> Callable[[Any], Any]:
  """Head outputs [b, K] -> the columns `ks` [b, len(ks)] (a ClassifierOutputTarget each)."""
  idx = [int(k) for k in ks]
  return lambda out: out[:, idx]


def handwritten_setup(batch: int, size: int, targets: str = 'one', channels_last: bool = True,
                      seed: int = 0, threads: int = 0, chunk: int = 0, grads: str = 'batched',
                      grad_mode: str = 'no_grad', compile_mode: str = '') -> Callable[[], Any]:
  """The hand-written torch Grad-CAM on MobileNetV2 (10-way head): one target or all 10
  buckets per run (the peak-memory child's workload, as `gradcam_setup`); with
  `compile_mode` its features compiled (on the first, warm-up call)."""
  set_threads(threads)
  tmodel = mobilenet_v2(NUM_BUCKETS, seed, channels_last)
  x = to_nchw(np.random.default_rng(seed).random((batch, size, size, 3), np.float32),
              channels_last)
  ks = [0] if targets == 'one' else list(range(NUM_BUCKETS))
  feats = torch_features(tmodel, compile_mode)
  return lambda: handwritten_gradcam(tmodel, x, class_targets(ks), size, chunk, grads,
                                     grad_mode, feats)
