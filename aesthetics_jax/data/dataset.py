"""TFDS dataset `ava`: AVA images as their original file bytes plus votes, tags and ids.

The builder reads the AVA root as its `manual_dir`, validates every listed image with the
decoder of training and prediction (`decoder.decode`: byte, pixel and side caps, the whole
stream decoded; in parallel), writes the kept ones to `array_record` files and lists every skipped
image with its reason in `<data_dir>/ava/<subset>/<version>/skipped.csv`, next to dataset
statistics (`stats.json`, `figures/*.png`). Everything is written inside TFDS's incomplete
directory, so the dataset, `skipped.csv` and the figures appear together or not at all.

A prepared dataset is reused only for the AVA root and `max_pixels` it was built from (both in
its `metadata.json`); anything else is a `ReuseError` (use a fresh data_dir).

No TensorFlow: records are read with `as_data_source()` (array_record + numpy).

One record (`load_sources(data_dir, subset)[split][i]`):
  {'image': bytes (original file bytes; re-encoded upright if an EXIF orientation rotated
   them), 'image_id': int64, 'votes': int32[10],
   'tags': int32[2] (AVA tag ids, 0 = none), 'challenge_id': int32}
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import errno
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from aesthetics_jax import moved
from aesthetics_jax.data import ava
from aesthetics_jax.data import decoder
from aesthetics_jax.data import prepare_lock
from aesthetics_jax.data import resized_store
from aesthetics_jax.data.selection import (
    DEFAULT_MAX_PIXELS, SPLITS, Selection, Skipped, _check_max_pixels, _check_subset,
    read_skipped_csv, select_images, upright_bytes, write_skipped_csv)
from aesthetics_jax.data import tfds_spill
from aesthetics_jax.data.layout import (VERSION, dataset_dir, is_prepared, load_metadata,
                                        root_fingerprint, root_metadata, split_sizes,
                                        unprepared_line)


SKIPPED_CSV = 'skipped.csv'
STATS_JSON = 'stats.json'
FIGURES_DIR = 'figures'

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download AVA (Murray et al. 2012; e.g. the AVA_dataset release) and pass its root directory
as manual_dir (`python -m launch.prepare_data --ava_dir=<root>`). The root must contain:
  AVA.txt, tags.txt, challenges.txt, style_image_lists/{train,test}.jpgl, images/<id>.jpg
`python -m launch.make_demo_data --out_dir=<root>` writes a small demo dataset in this layout.
"""


class DataDirError(ava.AvaError):
  """The data_dir cannot hold or give this dataset; `str()` is one line naming it and the fix."""


class ReuseError(DataDirError):
  """The data_dir holds the dataset prepared from another AVA root or with other options."""


class NoSpaceError(OSError):
  """The data_dir's storage filled up while the dataset was written (the partial one is
  removed). An OSError with errno ENOSPC and `filename` = data_dir; `str()` is one line."""

  def __init__(self, data_dir: str | os.PathLike, cause: str):
    super().__init__(errno.ENOSPC, cause, os.fspath(data_dir))
    self.message = (f'--data_dir={os.fspath(data_dir)}: {cause} while writing the dataset; '
                    'free space there or choose another --data_dir')

  def __str__(self):
    return self.message


@dataclasses.dataclass(frozen=True)
class PrepareResult:
  subset: str
  dataset_dir: Path                 # <data_dir>/ava/<subset>/<version>
  kept: dict[str, int]              # per split
  skipped: dict[str, int]           # per split
  skipped_rows: list[Skipped]
  skipped_csv: Path
  stats_json: Path
  figures: dict[str, Path]          # 'mean_score_hist', 'tag_counts' -> PNG path
  reused: bool                      # True: an existing prepared dataset was reused


# --------------------------------------------------------------------------- builder


class _LocalInfo(tfds.core.DatasetInfo):
  """TFDS looks for a not-yet-prepared dataset's info in its GCS bucket, first making a
  `tempfile.mkdtemp('tfds')` that it never removes (one empty /tmp folder per prepare, or
  per test); AVA is never there, so the lookup is skipped."""

  def initialize_from_bucket(self) -> None:
    pass

