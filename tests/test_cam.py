"""CAM methods: parity with pytorch-grad-cam (committed fixtures: toy models, and small
torchvision models at intermediate and fused layers), targets, vmap vs loop, layer chains and
fusion, normalisation. The fixtures are regenerated with
`python -m launch.check_cam_parity --write`."""
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from aesthetics_jax import models
from aesthetics_jax.evaluation import forward as forward_lib
from aesthetics_jax.explain import cam
from aesthetics_jax.models import pretrained
from launch import check_cam_parity as parity

FIXTURES = Path(__file__).parent / 'fixtures'


@pytest.fixture(scope='module')
def fixture():
  return parity.load_fixture()


@pytest.mark.parametrize('head', parity.HEADS)
def test_parity_with_pytorch_grad_cam(fixture, head):
  w, images, expected, cats = fixture
  got = parity.jax_maps(w, images, head, cats[head], eigen_sign=parity.FIXTURE_EIGEN_SIGN)
  for m in cam.METHODS:
    exp = expected[f'{head}/{m}']
    assert exp.std(axis=(1, 2)).min() > 0, 'fixture map is flat: regenerate with another seed'
    diff, corr = parity.compare(exp, got[m])
    assert diff <= 5e-4, (head, m, diff)
    assert corr >= 0.9999, (head, m, corr)


def _mlp_setup(seed=0, B=2, h=4, w=5, C=3, K=6):
  k = jax.random.split(jax.random.key(seed), 4)
  A = jax.nn.relu(jax.random.normal(k[0], (B, h, w, C)))
  W1 = jax.random.normal(k[1], (h * w * C, 8)) * 0.3
  W2 = jax.random.normal(k[2], (8, K))
  head_fn = lambda a: {'logits': jnp.tanh(a.reshape(a.shape[0], -1) @ W1) @ W2}
  return A, head_fn


@pytest.mark.parametrize('method', cam.GRADIENT_METHODS)
def test_vmapped_targets_equal_per_target_loop(method):
  A, head_fn = _mlp_setup()
  target_fn = lambda out: out['logits']
  all_t = jax.jit(lambda a: cam.compute(method, head_fn, a, target_fn))(A)
  assert all_t.shape == (2, 6, 4, 5)
  for t in range(6):
    one = cam.compute(method, head_fn, A, lambda out, t=t: out['logits'][:, t:t + 1])
    np.testing.assert_allclose(all_t[:, t], one[:, 0], rtol=1e-5, atol=1e-6)
  # Position-dependent gradients (MLP head): HiResCAM differs from Grad-CAM somewhere.
  if method == 'hirescam':
    g = cam.compute('gradcam', head_fn, A, target_fn)
    assert float(jnp.abs(g - all_t).max()) > 1e-3


def test_gradients_per_image_independent():
  A, head_fn = _mlp_setup()
  _, G = cam.target_gradients(head_fn, A, lambda out: out['logits'])
  _, G1 = cam.target_gradients(head_fn, A[1:], lambda out: out['logits'])
  np.testing.assert_allclose(G[1:], G1, rtol=1e-5, atol=1e-6)


