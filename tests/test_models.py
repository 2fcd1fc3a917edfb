"""Models: shapes, variable layout, features/head split, depthwise implementations, dtype,
and parameter shapes against torchvision's (from the committed fixture metadata)."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aesthetics_jax import models
from aesthetics_jax.models import pretrained
from aesthetics_jax.models import depthwise
from aesthetics_jax.models import vgg as vgg_lib
from aesthetics_jax.models import winograd
from aesthetics_jax import parallel

FIXTURES = Path(__file__).parent / 'fixtures'
SIZE = 64


def _config(**kw) -> ml_collections.ConfigDict:
  base = dict(arch='mobilenet_v2', width_mult=0.25, fc_dim=64, freeze_encoder=False)
  base.update(kw)
  return models.model_config(**base)


def _images(n=2, size=SIZE, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def random_variables(model, size=SIZE, seed=0):
  """Variables with `model.init`'s structure and shapes, filled by numpy.

  `jax.jit(model.init)` spends 10-25 s compiling threefry for MobileNetV2 on 2 busy CPU
  cores; `eval_shape` traces the same code for the structure at no compile cost.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(size=s.shape).astype(np.float32) * np.sqrt(2 / np.prod(s.shape[:-1]))
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, size=s.shape).astype(np.float32)
    return rng.normal(size=s.shape).astype(np.float32) * 0.1
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _jitted(model):
  return (jax.jit(lambda v, x: model.apply(v, x, method='features')),
          jax.jit(lambda v, a: model.apply(v, a, method='head')),
          jax.jit(model.apply))


@pytest.fixture(scope='module')
def mnv2():
  model = models.create_model(_config())
  return model, random_variables(model), _images(), _jitted(model)


@pytest.fixture(scope='module')
def vgg():
  model = models.create_model(_config(arch='vgg16', width_mult=0.125))
  return model, random_variables(model), _images(), _jitted(model)


def test_mobilenet_v2_shapes_and_variables(mnv2):
  model, variables, x, (features, head, full) = mnv2
  assert set(variables) == {'params', 'batch_stats'}
  assert set(variables['params']) == {'encoder', 'head'}
  assert set(variables['batch_stats']) == {'encoder'}
  a = features(variables, x)
  assert a.shape == (2, 2, 2, 1280) and a.dtype == jnp.float32
  out = head(variables, a)
  assert out['score_logits'].shape == (2, 10) and out['tag_logits'].shape == (2, 66)
  assert float(a.min()) >= 0.0 and float(a.max()) <= 6.0  # ReLU6 is the last op
  whole = full(variables, x)
  for k in ('score_logits', 'tag_logits'):
    np.testing.assert_allclose(whole[k], out[k], atol=1e-5, rtol=0)


def test_vgg16_shapes_and_variables(vgg):
  model, variables, x, (features, head, full) = vgg
  assert set(variables) == {'params'} and set(variables['params']) == {'encoder', 'head'}
  a = features(variables, x)
  assert a.shape == (2, 2, 2, 64)
  out = head(variables, a)
  assert set(out) == {'logit'} and out['logit'].shape == (2,)
  # 2x2 map is adaptively pooled to 7x7 like torch: fc6 sees 7*7*64 inputs.
  assert variables['params']['head']['fc6']['kernel'].shape == (7 * 7 * 64, 64)
  np.testing.assert_allclose(full(variables, x)['logit'], out['logit'], atol=1e-5, rtol=1e-5)


def test_vgg_pool_size_config():
  model = models.create_model(_config(arch='vgg16', width_mult=0.0625, vgg_pool_size=2))
  v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
  assert v['params']['head']['fc6']['kernel'].shape == (2 * 2 * 32, 64)


