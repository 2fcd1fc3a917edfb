"""Moved to aesthetics_jax/cli/config_args.py (shipped with the installed commands)."""
from aesthetics_jax.cli.config_args import *  # noqa: F401,F403
