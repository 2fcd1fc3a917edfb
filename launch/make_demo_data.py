"""`python -m launch.make_demo_data` in a checkout: the installed command `aesthetics-make-demo-data`.

The code lives in aesthetics_jax/cli/make_demo_data.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.make_demo_data` and older `from launch import make_demo_data` working.
"""
from aesthetics_jax.cli.make_demo_data import *  # noqa: F401,F403
from aesthetics_jax.cli.make_demo_data import run_cli

if __name__ == '__main__':
  run_cli()