def test_adaptive_pool_matches_torch_bins():
  # torch AdaptiveAvgPool 2 → 7: bins [0,1) x3, [0,2) at the middle, [1,2) x3.
  m = models.heads.adaptive_pool_matrix(2, 7)
  np.testing.assert_allclose(m[:, 0], [1, 1, 1, .5, 0, 0, 0])
  np.testing.assert_allclose(m[:, 1], [0, 0, 0, .5, 1, 1, 1])
  # 5 → 3: bins [0,2), [1,4), [3,5).
  m = models.heads.adaptive_pool_matrix(5, 3)
  np.testing.assert_allclose(m, [[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0],
                                 [0, 0, 0, .5, .5]], rtol=1e-6)
  x = jnp.arange(2 * 5 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 5, 3)
  y = models.adaptive_avg_pool(x, 3)
  np.testing.assert_allclose(y[:, 1, 2], x[:, 1:4, 3:5].mean(axis=(1, 2)), rtol=1e-6)


def _depthwise_reference(x, k, stride):
  """Direct numpy loops: out[b,i,j,c] = sum_{di,dj} xpad[b, s*i+di, s*j+dj, c] * k[di,dj,0,c]."""
  b, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  out = np.zeros((b, ho, wo, c), np.float64)
  for i in range(ho):
    for j in range(wo):
      win = xp[:, stride * i:stride * i + 3, stride * j:stride * j + 3, :]
      out[:, i, j] = np.einsum('bhwc,hwc->bc', win, k[:, :, 0, :])
  return out


@pytest.mark.parametrize('stride,h,w', [(1, 7, 6), (2, 7, 6), (2, 8, 8)])
def test_depthwise_impls_equal_reference(stride, h, w):
  rng = np.random.default_rng(stride * 100 + h)
  x = rng.normal(size=(2, h, w, 5)).astype(np.float32)
  k = rng.normal(size=(3, 3, 1, 5)).astype(np.float32)
  ref = _depthwise_reference(x, k, stride)
  for impl in ('conv', 'shift'):
    y = depthwise.depthwise_conv(jnp.asarray(x), jnp.asarray(k), stride, impl)
    assert y.shape == ref.shape, impl
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0, err_msg=impl)


def test_depthwise_auto_and_validation(monkeypatch):
  monkeypatch.delenv(depthwise.AUTO_ENV, raising=False)
  assert depthwise.resolve_impl('auto') == ('shift' if jax.default_backend() == 'cpu' else 'conv')
  for impl in ('conv', 'shift'):
    monkeypatch.setenv(depthwise.AUTO_ENV, impl)
    assert depthwise.resolve_impl('auto') == impl
    assert depthwise.resolve_impl('conv') == 'conv'   # an explicit choice is kept
  monkeypatch.setenv(depthwise.AUTO_ENV, 'fft')
  with pytest.raises(ValueError, match=f"{depthwise.AUTO_ENV}='fft'"):
    depthwise.resolve_impl('auto')
  with pytest.raises(ValueError, match='depthwise'):
    depthwise.resolve_impl('fft')


def test_mobilenet_v2_shift_equals_conv(mnv2):
  _, variables, x, (shift_features, _, _) = mnv2
  # torchvision-scaled weights (the parity fixture): random N(0,1)-ish ones saturate ReLU6
  # and amplify float reassociation far beyond what real weights do.
  variables = pretrained.load_pretrained(variables, FIXTURES / 'mobilenet_v2_w025.safetensors')
  assert models.create_model(_config()).depthwise == 'auto'
  if depthwise.resolve_impl('auto') != 'shift':  # the suite's 'conv' (conftest.py), or a GPU
    shift_features = _jitted(models.create_model(_config(depthwise='shift')))[0]
  conv_features = _jitted(models.create_model(_config(depthwise='conv')))[0]
  np.testing.assert_allclose(shift_features(variables, x), conv_features(variables, x),
                             atol=1e-5, rtol=0)


def _direct_conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.jit
def _winograd_vs_direct(x, k):
  """(Winograd, direct) convs and the vjps of sum(sin(conv)) w.r.t. x, in one executable."""
  loss = lambda conv: lambda x: jnp.sum(jnp.sin(conv(x)))  # noqa: E731
  wino = lambda x: winograd.conv3x3(x, winograd.kernel_transform(k))  # noqa: E731
  direct = lambda x: _direct_conv(x, k)  # noqa: E731
  return wino(x), direct(x), jax.grad(loss(wino))(x), jax.grad(loss(direct))(x)


