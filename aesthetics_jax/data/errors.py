"""The input errors a user can fix, in a module of their own: the commands check a config
(`sampling.check_weighting`) before JAX loads, and `preprocess`, which imports JAX, re-exports
them."""


class InputError(ValueError):
  """A problem a user can fix (bad config, unreadable image); `str()` is one line."""
