"""A prediction as a JSON record: scores, boxes (named corners), notes, one valid JSON line.

Boxes are `(y0, x0, y1, x1)`, end-exclusive, in the code; the records name the corners
instead (`box_fields`: {"x0", "y0", "x1", "y1"}, PIL's crop order), so nobody has to remember
the order.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np


DEFAULT_TOP_K = 5


def box_fields(box: Sequence[int] | None) -> dict[str, int] | None:
  """`(y0, x0, y1, x1)` → `{"x0", "y0", "x1", "y1"}` (end-exclusive image pixels)."""
  if box is None:
    return None
  y0, x0, y1, x1 = (int(v) for v in box)
  return {'x0': x0, 'y0': y0, 'x1': x1, 'y1': y1}


def score_fields(pred: dict[str, np.ndarray], i: int, arch: str, tag_names: dict[int, str],
                 top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
  """Image i's scores as JSON-able fields.

  MobileNetV2: `mean_score` (1..10), `score_std` (spread of the predicted distribution),
  `distribution` [10], `p_high`, `label`, `tags` (the top_k of 66: {id, name, prob}; [] for
  top_k=0).
  VGG16: `p_high`, `label`.
  """
  rec: dict[str, Any] = {}
  if arch == 'mobilenet_v2':
    dist = np.asarray(pred['distribution'][i], np.float64)
    mean = float(pred['mean_score'][i])
    rec['mean_score'] = round(mean, 4)
    rec['score_std'] = round(float(np.sqrt(dist @ (np.arange(1, dist.size + 1) - mean) ** 2)), 4)
    rec['distribution'] = [round(float(v), 4) for v in dist]
  if 'p_high' in pred:
    rec['p_high'] = round(float(pred['p_high'][i]), 4)
  rec['label'] = 'high' if int(pred['label_pred'][i]) == 1 else 'low'
  # `tags` of every MobileNetV2 record, [] at top_k=0: the key was left out, and a reader of
  # the documented fields (`s['tags']`) met a KeyError.
  if 'tag_probs' in pred:
    probs = np.asarray(pred['tag_probs'][i])
    order = np.argsort(-probs, kind='stable')[:top_k]
    rec['tags'] = [{'id': int(k) + 1, 'name': tag_names.get(int(k) + 1, f'tag {int(k) + 1}'),
                    'prob': round(float(probs[k]), 4)} for k in order]  # AVA ids start at 1
  return rec


def non_finite_rows(*parts: dict[str, np.ndarray]) -> np.ndarray:
  """bool [N]: rows with a NaN/inf in any floating field of the given `{name: [N, ...]}`
  dicts (predictions, maps). Such outputs are never reported as numbers."""
  bad = None
  for part in parts:
    for v in part.values():
      v = np.asarray(v)
      if v.ndim == 0 or not np.issubdtype(v.dtype, np.floating):
        continue
      row = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
      bad = row if bad is None else bad | row
  return np.zeros((0,), bool) if bad is None else bad


# Bytes of an input's name kept in its overlay / crop file name: with the index, the suffix and
# the atomic writer's temporary suffix, well under the 255-byte limit of a file name.
_STEM_BYTES = 150


def output_stem(index: int, path: str) -> str:
  """`0007_<the input's stem>` for the files written about input `index` (the index keeps two
  inputs with one name apart; the stem is cut to `_STEM_BYTES` bytes of UTF-8)."""
  stem = Path(path).stem.encode('utf-8', 'surrogateescape')[:_STEM_BYTES]
  return f'{index:04d}_{stem.decode("utf-8", "ignore")}'


def write_error(out: Path, e: OSError, flag: str) -> str:
  """One line for a file predict could not write, with the fix of its cause ('free space'
  was said of a folder made read-only too)."""
  full = getattr(e, 'errno', None) in (errno.ENOSPC, errno.EDQUOT)
  fix = 'free space' if full else 'make it writable'
  return f'{out}: not written ({e.strerror or type(e).__name__}); {fix} or pass another --{flag}'


def _printable(x: Any) -> Any:
  """Strings with the lone surrogates that stand for a file name's non-UTF-8 bytes (Python's
  surrogateescape) as backslash escapes: 'caf\\xe9.jpg', not "caf\\udce9.jpg", which strict JSON
  readers refuse."""
  if isinstance(x, str):
    try:
      x.encode('utf-8')
      return x
    except UnicodeEncodeError:
      try:
        return x.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
      except UnicodeEncodeError:  # a surrogate that stands for no byte
        return x.encode('utf-8', 'backslashreplace').decode('utf-8')
  if isinstance(x, dict):
    return {k: _printable(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_printable(v) for v in x]
  return x


def to_json_line(rec: dict) -> str:
  """One valid JSON line (JSON has no NaN: a non-finite number becomes an error record; a
  non-UTF-8 file name is written with backslash escapes)."""
  rec = _printable(rec)
  try:
    return json.dumps(rec, sort_keys=False, allow_nan=False)
  except ValueError:
    return json.dumps({'path': rec.get('path'), 'error': 'non-finite number in the output'})


# A run's JSON lines that wait until it ends (predict's --output, then written atomically):
# in memory up to this many bytes, then in a temporary file. A list held every line, ~0.6 KB
# an image: 600 MB for a million images.
SPOOL_BYTES = 8 << 20


class LineSpool:
  """Text lines kept in order with bounded memory; read back whole lines only."""

  def __init__(self, max_bytes: int | None = None) -> None:
    self.file = tempfile.SpooledTemporaryFile(
        max_size=SPOOL_BYTES if max_bytes is None else max_bytes, mode='w+b')
    self.size = 0  # bytes of whole lines written

  def keep(self, line: str) -> None:
    """Appends `line` (no newline); RuntimeError (one line) when its disk is full."""
    try:
      self.file.seek(self.size)
      self.file.write(line.encode('utf-8') + b'\n')
    except OSError as e:  # the spill file's disk is full: the lines kept so far stay readable
      raise RuntimeError(f'the lines for --output could not be kept in {tempfile.gettempdir()} '
                         f'({e.strerror or e}); free space there or set TMPDIR') from None
    self.size = self.file.tell()

  def lines(self) -> Iterator[bytes]:
    """The kept lines, each ending in a newline."""
    self.file.seek(0)
    left = self.size
    for raw in self.file:
      if left <= 0:
        return
      yield raw[:left]
      left -= len(raw)

  def copy_to(self, f) -> None:
    """Writes the kept lines to binary file `f`."""
    for raw in self.lines():
      f.write(raw)
