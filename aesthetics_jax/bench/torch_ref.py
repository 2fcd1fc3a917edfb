"""PyTorch references for the benchmark suite (torch, torchvision, grad-cam: optional extra).

torch is imported inside the functions only: importing this module needs no torch, and CI
never calls these. The models are torchvision's with random weights and random BatchNorm
statistics (so BN is not the identity); `flax_variables` converts them with
`aesthetics_jax.models.pretrained` so both frameworks run IDENTICAL weights.

MobileNetV2's classifier is replaced by one Linear(1280, num_outputs): 10 outputs = the
aesthetic head (score buckets), 76 = score buckets + the 66 tags, which equals our two Dense
heads side by side (dropout is off at inference).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from aesthetics_jax.bench import formulations, workloads
from aesthetics_jax.bench import torch_models
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import sampling
from aesthetics_jax.explain import crop
from aesthetics_jax.models import pretrained

# The models and pytorch-grad-cam calls live in `torch_models`, JAX-free for the peak-memory
# children (a pytorch-grad-cam user's process holds no JAX); this module's API as before.
NUM_BUCKETS = torch_models.NUM_BUCKETS
set_threads, to_nchw = torch_models.set_threads, torch_models.to_nchw
mobilenet_v2, vgg16 = torch_models.mobilenet_v2, torch_models.vgg16
gradcam, gradcam_maps = torch_models.gradcam, torch_models.gradcam_maps
class_target, gradcam_setup = torch_models.class_target, torch_models.gradcam_setup
handwritten_gradcam, class_targets = torch_models.handwritten_gradcam, torch_models.class_targets
torch_features = torch_models.torch_features
NUM_TAGS = 66
INSTALL = "pip install -e '.[torch]'"


def unavailable() -> str | None:
  """None if torch, torchvision and pytorch-grad-cam import; else why not, in one line."""
  for name in ('torch', 'torchvision', 'pytorch_grad_cam'):
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      # Not only ImportError: a torchvision built for another torch fails registering ops.
      return f'{name}: {type(e).__name__}: {(str(e).splitlines() or [""])[0]}'
  return None


def device() -> str:
  """'cuda' when JAX runs on a GPU and torch sees one (the reference then runs there too,
  with cuDNN autotuning and TF32 matmuls on, as JAX's default float32 precision on GPU
  does), else 'cpu'."""
  import torch  # pylint: disable=import-outside-toplevel
  if jax.default_backend() == 'gpu' and torch.cuda.is_available():
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return 'cuda'
  return 'cpu'


def flax_variables(tmodel, arch: str, variables: dict) -> dict:
  """`variables` (from our model's init) with every leaf replaced by the torch model's.

  The encoder goes through `pretrained.torch_to_flax` (the converter users run); the
  replaced classifier becomes our heads: MobileNetV2 rows [0:10] → 'score', [10:76] → 'tags'
  (when present); VGG16's new output → 'logit'.
  """
  state = {k: v.detach().float().cpu().numpy() for k, v in tmodel.state_dict().items()}
  flat = pretrained.torch_to_flax(state, arch)
  target = pretrained.flatten_variables(jax.device_get(variables))
  if arch == 'mobilenet_v2':
    w, b = flat.pop('params/head/classifier/kernel'), flat.pop('params/head/classifier/bias')
    flat['params/head/score/kernel'], flat['params/head/score/bias'] = w[:, :10], b[:10]
    if w.shape[1] >= NUM_BUCKETS + NUM_TAGS:
      flat['params/head/tags/kernel'] = w[:, 10:10 + NUM_TAGS]
      flat['params/head/tags/bias'] = b[10:10 + NUM_TAGS]
  else:
    flat['params/head/logit/kernel'] = flat.pop('params/head/fc8/kernel')
    flat['params/head/logit/bias'] = flat.pop('params/head/fc8/bias')
  missing = sorted(k for k in target if k not in flat and not k.startswith('params/head/tags'))
  extra = sorted(k for k in flat if k not in target)
  if missing or extra:
    raise ValueError(f'torch→flax benchmark weights: missing {missing[:3]}, extra {extra[:3]}')
  for k, v in flat.items():
    if tuple(v.shape) != tuple(np.shape(target[k])):
      raise ValueError(f'torch→flax benchmark weights: {k} {v.shape} != {np.shape(target[k])}')
    target[k] = np.asarray(v, np.float32)
  return pretrained.unflatten_variables(target)


def variables(model, arch: str, size: int, tmodel=None):
  """Variables of our `model` on the device: `tmodel`'s weights when there is one (both
  frameworks then run identical weights), else random ones."""
  v = workloads.device_variables(model, size)
  return v if tmodel is None else jax.device_put(flax_variables(tmodel, arch, v))


def forward_fn(tmodel, x_nhwc: np.ndarray, channels_last: bool, what: str = 'features',
               chunk: int = 0) -> Callable[[], Any]:
  """Callable running `tmodel.features(x)` (or the full model) under inference_mode, the
  batch `chunk` images at a time when chunk > 0."""
  return formulation_fn(tmodel, x_nhwc, formulations.Formulation(
      'channels_last' if channels_last else 'contiguous', chunk), what)


def formulation_fn(tmodel, x_nhwc: np.ndarray, f: formulations.Formulation,
                   what: str = 'features') -> Callable[[], list]:
  """Callable running `f` of the forward: `tmodel` (already in f.layout) on x [B,H,W,3] in
  f.layout, chunked, under f.grad, compiled if f.compile (compilation happens on the first
  call: time it with `formulations.guarded_first_call`). Returns the list of outputs."""
  import torch  # pylint: disable=import-outside-toplevel
  dev = next(tmodel.parameters()).device
  x = to_nchw(x_nhwc, f.layout == 'channels_last').to(dev)
  m = tmodel.features if what == 'features' else tmodel
  if f.compile:
    m = torch.compile(m, mode=f.compile)
  parts = [x[i:i + f.chunk] for i in range(0, x.shape[0], f.chunk)] if f.chunk > 0 else [x]
  mode = torch.inference_mode if f.grad == 'inference_mode' else torch.no_grad
  amp = (torch.autocast(dev.type, dtype=getattr(torch, f.autocast)) if f.autocast
         else contextlib.nullcontext())
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)

  def run():
    with mode(), amp:
      out = [m(p) for p in parts]
    sync()  # CUDA calls return before the work is done: time the work
    return out
  return run


def reset_compiler() -> None:
  """Clears torch.compile's caches after a failed / interrupted compile, which otherwise
  leaves dynamo in a state where the next compile fails too (seen: 'RuntimeError when making
  fake tensor call'). Formulations compiled before recompile on their next (untimed first)
  call."""
  import torch  # pylint: disable=import-outside-toplevel
  torch._dynamo.reset()  # pylint: disable=protected-access


def runtime_info() -> dict[str, Any]:
  """What sets torch's CPU speed here: threads, oneDNN / MKL, the SIMD level ATen
  dispatches to, and versions (recorded next to the figures)."""
  import torch  # pylint: disable=import-outside-toplevel
  info: dict[str, Any] = {
      'version': torch.__version__, 'num_threads': torch.get_num_threads(),
      'num_interop_threads': torch.get_num_interop_threads(),
      'mkldnn_available': bool(torch.backends.mkldnn.is_available()),
      'mkldnn_enabled': bool(torch.backends.mkldnn.enabled),
      'mkl_available': bool(torch.backends.mkl.is_available())}
  if torch.cuda.is_available():
    info.update(cuda_device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
                cudnn_version=torch.backends.cudnn.version(),
                cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32))
  try:
    info['cpu_capability'] = torch.backends.cpu.get_cpu_capability()
  except AttributeError:  # torch < 2.1
    pass
  for line in torch.__config__.parallel_info().splitlines():
    line = line.strip()
    if line.startswith(('Intel(R) MKL-DNN', 'Intel(R) oneAPI', 'ATen parallel backend',
                        'OpenMP', 'omp_get_max_threads', 'mkl_get_max_threads')):
      info.setdefault('parallel_info', []).append(line)
  return info


def mean_score_target(output):
  """pytorch-grad-cam target: predicted mean score Σ softmax(score logits)·(1..10) of one
  image's output vector (our 'aesthetic' target)."""
  import torch  # pylint: disable=import-outside-toplevel
  p = torch.softmax(output[..., :NUM_BUCKETS], dim=-1)
  return (p * torch.arange(1, NUM_BUCKETS + 1, dtype=p.dtype, device=p.device)).sum(-1)


def gradcam_references(model, size: int, num_outputs: int, dev: str | None):
  """(our variables, {layout: (torch MobileNetV2, its GradCAM object)}, {layout: a hook-free
  copy of that model}) for the Grad-CAM sections: both layouts' torch models with one set of
  weights, ours read from them; then the torch models moved to `dev` (None: no torch, random
  variables, no references). pytorch-grad-cam reads the model's device when built and moves
  each input there, so the objects are made after the move. The copies are the hand-written
  Grad-CAM's (`handwritten_gradcam`): GradCAM's hooks on the target layer would store every
  forward's activations there, a cost (and a growing list) no hand-written user has."""
  import copy  # pylint: disable=import-outside-toplevel
  if dev is None:
    return variables(model, 'mobilenet_v2', size), {}, {}
  tms = {layout: mobilenet_v2(num_outputs, seed=0, channels_last=layout == 'channels_last')
         for layout in formulations.LAYOUTS}
  ours = variables(model, 'mobilenet_v2', size, tms['contiguous'])  # before the move
  refs, plain = {}, {}
  for layout, tm in tms.items():
    tm = tm.to(dev)
    plain[layout] = copy.deepcopy(tm)  # before GradCAM hooks the original
    refs[layout] = (tm, gradcam(tm))
  return ours, refs, plain


def top_tags(tmodel, x) -> np.ndarray:
  """Argmax tag (0-based, within the 66) per image, from one no-grad forward."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.inference_mode():
    out = tmodel(x)
  return out[:, NUM_BUCKETS:NUM_BUCKETS + NUM_TAGS].argmax(-1).cpu().numpy()


def study_batch(tmodel, cam_obj, x, threshold: float, chunk: int = 0
                ) -> dict[str, np.ndarray]:
  """The per-batch study with pytorch-grad-cam looped over the targets: aesthetic map,
  10 bucket maps, top-tag map (12 GradCAM calls, each over chunks of `chunk` images if > 0),
  boxes (aesthetic, attribute, average) and mean map intensity — what
  `workloads.make_study_step` computes in one pass."""
  b = x.shape[0]
  tags = top_tags(tmodel, x)
  targets = [[mean_score_target] * b]
  targets += [[class_target(k)] * b for k in range(NUM_BUCKETS)]
  targets += [[class_target(NUM_BUCKETS + t) for t in tags]]
  maps = gradcam_maps(cam_obj, x, targets, chunk)
  return _study_outputs(maps[0], np.stack(maps[1:11], 1), maps[-1], threshold)


def _study_outputs(aes: np.ndarray, buckets: np.ndarray, att: np.ndarray,
                   threshold: float) -> dict[str, np.ndarray]:
  """The study's per-image outputs from its maps: boxes (aesthetic, attribute, average) and
  the mean intensity of the aesthetic map."""
  box_aes = crop.boxes_np(aes, threshold)
  box_att = crop.boxes_np(att, threshold)
  avg = np.concatenate([(box_aes[:, :2] + box_att[:, :2]) // 2,
                        -((-(box_aes[:, 2:] + box_att[:, 2:])) // 2)], axis=1)
  return {'intensity': aes.mean((1, 2)), 'box_aesthetic': box_aes, 'box_attribute': box_att,
          'box_average': avg, 'bucket': buckets, 'aesthetic': aes, 'attribute': att}


def study_targets(out):
  """Head outputs [b, 76] -> the study's 12 targets [b, 12]: the mean score, the 10 buckets
  and each image's top tag (argmax of its tag logits), as `study_batch` asks pytorch-grad-cam."""
  import torch  # pylint: disable=import-outside-toplevel
  top = out[:, NUM_BUCKETS:NUM_BUCKETS + NUM_TAGS].detach().argmax(-1) + NUM_BUCKETS
  return torch.cat([mean_score_target(out)[:, None], out[:, :NUM_BUCKETS],
                    out.gather(1, top[:, None])], 1)


def handwritten_study_batch(tmodel, x, threshold: float, chunk: int = 0,
                            grads: str = 'batched', grad_mode: str = 'no_grad',
                            features: Callable[[Any], Any] | None = None
                            ) -> dict[str, np.ndarray]:
  """`study_batch` with the hand-written Grad-CAM: one forward (`features`, e.g. compiled;
  None = tmodel.features), the 12 targets' gradients at A in one call
  (`handwritten_gradcam`), the same boxes and intensity."""
  maps = handwritten_gradcam(tmodel, x, study_targets, x.shape[-1], chunk, grads, grad_mode,
                             features)
  return _study_outputs(maps[:, 0], maps[:, 1:11], maps[:, -1], threshold)


# ---------------------------------------------------------------------------------------
# The paper's frozen MobileNetV2 recipe, the plain PyTorch way.


def emd_loss(logits, target_dist, r: float = 2.0):
  """NIMA's EMD over CDFs of the 10 buckets, mean over the batch."""
  import torch  # pylint: disable=import-outside-toplevel
  p = torch.softmax(logits, -1)
  d = torch.cumsum(p, -1) - torch.cumsum(target_dist, -1)
  return (d.abs().pow(r).mean(-1)).pow(1.0 / r).mean()


def recipe_epoch_fn(tmodel, images: Sequence[bytes], dists: np.ndarray, tags: np.ndarray,
                    batch_size: int, resize_size: int, image_size: int, workers: int,
                    channels_last: bool = True, lr: float = 3e-6) -> Callable[[int], dict]:
  """`epoch(e)` = one epoch of the plain loop: decode + random crop every image (the last
  batch may be shorter), frozen features recomputed (no_grad), two-headed loss (EMD +
  soft-label tag CE), Adam on the head.

  tmodel: `mobilenet_v2(num_outputs=76)`; only its classifier trains.
  """
  import torch  # pylint: disable=import-outside-toplevel
  for p in tmodel.features.parameters():
    p.requires_grad_(False)
  head = tmodel.classifier
  opt = torch.optim.Adam(head.parameters(), lr=lr)
  dists_t = torch.from_numpy(np.asarray(dists, np.float32))
  tags_t = torch.from_numpy(np.asarray(tags, np.float32))
  n = len(images)
  pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))

  def epoch(e: int) -> dict:
    order = np.random.default_rng(e).permutation(n)
    t_data = t_model = 0.0
    loss_v = 0.0
    # The last, shorter batch too: ours encodes every image, and dropping it ran no batch at
    # all below 32 images (0 s over n images) and timed too few images otherwise.
    for s in range(0, n, batch_size):
      idx = order[s:s + batch_size]
      t0 = time.perf_counter()
      imgs = list(pool.map(lambda i: preprocess.preprocess_train_np(
          images[i], resize_size, image_size, np.random.default_rng([e, int(i)]), False), idx))
      x = to_nchw(np.stack(imgs).astype(np.float32) / 255.0, channels_last)
      t1 = time.perf_counter()
      tmodel.features.eval()
      with torch.no_grad():  # frozen encoder: recomputed every epoch
        a = tmodel.features(x)
        pooled = torch.nn.functional.adaptive_avg_pool2d(a, 1).flatten(1)
      head.train()
      out = head(pooled)
      loss = emd_loss(out[:, :NUM_BUCKETS], dists_t[idx])
      logp = torch.log_softmax(out[:, NUM_BUCKETS:], -1)
      loss = loss - (tags_t[idx] * logp).sum(-1).mean()
      opt.zero_grad()
      loss.backward()
      opt.step()
      loss_v = float(loss.detach())
      t_model += time.perf_counter() - t1
      t_data += t1 - t0
    return {'data_s': t_data, 'model_s': t_model, 'loss': loss_v}

  return epoch


