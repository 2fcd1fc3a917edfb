"""`python -m launch.control` in a checkout: the installed command `aesthetics-control`.

The code lives in aesthetics_jax/cli/control.py (shipped in the wheel).
"""
from aesthetics_jax.cli.control import *  # noqa: F401,F403
from aesthetics_jax.cli.control import run_cli

if __name__ == '__main__':
  run_cli()
