"""The training package's user-facing error (shared by the optimiser and the loop), and
`raised_in`, which tells a library's echoes of a failure apart from other errors."""
from __future__ import annotations

import os


class TrainingError(RuntimeError):
  """One-line, user-facing: divergence, mismatched workdir, bad config."""


def raised_in(exc: BaseException | None, package: str) -> bool:
  """True if `exc`, or an exception it chains, was raised through `package`'s code (a frame
  whose file lies in a `<sep>package<sep>` folder)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    tb = exc.__traceback__
    while tb is not None:
      if f'{os.sep}{package}{os.sep}' in tb.tb_frame.f_code.co_filename:
        return True
      tb = tb.tb_next
    exc = exc.__cause__ or exc.__context__
  return False