def recipe_setup(num_images: int, epochs: int, batch: int = 32, resize_size: int = 256,
                 image_size: int = 224, workers: int = 1, threads: int = 0,
                 seed: int = 0) -> Callable[[], dict]:
  """Child-process workload (bench.memory): `epochs` epochs of the plain PyTorch recipe loop
  on `num_images` synthetic JPEGs, in a fresh process as a user's script would run (an
  in-process loop after pytorch-grad-cam ran was up to 3x faster here, for reasons not
  pinned down; the fresh process is the conservative reference)."""
  set_threads(threads)
  pool = workloads.jpeg_pool(32, seed=3)
  src = workloads.SyntheticSource(num_images, pool, seed=1)
  meta = sampling.read_metadata(src)
  tm = mobilenet_v2(NUM_BUCKETS + NUM_TAGS, seed, channels_last=True)
  epoch = recipe_epoch_fn(tm, [src[i]['image'] for i in range(num_images)], meta.distribution,
                          meta.tag_soft, batch, resize_size, image_size,
                          workers)
  count = [0]

  def run():
    t0 = time.perf_counter()
    parts = []
    for _ in range(epochs):
      count[0] += 1
      parts.append(epoch(count[0]))
    return {'epochs_s': time.perf_counter() - t0, 'epochs': epochs,
            'data_s': sum(p['data_s'] for p in parts),
            'model_s': sum(p['model_s'] for p in parts)}
  return run


