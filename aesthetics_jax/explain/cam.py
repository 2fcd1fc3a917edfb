"""Class activation maps as pure functions of a feature map and a head.

Every gradient method differentiates `head_fn` at the cached feature map `A [B,h,w,C]` with ONE
`jax.vjp` and vmaps the pullback over one-hot cotangents, so the maps of all T targets (10 score
buckets, 66 tags, ...) cost about one backward pass. The per-method formulas follow
pytorch-grad-cam (`pytorch_grad_cam`, grad-cam 1.5.x) line by line, including its epsilons and
the ReLU it applies to every map before normalising; `launch/check_cam_parity.py` compares them.

Any layer is a feature map: `A = model.apply(v, x, L, method='features_until')` and
`head_fn = lambda a: model.apply(v, a, L, method='rest')` (the rest of the network). Several
layers (pytorch-grad-cam's `target_layers`) are a chain: `compute_layers(method, steps, A_1, ...)`
with `steps[i]: A_i -> A_{i+1}` and `steps[-1]: A_k -> outputs` runs the network once past the
first layer and takes ONE vjp whose pullback yields the gradients at every layer; `fuse_layers`
then combines the maps exactly as pytorch-grad-cam's `aggregate_multi_layers`.

Raw maps (`compute`) are kept unnormalised; normalisation is explicit:
  * `normalize(maps, 'per_image')`: min-max per map, exactly pytorch-grad-cam's `scale_cam_image`
    (`(m - min) / (1e-7 + max(m - min))`);
  * `normalize(maps, 'global', stats)`: one dataset-wide `(lo, hi)` from `global_stats`, so map
    intensities stay comparable across images (the paper left this choice open).
pytorch-grad-cam's own output is `scale(mean_layers(relu(resize(scale(relu(cam))))))`: per layer
it min-max scales and resizes with cv2, then averages the layers and scales again;
`fuse_layers(maps_per_layer, (H, W))` reproduces that order, `torch_like(maps, (H, W))` is its
one-layer case.

Targets are functions `outputs -> [B, T]`; `targets_for(arch, names)` builds the standard ones.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aesthetics_jax import parallel
from aesthetics_jax.explain import choices

# The method names and their spellings live in `choices` (JAX-free, for the commands' checks).
METHODS, GRADIENT_METHODS = choices.METHODS, choices.GRADIENT_METHODS
canonical_method = choices.canonical_method


HeadFn = Callable[[jax.Array], Any]
TargetFn = Callable[..., jax.Array]


# ----------------------------------------------------------------------------------------------
# Targets.


def _mean_score(score_logits: jax.Array) -> jax.Array:
  """Predicted mean score Σ softmax · (1..10). `[B, K] -> [B]`."""
  k = score_logits.shape[-1]
  p = jax.nn.softmax(score_logits.astype(jnp.float32), axis=-1)
  return p @ jnp.arange(1, k + 1, dtype=jnp.float32)


def _index(name: str, kind: str, n: int) -> int:
  """'bucket:3' → 3, checked to lie in 1..n (one-line ValueError otherwise)."""
  try:
    k = int(name.split(':', 1)[1])
  except ValueError:
    k = -1
  if not 1 <= k <= n:
    what = 'an AVA tag id' if kind == 'tag' else 'a score bucket'
    raise ValueError(f"cam target {name!r}: use '{kind}:<k>' with {what} k in 1..{n}")
  return k


def _one_target(arch: str, name: str) -> Callable[[Any, Any], jax.Array]:
  """One named target: `(outputs, ref) -> [B, t]`; `ref` fixes data-dependent choices."""
  if arch == 'vgg16':
    if name in ('aesthetic', 'high'):
      return lambda out, ref: out['logit'].astype(jnp.float32)[:, None]
    if name == 'low':
      return lambda out, ref: -out['logit'].astype(jnp.float32)[:, None]
  elif arch == 'mobilenet_v2':
    if name == 'aesthetic':
      return lambda out, ref: _mean_score(out['score_logits'])[:, None]
    if name == 'low':
      return lambda out, ref: -_mean_score(out['score_logits'])[:, None]
    if name == 'bucket':
      return lambda out, ref: out['score_logits'].astype(jnp.float32)
    if name.startswith('bucket:'):
      b = _index(name, 'bucket', 10)
      return lambda out, ref: out['score_logits'].astype(jnp.float32)[:, b - 1:b]
    if name.startswith('tag:'):
      k = _index(name, 'tag', 66)
      return lambda out, ref: out['tag_logits'].astype(jnp.float32)[:, k - 1:k]

    def top_tag(out, ref):
      # The argmax comes from the reference (unmasked) outputs so that ScoreCAM's masked copies
      # keep the category of the original image, like pytorch-grad-cam's fixed targets.
      idx = jnp.argmax(ref['tag_logits'], axis=-1)
      return jnp.take_along_axis(out['tag_logits'].astype(jnp.float32), idx[:, None], axis=-1)

    if name == 'top_tag':
      return top_tag
  else:
    raise ValueError(f"cam.targets_for: unknown arch {arch!r}; use 'vgg16' or 'mobilenet_v2'")
  valid = ("'aesthetic', 'low'" if arch == 'vgg16' else
           "'aesthetic', 'low', 'bucket', 'bucket:<k>', 'tag:<k>', 'top_tag'")
  raise ValueError(f'cam target {name!r} is not defined for {arch}; use one of {valid}')


def targets_for(arch: str, names: Sequence[str] | str) -> TargetFn:
  """Named targets → `target_fn(outputs, ref=None) -> f32 [B, T]` (columns in `names` order).

  vgg16: 'aesthetic' (= 'high', the logit), 'low' (-logit).
  mobilenet_v2: 'aesthetic' (predicted mean score Σ softmax·(1..10)), 'low' (its negative),
  'bucket' (the 10 score logits, T += 10), 'bucket:<k>' (the logit of score bucket k, 1..10),
  'tag:<k>' (logit of AVA tag id k, 1..66),
  'top_tag' (logit of the argmax tag of each image; with `ref`, the argmax of `ref`).
  """
  if isinstance(names, str):
    names = (names,)
  fns = [_one_target(arch, n) for n in names]

  def target_fn(outputs, ref=None):
    ref = outputs if ref is None else ref
    return jnp.concatenate([f(outputs, ref) for f in fns], axis=-1)

  return target_fn


def target_names(arch: str, names: Sequence[str] | str) -> list[str]:
  """Column labels of `targets_for(arch, names)` (expands 'bucket' into 'bucket:1..10')."""
  if isinstance(names, str):
    names = (names,)
  out = []
  for n in names:
    out.extend([f'bucket:{k}' for k in range(1, 11)] if n == 'bucket' and arch == 'mobilenet_v2'
               else [_label(n)])
  return out


def _label(name: str) -> str:
  """The label of the map `targets_for` computes for `name`: 'bucket:03' and 'bucket: 3' are
  bucket 3, so their map is 'bucket:3' (a label as typed matched no other target set's)."""
  kind, colon, rest = name.partition(':')
  if colon and kind in ('bucket', 'tag'):
    try:
      return f'{kind}:{int(rest)}'
    except ValueError:
      pass
  return name


def _call_target(target_fn: TargetFn, outputs, ref):
  try:
    accepts_ref = 'ref' in inspect.signature(target_fn).parameters
  except (TypeError, ValueError):
    accepts_ref = False
  return target_fn(outputs, ref=ref) if accepts_ref else target_fn(outputs)


# ----------------------------------------------------------------------------------------------
# Gradients and per-method formulas (A, G in NHWC; spatial axes are (h, w)).


def chain_gradients(steps: Sequence[HeadFn], A: jax.Array, target_fn: TargetFn):
  """Scores, activations and target gradients at every layer of a chain.

  `steps[i]` maps the activation of layer i to that of layer i+1, `steps[-1]` maps the last
  layer's activation to the outputs. One forward pass and ONE `jax.vjp`: a zero is added to
  every later activation and the pullback w.r.t. those zeros is the gradient at that layer
  (what pytorch-grad-cam's tensor hooks record). The pullback is vmapped over the T one-hot
  cotangents (images are independent, so a cotangent of ones over the batch gives per-image
  gradients).
  Returns: scores f32 `[B, T]`, activations `[A_i f32 [B, h_i, w_i, C_i]]`, grads
  `[f32 [B, T, h_i, w_i, C_i]]` (one per step).
  """
  A = A.astype(jnp.float32)
  deltas, shape = [], jax.ShapeDtypeStruct(A.shape, jnp.float32)
  for step in steps[:-1]:
    shape = jax.eval_shape(step, shape)
    deltas.append(jnp.zeros(shape.shape, jnp.float32))

  def forward(a, ds):
    acts = [a]
    for step, d in zip(steps[:-1], ds):
      a = step(a).astype(jnp.float32) + d
      acts.append(a)
    return target_fn(steps[-1](a)), acts

  scores, pullback, acts = jax.vjp(forward, A, deltas, has_aux=True)
  chex.assert_rank(scores, 2)
  B, T = scores.shape
  cot = jnp.broadcast_to(jnp.eye(T, dtype=scores.dtype)[:, None, :], (T, B, T))
  g0, gs = jax.vmap(pullback)(cot)  # [T, B, h, w, C] per layer
  return scores, acts, [jnp.moveaxis(g, 0, 1) for g in [g0, *gs]]


def target_gradients(head_fn: HeadFn, A: jax.Array, target_fn: TargetFn):
  """Scores and gradients of every target w.r.t. the feature map (`chain_gradients` of one
  step). Returns: scores f32 `[B, T]`, grads f32 `[B, T, h, w, C]`."""
  scores, _, (grads,) = chain_gradients([head_fn], A, target_fn)
  return scores, grads


def chain_activations(steps: Sequence[HeadFn], A: jax.Array) -> list[jax.Array]:
  """`[A, steps[0](A), ...]`: the activation of every layer of the chain (no head)."""
  acts = [A.astype(jnp.float32)]
  for step in steps[:-1]:
    acts.append(step(acts[-1]).astype(jnp.float32))
  return acts


def _weighted_sum(weights: jax.Array, A: jax.Array) -> jax.Array:
  """Σ_c w[b,t,c] A[b,h,w,c] → `[B, T, h, w]`."""
  return jnp.einsum('btc,bhwc->bthw', weights, A, precision=jax.lax.Precision.HIGHEST)


def _cam_from_grads(method: str, A: jax.Array, G: jax.Array) -> jax.Array:
  """Unrectified map `[B,T,h,w]` from activations `[B,h,w,C]` and grads `[B,T,h,w,C]`."""
  Ab = A[:, None]  # [B, 1, h, w, C]
  if method == 'gradcam':
    return _weighted_sum(G.mean(axis=(2, 3)), A)
  if method == 'gradcampp':
    g2 = G * G
    g3 = g2 * G
    sum_a = A.sum(axis=(1, 2))[:, None, None, None, :]
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = jnp.where(G != 0, aij, 0.0)
    return _weighted_sum((jnp.maximum(G, 0) * aij).sum(axis=(2, 3)), A)
  if method == 'hirescam':
    return (G * Ab).sum(axis=-1)
  if method == 'xgradcam':
    sum_a = A.sum(axis=(1, 2))[:, None, None, None, :]
    return _weighted_sum((G * Ab / (sum_a + 1e-7)).sum(axis=(2, 3)), A)
  if method == 'layercam':
    return (jnp.maximum(G, 0) * Ab).sum(axis=-1)
  raise ValueError(f'unknown gradient CAM method {method!r}; use one of {GRADIENT_METHODS}')


def _numpy_projection(X: np.ndarray) -> np.ndarray:
  """pytorch-grad-cam's `get_2d_projection` on `[B, P, C]` rows (numpy's LAPACK, so its sign).

  The SVD's sign can flip with the last bit of the centred input (LAPACK's Householder signs
  follow near-zero entries), so the centring is done in its memory order: per image, a
  Fortran-ordered `[P, C]` (its `reshape(C, -1).transpose()`), mean over axis 0.
  """
  X = np.nan_to_num(np.asarray(X, np.float32))
  try:  # Small SVDs run ~30x faster on one BLAS thread than on a busy multi-threaded pool.
    from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
    limit = threadpool_limits(1, user_api='blas')
  except ImportError:
    limit = contextlib.nullcontext()
  out = np.empty(X.shape[:2], np.float32)
  with limit:
    for b, x in enumerate(X):
      r = np.ascontiguousarray(x.T).T  # [P, C], Fortran order
      r = r - r.mean(axis=0)
      vt = np.linalg.svd(r, full_matrices=False)[2]  # same VT as full_matrices=True (gesdd)
      out[b] = r @ vt[0]
  return out


def eigen_projection(A: jax.Array, sign: str = 'pytorch_grad_cam') -> jax.Array:
  """First principal component of the centred feature map, per image. `[B,h,w,C] -> [B,h,w]`.

  pytorch-grad-cam's `get_2d_projection`: rows = positions, centred over positions, projected
  on the first right singular vector. An SVD's sign is arbitrary and differs between LAPACK
  builds (numpy's vs jaxlib's disagree on ~5% of random matrices), so:
    'pytorch_grad_cam': the SVD runs in numpy on the host (`pure_callback`, jit-safe) exactly
      as pytorch-grad-cam runs it — identical sign;
    'max_abs': in JAX, flipped so that |max| >= |min| (the Seg-Eigen-CAM correction): a sign
      that does not depend on the LAPACK build;
    'lapack': in JAX, whatever sign the backend's SVD returns.
  """
  B, h, w, C = A.shape
  X = A.astype(jnp.float32).reshape(B, h * w, C)
  if sign == 'pytorch_grad_cam':
    shape = jax.ShapeDtypeStruct((B, h * w), jnp.float32)
    proj = jax.pure_callback(_numpy_projection, shape, X, vmap_method='broadcast_all')
    return proj.reshape(B, h, w)
  if sign not in ('max_abs', 'lapack'):
    raise ValueError(f"eigen_projection sign {sign!r}: use 'pytorch_grad_cam', 'max_abs' or "
                     "'lapack'")
  X = jnp.nan_to_num(X)
  X = X - X.mean(axis=1, keepdims=True)
  _, _, vt = jnp.linalg.svd(X, full_matrices=False)
  proj = jnp.einsum('bpc,bc->bp', X, vt[:, 0], precision=jax.lax.Precision.HIGHEST)
  if sign == 'max_abs':
    flip = jnp.abs(proj.min(axis=1)) > jnp.abs(proj.max(axis=1))
    proj = jnp.where(flip[:, None], -proj, proj)
  return proj.reshape(B, h, w)


def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Bilinear interpolation matrix `[n_out, n_in]` with align_corners=True (torch's
  `UpsamplingBilinear2d`, used by pytorch-grad-cam's ScoreCAM)."""
  if n_out == 1 or n_in == 1:
    m = np.zeros((n_out, n_in), np.float32)
    m[:, 0] = 1.0
    return m
  pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
  lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
  frac = pos - lo
  m = np.zeros((n_out, n_in), np.float64)
  m[np.arange(n_out), lo] += 1 - frac
  m[np.arange(n_out), lo + 1] += frac
  return m.astype(np.float32)


def score_weights(model_fn: Callable[[jax.Array], Any], images: jax.Array, A: jax.Array,
                  target_fn: TargetFn, batch_size: int = 16) -> jax.Array:
  """ScoreCAM channel weights `[B, T, C]`: softmax over channels of the target score of the
  image masked by each min-max scaled, upsampled channel.

  Args:
    model_fn: full model, images `[N,H,W,3]` -> outputs.
    images: f32 `[B, H, W, 3]`, the inputs `A` was computed from.
    A: f32 `[B, h, w, C]`.
    batch_size: channels per forward pass (B * batch_size masked images per pass).
  """
  B, H, W, _ = images.shape
  _, h, w, C = A.shape
  ry, rx = _align_corners_matrix(h, H), _align_corners_matrix(w, W)
  hp = jax.lax.Precision.HIGHEST
  ref = model_fn(images)

  def scores_for_channel(c):
    m = jnp.einsum('Yy,byx,Xx->bYX', ry, A[..., c].astype(jnp.float32), rx, precision=hp)
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    m = (m - lo) / (hi - lo + 1e-8)
    return _call_target(target_fn, model_fn(images * m[..., None]), ref)  # [B, T]

  s = jax.lax.map(scores_for_channel, jnp.arange(C), batch_size=batch_size)  # [C, B, T]
  return jax.nn.softmax(jnp.moveaxis(s, 0, -1), axis=-1)


def compute_layers(method: str, steps: Sequence[HeadFn], A: jax.Array, target_fn: TargetFn, *,
                   model_fn: Callable[[jax.Array], Any] | None = None,
                   images: jax.Array | None = None, batch_size: int = 16,
                   eigen_sign: str = 'pytorch_grad_cam') -> list[jax.Array]:
  """Raw CAMs (ReLU applied, not normalised) at every layer of a chain. jit-able.

  Args:
    method: one of `METHODS`.
    steps: `steps[i]`: activation of layer i -> activation of layer i+1 (e.g. the model's
      `features_between`); `steps[-1]`: last layer's activation -> outputs pytree (the model's
      `rest`). One step = one layer (`compute`).
    A: `[B, h, w, C]` activation of the first layer.
    target_fn: outputs -> `[B, T]` target scores (see `targets_for`).
    model_fn, images: ScoreCAM only: the full model (`images [N,H,W,3] -> outputs`) and the
      inputs `[B,H,W,3]` that produced `A`; `batch_size` channels are scored per pass, for
      every layer's channels in turn (as pytorch-grad-cam does).
    eigen_sign: EigenCAM only, see `eigen_projection`.
  Returns:
    `[f32 [B, T, h_i, w_i]]`, one per layer (EigenCAM does not depend on the target: its map is
    repeated over T). Gradient methods share one forward pass and one vjp over all layers.
  """
  return compute_layers_many((method,), steps, A, target_fn, model_fn=model_fn, images=images,
                             batch_size=batch_size, eigen_sign=eigen_sign)[method]


def compute_layers_many(methods: Sequence[str], steps: Sequence[HeadFn], A: jax.Array,
                        target_fn: TargetFn, *,
                        model_fn: Callable[[jax.Array], Any] | None = None,
                        images: jax.Array | None = None, batch_size: int = 16,
                        eigen_sign: str = 'pytorch_grad_cam',
                        rectified: Sequence[bool] = ()) -> dict[str, list[jax.Array]]:
  """`compute_layers` for several methods at once: `{method: [f32 [B, T, h_i, w_i]]}`.

  The gradient methods share one forward pass and one vjp, EigenCAM and ScoreCAM one pass for
  the activations: the chain is traced once or twice, not once per method (tracing a
  MobileNetV2 chain with its vjp takes seconds on a CPU). jit-able.
  rectified: per layer, whether pytorch-grad-cam records its output after the in-place ReLU
  that follows it (torchvision VGG16's convs, `ReLU(inplace=True)`: the hook's tensor is
  overwritten), so its maps weigh relu(A_i) by the gradient at A_i, as pytorch-grad-cam's do
  (`model.RECTIFIED_LAYERS`). Missing entries: False.
  """
  chex.assert_rank(A, 4)
  if not steps:
    raise ValueError('cam.compute_layers: steps is empty; pass at least the head')
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f'unknown CAM method {unknown[0]!r}; use one of {METHODS}')
  if 'scorecam' in methods and (model_fn is None or images is None):
    raise ValueError("cam.compute('scorecam', ...) needs model_fn= (the full model) and "
                     'images= (the inputs of A): ScoreCAM re-runs the model on masked inputs')
  out: dict[str, list[jax.Array]] = {}

  def as_hooked(acts: list[jax.Array]) -> list[jax.Array]:
    return [jnp.maximum(a, 0.0) if i < len(rectified) and rectified[i] else a
            for i, a in enumerate(acts)]

  if any(m in GRADIENT_METHODS for m in methods):
    _, acts, grads = chain_gradients(steps, A, target_fn)
    acts = as_hooked(acts)
    for m in methods:
      if m in GRADIENT_METHODS:
        out[m] = [_cam_from_grads(m, a, g) for a, g in zip(acts, grads)]
  if 'eigencam' in methods or 'scorecam' in methods:
    acts = as_hooked(chain_activations(steps, A))
    if 'eigencam' in methods:
      T = jax.eval_shape(lambda a: target_fn(steps[-1](a)), acts[-1]).shape[1]
      out['eigencam'] = [jnp.broadcast_to(eigen_projection(a, eigen_sign)[:, None],
                                          (a.shape[0], T) + a.shape[1:3]) for a in acts]
    if 'scorecam' in methods:
      out['scorecam'] = [_weighted_sum(score_weights(model_fn, images, a, target_fn, batch_size),
                                       a) for a in acts]
  return {m: [jnp.maximum(c, 0.0).astype(jnp.float32) for c in out[m]] for m in methods}


def compute(method: str, head_fn: HeadFn, A: jax.Array, target_fn: TargetFn, *,
            model_fn: Callable[[jax.Array], Any] | None = None,
            images: jax.Array | None = None, batch_size: int = 16,
            eigen_sign: str = 'pytorch_grad_cam') -> jax.Array:
  """Raw CAMs (ReLU applied, not normalised) at one layer. jit-able; `head_fn` closes over its
  variables.

  Args:
    method: one of `METHODS`.
    head_fn: feature map `[B,h,w,C]` -> outputs pytree (the head, or the model's `rest` after
      an intermediate layer).
    A: f32 `[B, h, w, C]` feature map (the Grad-CAM layer).
    target_fn: outputs -> `[B, T]` target scores (see `targets_for`).
    model_fn, images: ScoreCAM only: the full model (`images [N,H,W,3] -> outputs`) and the
      inputs `[B,H,W,3]` that produced `A`; `batch_size` channels are scored per pass.
    eigen_sign: EigenCAM only, see `eigen_projection`.
  Returns:
    f32 `[B, T, h, w]` (EigenCAM does not depend on the target: its map is repeated over T).
  """
  return compute_layers(method, [head_fn], A, target_fn, model_fn=model_fn, images=images,
                        batch_size=batch_size, eigen_sign=eigen_sign)[0]


# ----------------------------------------------------------------------------------------------
# Normalisation and resizing.


def global_stats(maps: jax.Array, stats: tuple | None = None,
                 percentiles: tuple[float, float] | None = None) -> tuple[jax.Array, jax.Array]:
  """Dataset-wide `(lo, hi)` for `normalize(..., 'global')`.

  Streamable: pass the previous `(lo, hi)` as `stats` and the running min/max is updated batch
  by batch. With `percentiles=(p_lo, p_hi)` the bounds are those percentiles of `maps`
  (robust to outliers; not streamable: pass all maps, or a representative sample, at once).
  """
  maps = jnp.asarray(maps, jnp.float32)
  if percentiles is not None:
    if stats is not None:
      raise ValueError('global_stats: percentiles are not streamable; pass stats=None')
    lo, hi = jnp.percentile(maps, jnp.asarray(percentiles, jnp.float32))
    return lo, hi
  lo, hi = maps.min(), maps.max()
  if stats is not None:
    lo, hi = jnp.minimum(lo, stats[0]), jnp.maximum(hi, stats[1])
  return lo, hi


def normalize(maps: jax.Array, mode: str = 'per_image', stats: tuple | None = None) -> jax.Array:
  """Maps `[..., h, w]` → [0, 1].

  'per_image': pytorch-grad-cam's `scale_cam_image` per map: `(m - min) / (1e-7 + max(m - min))`.
  'global': `clip((m - lo) / (hi - lo + 1e-7), 0, 1)` with `stats=(lo, hi)` from `global_stats`.
  numpy maps in, numpy out (the same float32 arithmetic): one image's maps already on the host
  (boxes, overlays, figures) need no JAX dispatch, which compiled per new map shape.
  """
  xp = np if isinstance(maps, np.ndarray) else jnp
  maps = xp.asarray(maps, xp.float32)
  if mode == 'per_image':
    m = maps - maps.min(axis=(-2, -1), keepdims=True)
    return m / (xp.float32(1e-7) + m.max(axis=(-2, -1), keepdims=True))
  if mode == 'global':
    if stats is None:
      raise ValueError("normalize(mode='global') needs stats=(lo, hi) from cam.global_stats")
    lo, hi = stats
    return xp.clip((maps - lo) / (hi - lo + 1e-7), 0.0, 1.0)
  raise ValueError(f"normalize: unknown mode {mode!r}; use 'per_image' or 'global'")


def map_entropy(maps: jax.Array) -> jax.Array:
  """How diffuse each map is: the entropy of the map's positive part `[..., h, w]`, read as a
  distribution over its h·w cells, divided by log(h·w) → `[...]` in [0, 1].

  0: all the mass in one cell; 1: uniform. NaN for a map with no positive value (it points
  nowhere) and for a single-cell map. The raw map, not a min-max scaled one: scaling would
  turn a near-uniform map with one cell a hair above the rest into "all in one cell". Taken on
  the grid the maps come at (the CAM layer's; fused multi-layer maps come at the input size,
  where values run higher), so values compare within one model and layer setting, not across
  grids: the same disc scores 0.57 on 7x7 cells and 0.60 on 10x10.
  """
  m = jnp.maximum(jnp.asarray(maps, jnp.float32), 0.0)
  total = m.sum(axis=(-2, -1), keepdims=True)
  p = m / jnp.where(total > 0, total, 1.0)
  # 0 - Σ, not -Σ: a one-cell map's Σ is 0.0, whose negation wrote '-0.0000' in per_image.csv.
  h = 0.0 - jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=(-2, -1))
  cells = m.shape[-2] * m.shape[-1]
  ok = (total[..., 0, 0] > 0) & (cells > 1)
  return jnp.where(ok, h / jnp.log(float(max(cells, 2))), jnp.nan)


def upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of `[..., h, w]` to `[..., H, W]` (half-pixel centres, edge-clamped:
  cv2.INTER_LINEAR's grid for upsampling)."""
  maps = jnp.asarray(maps, jnp.float32)
  return jax.image.resize(maps, maps.shape[:-2] + tuple(size), method='bilinear')


def fuse_layers(maps: Sequence[jax.Array], size: tuple[int, int],
                num_shards: int = 1) -> jax.Array:
  """Per-layer maps `[[..., h_i, w_i]]` → one map `[..., H, W]` in [0, 1], in pytorch-grad-cam's
  order: per layer `scale_cam_image` (min-max, then cv2 bilinear resize to the input size), then
  `aggregate_multi_layers` (ReLU, mean over layers, min-max).

  On CPU one leading row (image) at a time: a whole batch's `[..., H, W]` intermediates (61 MB
  for 32 images x 10 targets at 224 px) are above glibc's 32 MB mmap ceiling, so they were
  mapped and faulted in afresh every call, which on a VM cost 0-0.25 s of kernel time a call;
  row by row they stay in reused heap memory. Same values; GPUs keep the whole batch.
  `num_shards`: devices the leading axis is sharded over; each step takes one row of each
  device's block (`parallel.map_batch`), where a plain row loop gathered every map to every
  device and both computed all of them (an all-gather in the 2-device HLO)."""
  maps = [jnp.asarray(m, jnp.float32) for m in maps]
  if maps[0].ndim > 2 and jax.default_backend() == 'cpu':
    if maps[0].shape[0] <= num_shards:  # one row (or none) per device: no loop to share
      return _fuse_layers(maps, size)
    return parallel.map_batch(lambda rows: _fuse_layers(rows, size), maps, 1, num_shards)
  return _fuse_layers(maps, size)


def _fuse_layers(maps: Sequence[jax.Array], size: tuple[int, int]) -> jax.Array:
  scaled = jnp.stack([upsample(normalize(m), size) for m in maps])
  return normalize(jnp.mean(jnp.maximum(scaled, 0.0), axis=0))


def torch_like(maps: jax.Array, size: tuple[int, int], num_shards: int = 1) -> jax.Array:
  """pytorch-grad-cam's output order for one layer: per-map min-max, cv2 bilinear resize,
  min-max again (`num_shards`: as `fuse_layers`)."""
  return fuse_layers([maps], size, num_shards)