def test_winograd_conv_equals_direct_conv():
  """Even, odd (padded tiles) and 1x1 maps; the vjp (Grad-CAM below a Winograd conv) too."""
  rng = np.random.default_rng(0)
  for b, h, w, c, o in [(2, 8, 8, 3, 5), (1, 7, 9, 4, 6), (1, 1, 1, 2, 3)]:
    x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, o)), jnp.float32)
    y, ref, g, gref = _winograd_vs_direct(x, k)
    assert y.shape == ref.shape == (b, h, w, o)
    np.testing.assert_allclose(y, ref, atol=1e-5 * float(jnp.abs(ref).max()), rtol=0)
    np.testing.assert_allclose(g, gref, atol=1e-4 * float(jnp.abs(gref).max()), rtol=0)
  u = winograd.kernel_transform(k)
  assert u.shape == (16, c, o)
  yb = jax.jit(winograd.conv3x3)(x.astype(jnp.bfloat16), u.astype(jnp.bfloat16))
  assert yb.dtype == jnp.bfloat16
  np.testing.assert_allclose(yb.astype(jnp.float32), ref, atol=0.05 * float(jnp.abs(ref).max()))


def test_vgg16_winograd_convs_share_variables_and_agree():
  """conv3x3='winograd' reads nn.Conv's params (same init, same tree) and gives the direct
  convs' features; 36 px makes the block-4/5 maps odd (9x9, 4x4 → padded tiles)."""
  size = 36
  direct = models.create_model(_config(arch='vgg16', width_mult=0.0625, conv3x3='direct'))
  wino = models.create_model(_config(arch='vgg16', width_mult=0.0625, conv3x3='winograd'))
  vd, vw = (models.init_variables(m, 0, size) for m in (direct, wino))
  assert jax.tree.structure(vd) == jax.tree.structure(vw)
  for a, b in zip(jax.tree.leaves(vd), jax.tree.leaves(vw)):
    np.testing.assert_array_equal(a, b)
  prepared = wino.inference_variables(vd)
  assert sorted(prepared['winograd']['encoder']) == sorted(
      f'features_{i}' for i, _ in vgg_lib.conv_layers(0.0625))
  assert direct.inference_variables(vd) is vd  # nothing to precompute

  @jax.jit
  def run(v, x):
    return (direct.apply(v, x, method='features'), wino.apply(v, x, method='features'),
            parallel.features_fn(wino, 1)(v, x),  # precomputed kernels, one image a step
            direct.apply(v, x)['logit'], wino.apply(wino.inference_variables(v), x)['logit'])
  ref, inline, chunked, logit, logit_w = run(vd, jnp.asarray(_images(3, size)))
  scale = float(jnp.abs(ref).max())
  np.testing.assert_allclose(inline, ref, atol=1e-5 * scale)
  np.testing.assert_allclose(chunked, inline, atol=1e-6 * scale)
  np.testing.assert_allclose(logit_w, logit, atol=1e-5 * float(jnp.abs(logit).max()))


def test_conv3x3_auto_rule_and_validation():
  on_cpu = jax.default_backend() == 'cpu'
  assert vgg_lib.uses_winograd('auto', 256) == on_cpu
  assert vgg_lib.uses_winograd('auto', 512) == on_cpu
  assert not vgg_lib.uses_winograd('auto', 128)
  assert vgg_lib.uses_winograd('winograd', 8) and not vgg_lib.uses_winograd('direct', 512)
  assert models.create_model(_config(arch='vgg16')).conv3x3 == 'auto'
  narrow = models.create_model(_config(arch='vgg16', width_mult=0.125))
  assert 'winograd' not in narrow.inference_variables(
      models.init_variables(narrow, 0, 32))  # the demo's VGG16 keeps direct convs