def test_gradcam_on_gap_head_is_cam():
  # With a global-average-pooling + dense head, Grad-CAM weights are W[:, t] / (h*w).
  A = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 3, 3, 4)))
  W = jax.random.normal(jax.random.key(2), (4, 3))
  head_fn = lambda a: a.mean(axis=(1, 2)) @ W
  got = cam.compute('gradcam', head_fn, A, lambda o: o)
  want = np.maximum(np.einsum('bhwc,ct->bthw', A, W) / 9.0, 0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_targets_for():
  logits = jnp.array([1.5, -0.5])
  vgg = cam.targets_for('vgg16', ['aesthetic', 'low'])({'logit': logits})
  np.testing.assert_allclose(vgg, [[1.5, -1.5], [-0.5, 0.5]])
  s = jax.random.normal(jax.random.key(0), (3, 10))
  t = jax.random.normal(jax.random.key(1), (3, 66))
  out = {'score_logits': s, 'tag_logits': t}
  f = cam.targets_for('mobilenet_v2', ['aesthetic', 'bucket', 'tag:7', 'top_tag'])
  y = f(out)
  assert y.shape == (3, 13)
  np.testing.assert_allclose(y[:, 0], jax.nn.softmax(s) @ jnp.arange(1.0, 11.0), rtol=1e-6)
  np.testing.assert_allclose(y[:, 1:11], s)
  np.testing.assert_allclose(y[:, 11], t[:, 6])
  np.testing.assert_allclose(y[:, 12], t.max(axis=1))
  # top_tag with a reference keeps the reference's argmax.
  ref = {'score_logits': s, 'tag_logits': -t}
  np.testing.assert_allclose(f(out, ref=ref)[:, 12], t[np.arange(3), np.argmin(t, axis=1)])
  assert cam.target_names('mobilenet_v2', ['aesthetic', 'bucket'])[1:3] == ['bucket:1', 'bucket:2']
  for arch, name in [('vgg16', 'bucket'), ('mobilenet_v2', 'tag:0'), ('mobilenet_v2', 'tag:x')]:
    with pytest.raises(ValueError, match='cam target'):
      cam.targets_for(arch, name)


def test_scorecam_uses_reference_category_and_model():
  # Toy model: the feature map is the image itself; the head scores region means.
  x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 3))
  feats = lambda im: im[:, ::2, ::2, :]  # [B,4,4,3]
  head = lambda a: {'score_logits': jnp.zeros((a.shape[0], 10)),
                    'tag_logits': jnp.tile(a.mean(axis=(1, 2)), (1, 22))}
  tf = cam.targets_for('mobilenet_v2', 'top_tag')
  maps = cam.compute('scorecam', head, feats(x), tf, model_fn=lambda im: head(feats(im)),
                     images=x, batch_size=2)
  assert maps.shape == (2, 1, 4, 4)
  assert bool(jnp.all(maps >= 0)) and float(maps.max()) > 0
  with pytest.raises(ValueError, match='model_fn'):
    cam.compute('scorecam', head, feats(x), tf)


def test_scorecam_layer_chain_scores_each_layer_with_the_full_model():
  # Toy chain of two layers (the image at stride 2, then a 1x1 mix of it at stride 4): each
  # layer's ScoreCAM masks the input with that layer's own channels and scores the full model,
  # exactly as `compute` at that layer does.
  x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 3))
  M = jax.random.normal(jax.random.key(5), (3, 4))
  first = lambda im: im[:, ::2, ::2, :]                         # [B,4,4,3]
  step = lambda a: jnp.tanh(a[:, ::2, ::2, :] @ M)              # [B,2,2,4]
  head = lambda a: {'score_logits': jnp.zeros((a.shape[0], 10)),
                    'tag_logits': jnp.tile(a.mean(axis=(1, 2)), (1, 17))[:, :66]}
  model_fn = lambda im: head(step(first(im)))  # noqa: E731
  tf = cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag'))
  got = cam.compute_layers('scorecam', [step, head], first(x), tf, model_fn=model_fn,
                           images=x, batch_size=2)
  want = [cam.compute('scorecam', lambda a: head(step(a)), first(x), tf, model_fn=model_fn,
                      images=x, batch_size=2),
          cam.compute('scorecam', head, step(first(x)), tf, model_fn=model_fn, images=x,
                      batch_size=2)]
  assert [g.shape for g in got] == [(2, 2, 4, 4), (2, 2, 2, 2)]
  for g, w in zip(got, want):
    assert float(jnp.abs(w).max()) > 0
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_compute_layers_many_equals_one_method_at_a_time():
  # The same toy chain as above; every method at once (one shared vjp for the gradient
  # methods, one activation pass for EigenCAM and ScoreCAM) equals each method alone.
  x = jax.random.uniform(jax.random.key(6), (2, 8, 8, 3))
  M = jax.random.normal(jax.random.key(7), (3, 4))
  first = lambda im: im[:, ::2, ::2, :]
  step = lambda a: jnp.tanh(a[:, ::2, ::2, :] @ M)
  head = lambda a: {'score_logits': jnp.tile(a.sum(axis=(1, 2)), (1, 3))[:, :10],
                    'tag_logits': jnp.tile(a.mean(axis=(1, 2)), (1, 17))[:, :66]}
  model_fn = lambda im: head(step(first(im)))  # noqa: E731
  tf = cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag'))
  kw = dict(model_fn=model_fn, images=x, batch_size=2)
  many = cam.compute_layers_many(cam.METHODS, [step, head], first(x), tf, **kw)
  assert list(many) == list(cam.METHODS)
  for m in cam.METHODS:
    alone = cam.compute_layers(m, [step, head], first(x), tf, **kw)
    assert [a.shape for a in many[m]] == [(2, 2, 4, 4), (2, 2, 2, 2)], m
    for got, want in zip(many[m], alone):
      assert float(jnp.abs(want).max()) > 0, m
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=m)
  with pytest.raises(ValueError, match="unknown CAM method 'nope'"):
    cam.compute_layers_many(('gradcam', 'nope'), [step, head], first(x), tf)
  with pytest.raises(ValueError, match='model_fn'):
    cam.compute_layers_many(('gradcam', 'scorecam'), [step, head], first(x), tf)


