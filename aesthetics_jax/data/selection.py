"""Which listed AVA images go into the dataset, and why each other one is skipped.

`select_images(ava_dir, subset)` reads the subset's lists (`ava.load_subset`), finds each id's
file (`ava.find_images`) and validates every image with the decoder of training and prediction
(`decoder.decode`: byte, pixel and side caps, the whole stream decoded; in parallel, within a
pixel budget), giving the kept images and the skipped ones with their reason, as written to
`skipped.csv`. `upright_bytes` is what a record stores for an EXIF-rotated photo. Moved out of
dataset.py (the TFDS builder, preparing and reusing), which re-exports these names.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image
import tqdm

from aesthetics_jax import cpu_backend
from aesthetics_jax.data import ava
from aesthetics_jax.data import decoder
from aesthetics_jax.io import atomic_write_text

SUBSETS = ava.SUBSETS
SPLITS = ('train', 'test')

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
KNOWN_BAD_IDS = frozenset(ava.KNOWN_BAD_IDS)

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


def check_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      min_side: int = MIN_SIDE) -> str | None:
  """Returns a skip reason for the encoded image `data`, or None if it decodes to RGB.

  `decoder.decode`, the decoder of training and prediction: byte and pixel caps and the
  minimum side from the header, then a decode of the whole stream (what catches truncation;
  JPEGs DCT-scaled, so a huge photo is not materialised).
  """
  try:
    decoder.decode_pil(data, target=_CHECK_SIDE, min_side=min_side, max_pixels=max_pixels,
                       srgb=False)
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
  upright, _ = decoder.decode_pil(img, srgb=False)  # saved with its profile, below
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


def _check_max_pixels(max_pixels: int) -> None:
  # Training and evaluation decode records with decoder.MAX_PIXELS: a higher cap here would
  # keep images they then refuse.
  if not 0 < max_pixels <= decoder.MAX_PIXELS:
    raise ValueError(f'max_pixels={max_pixels}: use 1..{decoder.MAX_PIXELS} (the decoder\'s '
                     'cap, decoder.MAX_PIXELS, which training and evaluation apply too)')


def _check_subset(subset: str) -> None:
  if subset not in SUBSETS:
    raise ValueError(f'subset={subset!r}: use one of {SUBSETS}')
