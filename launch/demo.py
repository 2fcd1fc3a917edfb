"""`python -m launch.demo` in a checkout: the installed command `aesthetics-demo`.

The code lives in aesthetics_jax/cli/demo.py (shipped in the wheel); this shim keeps the
checkout's `python -m launch.demo` and older `from launch import demo` working.
"""
from aesthetics_jax.cli.demo import *  # noqa: F401,F403
from aesthetics_jax.cli.demo import run_cli

if __name__ == '__main__':
  run_cli()