def test_eigencam_is_first_principal_component():
  A = np.random.default_rng(0).normal(size=(6, 4, 4, 5)).astype(np.float32)
  exact = np.asarray(jax.jit(cam.eigen_projection)(jnp.asarray(A)))
  pos = np.asarray(cam.eigen_projection(jnp.asarray(A), 'max_abs'))
  for b in range(6):
    X = A[b].reshape(16, 5)
    X = X - X.mean(0)
    p = (X @ np.linalg.svd(X, full_matrices=True)[2][0]).reshape(4, 4)  # pytorch-grad-cam
    np.testing.assert_allclose(exact[b], p, atol=1e-5)
    want = -p if abs(p.min()) > abs(p.max()) else p
    np.testing.assert_allclose(pos[b], want, atol=1e-4)
  with pytest.raises(ValueError, match='sign'):
    cam.eigen_projection(jnp.asarray(A), 'up')


def test_normalize_and_global_stats():
  m = jnp.array([[[[0.0, 2.0], [1.0, 4.0]]], [[[1.0, 1.0], [3.0, 5.0]]]])  # [2,1,2,2]
  n = cam.normalize(m)
  np.testing.assert_allclose(n.min(axis=(-2, -1)), 0, atol=1e-6)
  np.testing.assert_allclose(n.max(axis=(-2, -1)), 1, atol=1e-6)
  stats = cam.global_stats(m[:1])
  stats = cam.global_stats(m[1:], stats)  # streamed == one shot
  assert tuple(map(float, stats)) == tuple(map(float, cam.global_stats(m)))
  g = cam.normalize(m, 'global', stats)
  np.testing.assert_allclose(g, m / 5.0, rtol=1e-6)
  lo, hi = cam.global_stats(m, percentiles=(0, 100))
  assert float(lo) == 0.0 and float(hi) == 5.0
  with pytest.raises(ValueError, match='stats'):
    cam.normalize(m, 'global')


