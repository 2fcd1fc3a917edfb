"""`--config=configs/mobilenet_v2_emd.py[:arg]` from a checkout: the config lives in aesthetics_jax/configs/mobilenet_v2_emd.py
(package data, so installed commands find it too)."""
from aesthetics_jax.configs.mobilenet_v2_emd import *  # noqa: F401,F403
