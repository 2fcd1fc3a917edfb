"""CAM methods: parity with pytorch-grad-cam (committed fixture), targets, vmap vs loop,
normalisation. The fixture is regenerated with `python -m launch.check_cam_parity --write`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from aesthetics_jax.explain import cam
from launch import check_cam_parity as parity


@pytest.fixture(scope='module')
def fixture():
  return parity.load_fixture()


@pytest.mark.parametrize('head', parity.HEADS)
def test_parity_with_pytorch_grad_cam(fixture, head):
  w, images, expected, cats = fixture
  got = parity.jax_maps(w, images, head, cats[head])
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


def test_upsample_matches_scipy_bilinear_grid():
  m = np.random.default_rng(1).random((1, 4, 4)).astype(np.float32)
  up = np.asarray(cam.upsample(m, (16, 16)))
  assert up.shape == (1, 16, 16)
  # Half-pixel centres, edge-clamped: output (i, j) samples input at (i + .5) / 4 - .5.
  c = np.clip((np.arange(16) + 0.5) / 4 - 0.5, 0, 3)
  want = ndimage.map_coordinates(m[0], np.meshgrid(c, c, indexing='ij'), order=1)
  np.testing.assert_allclose(up[0], want, atol=1e-5)
