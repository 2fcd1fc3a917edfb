r"""Scores images with a trained checkpoint and suggests crops from its class activation maps.

  aesthetics-predict --workdir=W [--step=N] [--output=F] [--top_k=5] [--overlay_dir=O] \
      [--crop_dir=C --aspect=4:3 --crop_format=auto] [--cam_method=gradcam] \
      [--cam_layers=features.14,...] photo.jpg photos/ 'shoot/*.png' ...
  (python -m launch.predict from a checkout)

`--config.eval.KEY=VALUE` overrides the checkpoint's config.eval for this run (e.g.
--config.eval.box_threshold=0.4, the fraction of a map's peak a box encloses).

Inputs, in the order given: image files; folders (searched recursively for image files, in
sorted path order); glob patterns (quote them; `**` recurses). An image a folder or pattern
reaches twice (links) is scored once; the files an earlier run wrote into this run's
--overlay_dir / --crop_dir are not inputs. One JSON line per image, to stdout or atomically
to `--output=F`:
  {"path", "mean_score", "score_std", "distribution"[10], "tags": [{"id","name","prob"}...]
   (MobileNetV2), "p_high", "label", "map": "ok"|"empty", "box": {"x0","y0","x1","y1"} | null,
   "boxes": {"aesthetic"|"attribute"|"average"|"crop": {"x0","y0","x1","y1"}},
   "overlay", "crop" (paths, when asked for; "crop": null when the map is empty)}
Boxes are end-exclusive image pixels (`image.crop((b["x0"], b["y0"], b["x1"], b["y1"]))` in PIL)
of the image as displayed (EXIF orientation applied); `box` is the average of the aesthetic and
attribute boxes for MobileNetV2 (the aesthetic box for VGG16); `boxes.crop` is the best box of
`--aspect` (when given). Overlays are drawn with the long side <= 1024 px (a thin strip with its
own short side up to 128 px, within 1 MP; a narrow one centred above a legend it fits); crops
are cut at full resolution up to 36 MP, written as JPEG with a JPEG photo's own quantisation
tables (`--crop_format=auto`; `png`: lossless at 8 bits) and as PNG for other images. A file
that cannot be used, a folder without images or a pattern matching nothing gives
`{"path", "error"}`, the error one line naming its cause (missing, file over 64 MB, over
100 MP, under 32 px a side, truncated, not an image, a model output that is not finite: a NaN
is never printed), and the others carry on. Exit status: 0 every image scored; 1 some inputs
failed (one line on stderr counts them), stdout refused a write (a full disk; one line on
stderr; 141 when `| head` left), or the run stopped by an error (out of memory: the lines so
far are written, as for Ctrl-C); 2 nothing ran (a bad flag, no inputs, an unwritable output or
one another run on this host is writing, a
workdir without a usable checkpoint: missing, another model's, or damaged, named with its step
and file and the `--step` of an intact one), with one line on stderr and nothing on stdout;
130 stopped by Ctrl-C (143 by SIGTERM: `timeout`, a job's time limit): the lines scored so far
are written (to --output too, atomically), one line on stderr says how many.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from absl import flags
from absl import logging
from ml_collections import config_flags

from aesthetics_jax import memory_fit
from aesthetics_jax.cli import common
from aesthetics_jax.cli import inputs
from aesthetics_jax.cli import process_claim
from aesthetics_jax.evaluation import records as records_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/.')
_STEP = flags.DEFINE_integer(
    'step', None, 'Checkpoint step (default: the one training selected and tested: the best '
    'by config.best_metric on its periodic evaluations, else the newest).')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the JSON lines to this file (atomically) '
                              'instead of stdout (- is stdout).')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Tags listed per image (MobileNetV2), most probable '
                              'first; 0 = none.')
_OVERLAY_DIR = flags.DEFINE_string('overlay_dir', None, 'Write CAM overlays with boxes and a '
                                   'legend here.')
_CROP_DIR = flags.DEFINE_string('crop_dir', None, 'Write suggested crops here, cut at full '
                                'resolution: the --aspect window, or without it the box.')
_CROP_FORMAT = flags.DEFINE_enum(
    'crop_format', 'auto', ['auto', 'jpeg', 'png'],
    'File type of --crop_dir crops. auto: a JPEG photo\'s crop as JPEG with the photo\'s own '
    'quantisation tables and chroma subsampling (its quality, about its bytes per pixel), '
    'other images\' as PNG; png: PNG always, lossless at 8 bits per channel (a 16-bit '
    'image\'s crop has 8, a transparent one\'s is over white); jpeg: JPEG always (quality 95, '
    'no chroma subsampling where the source is not an RGB or greyscale JPEG).')
_ASPECT = flags.DEFINE_string('aspect', None, 'Crop aspect W:H (also W/H, WxH or a ratio: '
                              '4:3, 16/9, 4x3, 1.5) from 1:20 to 20:1 (default: free box).')
_CAM_METHOD = flags.DEFINE_string(
    'cam_method', None, 'CAM method: gradcam, gradcampp (gradcam++), hirescam, xgradcam, '
    'layercam, eigencam, scorecam (default: config.eval.cam_method).')
_CAM_LAYERS = flags.DEFINE_list(
    'cam_layers', None, 'CAM layers as torchvision module paths, fused if several, e.g. '
    'features.14,features.18 (default: config.eval.cam_layers, () = the encoder output).')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Images per forward pass.')
flags.mark_flags_as_required(['workdir'])


def check_flags(argv: Sequence[str]) -> tuple[str | None, list[str | dict]]:
  """Everything checkable before the model loads; exits 2 with one line on a problem.

  Returns (the canonical CAM method or None, the expanded inputs).
  """
  if len(argv) < 2:
    common.usage_error('predict', 'no images given; pass image files, folders or glob '
                       'patterns after the flags')
  if _OUTPUT.value == '-':  # the Unix spelling of stdout: it wrote a file named '-'
    flags.FLAGS.output = None
  # Each named with its value: one line for both left the user to find the bad one.
  if _TOP_K.value < 0:
    common.usage_error('predict', f'--top_k={_TOP_K.value}: must be >= 0 (0 = no tags)')
  if _BATCH.value < 1:
    common.usage_error('predict', f'--batch_size={_BATCH.value}: must be >= 1')
  if not os.path.isdir(_WORKDIR.value) and '://' not in _WORKDIR.value:
    common.usage_error('predict', f'--workdir={_WORKDIR.value}: no such folder; pass a '
                       'training workdir (aesthetics-train writes it)')
  if problem := common.utf8_problem(_WORKDIR.value, 'workdir'):
    common.usage_error('predict', problem)
  for flag, folder in (('overlay_dir', _OVERLAY_DIR.value), ('crop_dir', _CROP_DIR.value)):
    # The folder is made first and the JSON lines are written at the end, onto it: the run
    # was done, then 'could not write --output (Is a directory)', exit 1.
    if (_OUTPUT.value and folder and '://' not in folder
        and os.path.realpath(folder) == os.path.realpath(_OUTPUT.value)):
      common.usage_error('predict', f'--output={_OUTPUT.value} is also --{flag}; the JSON lines '
                         f'go to a file of their own: pass e.g. --output='
                         f'{os.path.join(folder, "predictions.jsonl")}')
  common.check_outputs('predict', folders={'overlay_dir': _OVERLAY_DIR.value,
                                           'crop_dir': _CROP_DIR.value},
                       files={'output': _OUTPUT.value})
  if _OUTPUT.value and _OUTPUT.value.lower().endswith(inputs.IMAGE_SUFFIXES):
    # `--output photo.jpg other.jpg` (the space form) would overwrite a photo with JSON.
    common.usage_error('predict', f'--output={_OUTPUT.value} names an image file; the JSON '
                       'lines go to a text file: pass e.g. --output=predictions.jsonl')
  method = None
  from aesthetics_jax.explain import choices  # pylint: disable=import-outside-toplevel
  try:  # JAX-free: a bad --aspect answered after ~3 s of imports
    method = choices.canonical_method(_CAM_METHOD.value) if _CAM_METHOD.value else None
    if _ASPECT.value:
      choices.parse_aspect(_ASPECT.value)
  except ValueError as e:
    common.usage_error('predict', str(e))
  items = inputs.expand(argv[1:], skip=[d for d in (_OVERLAY_DIR.value, _CROP_DIR.value)
                                        if d and '://' not in d])
  if _OUTPUT.value and os.path.exists(_OUTPUT.value):
    real = os.path.realpath(_OUTPUT.value)
    if any(isinstance(p, str) and os.path.realpath(p) == real for p in items):
      common.usage_error('predict', f'--output={_OUTPUT.value} is also an input; pass another '
                         'file for the JSON lines')
  for flag, path in (('output', _OUTPUT.value), ('overlay_dir', _OVERLAY_DIR.value),
                     ('crop_dir', _CROP_DIR.value)):
    process_claim.hold_output('predict', flag, path)
  from aesthetics_jax import io  # pylint: disable=import-outside-toplevel
  # The folders held now: a killed run's leftovers. (--output's own are removed when it is
  # written: `io.atomic_write_stream`; its folder is not this command's to sweep.)
  for folder in (_OVERLAY_DIR.value, _CROP_DIR.value):
    if folder:
      io.remove_dead_temps_in(folder)
  _note_earlier_outputs()
  return method, items


def _note_earlier_outputs() -> None:
  """One stderr line when --overlay_dir / --crop_dir already hold files of an earlier run:
  this run's replace those at the same input position and leave the others, so the folder
  can end up mixing two runs' pictures silently."""
  for flag, folder in (('overlay_dir', _OVERLAY_DIR.value), ('crop_dir', _CROP_DIR.value)):
    if not folder or '://' in folder or not os.path.isdir(folder):
      continue
    n = sum(1 for e in os.scandir(folder) if inputs.OUTPUT_NAME.fullmatch(e.name))
    if n:
      print(f'predict: --{flag}={folder} already holds {n} file{"" if n == 1 else "s"} of an '
            'earlier run; files are named by input position (0000_<name>), so this run '
            'replaces those at its positions and keeps the rest: use an empty folder to keep '
            'runs apart', file=sys.stderr, flush=True)


