"""The paper's VGG16 baseline: frozen conv layers, FC classifier trained for high/low.

The paper's two weightings (after Zhang et al. 2018), always with balanced sampling with
replacement (high and low drawn equally often):
  - `score` (default): binary cross-entropy weighted x7 for mean scores outside 4.5..6.5;
  - `class`: the class weight 1 / N_c is the sampler's: balanced sampling draws each row with
    probability proportional to 1 / N_c, and the loss gets no second class weight (that would
    count 1 / N_c twice and give the low class ~72% of the loss; `sampling.check_weighting`
    refuses `input.weighting='class'` with `input.balanced=True`).
SGD with momentum; 50 epochs; 224 px; heads trained over the frozen-encoder feature cache.
Pass ImageNet weights with `--config.model.init_weights=<converted weights>`.

Config argument (comma-separated): `score` (default) | `class`, plus `smoke` for tests,
e.g. `--config=vgg16_binary:class,smoke` (or `configs/vgg16_binary.py:class,smoke`).
"""
import ml_collections

from aesthetics_jax import configs
from aesthetics_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = configs.parse_arg(arg, 'vgg16_binary', ('score', 'class', 'smoke'),
                          one_of=(('score', 'class'),))
  c = default.get_config()
  c.model.arch = 'vgg16'
  c.model.width_mult = 1.0
  c.model.fc_dim = 4096
  c.model.freeze_encoder = True
  c.input.resize_size = 256
  c.input.image_size = 224
  c.input.balanced = True
  # 'class': the balanced sampler IS the 1/N_c class weighting; no loss weight on top.
  c.input.weighting = 'none' if 'class' in args else 'score'
  c.input.weight_factor = 7.0
  c.optim.name = 'sgd'
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  default.gradient_cam_methods_only(c)
  # Batch 32, 50 epochs, constant schedule, feature cache with 4 train views and the best
  # checkpoint by binary accuracy are the defaults (configs/default.py).
  if 'smoke' in args:
    default.apply_smoke(c)
    c.model.width_mult = 0.125
    c.model.fc_dim = 32
  return c
