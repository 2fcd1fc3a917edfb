"""`--config=configs/default.py[:arg]` from a checkout: the config lives in aesthetics_jax/configs/default.py
(package data, so installed commands find it too)."""
from aesthetics_jax.configs.default import *  # noqa: F401,F403