def test_map_entropy_spans_one_cell_to_uniform():
  """0 for one hot cell, 1 for a uniform map, NaN for a map with no positive value; the raw
  map's positive part (scale does not change it; a near-uniform map stays near 1, which a
  min-max scaled one would read as one cell)."""
  one = np.zeros((7, 7), np.float32)
  one[2, 3] = 5.0
  ramp = np.arange(49, dtype=np.float32).reshape(7, 7)
  two = np.zeros((7, 7), np.float32)
  two[0, 0] = two[6, 6] = 1.0
  bump = np.ones((7, 7), np.float32)
  bump[3, 3] = 1.001
  maps = jnp.asarray(np.stack([one, ramp, 3 * ramp, -ramp, two, bump, ramp - 24]))
  e = np.asarray(jax.jit(cam.map_entropy)(maps))
  assert e[0] == pytest.approx(0.0, abs=1e-6)
  p = ramp.ravel() / ramp.sum()
  expected = -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(49)
  assert e[1] == pytest.approx(expected, rel=1e-5) and e[2] == pytest.approx(e[1], rel=1e-5)
  assert np.isnan(e[3])  # no positive value
  assert e[4] == pytest.approx(np.log(2) / np.log(49), rel=1e-5)
  assert e[5] == pytest.approx(1.0, abs=1e-6)
  q = np.maximum(ramp - 24, 0).ravel()
  q = q[q > 0] / q.sum()
  assert e[6] == pytest.approx(-(q * np.log(q)).sum() / np.log(49), rel=1e-5)  # positive part
  assert np.isnan(float(cam.map_entropy(jnp.ones((1, 1)))))  # one cell: no spread to measure


def test_upsample_matches_scipy_bilinear_grid():
  m = np.random.default_rng(1).random((1, 4, 4)).astype(np.float32)
  up = np.asarray(cam.upsample(m, (16, 16)))
  assert up.shape == (1, 16, 16)
  # Half-pixel centres, edge-clamped: output (i, j) samples input at (i + .5) / 4 - .5.
  c = np.clip((np.arange(16) + 0.5) / 4 - 0.5, 0, 3)
  want = ndimage.map_coordinates(m[0], np.meshgrid(c, c, indexing='ij'), order=1)
  np.testing.assert_allclose(up[0], want, atol=1e-5)


# --- Any layer, several layers ---------------------------------------------------------------


@pytest.fixture(scope='module')
def layers_fixture():
  return parity.load_layers_fixture(), parity.fixture_models()


@pytest.mark.parametrize('arch', ['mobilenet_v2', 'vgg16'])
def test_layer_parity_with_pytorch_grad_cam(layers_fixture, arch):
  fx, fixture_models = layers_fixture
  model, variables = fixture_models[arch]
  for layers in parity.FIXTURE_LAYERS[arch]:
    # ScoreCAM at one layer only: several layers are fused by the code every method shares
    # (checked here with the other six), and its per-layer chain is
    # test_scorecam_layer_chain_scores_each_layer_with_the_full_model's (on two layers of
    # MobileNetV2 it was ~8 s of this test's ~44).
    methods = cam.METHODS if len(layers) == 1 else tuple(m for m in cam.METHODS
                                                         if m != 'scorecam')
    got = parity.jax_layer_maps(model, variables, fx['x'], layers, fx[f'{arch}/cats'],
                                methods=methods, eigen_sign=parity.FIXTURE_EIGEN_SIGN)
    for m in methods:
      exp = fx[f'{arch}/{parity.layers_key(layers)}/{m}']
      assert exp.shape == (2, 64, 64)
      assert exp.std(axis=(1, 2)).min() > 0.05, 'fixture map is flat: pick other layers'
      diff, corr = parity.compare(exp, got[m])
      assert diff <= parity.TOLERANCE, (layers, m, diff)
      assert corr >= 0.9999, (layers, m, corr)


def _scale(m):
  """pytorch-grad-cam's scale_cam_image without resize, per map of [N, h, w]."""
  m = m - m.min(axis=(-2, -1), keepdims=True)
  return m / (1e-7 + m.max(axis=(-2, -1), keepdims=True))


def _cv2_bilinear(m, size):
  """cv2.INTER_LINEAR upsampling of [N, h, w]: half-pixel centres, edge-clamped."""
  h, w = m.shape[-2:]
  cy = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
  cx = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
  grid = np.meshgrid(cy, cx, indexing='ij')
  return np.stack([ndimage.map_coordinates(mi, grid, order=1) for mi in m])


