"""`python -m launch.paper_run` in a checkout: the installed command `aesthetics-paper-run`.

The code lives in aesthetics_jax/cli/paper_run.py (shipped in the wheel).
"""
from aesthetics_jax.cli.paper_run import *  # noqa: F401,F403
from aesthetics_jax.cli.paper_run import run_cli

if __name__ == '__main__':
  run_cli()