def _in_order(items: Sequence[str | dict], records: Iterator[dict]) -> Iterator[dict]:
  """Input error records interleaved with the predictor's records, in input order."""
  for item in items:
    yield item if isinstance(item, dict) else next(records)


class _CtrlC:
  """SIGINT's (and SIGTERM's) handler: KeyboardInterrupt, as Python's own, but held back
  while a line is written and counted (`hold`), so that the closing line counts exactly the
  lines written (a Ctrl-C inside print's flush left a line on stdout uncounted). `signum`:
  the signal that stopped the run."""

  def __init__(self) -> None:
    self.held = self.pending = False
    self.signum = signal.SIGINT

  def __call__(self, signum, frame) -> None:
    self.signum = signum
    if not self.held:
      raise KeyboardInterrupt
    self.pending = True

  @contextlib.contextmanager
  def hold(self) -> Iterator[None]:
    self.held = True
    try:
      yield
    finally:
      self.held = False
    if self.pending:  # not while another error (a full stdout) is on its way out
      raise KeyboardInterrupt


class _Lines:
  """The JSON lines of the run so far (kept here for --output) and their counts: what the end
  of the run, or a Ctrl-C, reports."""

  def __init__(self) -> None:
    self.spool = records_lib.LineSpool()
    self.count = self.failed = self.unwritten = self.scored = self.uncut = 0
    self.inputs: int | None = None  # once listed