def test_fuse_layers_is_pytorch_grad_cam_order():
  rng = np.random.default_rng(0)
  maps = [np.maximum(rng.normal(size=(3, 4, 4)), 0).astype(np.float32) * 1e-3,
          np.maximum(rng.normal(size=(3, 8, 8)), 0).astype(np.float32) * 50.0]
  want = _scale(np.mean([np.maximum(_cv2_bilinear(_scale(m), 32), 0) for m in maps], axis=0))
  got = np.asarray(cam.fuse_layers([jnp.asarray(m) for m in maps], (32, 32)))
  np.testing.assert_allclose(got, want, atol=2e-6)
  # Each layer is scaled before averaging: the tiny-valued layer weighs as much as the other.
  assert np.abs(got - _scale(_cv2_bilinear(_scale(maps[1]), 32))).max() > 0.05
  np.testing.assert_allclose(cam.torch_like(maps[1], (32, 32)),
                             cam.fuse_layers([maps[1]], (32, 32)))


@pytest.fixture(scope='module')
def aesthetic_mnv2():
  """The small torchvision MobileNetV2 weights under aesthetic heads, 32 px inputs."""
  model = parity.jax_model('mobilenet_v2', 0.25, num_classes=0)
  variables = pretrained.load_pretrained(models.init_variables(model, image_size=32),
                                         FIXTURES / 'mobilenet_v2_w025.safetensors')
  # Fresh heads are N(0, 0.01): gradients so small that Grad-CAM++'s 1e-6 epsilon zeroes its
  # maps. Trained heads are larger; so are these.
  variables['params']['head'] = jax.tree.map(lambda w: w * 100.0, variables['params']['head'])
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  return model, variables, x


# Every gradient method post-processes the same gradients (their post-processing is checked
# against pytorch-grad-cam above): HiResCAM, non-zero at every layer here, covers the chain's vjp;
# EigenCAM the chain's activations, which ScoreCAM also uses (its per-layer scoring:
# test_scorecam_layer_chain_scores_each_layer_with_the_full_model, on a toy chain; here
# it was ~30 s of tracing and compiling the model on masked inputs at every layer).
CHAIN_METHODS = ('hirescam', 'eigencam')


def test_layer_chain_equals_separate_layers(aesthetic_mnv2):
  # compute_layers runs the network once from the first layer with one vjp; it must give each
  # layer's maps exactly as a separate features_until + rest computation at that layer.
  model, v, x = aesthetic_mnv2
  layers = ('features.3', 'features.10', 'features.16')
  target_fn = cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag'))
  model_fn = lambda im: model.apply(v, im)  # noqa: E731

  @jax.jit
  def chain(x):
    steps = [functools.partial(model.apply, v, after=a, until=b, method='features_between')
             for a, b in zip(layers[:-1], layers[1:])]
    steps.append(functools.partial(model.apply, v, layer=layers[-1], method='rest'))
    first = model.apply(v, x, layers[0], method='features_until')
    return {m: cam.compute_layers(m, steps, first, target_fn, model_fn=model_fn, images=x)
            for m in CHAIN_METHODS}

  @jax.jit
  def separate(x):
    out = {}
    for layer in layers:
      a = model.apply(v, x, layer, method='features_until')
      head_fn = lambda z, layer=layer: model.apply(v, z, layer, method='rest')
      for m in CHAIN_METHODS:
        out[m, layer] = cam.compute(m, head_fn, a, target_fn, model_fn=model_fn, images=x)
    return out

  got, want = chain(x), separate(x)
  for m in CHAIN_METHODS:
    assert [g.shape for g in got[m]] == [(2, 2, 8, 8), (2, 2, 2, 2), (2, 2, 1, 1)]
    for layer, g in zip(layers, got[m]):
      w = want[m, layer]
      # Random weights can rectify a map to zero: the scale is the method's largest map value
      # over the layers, so zeros must match zeros.
      scale = max(float(jnp.abs(want[m, L]).max()) for L in layers)
      assert scale > 0, m
      np.testing.assert_allclose(g / scale, w / scale, atol=1e-5, err_msg=f'{m} {layer}')
  assert all(float(jnp.abs(want['hirescam', L]).max()) > 0 for L in layers)