def _pooled_encoder(features, f: formulations.Formulation) -> Callable[[Any], Any]:
  """x (NCHW, f.layout) -> pooled features [B,1280] under inference_mode, chunked as f."""
  import torch  # pylint: disable=import-outside-toplevel

  def encode(x):
    parts = [x[i:i + f.chunk] for i in range(0, x.shape[0], f.chunk)] if f.chunk else [x]
    with torch.inference_mode():
      return torch.cat([features(p).mean((2, 3)) for p in parts])
  return encode


def recipe_cached_setup(num_images: int, num_test: int, views: int, steps: int,
                        batch: int = 32, resize_size: int = 256, image_size: int = 224,
                        workers: int = 1, threads: int = 0, seed: int = 0,
                        formulation_set: str = 'all', our_chunk: int = 2,
                        lr: float = 3e-6) -> Callable[[], dict]:
  """Child-process workload: the frozen-encoder recipe as a competent PyTorch user writes it
  — the K augmented views of every train image and the test view encoded ONCE (pooled
  features, inference_mode, the layout/chunking that was fastest here), then `steps` Adam
  steps of the head on the cached features (view of an image = epoch mod K), then the test
  forward of the head. Same images, crops (`view_rng`-like seeds), loss and batch as the
  plain loop.

  Setup (untimed, as a user tunes once) screens the encoder formulations of
  `formulation_set` on one batch; `run()` returns seconds per phase, the formulation used
  and the screening figures (encode_screen_<formulation> images/s).
  """
  import copy  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  set_threads(threads)
  pool = workloads.jpeg_pool(32, seed=3)
  src = workloads.SyntheticSource(num_images, pool, seed=1)
  test_src = workloads.SyntheticSource(num_test, pool[::-1], seed=2)
  meta = sampling.read_metadata(src)
  tm = mobilenet_v2(NUM_BUCKETS + NUM_TAGS, seed)
  models = {'contiguous': tm,
            'channels_last': copy.deepcopy(tm).to(memory_format=torch.channels_last)}
  for m in models.values():
    for p in m.features.parameters():
      p.requires_grad_(False)
  train_imgs = [src[i]['image'] for i in range(num_images)]
  test_imgs = [test_src[i]['image'] for i in range(num_test)]
  threads_pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
  # Screen the encoder formulations (eager, inference_mode) on one batch of train crops.
  x0 = np.stack([preprocess.preprocess_eval_np(train_imgs[i % num_images], image_size)
                 for i in range(batch)]).astype(np.float32) / 255.0
  screen = {}
  for f in formulations.forward(formulation_set, batch, our_chunk):
    if f.compile or f.grad != 'inference_mode':
      continue  # the model section times those; the encoder here is eager inference
    enc = _pooled_encoder(models[f.layout].features, f)
    x = to_nchw(x0, f.layout == 'channels_last')
    enc(x)
    secs = []
    for _ in range(2):  # the faster of two calls: selection robust to a noisy neighbour
      t0 = time.perf_counter()
      enc(x)
      secs.append(time.perf_counter() - t0)
    screen[f.name] = (f, batch / min(secs))
  best_f = max(screen.values(), key=lambda v: v[1])[0]
  model = models[best_f.layout]
  encode = _pooled_encoder(model.features, best_f)
  head = model.classifier
  opt = torch.optim.Adam(head.parameters(), lr=lr)
  dists_t = torch.from_numpy(np.asarray(meta.distribution, np.float32))
  tags_t = torch.from_numpy(np.asarray(meta.tag_soft, np.float32))

  def encode_all(fn, n) -> Any:
    out = []
    for s in range(0, n, batch):
      imgs = list(threads_pool.map(fn, range(s, min(n, s + batch))))
      out.append(encode(to_nchw(np.stack(imgs).astype(np.float32) / 255.0,
                                best_f.layout == 'channels_last')))
    return torch.cat(out)

  def run() -> dict:
    t0 = time.perf_counter()
    train = torch.stack([encode_all(lambda i, k=k: preprocess.preprocess_train_np(
        train_imgs[i], resize_size, image_size, np.random.default_rng([seed, k, i]), True),
        num_images) for k in range(views)])                                   # [K,n,1280]
    test = encode_all(lambda i: preprocess.preprocess_eval_np(test_imgs[i], image_size),
                      num_test)                                               # [m,1280]
    t1 = time.perf_counter()
    head.train()
    per_epoch = max(1, num_images // batch)
    order = np.random.default_rng(seed).permutation(num_images)
    for s in range(steps):
      e, j = divmod(s, per_epoch)
      if j == 0:
        order = np.random.default_rng([seed, e]).permutation(num_images)
      idx = torch.from_numpy(order[j * batch:(j + 1) * batch])
      out = head(train[e % views][idx])
      loss = emd_loss(out[:, :NUM_BUCKETS], dists_t[idx])
      loss = loss - (tags_t[idx] * torch.log_softmax(out[:, NUM_BUCKETS:], -1)).sum(-1).mean()
      opt.zero_grad()
      loss.backward()
      opt.step()
    t2 = time.perf_counter()
    head.eval()
    with torch.inference_mode():
      p = torch.softmax(head(test)[:, :NUM_BUCKETS], -1)
      mean_score = (p * torch.arange(1, NUM_BUCKETS + 1)).sum(-1).numpy()
    t3 = time.perf_counter()
    out = {'cache_s': t1 - t0, 'steps_s': t2 - t1, 'eval_s': t3 - t2, 'total_s': t3 - t0,
           'steps': steps, 'views': views, 'encode_formulation': best_f.name,
           'final_loss': float(loss.detach()), 'mean_score_mean': float(mean_score.mean())}
    out.update({f'encode_screen_{k}': v[1] for k, v in screen.items()})
    return out
  return run
