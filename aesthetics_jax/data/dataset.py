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
  {'image': bytes (original file bytes; re-encoded upright if an EXIF orientation rotated them), 'image_id': int64, 'votes': int32[10],
   'tags': int32[2] (AVA tag ids, 0 = none), 'challenge_id': int32}
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
import tqdm

from aesthetics_jax import cpu_backend
from aesthetics_jax.data import ava
from aesthetics_jax.data import decoder
from aesthetics_jax.data import prepare_lock
from aesthetics_jax.data import resized_store
from aesthetics_jax.data import tfds_spill
from aesthetics_jax.io import atomic_write_text

SUBSETS = ('style', 'all')
SPLITS = ('train', 'test')
VERSION = '1.0.0'

# The decoder's caps, shared with train / evaluate / predict (data/decoder.py): images with
# more pixels are rejected from their header alone (decompression bombs; real AVA photos are
# ~1-3 MP), files over MAX_FILE_BYTES before they are read, sides under MIN_SIDE px.
DEFAULT_MAX_PIXELS = decoder.MAX_PIXELS
MIN_SIDE = decoder.MIN_SIDE
# Validation decodes JPEGs DCT-scaled to about this size: the whole stream is still read (what
# catches truncation) without materialising every pixel.
_CHECK_SIDE = 256
# Images with an EXIF orientation are stored re-encoded upright (see `upright_bytes`).
_UPRIGHT_JPEG_QUALITY = 95

# Known-corrupt AVA ids (empty or undecodable files in the public release).
KNOWN_BAD_IDS = frozenset({440774, 179118, 371434, 277832, 230701, 729377}) | frozenset(
    getattr(ava, 'KNOWN_BAD_IDS', ()))

# Skip reasons, as written to skipped.csv (the decoder's, then prepare's own).
MISSING = decoder.MISSING
UNREADABLE = decoder.UNREADABLE
EMPTY = decoder.EMPTY
TOO_LARGE = decoder.TOO_LARGE
TRUNCATED = decoder.TRUNCATED
UNDECODABLE = decoder.UNDECODABLE
TOO_SMALL = decoder.TOO_SMALL
DECOMPRESSION_BOMB = decoder.DECOMPRESSION_BOMB
KNOWN_BAD = 'known_bad'
NO_TAG = 'no_tag'
NOT_IN_AVA_TXT = 'not_in_ava_txt'
DUPLICATE = 'duplicate'
IN_TEST_LIST = 'in_test_list'  # train id also in the test list: kept in test only
AMBIGUOUS = 'ambiguous'  # several files under images/ name the id (ava.find_images)
EXCLUDED = 'excluded'

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
class Skipped:
  split: str
  image_id: int
  reason: str


@dataclasses.dataclass(frozen=True)
class Selection:
  """Images that passed validation (`kept`, per split, in list order) and those that did not;
  `paths`: each kept id's file (`ava.find_images`; `ava.image_path` for ids not in it)."""
  kept: dict[str, list[ava.AvaImage]]
  skipped: list[Skipped]
  paths: dict[int, Path] = dataclasses.field(default_factory=dict)


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


# --------------------------------------------------------------------------- validation

def check_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      min_side: int = MIN_SIDE) -> str | None:
  """Returns a skip reason for the encoded image `data`, or None if it decodes to RGB.

  `decoder.decode`, the decoder of training and prediction: byte and pixel caps and the
  minimum side from the header, then a decode of the whole stream (what catches truncation;
  JPEGs DCT-scaled, so a huge photo is not materialised).
  """
  try:
    decoder.decode_pil(data, target=_CHECK_SIDE, min_side=min_side, max_pixels=max_pixels)
  except decoder.DecodeError as e:
    return e.reason
  return None


def check_image_file(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     min_side: int = MIN_SIDE, budget: _PixelBudget | None = None
                     ) -> str | None:
  """`check_image_bytes` on a file; 'missing' / 'unreadable' / 'empty' / 'too_large' (over
  `decoder.MAX_FILE_BYTES`, refused before reading) for the file itself. `budget`: the decode
  waits for its pixels there (threads validating at once)."""
  try:
    data = decoder.read_file(path)
  except decoder.DecodeError as e:
    return e.reason
  with budget.hold(_decoded_pixels(data)) if budget else contextlib.nullcontext():
    return check_image_bytes(data, max_pixels=max_pixels, min_side=min_side)