def test_freeze_encoder_keeps_batch_stats(mnv2):
  _, variables, x, _ = mnv2
  for frozen in (True, False):
    m = models.create_model(_config(freeze_encoder=frozen))
    fn = lambda v: m.apply(v, x, train=True, mutable=['batch_stats'], method='features')[1]
    # Traced, not compiled: frozen ⇔ every returned batch stat is its input, untouched.
    jaxpr = jax.make_jaxpr(fn)(variables).jaxpr
    passthrough = [any(o is i for i in jaxpr.invars) for o in jaxpr.outvars]
    assert len(passthrough) == len(jax.tree.leaves(variables['batch_stats']))
    assert all(passthrough) if frozen else not any(passthrough)


def test_dropout_only_in_train(mnv2):
  model, variables, x, _ = mnv2
  a = jnp.ones((2, 2, 2, 1280))
  ev = model.apply(variables, a, method='head')
  tr = model.apply(variables, a, True, method='head', rngs={'dropout': jax.random.key(3)})
  assert not np.allclose(ev['score_logits'], tr['score_logits'])
  np.testing.assert_allclose(ev['tag_logits'], tr['tag_logits'], atol=1e-6)  # no dropout


def test_bfloat16_compute_float32_params_and_outputs():
  model = models.create_model(_config(arch='vgg16', width_mult=0.0625, dtype='bfloat16'))
  x = _images(size=32)
  v = random_variables(model, 32)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(
      jax.eval_shape(model.init, jax.random.key(0), x)))
  out = jax.jit(model.apply)(v, x)
  assert out['logit'].dtype == jnp.float32
  ref = jax.jit(models.create_model(_config(arch='vgg16', width_mult=0.0625)).apply)(v, x)
  np.testing.assert_allclose(out['logit'], ref['logit'], atol=0.05, rtol=0.05)


def test_create_model_rejects_bad_config():
  for kw, word in [({'arch': 'resnet'}, 'arch'), ({'dtype': 'float16'}, 'dtype'),
                   ({'depthwise': 'x'}, 'depthwise'), ({'arch': 'vgg16', 'conv3x3': 'fft'},
                                                       'conv3x3')]:
    with pytest.raises(ValueError, match=word):
      models.create_model(_config(**kw))


@pytest.mark.parametrize('name,arch,width', [
    ('mobilenet_v2_1.0', 'mobilenet_v2', 1.0), ('mobilenet_v2_0.25', 'mobilenet_v2', 0.25),
    ('mobilenet_v2_0.1', 'mobilenet_v2', 0.1), ('vgg16', 'vgg16', 1.0)])
def test_param_shapes_match_torchvision(name, arch, width):
  torch_shapes = json.loads((FIXTURES / 'fixtures.json').read_text())['torchvision_shapes'][name]
  expected = pretrained.torch_to_flax_shapes(torch_shapes, arch)
  model = models.create_model(_config(arch=arch, width_mult=width, fc_dim=4096),
                              imagenet_classes=1000)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  ours = {k: tuple(v.shape) for k, v in pretrained.flatten_variables(shapes).items()
          if not k.startswith(('params/head/score/', 'params/head/tags/',
                               'params/head/logit/'))}
  assert ours == expected
  # Every torch tensor except BN's counters has a home.
  assert len(expected) == sum(not k.endswith('num_batches_tracked') for k in torch_shapes)


def test_make_divisible_matches_torchvision_rules():
  assert models.make_divisible(32 * 0.1) == 8      # min_value
  assert models.make_divisible(96 * 0.1) == 16     # bumped: 8 < 0.9 * 9.6
  assert models.make_divisible(24 * 0.25) == 8
  assert models.make_divisible(1280 * 1.4) == 1792