def _score(method: str | None, items: list[str | dict], lines: _Lines, ctrl_c: _CtrlC) -> None:
  """Scores `items` in order into `lines` (printed as they come without --output)."""
  # After the checks: importing the predictor (JAX, orbax) is slow.
  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.evaluation import predictor as predictor_lib
  paths = [p for p in items if isinstance(p, str)]
  predictor = None
  if paths:
    try:
      predictor = predictor_lib.Predictor(
          _WORKDIR.value, _STEP.value, method, _CAM_LAYERS.value,
          overrides=config_flags.get_override_values(flags.FLAGS['config']),
          batch_flag='--batch_size')
    except (ValueError, RuntimeError, OSError) as e:  # no checkpoint, bad layer name, ...
      common.usage_error('predict', common.first_line(e))
    if note := predictor.unused_note('--batch_size', prefix='--config.'):
      print(f'predict: {note}', file=sys.stderr, flush=True)
    # A 1x1 CAM grid (features.18 of a 32-px model) made every map "empty", and no line said why.
    if note := predictor.one_cell_note():
      print(f'predict: {note}', file=sys.stderr, flush=True)
  records = iter(()) if predictor is None else predictor.predict_files(
      paths, _OVERLAY_DIR.value, _CROP_DIR.value, _ASPECT.value,
      batch_size=_BATCH.value, top_k=_TOP_K.value, crop_format=_CROP_FORMAT.value)
  # A stdout that refuses a line (`| head` left, `> /dev/full`) ends the run in `common.run`.
  for rec in _in_order(items, records):
    line = records_lib.to_json_line(rec)
    with ctrl_c.hold():
      if _OUTPUT.value:
        lines.spool.keep(line)
      else:
        print(line, flush=True)
      lines.count += 1
      # An image that failed, apart from a scored one whose crop or overlay was not written
      # (a full --crop_dir counted 56 scored images as 'failed').
      lines.failed += 'error' in rec
      lines.unwritten += 'error' not in rec and any(k in rec for k in _FAILURES)
      lines.scored += 'error' not in rec
      lines.uncut += 'crop' in rec and rec['crop'] is None


