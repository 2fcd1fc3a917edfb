"""aesthetics-jax: aesthetic classifiers on AVA with JAX/Flax, explained with CAMs.

`aesthetics_jax.load(workdir)` (the notebook interface, `aesthetics_jax.api`) is imported on
first use, so that `import aesthetics_jax` (and every command's start) stays free of JAX.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
  if name in ('load', 'Model', 'Box'):
    from aesthetics_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
