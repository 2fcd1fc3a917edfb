r"""Checks our models against live torchvision (needs the torch extra; run by hand).

  python -m launch.check_torch_parity [--arch=mobilenet_v2,vgg16] [--size=224 --batch=2]

Builds torchvision's full-size `mobilenet_v2()` and `vgg16()` with random weights (and random
BatchNorm statistics, so BN is not the identity), saves each state_dict as a .pth, loads it
through `aesthetics_jax.models.pretrained.load_pretrained` (the converter users run) into
`create_model(...)`, and compares `features` and the 1000-way logits in float32 on the same
random [0,1] batch. Exits 1 if any max abs diff exceeds --tol.
"""
import sys
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags
import numpy as np

_ARCH = flags.DEFINE_list('arch', ['mobilenet_v2', 'vgg16'], 'Architectures to check.')
_SIZE = flags.DEFINE_integer('size', 224, 'Input side in pixels.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Batch size.')
_TOL = flags.DEFINE_float('tol', 1e-4, 'Max abs difference allowed (features and logits).')
_DEPTHWISE = flags.DEFINE_list('depthwise', ['shift', 'conv'],
                               'MobileNetV2 depthwise implementations to check.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the torch weights and input.')


def _torch_model(arch: str, seed: int):
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  model = getattr(torchvision.models, arch)(weights=None).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
  return model


def check(arch: str, size: int, batch: int, seed: int, depthwise: list[str]) -> list[dict]:
  """Returns one result dict per (arch, depthwise impl)."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel

  tmodel = _torch_model(arch, seed)
  gen = torch.Generator().manual_seed(seed + 1)
  x = torch.rand(batch, 3, size, size, generator=gen)
  t0 = time.perf_counter()
  with torch.no_grad():
    t_feat = tmodel.features(x).permute(0, 2, 3, 1).numpy()
    t_logits = tmodel(x).numpy()
  t_torch = time.perf_counter() - t0
  x_nhwc = x.permute(0, 2, 3, 1).numpy()
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    pth = Path(tmp) / f'{arch}.pth'
    torch.save(tmodel.state_dict(), pth)
    del tmodel
    for impl in (depthwise if arch == 'mobilenet_v2' else ['-']):
      cfg = models.model_config(arch=arch, width_mult=1.0, fc_dim=4096,
                                depthwise='auto' if impl == '-' else impl, dtype='float32')
      model = models.create_model(cfg, imagenet_classes=1000)
      shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x_nhwc[:1]))
      variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
      # Keep only our new heads out: ImageNet's classifier is loaded here to compare logits.
      variables = pretrained.load_pretrained(
          variables, pth, dont_load=(r'^params/head/(score|tags|logit)/',), arch=arch)
      t0 = time.perf_counter()
      feat = jax.jit(lambda v, x: model.apply(v, x, method='features'))(variables, x_nhwc)
      out = jax.jit(lambda v, a: model.apply(v, a, method='head'))(variables, feat)
      feat = np.asarray(feat)
      logits = np.asarray(out['imagenet_logits'])
      t_jax = time.perf_counter() - t0
      results.append({
          'arch': arch, 'depthwise': impl, 'features_shape': feat.shape,
          'features_max_abs_diff': float(np.abs(feat - t_feat).max()),
          'features_max_abs': float(np.abs(t_feat).max()),
          'logits_max_abs_diff': float(np.abs(logits - t_logits).max()),
          'logits_max_abs': float(np.abs(t_logits).max()),
          'argmax_equal': bool((logits.argmax(-1) == t_logits.argmax(-1)).all()),
          'seconds_torch': t_torch, 'seconds_jax_incl_compile': t_jax})
  return results


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    print("check_torch_parity: needs torch; install the torch extra: pip install -e '.[torch]'",
          file=sys.stderr)
    sys.exit(1)
  ok = True
  for arch in _ARCH.value:
    if arch not in ('mobilenet_v2', 'vgg16'):
      print(f'check_torch_parity: --arch={arch}: use mobilenet_v2 or vgg16', file=sys.stderr)
      sys.exit(1)
    for r in check(arch, _SIZE.value, _BATCH.value, _SEED.value, _DEPTHWISE.value):
      passed = max(r['features_max_abs_diff'], r['logits_max_abs_diff']) <= _TOL.value
      ok &= passed
      print(f"{'PASS' if passed else 'FAIL'} {r['arch']:12s} depthwise={r['depthwise']:5s} "
            f"{_BATCH.value}x{_SIZE.value}px features {tuple(r['features_shape'])} "
            f"max|diff|={r['features_max_abs_diff']:.2e} (max|torch|={r['features_max_abs']:.2f}) "
            f"logits max|diff|={r['logits_max_abs_diff']:.2e} "
            f"(max|torch|={r['logits_max_abs']:.3f}) argmax_equal={r['argmax_equal']}")
  print('all within tol' if ok else f'FAILED: some max abs diff > {_TOL.value}')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  from aesthetics_jax.cli import common
  app.run(main, flags_parser=common.parse_flags)  # --help exits 0 (absl's exits 1)
