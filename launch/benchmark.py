"""`python -m launch.benchmark` in a checkout: the installed command `aesthetics-benchmark`.

The code lives in aesthetics_jax/cli/benchmark.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.benchmark` and older `from launch import benchmark` working.
"""
from aesthetics_jax.cli.benchmark import *  # noqa: F401,F403
from aesthetics_jax.cli.benchmark import run_cli

if __name__ == '__main__':
  run_cli()
