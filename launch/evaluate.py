"""`python -m launch.evaluate` in a checkout: the installed command `aesthetics-evaluate`.

The code lives in aesthetics_jax/cli/evaluate.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.evaluate` and older `from launch import evaluate` working.
"""
from aesthetics_jax.cli.evaluate import *  # noqa: F401,F403
from aesthetics_jax.cli.evaluate import run_cli

if __name__ == '__main__':
  run_cli()
