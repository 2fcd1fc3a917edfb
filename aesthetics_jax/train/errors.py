"""The training package's user-facing error (shared by the optimiser and the loop)."""


class TrainingError(RuntimeError):
  """One-line, user-facing: divergence, mismatched workdir, bad config."""