def upright_bytes(data: bytes) -> bytes:
  """What a record stores: `data` itself, unless its EXIF orientation is not 1.

  Then the image re-encoded in its displayed orientation with the orientation tag removed (other
  EXIF and the ICC profile kept): JPEG quality 95, 4:4:4, for JPEG files, PNG otherwise. Every
  decoder of ours applies the orientation anyway; storing the displayed frame makes records
  mean the same to any reader (and keeps header sizes = displayed sizes).
  """
  img = Image.open(io.BytesIO(data))
  if decoder.orientation(img) == 1:
    return data
  upright, _ = decoder.decode_pil(img)
  exif = img.getexif()
  exif.pop(decoder.ORIENTATION_TAG, None)
  kw = dict(exif=exif.tobytes())
  if img.info.get('icc_profile'):
    kw['icc_profile'] = img.info['icc_profile']
  buf = io.BytesIO()
  if img.format == 'JPEG':
    upright.save(buf, 'JPEG', quality=_UPRIGHT_JPEG_QUALITY, subsampling=0, **kw)
  else:
    upright.save(buf, 'PNG', **kw)
  return buf.getvalue()


class _PixelBudget:
  """Pixels being decoded at once by the validation threads, at most `limit` (an image over
  it waits until it can run alone): each thread held a whole decode, so memory grew with
  --num_workers (3.15 GB in 8 threads against 0.46 GB in 1 on 9,900-px PNGs), and one thread
  per core on a big host multiplied it."""

  def __init__(self, limit: int):
    self._limit, self._used = max(int(limit), 1), 0
    self._free = threading.Condition()

  @contextlib.contextmanager
  def hold(self, pixels: int) -> Iterator[None]:
    n = min(max(int(pixels), 0), self._limit)
    with self._free:
      self._free.wait_for(lambda: self._used + n <= self._limit)
      self._used += n
    try:
      yield
    finally:
      with self._free:
        self._used -= n
        self._free.notify_all()


def _decoded_pixels(data: bytes) -> int:
  """Pixels `check_image_bytes` will hold for `data`, from its header: a JPEG's DCT-scaled
  size (down to 1/8, not below _CHECK_SIDE), another format's full size; 0 if unreadable
  (the decode reports it)."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      w, h = img.size
      jpeg = img.format == 'JPEG'
  except Exception:  # pylint: disable=broad-except
    return 0
  scale = 1
  while jpeg and scale < 8 and min(w, h) // (scale * 2) >= _CHECK_SIDE:
    scale *= 2
  return (w // scale) * (h // scale)


# `ava.style_dropped` reasons -> skipped.csv reasons.
_DROPPED_REASONS = {'not in AVA.txt': NOT_IN_AVA_TXT, 'no tag': NO_TAG,
                    'in test list': IN_TEST_LIST}


def select_images(ava_dir: str | os.PathLike, subset: str, *,
                  max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE,
                  num_workers: int = 0) -> Selection:
  """Splits of `subset` (from `ava.load_subset`) with every unusable image moved to `skipped`.

  Raises `ava.AvaError` for malformed metadata. Never raises for a bad image.
  """
  ava_dir = Path(ava_dir)
  _check_subset(subset)
  _check_max_pixels(max_pixels)
  if num_workers < 0:
    raise ValueError(f'num_workers={num_workers}: use 0 (one per CPU core) or more')
  splits = ava.load_subset(ava_dir, subset)
  skipped: list[Skipped] = []
  candidates: dict[str, list[ava.AvaImage]] = {}
  for split in SPLITS:
    seen: set[int] = set()
    cands = []
    for img in splits[split]:
      if img.image_id in seen:
        skipped.append(Skipped(split, img.image_id, DUPLICATE))
      elif img.image_id in KNOWN_BAD_IDS:
        skipped.append(Skipped(split, img.image_id, KNOWN_BAD))
      else:
        cands.append(img)
      seen.add(img.image_id)
    candidates[split] = cands

  # Listed ids that the subset dropped (style: no AVA.txt row, no tag, or train ids in test).
  if subset == 'style':
    for split, dropped in ava.style_dropped(ava_dir).items():
      for image_id, why in dropped:
        skipped.append(Skipped(split, image_id, _DROPPED_REASONS.get(why, EXCLUDED)))

  files = ava.find_images(ava_dir, (img.image_id for split in SPLITS
                                   for img in candidates[split]))
  for split in SPLITS:
    skipped += [Skipped(split, img.image_id, AMBIGUOUS) for img in candidates[split]
                if img.image_id in files.ambiguous]

  # Full decode of every candidate, in parallel (PIL releases the GIL while decoding).
  jobs = [(split, img) for split in SPLITS for img in candidates[split]
          if img.image_id not in files.ambiguous]
  workers = num_workers or cpu_backend.host_cpu_count()

  budget = _PixelBudget(max_pixels)

  def check(job):
    return check_image_file(files.paths[job[1].image_id],
                            max_pixels=max_pixels, min_side=min_side, budget=budget)

  # Truncated files are refused whatever PIL's LOAD_TRUNCATED_IMAGES says (the decoder's load).
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    reasons = list(tqdm.tqdm(pool.map(check, jobs), total=len(jobs),
                             desc='Validating AVA images', unit='img'))
  kept: dict[str, list[ava.AvaImage]] = {split: [] for split in SPLITS}
  for (split, img), reason in zip(jobs, reasons):
    if reason is None:
      kept[split].append(img)
    else:
      skipped.append(Skipped(split, img.image_id, reason))
  skipped.sort(key=lambda s: (SPLITS.index(s.split), s.image_id))
  return Selection(kept=kept, skipped=skipped,
                   paths={img.image_id: files.paths[img.image_id]
                          for split in SPLITS for img in kept[split]})


# --------------------------------------------------------------------------- outputs

def write_skipped_csv(path: str | os.PathLike, rows: Sequence[Skipped]) -> None:
  """Writes `split,image_id,reason` rows atomically."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(['split', 'image_id', 'reason'])
  for r in rows:
    writer.writerow([r.split, r.image_id, r.reason])
  atomic_write_text(path, buf.getvalue())


