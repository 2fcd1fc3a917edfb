"""`--config=configs/vgg16_binary.py[:arg]` from a checkout: the config lives in aesthetics_jax/configs/vgg16_binary.py
(package data, so installed commands find it too)."""
from aesthetics_jax.configs.vgg16_binary import *  # noqa: F401,F403