class Ava(tfds.core.GeneratorBasedBuilder):
  """AVA (Murray et al. 2012) with original image bytes; manual_dir = AVA root."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {'1.0.0': 'Original image bytes, votes, tags, challenge id; skipped.csv.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name='style', description='Photographic-style lists, images with >= 1 tag '
          '(the paper: 8,900 train / 2,203 test).'),
      tfds.core.BuilderConfig(name='all', description='Every AVA.txt image.'),
  ]
  DEFAULT_CONFIG_NAME = 'style'

  # TFDS prints "Downloading and preparing dataset Unknown size (download: ...)" and a "done"
  # line to stdout, where the commands print their results; AVA is never downloaded, and
  # prepare reports its own counts.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  # No checksums file (manual download). Also sidesteps TFDS 4.9.10's code_path lookup, which
  # needs the `importlib_resources` backport for builders defined inside a package.
  code_path = None

  def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS, num_workers: int = 0,
               selection: Selection | None = None, **kwargs):
    """`selection`: a `select_images` result to build from (else computed from manual_dir)."""
    self._max_pixels = max_pixels
    self._num_workers = num_workers
    self._selection = selection
    self.incomplete_dir: Path | None = None  # where this builder wrote, for cleanup on failure
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs() wants TFDS package metadata files.
    return _LocalInfo(
        builder=self,
        description='AVA aesthetic visual analysis: vote histograms over scores 1..10, up to '
        'two of 66 semantic tags, challenge id. `image` holds the original file bytes.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Scalar(
                dtype=np.object_, doc='original file bytes (re-encoded upright when their EXIF '
                'orientation is not 1)'),
            'image_id': tfds.features.Scalar(dtype=np.int64),
            'votes': tfds.features.Tensor(shape=(10,), dtype=np.int32,
                                          doc='vote counts for scores 1..10'),
            'tags': tfds.features.Tensor(shape=(2,), dtype=np.int32,
                                         doc='AVA tag ids 1..66, 0 = none'),
            'challenge_id': tfds.features.Scalar(dtype=np.int32),
        }),
        # Filled while building (see _split_generators): what evaluation needs from the AVA
        # root, so a moved workdir or data_dir still finds it.
        metadata=tfds.core.MetadataDict(),
        homepage='https://github.com/imfing/ava_downloader',
        citation='Murray, Marchesotti, Perronnin. AVA: A large-scale database for '
        'aesthetic visual analysis. CVPR 2012.',
    )

  def _split_generators(self, dl_manager):
    ava_dir = Path(dl_manager.manual_dir)
    subset = self.builder_config.name
    sel = self._selection or select_images(ava_dir, subset, max_pixels=self._max_pixels,
                                           num_workers=self._num_workers)
    # self.data_dir is TFDS's incomplete dir here: these files land with the dataset.
    out = self.incomplete_dir = Path(self.data_dir)
    write_skipped_csv(out / SKIPPED_CSV, sel.skipped)
    from aesthetics_jax.data import stats as data_stats  # matplotlib only when building
    tag_names = ava.read_tags(ava_dir / 'tags.txt')
    data_stats.write_stats(out, sel.kept, sel.skipped, tag_names)
    self.info.metadata.update(root_metadata(ava_dir, tag_names))
    self.info.metadata['max_pixels'] = self._max_pixels  # changes the content: checked on reuse
    # New at every build: what ties the resized-image store to these records
    # (`resized_store.fingerprint`); dataset_info.json alone matched a rebuild from other
    # images of the same sizes, whose store then held the old pixels.
    self.info.metadata['build_id'] = uuid.uuid4().hex
    return {split: self._generate_examples(ava_dir, sel.kept[split], sel.paths)
            for split in SPLITS}

  def _generate_examples(self, ava_dir: Path, images: Sequence[ava.AvaImage],
                         paths: dict[int, Path]) -> Iterator:
    for img in images:
      path = paths.get(img.image_id) or ava.image_path(ava_dir, img.image_id)
      try:
        # Original bytes (re-encoded upright only when an EXIF orientation rotates them): the
        # pipeline decodes (and converts to RGB) itself.
        data = upright_bytes(decoder.read_file(path))
      except Exception as e:  # pylint: disable=broad-except  (PIL's errors are of many kinds)
        # It passed validation minutes ago: the root changed under us (a copy still running?).
        raise ava.AvaError(
            f'{path}: unreadable while writing the dataset though it passed validation '
            f'({type(e).__name__}); was the AVA root still being written? Rerun '
            'aesthetics-prepare-data when it is complete') from e
      yield img.image_id, {
          'image': data,
          'image_id': np.int64(img.image_id),
          'votes': np.asarray(img.votes, np.int32),
          'tags': np.asarray(img.padded_tags, np.int32),
          'challenge_id': np.int32(img.challenge_id),
      }


# --------------------------------------------------------------------------- entry points

def builder(data_dir: str | os.PathLike, subset: str = 'style', **kwargs) -> Ava:
  _check_subset(subset)
  return Ava(config=subset, data_dir=os.fspath(data_dir), **kwargs)


def _result(b: Ava, subset: str, reused: bool) -> PrepareResult:
  d = Path(b.data_dir)
  rows = read_skipped_csv(d / SKIPPED_CSV)
  from aesthetics_jax.data import stats as data_stats
  return PrepareResult(
      subset=subset,
      dataset_dir=d,
      kept={s: int(b.info.splits[s].num_examples) for s in SPLITS},
      skipped={s: sum(r.split == s for r in rows) for s in SPLITS},
      skipped_rows=rows,
      skipped_csv=d / SKIPPED_CSV,
      stats_json=d / STATS_JSON,
      figures=data_stats.figure_paths(d),
      reused=reused,
  )


def prepare(ava_dir: str | os.PathLike, data_dir: str | os.PathLike, subset: str = 'style',
            *, max_pixels: int = DEFAULT_MAX_PIXELS, num_workers: int = 0) -> PrepareResult:
  """Builds the `ava/<subset>` dataset under `data_dir` unless it is already prepared.

  A data_dir that another prepare of the same root finishes first is reused the same way.

  Raises `ava.AvaError` (one line) for a missing AVA root or malformed metadata, `ReuseError`
  (an AvaError) for a data_dir prepared from another root or `max_pixels`, `DataDirError` for
  one left half-written by a concurrent prepare, `NoSpaceError` (OSError ENOSPC) when its disk
  fills, ValueError for a `max_pixels` over the decoder's cap.
  """
  _check_subset(subset)
  _check_max_pixels(max_pixels)
  ava_dir = Path(ava_dir)
  check_ava_root(ava_dir, subset)
  with prepare_lock.running(data_dir, subset):
    return _prepare(ava_dir, data_dir, subset, max_pixels, num_workers)


def _prepare(ava_dir: Path, data_dir: str | os.PathLike, subset: str, max_pixels: int,
             num_workers: int) -> PrepareResult:
  if is_prepared(data_dir, subset):
    return _reuse(ava_dir, data_dir, subset, max_pixels)
  if dataset_dir(data_dir, subset).exists():
    # TFDS renames a finished dataset into place with its dataset_info.json; without it the
    # folder is damaged, and TFDS would take it as prepared and give an empty dataset.
    raise DataDirError(
        f'{dataset_dir(data_dir, subset)}: not a complete dataset (no dataset_info.json); '
        'remove that folder and rerun, or choose another --data_dir')
  # Metadata and images are checked before TFDS starts, so a malformed row fails fast.
  sel = select_images(ava_dir, subset, max_pixels=max_pixels, num_workers=num_workers)
  for split in SPLITS:
    if not sel.kept[split]:  # TFDS cannot write an empty split
      reasons = collections.Counter(r.reason for r in sel.skipped if r.split == split)
      raise ava.AvaError(
          f'{ava_dir}: no usable {split} images (skipped: {dict(reasons) or "none listed"}); '
          f'check {ava_dir / "images"} and the {subset} lists')
  b = builder(data_dir, subset, selection=sel, max_pixels=max_pixels)
  try:
    # Nothing is downloaded; a throwaway download_dir keeps TFDS's empty `downloads/` out of D.
    with tempfile.TemporaryDirectory(prefix='ava_tfds_dl_') as dl_dir, \
        tfds_spill.gfile_without_tensorflow():  # splits over 1 GB spill to disk (no TF needed)
      b.download_and_prepare(
          download_dir=dl_dir,
          download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(ava_dir)),
          file_format='array_record')
  except Exception as e:  # pylint: disable=broad-except
    # TFDS removes its incomplete dir itself; this covers a failure of that cleanup.
    if b.incomplete_dir is not None and b.incomplete_dir != dataset_dir(data_dir, subset):
      shutil.rmtree(b.incomplete_dir, ignore_errors=True)
    cause = _no_space(e)
    if cause:
      raise NoSpaceError(data_dir, cause) from e
    # Another prepare of this data_dir renamed its dataset into place first (TFDS's final
    # rename found the destination taken): reuse it as a rerun would.
    if isinstance(e, FileExistsError) or (isinstance(e, OSError)
                                          and e.errno == errno.ENOTEMPTY):
      if is_prepared(data_dir, subset):
        return _reuse(ava_dir, data_dir, subset, max_pixels)
      raise DataDirError(
          f'{dataset_dir(data_dir, subset)}: appeared while this prepare ran (another prepare '
          'of this --data_dir?) and is not a complete dataset; rerun when the other prepare '
          'has finished, or remove that folder, or choose another --data_dir') from e
    raise
  return _result(b, subset, reused=False)


# Default bound on one prepared resized store: the style subset's at 256 px is 1.75 GB; all of
# AVA (~255,000 images) would be 48 GiB, which nobody should get without asking.
RESIZED_MAX_GB = 16.0


def prepare_resized(data_dir: str | os.PathLike, subset: str = 'style',
                    sizes: Sequence[int] = (256,), progress: bool = True,
                    max_gb: float = RESIZED_MAX_GB) -> dict[int, tuple[Path, str]]:
  """Stores the prepared dataset's training images decoded and resized to R² for each R of
  `sizes` (`resized_store`; the training pipeline crops from them instead of decoding, when
  R is its `config.input.resize_size`). A store already built is kept.

  Best effort: a store over `max_gb`, a folder that cannot be written or a disk without room
  for one (checked before, and a disk that fills during the build) leaves that store out, and
  the pipeline decodes.
  Returns {R: (store path, what happened: 'built', 'kept' or why not)}.
  """
  sizes = sorted({int(x) for x in sizes})
  if any(size <= 0 for size in sizes):
    raise ValueError(f'resized sizes {sizes}: use positive sides in pixels, e.g. 256')
  if not max_gb > 0:  # nan would compare false: no bound
    raise ValueError(f'max_gb={max_gb}: use a positive number of GiB')
  with prepare_lock.running(data_dir, subset):
    return _prepare_resized(data_dir, subset, sizes, progress, max_gb)


def _prepare_resized(data_dir: str | os.PathLike, subset: str, sizes: list[int],
                     progress: bool, max_gb: float) -> dict[int, tuple[Path, str]]:
  d = dataset_dir(data_dir, subset)
  train = load_sources(data_dir, subset)['train']
  made_from = resized_store.fingerprint(d)
  out: dict[int, tuple[Path, str]] = {}
  for size in sizes:
    f = resized_store.path(d, 'train', size)
    if resized_store.load(f, len(train), size, made_from) is not None:
      out[size] = (f, 'kept')
      continue
    need = len(train) * size * size * 3
    if need > max_gb * 2 ** 30:
      out[size] = (f, f'not built: {need / 2 ** 30:.3g} GiB is over the {max_gb:g} GiB bound '
                      '(raise it with --resized_max_gb)')
      continue
    try:
      f.parent.mkdir(parents=True, exist_ok=True)
      free = shutil.disk_usage(f.parent).free
      if free < need + (64 << 20):
        out[size] = (f, f'not built: needs {need / 1e9:.2f} GB, {free / 1e9:.2f} GB free')
        continue
      resized_store.build(train, size, f, progress=progress,
                          desc=f'train images resized to {size}', dataset=made_from)
      out[size] = (f, 'built')
    except OSError as e:  # read-only, quota, a disk that filled: training decodes instead
      out[size] = (f, f'not built: {_no_space(e) or e.strerror or e}')
  return out


_NO_SPACE_ERRNOS = {errno.ENOSPC: 'No space left on device', errno.EDQUOT: 'Disk quota exceeded'}


def _no_space(e: BaseException | None) -> str | None:
  """'No space left on device' (or the quota's) if `e` or an error it chains from says the
  disk filled; TFDS re-raises the writer's OSError as text (\"write() failed: No space ...\")."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
      return _NO_SPACE_ERRNOS[e.errno]
    for text in (*_NO_SPACE_ERRNOS.values(), 'Not enough disk space'):
      if text in str(e):
        return text
    e = e.__cause__ or e.__context__
  return None


def _reuse(ava_dir: Path, data_dir: str | os.PathLike, subset: str,
           max_pixels: int) -> PrepareResult:
  check_reuse(ava_dir, data_dir, subset, max_pixels)
  _intact_sources(data_dir, subset)
  try:
    return _result(builder(data_dir, subset), subset, reused=True)
  except (OSError, KeyError, ValueError, csv.Error) as e:  # e.g. skipped.csv edited by hand
    raise DataDirError(
        f'{dataset_dir(data_dir, subset)}: damaged ({e}); remove that folder and rerun '
        'aesthetics-prepare-data, or choose another --data_dir') from e


def check_reuse(ava_dir: str | os.PathLike, data_dir: str | os.PathLike, subset: str = 'style',
                max_pixels: int | None = None) -> None:
  """Raises ReuseError unless the prepared `ava/<subset>` under `data_dir` was built from
  `ava_dir`'s metadata files (a moved or symlinked copy of the root is the same root) and, if
  given, `max_pixels`.

  Datasets prepared before metadata.json recorded the fingerprint are compared by the root's
  path; before it recorded `max_pixels`, that is not compared.
  """
  ava_dir = Path(ava_dir)
  meta = load_metadata(data_dir, subset)
  where = dataset_dir(data_dir, subset)
  fix = f'use a fresh --data_dir, or delete {where} to rebuild it'
  recorded = meta.get('ava_dir')
  if meta.get('ava_fingerprint'):
    if meta['ava_fingerprint'] != root_fingerprint(ava_dir):
      raise ReuseError(f'{where}: prepared from --ava_dir={recorded}, whose AVA.txt, tags.txt '
                       f'or style lists differ from those of --ava_dir={ava_dir}; {fix}')
  elif recorded and Path(recorded).resolve() != ava_dir.resolve():
    raise ReuseError(f'{where}: prepared from --ava_dir={recorded}, not '
                     f'--ava_dir={ava_dir}; {fix}')
  recorded = meta.get('max_pixels')
  if max_pixels is not None and recorded is not None and int(recorded) != max_pixels:
    raise ReuseError(f'{where}: prepared with --max_pixels={recorded}, not '
                     f'--max_pixels={max_pixels}; {fix}')


# The trainer records its data's identity in the workdir; evaluation and a resumed run compare.
IDENTITY_FILE = 'dataset.json'


def identity(data_dir: str | os.PathLike, subset: str = 'style') -> dict:
  """{'data_dir', 'subset', 'ava_fingerprint', 'num_examples'} of a prepared dataset
  (fingerprint '' for one prepared before metadata.json recorded it; `num_examples` {split:
  records}, {} where dataset_info.json does not say)."""
  return {'data_dir': os.fspath(data_dir), 'subset': subset,
          'ava_fingerprint': str(load_metadata(data_dir, subset).get('ava_fingerprint', '')),
          'num_examples': split_sizes(data_dir, subset)}


def identity_mismatch(recorded: dict, current: dict) -> str:
  """Why `current` is not the data `recorded` describes ('' if it is, or if either lacks a
  fingerprint). A moved or copied dataset keeps its fingerprint, so it matches."""
  a, b = recorded.get('ava_fingerprint'), current.get('ava_fingerprint')
  if not a or not b or a == b:
    return ''
  return (f"{current.get('data_dir')} was prepared from another AVA root (its AVA.txt, tags.txt "
          f"or style lists differ) than the model's training data "
          f"({recorded.get('data_dir')}): its test split may hold images the model trained on")


def check_ava_root(ava_dir: str | os.PathLike, subset: str = 'style') -> None:
  """AvaError (one line) unless `ava_dir` holds the metadata files `subset` reads (AVA.txt,
  tags.txt; the style lists for 'style'): the commands' check of the flag, before any work.
  A missing tags.txt was found only after every image had been validated (minutes on AVA)."""
  names = ['AVA.txt', 'tags.txt']
  if subset == 'style':
    names += ['style_image_lists/train.jpgl', 'style_image_lists/test.jpgl']
  for name in names:
    f = Path(ava_dir) / name
    if not f.is_file():
      raise ava.AvaError(f'{f}: not found; ' + (_found_instead(Path(ava_dir), name) or (
          'pass --ava_dir=<AVA root holding AVA.txt, tags.txt, style_image_lists/, images/>')))


def _found_instead(root: Path, name: str) -> str:
  """The fix when what a missing `root/name` should be stands nearby ('' if nothing does):
  --ava_dir naming AVA.txt itself, the root one folder down (an archive's `AVA_dataset/`),
  or a name differing only in case (a copy made where names ignore case, Windows or macOS)."""
  if root.is_file():
    return f'{root} is a file: pass the folder holding it, --ava_dir={root.parent}'
  if name == 'AVA.txt' and root.is_dir():
    below = sorted(p.parent for p in root.glob('*/AVA.txt') if p.is_file())
    if below:
      return f'it is one folder down: pass --ava_dir={below[0]}'
  at = root
  for part in Path(name).parts:
    match = ava.entry_ignoring_case(at, part)
    if match is None:
      return ''
    at = match
  if at.is_file():
    return (f'found {at.relative_to(root)}: names are case-sensitive here, rename it to '
            f'{name}')
  return ''


def load_sources(data_dir: str | os.PathLike, subset: str = 'style') -> dict[str, Sequence]:
  """Random-access splits {'train', 'test'} of a prepared dataset (records as above)."""
  _check_subset(subset)
  if not is_prepared(data_dir, subset):
    raise FileNotFoundError(unprepared_line(data_dir, subset))
  return _intact_sources(data_dir, subset)


def _intact_sources(data_dir: str | os.PathLike, subset: str) -> dict[str, Sequence]:
  """The splits' sources, each first and last record read once: a damaged dataset_info.json or
  a missing or truncated shard is a one-line DataDirError here, not a traceback at step N."""
  where = dataset_dir(data_dir, subset)
  try:
    sources = builder(data_dir, subset).as_data_source()
    out = {s: sources[s] for s in SPLITS}
    for src in out.values():
      if len(src):
        src[0], src[len(src) - 1]  # pylint: disable=pointless-statement
  except Exception as e:  # pylint: disable=broad-except  (TFDS, protobuf and array_record's)
    why = (str(e).strip().splitlines() or [''])[0][:200]
    raise DataDirError(
        f'{where}: damaged ({type(e).__name__}: {why}); remove that folder and rerun '
        'aesthetics-prepare-data, or choose another --data_dir') from e
  return out


# Moved to selection.py in 2026-12, still resolved here (with a DeprecationWarning).
__getattr__ = moved.forwarder(__name__, moved.table('aesthetics_jax.data.selection', (
    'AMBIGUOUS', 'DECOMPRESSION_BOMB', 'DUPLICATE', 'EMPTY', 'EXCLUDED', 'IN_TEST_LIST',
    'KNOWN_BAD', 'KNOWN_BAD_IDS', 'MIN_SIDE', 'MISSING', 'NO_TAG', 'NOT_IN_AVA_TXT', 'SUBSETS',
    'TOO_LARGE', 'TOO_SMALL', 'TRUNCATED', 'UNDECODABLE', 'UNREADABLE', 'check_image_bytes',
    'check_image_file')))
