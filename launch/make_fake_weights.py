"""`python -m launch.make_fake_weights` in a checkout: the installed command `aesthetics-make-fake-weights`.

The code lives in aesthetics_jax/cli/make_fake_weights.py (shipped in the wheel).
"""
from aesthetics_jax.cli.make_fake_weights import *  # noqa: F401,F403
from aesthetics_jax.cli.make_fake_weights import run_cli

if __name__ == '__main__':
  run_cli()
