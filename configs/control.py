"""`--config=configs/control.py[:arg]` from a checkout: the config lives in aesthetics_jax/configs/control.py
(package data, so installed commands find it too)."""
from aesthetics_jax.configs.control import *  # noqa: F401,F403
