"""`python -m launch.convert_weights` in a checkout: the installed command `aesthetics-convert-weights`.

The code lives in aesthetics_jax/cli/convert_weights.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.convert_weights` and older `from launch import convert_weights` working.
"""
from aesthetics_jax.cli.convert_weights import *  # noqa: F401,F403
from aesthetics_jax.cli.convert_weights import run_cli

if __name__ == '__main__':
  run_cli()
