"""The paper's two-headed MobileNetV2 (NIMA EMD aesthetic head + 66-tag head) at 224 px.

Frozen ImageNet backbone (pass `--config.model.init_weights=<converted weights>`), balanced
sampling, Adam lr 3e-6, 50 epochs, heads trained over the frozen-encoder feature cache.

Config argument (comma-separated): `smoke` shrinks everything for tests, e.g.
`--config=configs/mobilenet_v2_emd.py:smoke`.
"""
import ml_collections

from aesthetics_jax import configs
from aesthetics_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = configs.parse_arg(arg, 'mobilenet_v2_emd', ('smoke',))
  c = default.get_config()
  c.model.arch = 'mobilenet_v2'
  c.model.width_mult = 1.0
  c.model.freeze_encoder = True
  c.input.resize_size = 256
  c.input.image_size = 224
  c.input.balanced = True
  c.input.weighting = 'none'
  c.loss.emd_r = 2.0
  c.optim.name = 'adam'
  c.optim.lr = 3e-6
  default.gradient_cam_methods_only(c)
  # Batch 32, 50 epochs, constant schedule, feature cache with 4 train views and the best
  # checkpoint by binary accuracy are the defaults (configs/default.py).
  if 'smoke' in args:
    default.apply_smoke(c)
    c.model.width_mult = 0.25
  return c