@pytest.mark.parametrize('arch', ['mobilenet_v2', 'vgg16'])
def test_init_variables_matches_init_structure_and_distributions(arch):
  # Full-size MobileNetV2; VGG16 at width 0.25 / fc 512 keeps CI memory small.
  model = models.create_model(_config(arch=arch, width_mult=1.0 if arch == 'mobilenet_v2'
                                      else 0.25, fc_dim=512))
  v = models.init_variables(model, seed=1)
  ref = dict(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  ref.setdefault('batch_stats', {})  # always present (empty for VGG): one tree for all archs
  assert jax.tree.structure(v) == jax.tree.structure(ref)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), v) == jax.tree.map(
      lambda a: (a.shape, a.dtype), ref)
  enc, head = v['params']['encoder'], v['params']['head']
  if arch == 'mobilenet_v2':
    k = enc['features_18']['conv']['kernel']                    # (1, 1, 320, 1280)
    np.testing.assert_allclose(k.std(), np.sqrt(2 / 1280), rtol=0.02)
    dw = enc['features_17']['depthwise']['conv']['kernel']      # (3, 3, 1, 960)
    np.testing.assert_allclose(dw.std(), np.sqrt(2 / (9 * 960)), rtol=0.05)
    assert (enc['features_0']['bn']['scale'] == 1).all()
    assert (v['batch_stats']['encoder']['features_0']['bn']['var'] == 1).all()
    np.testing.assert_allclose(head['score']['kernel'].std(), 0.01, rtol=0.1)
  else:
    np.testing.assert_allclose(enc['features_28']['kernel'].std(), np.sqrt(2 / (9 * 128)),
                               rtol=0.02)
    assert (enc['features_28']['bias'] == 0).all()
    np.testing.assert_allclose(head['fc7']['kernel'].std(), 0.01, rtol=0.01)
  again = models.init_variables(model, seed=1)
  other = models.init_variables(model, seed=2)
  leaf = lambda t: t['params']['encoder']['features_0']['conv' if arch == 'mobilenet_v2'
                                                          else 'kernel']
  leaf = lambda t, leaf=leaf: jax.tree.leaves(leaf(t))[0]
  assert np.array_equal(leaf(v), leaf(again)) and not np.array_equal(leaf(v), leaf(other))


# --- Split at any torchvision layer --------------------------------------------------------


@pytest.mark.parametrize('arch,width,layers', [
    ('mobilenet_v2', 0.25, ('features.0', 'features.6', 'features.14')),
    ('vgg16', 0.0625, ('features.4', 'features.15', 'features.22', 'features.29'))])
def test_rest_of_features_until_is_the_model(arch, width, layers):
  model = models.create_model(_config(arch=arch, width_mult=width, fc_dim=16))
  x = _images(size=32)
  v = random_variables(model, 32)
  full = jax.jit(model.apply)(v, x)
  split = jax.jit(lambda v, x, L: model.apply(v, model.apply(v, x, L, method='features_until'),
                                              L, method='rest'), static_argnums=2)
  for layer in layers + (None,):
    out = split(v, x, layer)
    for k in full:
      np.testing.assert_allclose(out[k], full[k], atol=1e-5, rtol=1e-5, err_msg=str(layer))
  # The default layer is the encoder's output: features_until == features, rest == head.
  # One jit for both (op by op, MobileNetV2 took seconds): the same computation twice.
  a, f = jax.jit(lambda v, x: (model.apply(v, x, method='features_until'),
                               model.apply(v, x, method='features')))(v, x)
  np.testing.assert_array_equal(a, f)
  assert model.default_layer == model.LAYERS[-1] == ('features.18' if arch == 'mobilenet_v2'
                                                      else 'features.30')


def test_features_between_chains_layers(mnv2):
  model, variables, x, _ = mnv2
  # jitted: op by op, the model compiles each of its primitives (slower here)
  until = lambda L: jax.jit(lambda v, x: model.apply(v, x, L, method='features_until'))(
      variables, x)
  a6 = until('features.6')
  assert a6.shape == (2, 8, 8, 8) and a6.dtype == jnp.float32  # stride 8, 32 * 0.25 channels
  a14 = jax.jit(lambda v, a: model.apply(v, a, 'features.6', 'features.14',
                                         method='features_between'))(variables, a6)
  want = until('features.14')
  # Two executables: XLA:CPU may order the sums differently (seen: 2.3e-4, values up to 8.5); a
  # chain that skipped or repeated a block would be off by the size of the values.
  np.testing.assert_allclose(a14, want, atol=2e-3 * float(jnp.abs(want).max()), rtol=0)
  with pytest.raises(ValueError, match='does not come after'):
    model.apply(variables, a14, 'features.14', 'features.6', method='features_between')