def main(argv):
  # Warnings are for the user (a compilation cache that cannot be created); INFO is orbax's
  # and JAX's chatter.
  logging.set_verbosity(logging.WARNING)
  lines, ctrl_c = _Lines(), _CtrlC()
  signal.signal(signal.SIGINT, ctrl_c)
  # `timeout`, a batch job's time limit, `docker stop`: SIGTERM killed the run at once, and
  # with --output every line scored so far was lost. It stops the run as Ctrl-C does.
  signal.signal(signal.SIGTERM, ctrl_c)
  try:
    method, items = check_flags(argv)
    lines.inputs = len(items)
    _score(method, items, lines, ctrl_c)
    _finish(lines)
  except KeyboardInterrupt:  # Ctrl-C: the lines so far were lost with a traceback
    _finish(lines, interrupted=ctrl_c.signum)
  except memory_fit.BatchMemoryError as e:  # found before the batch ran: a flag to lower
    if lines.count:
      _finish(lines, error=e)
    common.usage_error('predict', common.first_line(e))
  except (RuntimeError, MemoryError) as e:
    # Out of memory mid-run (XLA's RESOURCE_EXHAUSTED on a large --batch_size): a traceback,
    # and with --output every line scored before it was lost.
    _finish(lines, error=e)


def _finish(lines: _Lines, interrupted: int = 0, error: BaseException | None = None
            ) -> NoReturn:
  """Writes --output and the closing stderr line; exits 0, 1 (some inputs failed, or the run
  stopped by an `error`), or 128 + the signal (`interrupted`: SIGINT, Ctrl-C: 130; SIGTERM:
  143) that stopped the run. The lines of a stopped run so far are written all the same."""
  # What was scored is written: a (second) Ctrl-C now would lose it.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  n = lines.count
  unwritten = (f', {lines.unwritten} with a crop or overlay not written (crop_error / '
               'overlay_error)' if lines.unwritten else '')
  written = f'wrote {n} line{"" if n == 1 else "s"} ({lines.failed} failed{unwritten})'
  how, stopped = None, 0  # why the run stopped early, and its exit status
  if error is not None:
    how, stopped = f'stopped by an error ({common.first_line(error)})', common.EXIT_FAILED
  elif interrupted:  # 128 + the signal, as a shell reports it: 130 for SIGINT
    how = 'interrupted (Ctrl-C)' if interrupted == signal.SIGINT else 'terminated (SIGTERM)'
    stopped = 128 + interrupted
  if how and not n:  # an --output of an earlier run is not replaced by nothing
    print(f'predict: {how} before the first line'
          f'{"; " + _OUTPUT.value + " not written" if _OUTPUT.value else ""}', file=sys.stderr,
          flush=True)
    sys.exit(stopped)
  if how:
    left = '' if lines.inputs is None else f'; {lines.inputs - n} of {lines.inputs} inputs left'
    closing = f'predict: {how}: {written} to {_OUTPUT.value or "stdout"}{left}'
  else:
    closing = f'predict: {written} to {_OUTPUT.value or "stdout"}'
    if lines.uncut:  # --crop_dir got fewer files than images: say why, not only in the JSON
      print(f'predict: no crop for {lines.uncut} of {lines.scored} scored '
            f'image{"" if lines.scored == 1 else "s"}: the map points nowhere ("map": '
            '"empty", "crop": null)', file=sys.stderr, flush=True)
  if _OUTPUT.value:
    from aesthetics_jax import io  # pylint: disable=import-outside-toplevel
    try:
      io.atomic_write_stream(_OUTPUT.value, lines.spool.copy_to, 'wb')
    except OSError as e:  # the scores are not lost: they go to stdout instead
      print(f'predict: could not write --output={_OUTPUT.value} ({e.strerror or e}); the '
            f'{n} line{"" if n == 1 else "s"} follow on stdout'
            f'{"; " + how if how else ""}', file=sys.stderr, flush=True)
      try:
        for raw in lines.spool.lines():
          sys.stdout.write(raw.decode('utf-8'))
        sys.stdout.flush()
      except BrokenPipeError:
        common.quiet_stdout()
      sys.exit(stopped or common.EXIT_FAILED)
  # On stdout too when some failed: `> preds.jsonl` ended with exit 1 and not a word on stderr.
  if _OUTPUT.value or how or lines.failed or lines.unwritten:
    print(closing, file=sys.stderr, flush=True)
  sys.exit(stopped or (common.EXIT_FAILED if lines.failed or lines.unwritten else 0))


# A record with any of these keys counts as failed (exit status 1): the image, or a file
# asked for about it.
_FAILURES = ('error', 'overlay_error', 'crop_error')


def run_cli() -> None:
  """`aesthetics-predict`: `--config.eval.*` keys checked before absl parses them."""
  common.run_with_overrides(
      main, __doc__, 'predict', ('eval.',),
      'Overrides of the restored config for this run: --config.eval.KEY=VALUE (e.g. '
      '--config.eval.box_threshold=0.4).')


if __name__ == '__main__':
  run_cli()
