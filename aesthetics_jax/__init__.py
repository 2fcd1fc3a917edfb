"""aesthetics-jax: aesthetic classifiers on AVA with JAX/Flax, explained with CAMs."""
__version__ = "0.1.0"