def test_unknown_layer_is_one_line_error(mnv2):
  model, variables, x, _ = mnv2
  for bad in ('features.19', 'features_14', 'classifier.1'):
    with pytest.raises(ValueError) as e:
      model.apply(variables, x, bad, method='features_until')
    msg = str(e.value)
    assert '\n' not in msg and repr(bad) in msg and 'features.0, features.1,' in msg
    assert 'features.18 ' in msg
  vgg_model = models.create_model(_config(arch='vgg16'))
  with pytest.raises(ValueError, match=r'features\.30 \(torchvision'):
    models.resolve_layers(vgg_model, ['features.31'])


def test_resolve_layers_orders_and_defaults():
  model = models.create_model(_config())
  assert models.resolve_layers(model, ()) == ('features.18',)
  assert models.resolve_layers(model, None) == ('features.18',)
  assert models.resolve_layers(model, 'features.18, features.14,features.18') == (
      'features.14', 'features.18')
  assert models.resolve_layers(model, ['features.10', 'features.2']) == (
      'features.2', 'features.10')


def test_split_keeps_frozen_batch_norm_and_bfloat16(mnv2):
  _, variables, x, _ = mnv2
  for frozen in (True, False):
    m = models.create_model(_config(freeze_encoder=frozen))
    fn = lambda v: m.apply(v, x, 'features.10', train=True, mutable=['batch_stats'],
                           method='features_until')[1]
    jaxpr = jax.make_jaxpr(fn)(variables).jaxpr
    passthrough = [any(o is i for i in jaxpr.invars) for o in jaxpr.outvars]
    # Leaves in the returned tree's order; modules after features.10 never run.
    index = [int(path[1].key.split('_')[1]) for path, _ in
             jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]]
    assert passthrough == [frozen or i > 10 for i in index]
  m16 = models.create_model(_config(dtype='bfloat16'))
  # jitted: op by op, the model compiles each of its hundreds of primitives (~3x slower here)
  a = jax.jit(lambda v, x: m16.apply(v, x, 'features.14', method='features_until'))(variables, x)
  assert a.dtype == jnp.float32
  out = jax.jit(lambda v, a: m16.apply(v, a, 'features.14', method='rest'))(variables, a)
  np.testing.assert_array_equal(out['score_logits'],
                                jax.jit(m16.apply)(variables, x)['score_logits'])


def test_resolve_layers_skips_empty_names_in_a_list_as_in_a_string():
  """predict's --cam_layers is a list flag: 'features.14,' and 'features.14,,features.18'
  came as ['features.14', ''], refused as "CAM layer '' is not a module"; the same text as
  the API's layer= string was taken. Only empty names: nothing but them is the default."""
  model = models.create_model(_config())
  assert models.resolve_layers(model, ['features.14', '']) == ('features.14',)
  assert models.resolve_layers(model, ['features.14', ' ', 'features.18']) == (
      'features.14', 'features.18')
  assert models.resolve_layers(model, ['', ' ']) == ('features.18',)


def test_resolve_layers_reads_names_in_any_case():
  """'Features.14' / 'FEATURES.18' name one module each (CAM methods and targets are read in
  any case); they were refused as 'not a module'. A wrong name is still refused."""
  model = models.create_model(_config())
  assert models.resolve_layers(model, ' Features.14 ,FEATURES.18') == (
      'features.14', 'features.18')
  assert models.resolve_layers(model, ['FEATURES.2']) == ('features.2',)
  with pytest.raises(ValueError, match=r"CAM layer 'Features.19' is not a module"):
    models.resolve_layers(model, 'Features.19')
