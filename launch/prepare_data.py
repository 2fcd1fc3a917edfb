"""`python -m launch.prepare_data` in a checkout: the installed command `aesthetics-prepare-data`.

The code lives in aesthetics_jax/cli/prepare_data.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.prepare_data` and older `from launch import prepare_data` working.
"""
from aesthetics_jax.cli.prepare_data import *  # noqa: F401,F403
from aesthetics_jax.cli.prepare_data import run_cli

if __name__ == '__main__':
  run_cli()
