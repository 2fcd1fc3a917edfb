"""SIGTERM (a job scheduler's preemption, `timeout`, `docker stop`) as a request to stop at a
safe point: the trainer finishes the step in flight and checkpoints it; elsewhere the request
stops the command at once, as Ctrl-C does. Free of JAX, so that every command can install it
before any work (cli/common.py `stop_on_sigterm`).
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

REDELIVER_S = 0.05  # a request that came during an import is delivered again this much later


class Terminated(KeyboardInterrupt):
  """A run stopped by a `StopRequest`; `step`: the checkpoint saved for it, in the folder
  `saved` (None: the request came outside a training loop; the earlier checkpoints and
  finished outputs are kept). A KeyboardInterrupt, so that what cleans up after Ctrl-C (a
  half-written folder, a feature cache) cleans up after it too."""

  def __init__(self, step: int | None = None, saved: str | None = None):
    super().__init__(step, saved)  # the arguments: pickled back from a demo model's process
    self.step = step
    self.saved = saved


class StopRequest:
  """A signal handler that stops training with a checkpoint of the step it reached: killed at
  once, a run lost every step since its last scheduled checkpoint
  (config.checkpoint_every_steps).
  Outside the training loop it raises `Terminated(None)` at once. While `held` (the trainer's
  loop: trainer.train_and_evaluate) the step or device segment in flight finishes with its
  log, evaluation and checkpoint as scheduled; the loop then saves that step and raises
  `Terminated(step)`. During the final test it waits for the run to finish: raised there, it
  could land in a callback that only prints its errors (a generator's close, a __del__) and be
  lost. One that comes during an import is delivered again once the import is over. A request
  whose exception was lost is raised again (`deliver_again`, by cli.common's unraisable hook)
  or caught at the next `check` (the trainer's next step, a multi-stage command's next
  stage). Only the first signal acts: a second does not cut the save
  short. `forward_to`: processes the request is passed on to (a demo's model processes), each
  stopping as this one does."""

  def __init__(self) -> None:
    self.held = False
    self.requested = False
    self.forward_to: Callable[[], list[int]] | None = None
    self._deferred = False

  def __call__(self, signum, frame: FrameType | None) -> None:
    del signum
    if not self.requested:
      self.requested = True
      if self.forward_to is not None:
        for pid in self.forward_to():
          try:
            os.kill(pid, signal.SIGTERM)
          except OSError:  # ended meanwhile
            pass
    elif not self._deferred:  # a second signal
      return
    self._deferred = False
    if self.held:
      return
    if importing(frame):
      # Raised in an import, it could reach an extension module's initialisation, which made
      # it an ImportError ('Encountered an error while initializing the extension': numpy's,
      # in a demo model's process just started), a traceback and exit 1. Delivered again
      # once the import is over.
      self.deliver_again()
      return
    raise Terminated(None)

  def deliver_again(self) -> None:
    """Raises the request again a moment later (SIGTERM sent to this process, from another
    thread): for one that came during an import, or whose exception was lost in a callback
    that only prints its errors (cli.common's sys.unraisablehook)."""
    self._deferred = True
    send_later(signal.SIGTERM)

  def check(self) -> None:
    """Raises `Terminated(None)` for a request that was held back or whose exception was lost:
    at a safe point (between two stages)."""
    if self.requested:
      raise Terminated(None)


def send_later(signum: int) -> None:
  """Sends `signum` to this process `REDELIVER_S` from now, from another thread: a signal
  whose handler could not act yet (inside an import) is handled again."""
  timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
  timer.daemon = True
  timer.start()


def importing(frame: FrameType | None) -> bool:
  """Whether `frame` runs inside an import (importlib's frames are on its stack)."""
  while frame is not None:
    if frame.f_code.co_filename.startswith('<frozen importlib'):
      return True
    frame = frame.f_back
  return False
