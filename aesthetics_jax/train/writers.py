"""Training logs: `metrics.jsonl` (one JSON row per write) and TensorBoard event files.

TensorBoard files are written by tensorboardX (no TensorFlow): scalars, the run's config as
text, CAM overlay images and an hparams session (flat config + the final eval metrics).

Resuming at a restored step `s` first drops what the killed run logged after `s`, so that the
rerun does not log those steps twice: JSONL rows with `step > s` are removed (file rewritten
atomically), and the new event file starts with TensorBoard's purge marker (`purge_step=s+1`:
readers discard older events at steps >= s + 1).

Cloud workdirs (gs://, through etils.epath): object stores cannot append, so the JSONL rows
are rewritten as one object per write (a few thousand rows: cheap); tensorboardX writes gs://
only with `google-cloud-storage` installed, else TensorBoard is skipped with a one-line
warning (metrics.jsonl has every scalar).
"""
from __future__ import annotations

import json
import logging as std_logging
import os
import sys
import threading
import time
from typing import Any, Mapping

import numpy as np
from absl import logging

from aesthetics_jax import io
from aesthetics_jax.train import errors


def _tensorboardx():
  """tensorboardX, imported on first use and without torch.

  tensorboardX's writer imports torch whenever it is installed, only to accept torch tensors
  (we pass numpy): for a user with torch that was ~1.5 s and ~0.4 GB RSS in every process that
  imported the trainer (benchmark children too). Blocking `import torch` for that one import
  keeps it out; a process that already has torch keeps it as it is.
  """
  _quiet_nan_warning()
  if 'tensorboardX.writer' in sys.modules or 'torch' in sys.modules:
    import tensorboardX  # pylint: disable=import-outside-toplevel
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError, which tensorboardX handles
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel
    import tensorboardX.summary  # pylint: disable=import-outside-toplevel,unused-import
  finally:
    del sys.modules['torch']
  return tensorboardX


def _is_nan_notice(record: std_logging.LogRecord) -> bool:
  return record.getMessage().startswith('NaN or Inf found in input tensor')


def _quiet_nan_warning() -> None:
  """tensorboardX warns "NaN or Inf found in input tensor" for each undefined scalar it
  writes (a correlation over one class; grad_norm between measurements): the value is kept
  (TensorBoard shows it, metrics.jsonl says "nan"), the line under the progress bar is not."""
  logger = std_logging.getLogger('tensorboardX.x2num')
  if not any(getattr(f, '__name__', '') == '_keep' for f in logger.filters):
    def _keep(record: std_logging.LogRecord) -> bool:
      return not _is_nan_notice(record)
    logger.addFilter(_keep)


def _scalar(v: Any) -> float | None:
  try:
    return float(np.asarray(v))
  except (TypeError, ValueError):
    return None


def _row_step(line: str) -> int | None:
  """The `step` of one JSONL line; None if the line is torn or not a row."""
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> int:
  """Atomically drops rows with `step > max_step` (and torn lines); returns how many.

  Kept lines are copied byte for byte, so the rows of the run before the kill stay as written.
  """
  path = io.path(path)
  if not path.exists():
    return 0
  lines = path.read_text().splitlines()
  keep = [l for l in lines if (s := _row_step(l)) is not None and s <= max_step]
  dropped = sum(1 for l in lines if l.strip()) - len(keep)
  if dropped:
    io.atomic_write_text(path, ''.join(l + '\n' for l in keep))
  return dropped


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  return [json.loads(line) for line in io.path(path).read_text().splitlines() if line.strip()]


class JsonlWriter:
  """Appends one JSON object per call: `{"step": s, "time": t, **scalars}`.

  With `resume_step`, rows logged after that step by an interrupted run are dropped first.
  """

  def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
    self.path = io.path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      dropped = truncate_jsonl(self.path, resume_step)
      if dropped:
        logging.info('%s: dropped %d rows logged after step %d', self.path, dropped,
                     resume_step)
    self._local = io.is_local(path)
    # Object stores cannot append: keep the text and rewrite the object at each write.
    self._text = ('' if self._local or not self.path.exists() else self.path.read_text())
    self._f = open(self.path, 'a') if self._local else None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {'step': int(step), 'time': time.time()}
    for k, v in scalars.items():
      s = _scalar(v)
      if s is not None:
        row[k] = s if np.isfinite(s) else str(s)  # JSON has no NaN/inf
    line = json.dumps(row) + '\n'
    if self._f is None:
      self._text += line
      io.atomic_write_text(self.path, self._text)
      return
    self._f.write(line)
    self._f.flush()

  def close(self) -> None:
    if self._f is not None:
      self._f.close()


