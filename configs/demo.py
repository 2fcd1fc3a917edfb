"""`--config=configs/demo.py[:arg]` from a checkout: the config lives in aesthetics_jax/configs/demo.py
(package data, so installed commands find it too)."""
from aesthetics_jax.configs.demo import *  # noqa: F401,F403