def test_one_vjp_serves_all_bucket_targets_at_intermediate_layer(aesthetic_mnv2):
  model, v, x = aesthetic_mnv2
  layer = 'features.3'  # where no gradient method's maps are all rectified to zero
  # jitted: op by op, this small MobileNetV2 took 4 s
  a = jax.jit(lambda x: model.apply(v, x, layer, method='features_until'))(x)  # [2, 8, 8, 8]
  head_fn = lambda z: model.apply(v, z, layer, method='rest')  # noqa: E731
  buckets = cam.targets_for('mobilenet_v2', 'bucket')
  # Linear (Grad-CAM), element-wise (HiResCAM) and higher powers of the gradients (Grad-CAM++)
  # of the one vjp; every method's own handling of the target axis is checked on its own in
  # test_vmapped_targets_equal_per_target_loop (each extra method here was ~5 s of compile).
  methods = ('gradcam', 'hirescam', 'gradcampp')

  @jax.jit
  def all_targets(a):
    return {m: cam.compute(m, head_fn, a, buckets) for m in methods}

  @jax.jit
  def one_target(a, t):
    target = lambda out: jax.lax.dynamic_slice_in_dim(buckets(out), t, 1, axis=1)
    return {m: cam.compute(m, head_fn, a, target)[:, 0] for m in methods}

  maps = all_targets(a)
  loop = [one_target(a, t) for t in range(10)]
  for m in methods:
    assert maps[m].shape == (2, 10, 8, 8)
    want = jnp.stack([one[m] for one in loop], axis=1)
    scale = float(jnp.abs(want).max())
    assert scale > 0, m
    np.testing.assert_allclose(maps[m] / scale, want / scale, atol=1e-5, err_msg=m)
  # Distinct targets, distinct maps: the cotangents are not all the same.
  g = maps['hirescam']
  assert float(jnp.abs(g[:, 0] - g[:, 9]).max()) > 1e-3 * float(jnp.abs(g).max())


def test_make_forward_layers(aesthetic_mnv2):
  model, v, x = aesthetic_mnv2
  target_fn = cam.targets_for('mobilenet_v2', forward_lib.target_names('mobilenet_v2'))
  layers = ('features.6', 'features.13')

  @jax.jit
  def reference(x):
    out = []
    for layer in layers:
      a = model.apply(v, x, layer, method='features_until')
      out.append(cam.compute('gradcam', lambda z, layer=layer: model.apply(
          v, z, layer, method='rest'), a, target_fn))
    return out

  want = reference(x)
  pred, maps = forward_lib.make_forward(model, 'mobilenet_v2', 'gradcam', None,
                                      layers=layers[:1])(v, x)
  assert maps.shape == want[0].shape == (2, 12, 4, 4)  # raw maps at features.6
  np.testing.assert_allclose(maps, want[0], rtol=1e-4, atol=1e-6 * float(want[0].max()))
  pred2, fused = forward_lib.make_forward(model, 'mobilenet_v2', 'gradcam', None,
                                        layers='features.13,features.6')(v, x)
  assert fused.shape == (2, 12, 32, 32)  # fused at the input size, min-max scaled
  np.testing.assert_allclose(fused, cam.fuse_layers(want, (32, 32)), atol=1e-4)
  np.testing.assert_allclose(pred2['mean_score'], pred['mean_score'], rtol=1e-5)
  with pytest.raises(ValueError, match="'features.40' is not a module"):
    forward_lib.make_forward(model, 'mobilenet_v2', 'gradcam', None, layers=('features.40',))