def flat_hparams(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
  """Nested config dict → `{'optim.lr': 0.1, 'model.arch': 'vgg16', ...}` (lists as text;
  integers outside int64 too: tensorboardX's hparams met --config.log_every_steps=10**20 with
  a TypeError traceback at the end of training)."""
  out = {}
  for k, v in config.items():
    if isinstance(v, Mapping):
      out.update({f'{k}.{kk}': vv for kk, vv in flat_hparams(v).items()})
    elif isinstance(v, int) and not -2 ** 63 <= v < 2 ** 63:
      out[k] = str(v)
    elif isinstance(v, (bool, int, float, str)):
      out[k] = v
    elif v is not None:
      out[k] = str(v)
  return out


def _quiet_tensorboard_write_errors() -> None:
  """tensorboardX writes events in its own thread: a full disk there printed 'Exception in
  thread Thread-2: Traceback ... OSError: [Errno 28] No space left on device' amid training's
  output (the events stop; training fails at its next write with its own line). One warning
  instead; other threads' exceptions go to the previous hook."""
  previous = threading.excepthook
  if getattr(previous, 'quiets_tensorboard', False):
    return

  def hook(args) -> None:
    if isinstance(args.exc_value, OSError) and errors.raised_in(args.exc_value, 'tensorboardX'):
      logging.warning('TensorBoard events stop here: %s (metrics.jsonl keeps every scalar)',
                      args.exc_value)
      return
    previous(args)
  hook.quiets_tensorboard = True
  threading.excepthook = hook


class TensorBoardWriter:
  """tensorboardX event file in `logdir`, flushed after every write (a kill loses nothing)."""

  def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
    _quiet_tensorboard_write_errors()
    # tensorboardX names files by the second and truncates an existing name: the ns suffix
    # keeps two sessions started within one second apart, and in start order.
    self._w = _tensorboardx().SummaryWriter(str(logdir), purge_step=purge_step,
                                            filename_suffix=f'.{time.time_ns()}')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for k, v in scalars.items():
      if (s := _scalar(v)) is not None:
        self._w.add_scalar(k, s, int(step))
    self._w.flush()

  def write_text(self, step: int, tag: str, text: str) -> None:
    self._w.add_text(tag, text, int(step))
    self._w.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: tag → uint8 `[H, W, 3]`."""
    for tag, image in images.items():
      self._w.add_image(tag, np.asarray(image, np.uint8), int(step), dataformats='HWC')
    self._w.flush()

  def write_hparams(self, hparams: Mapping[str, Any], metric_tags: list[str]) -> None:
    """One hparams session in this run; its metrics are existing scalar tags of the run."""
    # In the run itself (not the sub-run `SummaryWriter.add_hparams` creates), so the hparams
    # dashboard reads the metrics from the scalars already logged under these tags.
    for s in _tensorboardx().summary.hparams(dict(hparams), {t: 0.0 for t in metric_tags}):
      self._w.file_writer.add_summary(s)
    self._w.flush()

  def close(self) -> None:
    self._w.close()


class MetricWriter:
  """JSONL (`workdir/metrics.jsonl`) + TensorBoard (`workdir/tensorboard/`); no-op if inactive.

  Pass `active=jax.process_index() == 0` so only one process writes, and `resume_step` (the
  restored checkpoint step, 0 for a fresh start) so a rerun does not repeat logged steps.
  Scalars go to both; text, images and hparams only to TensorBoard.
  """

  def __init__(self, workdir: str | os.PathLike, active: bool = True,
               resume_step: int | None = None):
    self.active = active
    self._jsonl = self._tb = None
    if active:
      workdir = io.path(workdir)
      self._jsonl = JsonlWriter(workdir / 'metrics.jsonl', resume_step)
      purge = None if resume_step is None else int(resume_step) + 1
      skip = tensorboard_unavailable(workdir)
      if skip:
        logging.warning('%s', skip)
      else:
        self._tb = TensorBoardWriter(workdir / 'tensorboard', purge_step=purge)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self.active:
      self._jsonl.write_scalars(step, scalars)
      if self._tb is not None:
        self._tb.write_scalars(step, scalars)

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self._tb is not None:
      self._tb.write_text(step, tag, text)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    if self._tb is not None:
      self._tb.write_images(step, images)

  def write_hparams(self, hparams: Mapping[str, Any], metric_tags: list[str]) -> None:
    if self._tb is not None:
      self._tb.write_hparams(hparams, metric_tags)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def tensorboard_unavailable(workdir: str | os.PathLike) -> str | None:
  """Why TensorBoard events cannot be written under `workdir` (None: they can).

  tensorboardX writes local folders, s3:// with boto3 and gs:// with google-cloud-storage.
  """
  text = os.fspath(workdir)
  if io.is_local(text):
    return None
  scheme = text.split('://', 1)[0]
  module = {'gs': 'google.cloud.storage', 's3': 'boto3'}.get(scheme)
  if module is not None and io.installed(module):
    return None
  need = {'gs': 'google-cloud-storage', 's3': 'boto3'}.get(scheme)
  fix = f'pip install {need} to get them' if need else 'use a local --workdir to get them'
  return (f'{text}/tensorboard: TensorBoard events skipped (tensorboardX cannot write '
          f'{scheme}:// here; {fix}); metrics.jsonl has every scalar')
