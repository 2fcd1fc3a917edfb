"""`python -m launch.predict` in a checkout: the installed command `aesthetics-predict`.

The code lives in aesthetics_jax/cli/predict.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.predict` and older `from launch import predict` working.
"""
from aesthetics_jax.cli.predict import *  # noqa: F401,F403
from aesthetics_jax.cli.predict import run_cli

if __name__ == '__main__':
  run_cli()