def test_make_forward_runs_the_network_once():
  # Compiled convolutions of tiny VGG16 (13 convs): the forward pass is shared by the
  # predictions and the vjp, and the backward pass stops at the shallowest CAM layer.
  model = models.create_model(models.model_config(arch='vgg16', width_mult=0.0625, fc_dim=16))
  v = models.init_variables(model, image_size=32)
  x = np.zeros((2, 32, 32, 3), np.float32)
  expected = {None: 13,                            # the head alone is differentiated
              ('features.22',): 13 + 3,            # + input-gradients of convs 24, 26, 28
              ('features.15', 'features.22'): 13 + 6}  # + convs 17, 19, 21, 24, 26, 28
  for layers, convs in expected.items():
    forward = forward_lib.make_forward(model, 'vgg16', 'gradcam', None, layers=layers)
    hlo = forward.lower(v, x).compile().as_text()
    assert hlo.count(' convolution(') == convs, layers


def test_bucket_k_target_is_one_score_logit():
  logits = jnp.arange(20, dtype=jnp.float32).reshape(2, 10)
  out = {'score_logits': logits, 'tag_logits': jnp.zeros((2, 66))}
  got = cam.targets_for('mobilenet_v2', ['bucket:3', 'bucket'])(out)
  assert got.shape == (2, 11) and np.array_equal(got[:, 0], logits[:, 2])
  assert cam.target_names('mobilenet_v2', ['bucket:3']) == ['bucket:3']
  # The label is the map computed: 'bucket:03' is bucket 3's map (targets_for reads it so),
  # and so is 'tag: 07' tag 7's; other names stay as given.
  assert cam.target_names('mobilenet_v2', ['bucket:03', 'bucket: 3', 'tag: 07', 'top_tag',
                                           'bucket:x']) == [
      'bucket:3', 'bucket:3', 'tag:7', 'top_tag', 'bucket:x']
  with pytest.raises(ValueError, match='score bucket k in 1..10'):
    cam.targets_for('mobilenet_v2', ['bucket:0'])


def test_map_entropy_of_one_hot_cell_is_plus_zero():
  """A map whose mass is all in one cell (a single hot pixel; one positive cell of a 2x2
  grid) had entropy -0.0, which per_image.csv wrote as '-0.0000'."""
  from aesthetics_jax.evaluation import run as eval_run
  one = np.zeros((2, 2, 2), np.float32)
  one[:, 1, 0] = 3.0
  for e in (cam.map_entropy(one), jax.jit(cam.map_entropy)(one)):
    assert not np.signbit(np.asarray(e)).any(), e
    assert eval_run._entropy_cell({'entropy': np.asarray(e)}, 0) == '0.0000'


def test_vgg_conv_layer_maps_weigh_the_relu_output_as_pytorch_grad_cam(layers_fixture):
  """torchvision's VGG16 follows each conv with ReLU(inplace=True), which overwrites the conv
  output pytorch-grad-cam's hook saved: at a conv layer (features.28, the last conv, a common
  target) its maps weigh the ReLU'd activation by the conv output's gradient. Ours used the
  raw conv output: max |diff| 0.26 (Grad-CAM) to 1.0 (XGrad-CAM, correlation 0.47) on the
  committed model; the path predict, the API and evaluate use (`forward`) now matches."""
  fx, fixture_models = layers_fixture
  model, variables = fixture_models['vgg16']
  x = jnp.asarray(fx['x'])
  cats = jnp.asarray(fx['vgg16/cats'], jnp.int32)
  target_fn = lambda out: jnp.take_along_axis(out['imagenet_logits'], cats[:, None], axis=1)
  methods = ('gradcam', 'gradcampp', 'xgradcam', 'hirescam')
  first = model.apply(variables, x, 'features.28', method='features_until')
  _, maps = forward_lib.layer_maps_many(model, variables, ('features.28',), methods, first, x,
                                        target_fn)
  for m in methods:
    got = np.asarray(cam.torch_like(maps[m][:, 0], x.shape[1:3]))
    diff, corr = parity.compare(fx[f'vgg16/features.28/{m}'], got)
    assert diff <= parity.TOLERANCE and corr >= 0.9999, (m, diff, corr)