def read_skipped_csv(path: str | os.PathLike) -> list[Skipped]:
  with open(path, newline='') as f:
    return [Skipped(r['split'], int(r['image_id']), r['reason']) for r in csv.DictReader(f)]


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

def _check_max_pixels(max_pixels: int) -> None:
  # Training and evaluation decode records with decoder.MAX_PIXELS: a higher cap here would
  # keep images they then refuse.
  if not 0 < max_pixels <= decoder.MAX_PIXELS:
    raise ValueError(f'max_pixels={max_pixels}: use 1..{decoder.MAX_PIXELS} (the decoder\'s '
                     'cap, decoder.MAX_PIXELS, which training and evaluation apply too)')


def _check_subset(subset: str) -> None:
  if subset not in SUBSETS:
    raise ValueError(f'subset={subset!r}: use one of {SUBSETS}')


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
  """{'data_dir', 'subset', 'ava_fingerprint'} of a prepared dataset (fingerprint '' for one
  prepared before metadata.json recorded it)."""
  return {'data_dir': os.fspath(data_dir), 'subset': subset,
          'ava_fingerprint': str(load_metadata(data_dir, subset).get('ava_fingerprint', ''))}


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
    try:
      match = next((p for p in at.iterdir() if p.name.lower() == part.lower()), None)
    except OSError:
      return ''
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
    raise FileNotFoundError(
        f'{Path(data_dir) / "ava" / subset}: no prepared dataset; run `aesthetics-'
        f'prepare-data --ava_dir=<AVA root> --data_dir={data_dir} --subset={subset}`')
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


# The files that decide which images a subset holds and their labels: a root whose copies of
# these are byte-identical builds the same dataset (images aside), wherever it lives.
_FINGERPRINTED = ('AVA.txt', 'tags.txt', 'style_image_lists/train.jpgl',
                  'style_image_lists/test.jpgl')


def root_fingerprint(ava_dir: str | os.PathLike) -> str:
  """sha256 over the root's metadata files (`_FINGERPRINTED`; a missing one counts as
  absent): what `prepare` compares before reusing a dataset, so a moved root still matches."""
  h = hashlib.sha256()
  for name in _FINGERPRINTED:
    f = Path(ava_dir) / name
    h.update(f'{name}\0'.encode())
    if f.is_file():
      with open(f, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
          h.update(block)
    h.update(b'\0end\0')
  return h.hexdigest()


def root_metadata(ava_dir: Path, tag_names: dict[int, str]) -> dict:
  """`tag_names` ([66] names, index = tag id - 1; ClassLabel style), `ava_dir` and
  `defect_masks_dir` (absolute; '' when the root has no `defect_masks/`, as real AVA), and
  `ava_fingerprint` (`root_fingerprint`)."""
  masks = ava_dir / 'defect_masks'
  # `or`: a tags.txt line without a name (`37`) named the tag '' in reports and predictions.
  return {'tag_names': [tag_names.get(i) or f'tag {i}' for i in range(1, ava.NUM_TAGS + 1)],
          'ava_dir': os.fspath(ava_dir.absolute()),
          'defect_masks_dir': os.fspath(masks.absolute()) if masks.is_dir() else '',
          'ava_fingerprint': root_fingerprint(ava_dir)}


def load_metadata(data_dir: str | os.PathLike, subset: str = 'style') -> dict:
  """What `prepare` recorded about the AVA root ({} for datasets prepared before it did)."""
  path = dataset_dir(data_dir, subset) / 'metadata.json'
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    raise ava.AvaError(f'{path}: unreadable ({e}); prepare the dataset again in a fresh '
                       '--data_dir') from None


def is_prepared(data_dir: str | os.PathLike, subset: str = 'style') -> bool:
  """Whether `ava/<subset>` is fully prepared under `data_dir` (TFDS renames it into place
  only when complete). Quiet, unlike `builder.is_prepared()`, which logs a warning."""
  return (dataset_dir(data_dir, subset) / 'dataset_info.json').is_file()


def dataset_dir(data_dir: str | os.PathLike, subset: str = 'style') -> Path:
  """<data_dir>/ava/<subset>/<version>: where skipped.csv, stats.json, figures/ live."""
  return Path(data_dir) / 'ava' / subset / VERSION
