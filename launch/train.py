"""`python -m launch.train` in a checkout: the installed command `aesthetics-train`.

The code lives in aesthetics_jax/cli/train.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.train` and older `from launch import train` working.
"""
from aesthetics_jax.cli.train import *  # noqa: F401,F403
from aesthetics_jax.cli.train import run_cli

if __name__ == '__main__':
  run_cli()
