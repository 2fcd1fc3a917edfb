"""AVA metadata → typed records and training targets (pure Python/numpy, no JAX).

AVA root layout (Murray et al. 2012; the demo generator writes the same):
  AVA.txt                    15 integers a row: index, image id, votes for scores 1..10,
                             tag 1, tag 2 (0 = none), challenge id
  tags.txt                   `<id> <name with spaces>` (66 tags, ids 1..66)
  challenges.txt             `<id> <name>`
  style_image_lists/{train,test}.jpgl   one image id a line
  images/<id>.jpg            (also found: `.JPG` / `.jpeg`, zero-padded ids, subfolders,
                             `Images/`; see `find_images`)

Subsets (`load_subset`):
  'style'  ids of the photographic-style lists that appear in AVA.txt and have >= 1 tag
           (8,900 train / 2,203 test on real AVA, as in the paper); an id in both lists is
           kept in test only, so the splits are disjoint.
  'all'    every AVA.txt row; an image is in 'test' iff `is_all_test_id(image_id)`:
           crc32 of its decimal id (ASCII) modulo 10 == 0, i.e. ~10% test, stable across
           machines, Python versions and AVA.txt row order.

Every user-fixable problem raises `AvaError` whose message is ONE line
`<file>:<line>: <what is wrong> (<how to fix>)` (or names the missing path).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence
import zlib

from absl import logging
import numpy as np

from aesthetics_jax.io import atomic_write_text

NUM_TAGS = 66
NUM_BUCKETS = 10
# Images known to be corrupt / unreadable in common AVA copies; prepare_data skips them.
KNOWN_BAD_IDS = (440774, 179118, 371434, 277832, 230701, 729377)
SUBSETS = ('style', 'all')
# 'all' subset: fraction of ids (by crc32 of the decimal id) held out for test.
ALL_TEST_MODULUS = 10

_SCORES = np.arange(1, NUM_BUCKETS + 1, dtype=np.float64)
_AVA_FIELDS = 2 + NUM_BUCKETS + 3


class AvaError(ValueError):
  """Malformed or missing AVA metadata; `str()` is one line naming the file and the fix."""


# Ids, vote counts and challenge ids are stored as int32 in the prepared dataset: a larger value
# would wrap (3,000,000,000 votes read back as -1,294,967,296) or overflow, so it is refused.
INT32_MAX = 2**31 - 1


def _fail(path: os.PathLike | str, line: int, what: str, fix: str) -> AvaError:
  return AvaError(f'{path}:{line}: {what} ({fix})')


@dataclasses.dataclass(frozen=True, eq=False)
class AvaImage:
  """One AVA.txt row.

  Attributes:
    image_id: AVA image id (file `images/<id>.jpg`).
    votes: int64 `[10]` read-only; votes[k] = number of votes for score k + 1.
    tags: AVA tag ids in 1..66, zeros removed, duplicates removed, file order.
    challenge_id: dpchallenge.com challenge id.
  """
  image_id: int
  votes: np.ndarray
  tags: tuple[int, ...]
  challenge_id: int

  def __post_init__(self):
    votes = np.array(self.votes, dtype=np.int64).reshape(NUM_BUCKETS)
    votes.setflags(write=False)
    object.__setattr__(self, 'votes', votes)
    # Contract: AVA ids 1..66 only, 0 ('none') and repeats dropped, file order kept.
    object.__setattr__(self, 'tags', tuple(dict.fromkeys(int(t) for t in self.tags if t)))

  def __eq__(self, other):
    if not isinstance(other, AvaImage):
      return NotImplemented
    return (self.image_id == other.image_id and self.tags == other.tags
            and self.challenge_id == other.challenge_id
            and bool(np.array_equal(self.votes, other.votes)))

  def __hash__(self):
    return hash((self.image_id, self.tags, self.challenge_id, self.votes.tobytes()))

  @property
  def num_votes(self) -> int:
    return int(self.votes.sum())

  @property
  def distribution(self) -> np.ndarray:
    """f32 `[10]`, sums to 1."""
    return (self.votes / self.votes.sum()).astype(np.float32)

  @property
  def mean_score(self) -> float:
    return float(np.dot(self.votes, _SCORES) / self.votes.sum())

  @property
  def std_score(self) -> float:
    p = self.votes / self.votes.sum()
    mean = float(np.dot(p, _SCORES))
    return float(np.sqrt(np.dot(p, (_SCORES - mean) ** 2)))

  @property
  def label(self) -> int:
    """1 (high) if mean score > 5, else 0 (low)."""
    return int(self.mean_score > 5.0)

  @property
  def padded_tags(self) -> tuple[int, int]:
    """The two tag slots as stored in records: tag ids, 0 = none."""
    t = self.tags + (0, 0)
    return (t[0], t[1])


# AVA metadata rows are short (AVA.txt's ~50 characters): a longer line is not such a file,
# and is refused before it is read whole (a 119 MB file of one line took 1.4 GB of memory).
MAX_LINE_CHARS = 1 << 20


def _read_lines(path: os.PathLike | str, what: str) -> Iterator[str]:
  """The lines of a metadata file, read one at a time, each at most `MAX_LINE_CHARS` long."""
  path = Path(path)
  if not path.is_file():
    raise AvaError(f'{path}: missing {what} (expected this file; point --ava_dir at the AVA '
                   'root or run `aesthetics-make-demo-data`)')
  try:
    # errors='replace': a stray non-UTF-8 byte in a tag/challenge name must not stop parsing.
    # utf-8-sig: a BOM written by some editors must not make line 1 'non-integer'.
    # newline='\n': lines end at '\n' only (a CRLF's '\r' is dropped), as editors and `sed -n
    # Np` count them: splitlines() also broke a row at a form feed or U+2028, so errors named
    # the wrong line and field count. Within a row those characters are whitespace between
    # fields, as spaces are.
    warned = False
    with open(path, encoding='utf-8-sig', errors='replace', newline='\n') as f:
      for lineno in itertools.count(1):
        line = f.readline(MAX_LINE_CHARS + 2)  # room for the longest line's '\r\n'
        if not line:
          return
        line = line.removesuffix('\n').removesuffix('\r')
        if '\ufffd' in line and not warned:  # a name would carry U+FFFD silently
          warned = True
          logging.warning('%s:%d: not UTF-8 text (%r); its undecodable bytes read as U+FFFD: '
                          'save the file as UTF-8 to keep those names', path, lineno,
                          line.strip()[:60])
        if '\0' in line:  # no text file of ours holds NULs; the lines below would misname it
          raise _nul_bytes(path, lineno, line)
        if len(line) > MAX_LINE_CHARS:
          raise _fail(path, lineno, f'line longer than {MAX_LINE_CHARS:,} characters',
                      f'{what} rows are short lines of text: is this the right file?')
        yield line
  except OSError as e:
    raise AvaError(f'{path}: cannot read {what}: {e.strerror} (check permissions)') from None


def _nul_bytes(path: Path, lineno: int, line: str) -> AvaError:
  """A line holding NUL characters: a file saved as UTF-16 (Windows Notepad's 'Unicode',
  PowerShell 5's `>`; every other byte of ASCII text is NUL), or zero bytes where text should
  be (a download or copy that stopped: torrent clients and some copiers preallocate the file).
  Read as UTF-8 either was a 'non-integer field' or 'line longer than' error."""
  alternate = '\0' not in line[0::2] or '\0' not in line[1::2]  # UTF-16 without a BOM
  if lineno == 1 and (line.startswith('\ufffd\ufffd') or alternate):
    return _fail(path, lineno, 'saved as UTF-16 text', 'save it as UTF-8 or ASCII text')
  return _fail(path, lineno, f'NUL bytes at character {line.index(chr(0)) + 1}',
               'the file is incomplete (a download or copy that stopped?) or not text: copy '
               'it again')


_ASCII_INT = re.compile(r'[+-]?[0-9]+')


def _int(field: str) -> int:
  """int() of ASCII digits only: int() alone also takes '1_0' (10) and full-width '５'."""
  if not _ASCII_INT.fullmatch(field):
    raise ValueError(field)
  return int(field)  # ValueError past Python's 4300-digit limit


def _parses_as_int(field: str) -> bool:
  try:
    _int(field)
  except ValueError:
    return False
  return True


def read_ava_txt(path: os.PathLike | str,
                 valid_tags: Collection[int] | None = None) -> list[AvaImage]:
  """Parses AVA.txt. Blank lines are ignored.

  Args:
    path: AVA.txt.
    valid_tags: tag ids allowed besides 0 (e.g. the keys of `read_tags`); default 1..66.
  Raises:
    AvaError: missing file, a line over `MAX_LINE_CHARS`, wrong field count, non-integer
      field, negative vote, zero votes, votes, image id or challenge id beyond int32, tag id
      out of range, duplicate image id.
  """
  lines = _read_lines(path, 'AVA.txt')
  allowed = set(range(1, NUM_TAGS + 1)) if valid_tags is None else {int(t) for t in valid_tags}
  images: list[AvaImage] = []
  first_line: dict[int, int] = {}
  for lineno, line in enumerate(lines, start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != _AVA_FIELDS:
      _check_separator(path, lineno, line)
      if len(fields) < _AVA_FIELDS and _ends_with(path, line):
        raise _fail(path, lineno, f'the file ends mid-row ({len(fields)} of {_AVA_FIELDS} '
                    'fields, no line end)', 'an incomplete download or copy? copy it again')
      raise _fail(path, lineno, f'expected {_AVA_FIELDS} integers, got {len(fields)} fields',
                  'each row is: index, image id, 10 vote counts, tag1, tag2, challenge id')
    try:
      values = [_int(f) for f in fields]
    except ValueError:
      _check_separator(path, lineno, line)
      # int() also refuses digit strings past Python's 4300-digit limit.
      bad = next(f for f in fields if not _parses_as_int(f))
      raise _fail(path, lineno, f'non-integer field {bad[:40]!r}',
                  'every field must be a whole number') from None
    image_id = values[1]
    votes = values[2:2 + NUM_BUCKETS]
    tag1, tag2, challenge_id = values[2 + NUM_BUCKETS:]
    if not 0 <= image_id <= INT32_MAX:
      raise _fail(path, lineno, f'image id {image_id} out of range',
                  f'image ids are 0..{INT32_MAX}')
    if not 0 <= challenge_id <= INT32_MAX:
      raise _fail(path, lineno, f'challenge id {challenge_id} out of range',
                  f'challenge ids are 0..{INT32_MAX}')
    neg = [k + 1 for k, v in enumerate(votes) if v < 0]
    if neg:
      raise _fail(path, lineno, f'negative vote count for score {neg[0]} '
                  f'({votes[neg[0] - 1]})', 'vote counts must be >= 0')
    if sum(votes) > INT32_MAX:
      big = max(range(NUM_BUCKETS), key=lambda k: votes[k]) + 1
      raise _fail(path, lineno, f'vote counts sum to {sum(votes)} (score {big}: '
                  f'{votes[big - 1]})', f'the votes of one image must total at most {INT32_MAX}')
    if sum(votes) == 0:
      raise _fail(path, lineno, f'image {image_id} has zero votes',
                  'remove the row; mean score is undefined without votes')
    for slot, tag in ((1, tag1), (2, tag2)):
      if tag != 0 and tag not in allowed:
        hint = ('ids must be 0 (none) or 1..66' if valid_tags is None
                else 'ids must be 0 (none) or listed in tags.txt')
        raise _fail(path, lineno, f'tag {slot} id {tag} out of range', hint)
    if image_id in first_line:
      raise _fail(path, lineno, f'duplicate image id {image_id} (first on line '
                  f'{first_line[image_id]})', 'keep one row per image')
    first_line[image_id] = lineno
    images.append(AvaImage(image_id, np.asarray(votes, np.int64), (tag1, tag2), challenge_id))
  if not images:  # it was 'no usable train images (skipped: not_in_ava_txt ...)'
    raise AvaError(f'{path}: no rows (an empty file); copy AVA.txt from the AVA release again')
  return images


def _ends_with(path: os.PathLike | str, line: str) -> bool:
  """Whether the file's last bytes are `line` with no line end: a copy cut mid-row."""
  tail = line.encode()
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(f.tell() - len(tail), 0))
      return f.read() == tail
  except OSError:
    return False


def _check_separator(path: os.PathLike | str, lineno: int, line: str) -> None:
  """A row of a CSV export (fields separated by ',' or ';'): its 15 numbers were 'got 1
  fields', which read as a short row, or "non-integer field '1,'"."""
  sep = next((c for c in ',;|' if len(line.split(c)) == _AVA_FIELDS), None)
  if sep:
    raise _fail(path, lineno, f'fields separated by {sep!r}',
                'separate them by spaces, as the AVA release does')


def _read_id_names(path: os.PathLike | str, what: str,
                   id_range: tuple[int, int] | None = None) -> dict[int, str]:
  out: dict[int, str] = {}
  for lineno, line in enumerate(_read_lines(path, what), start=1):
    parts = line.strip().split(None, 1)
    if not parts:
      continue
    try:
      key = _int(parts[0])
    except ValueError:
      raise _fail(path, lineno, f'id {parts[0][:40]!r} is not an integer',
                  'each line is `<integer id> <name>`') from None
    if id_range is not None and not id_range[0] <= key <= id_range[1]:
      raise _fail(path, lineno, f'id {key} out of range',
                  f'ids are {id_range[0]}..{id_range[1]}')
    if key in out:
      raise _fail(path, lineno, f'duplicate id {key}', 'keep one line per id')
    out[key] = parts[1].strip() if len(parts) > 1 else ''
  return out


def read_tags(path: os.PathLike | str) -> dict[int, str]:
  """tags.txt → {tag id: name}. Ids must lie in 1..66 (AvaError otherwise); an empty file is
  an AvaError too (AVA.txt's first tag was then 'out of range')."""
  tags = _read_id_names(path, 'tags.txt', (1, NUM_TAGS))
  if not tags:
    raise AvaError(f'{path}: no tags (an empty file); copy tags.txt from the AVA release '
                   'again')
  return tags


def read_challenges(path: os.PathLike | str) -> dict[int, str]:
  """challenges.txt → {challenge id: name} (names may contain spaces and underscores)."""
  return _read_id_names(path, 'challenges.txt', (0, INT32_MAX))


def read_image_list(path: os.PathLike | str) -> list[int]:
  """A `.jpgl` list: one image id a line (blank lines ignored, order and duplicates kept)."""
  ids: list[int] = []
  for lineno, line in enumerate(_read_lines(path, 'image list'), start=1):
    s = line.strip()
    if not s:
      continue
    if s.lower().endswith('.jpg'):  # tolerate `<id>.jpg` entries
      s = s[:-4]
    try:
      image_id = _int(s)
    except ValueError:
      raise _fail(path, lineno, f'{s[:40]!r} is not an image id',
                  'one integer image id per line') from None
    if not 0 <= image_id <= INT32_MAX:
      raise _fail(path, lineno, f'image id {image_id} out of range',
                  f'image ids are 0..{INT32_MAX}')
    ids.append(image_id)
  return ids


def is_all_test_id(image_id: int) -> bool:
  """'all' subset split rule: crc32(decimal id) % 10 == 0 → test (~10%)."""
  return zlib.crc32(str(int(image_id)).encode('ascii')) % ALL_TEST_MODULUS == 0


def load_subset(ava_dir: os.PathLike | str, subset: str) -> dict[str, list[AvaImage]]:
  """Reads the AVA root and returns `{'train': [...], 'test': [...]}`.

  'style': list order, each id once; ids absent from AVA.txt or without tags are dropped.
  'all': AVA.txt order, split by `is_all_test_id`.
  tags.txt is optional; when present, tag ids in AVA.txt are checked against it.
  """
  ava_dir = Path(ava_dir)
  if subset not in SUBSETS:
    raise AvaError(f'unknown subset {subset!r} (use one of {", ".join(SUBSETS)})')
  if not ava_dir.is_dir():
    raise AvaError(f'{ava_dir}: AVA root directory not found (pass the folder holding AVA.txt)')
  tags_path = ava_dir / 'tags.txt'
  valid_tags = read_tags(tags_path).keys() if tags_path.is_file() else None
  images = read_ava_txt(ava_dir / 'AVA.txt', valid_tags=valid_tags)
  if subset == 'all':
    out: dict[str, list[AvaImage]] = {'train': [], 'test': []}
    for im in images:
      out['test' if is_all_test_id(im.image_id) else 'train'].append(im)
    return out
  by_id = {im.image_id: im for im in images}
  lists = _style_lists(ava_dir)
  test_ids = set(lists['test'])
  out = {}
  for split in ('train', 'test'):
    kept = []
    for image_id in dict.fromkeys(lists[split]):
      im = by_id.get(image_id)
      # The test list is the evaluation's ground truth: a train copy would leak into it.
      if im is not None and im.tags and not (split == 'train' and image_id in test_ids):
        kept.append(im)
    out[split] = kept
  return out


def _style_lists(ava_dir: Path) -> dict[str, list[int]]:
  return {split: read_image_list(ava_dir / 'style_image_lists' / f'{split}.jpgl')
          for split in ('train', 'test')}


def style_dropped(ava_dir: os.PathLike | str) -> dict[str, list[tuple[int, str]]]:
  """Ids of the style lists that `load_subset(.., 'style')` drops, with the reason
  ('not in AVA.txt' | 'no tag' | 'in test list', the last for train only), per split — for
  prepare_data's skipped.csv."""
  ava_dir = Path(ava_dir)
  tags_path = ava_dir / 'tags.txt'
  valid_tags = read_tags(tags_path).keys() if tags_path.is_file() else None
  by_id = {im.image_id: im for im in read_ava_txt(ava_dir / 'AVA.txt', valid_tags=valid_tags)}
  lists = _style_lists(ava_dir)
  test_ids = set(lists['test'])
  out = {}
  for split in ('train', 'test'):
    dropped = []
    for image_id in dict.fromkeys(lists[split]):
      im = by_id.get(image_id)
      if im is None:
        dropped.append((image_id, 'not in AVA.txt'))
      elif not im.tags:
        dropped.append((image_id, 'no tag'))
      elif split == 'train' and image_id in test_ids:
        dropped.append((image_id, 'in test list'))
    out[split] = dropped
  return out


def image_path(ava_dir: os.PathLike | str, image_id: int) -> Path:
  """`ava_dir/images/<id>.jpg`."""
  return Path(ava_dir) / 'images' / f'{int(image_id)}.jpg'


# Besides images/<id>.jpg, what mirrors and copies name an AVA image: `.JPG` / `.jpeg` (a copy
# made on Windows, a re-save), zero-padded ids, and subfolders (archives split in parts).
IMAGE_SUFFIXES = ('.jpg', '.jpeg')


@dataclasses.dataclass(frozen=True)
class ImageFiles:
  """Where `find_images` found each id's image: `paths[id]` (the expected `image_path` when
  none was found: reading it names it missing) and the ids with several candidate files."""
  paths: dict[int, Path]
  ambiguous: frozenset[int]


def find_images(ava_dir: os.PathLike | str, image_ids: Iterable[int]) -> ImageFiles:
  """Each id's image file: `images/<id>.jpg` when that name exists (a file, or a link or
  folder that reading then reports), else the one file under `images/` (or `Images/`; any
  depth, through links to folders) named `<id>` (leading zeros allowed) with a suffix of
  IMAGE_SUFFIXES in any case. An id with several such files is `ambiguous` (which one AVA
  meant is unknown).
  `images/` is scanned once, and only when some exact name is absent."""
  paths = {int(i): image_path(ava_dir, i) for i in image_ids}
  absent = {i for i, p in paths.items() if not os.path.lexists(p)}
  if not absent:
    return ImageFiles(paths, frozenset())
  found: dict[int, list[Path]] = {}
  folder = Path(ava_dir) / 'images'
  if not folder.is_dir():  # `Images/`, copied where names ignore case
    folder = entry_ignoring_case(Path(ava_dir), 'images') or folder
  for f in _image_files(folder):
    stem, suffix = os.path.splitext(f.name)
    if (suffix.lower() in IMAGE_SUFFIXES and stem.isascii() and stem.isdigit()
        and int(stem) in absent):
      found.setdefault(int(stem), []).append(f)
  ambiguous = frozenset(i for i, fs in found.items() if len(fs) > 1)
  paths.update({i: fs[0] for i, fs in found.items() if len(fs) == 1})
  return ImageFiles(paths, ambiguous)


def _entries(folder: Path) -> list[Path]:
  try:
    return sorted(folder.iterdir())
  except OSError:
    return []


def entry_ignoring_case(folder: Path, name: str) -> Path | None:
  """The entry of `folder` named `name` in any case (a copy made where names ignore case,
  Windows or macOS; the first by name if several), None if none or `folder` cannot be read."""
  return next((p for p in _entries(folder) if p.name.lower() == name.lower()), None)


def _image_files(folder: Path) -> Iterator[Path]:
  """Every file under `folder` (links to folders followed once each; unreadable folders
  skipped: their images are then missing)."""
  seen: set[tuple[int, int]] = set()
  stack = [folder]
  while stack:
    d = stack.pop()
    try:
      st = d.stat()
      if (st.st_dev, st.st_ino) in seen:  # a link back up, or two links to one folder
        continue
      seen.add((st.st_dev, st.st_ino))
      with os.scandir(d) as entries:
        for e in entries:
          try:
            if e.is_dir():
              stack.append(Path(e.path))
            elif e.is_file():
              yield Path(e.path)
          except OSError:
            continue
    except OSError:
      continue


def stack_images(images: Sequence[AvaImage]) -> dict[str, np.ndarray]:
  """Records as arrays: `image_id i64 [N]`, `votes i64 [N,10]`, `tags i32 [N,2]` (0 = none),
  `challenge_id i32 [N]`."""
  n = len(images)
  return {
      'image_id': np.fromiter((im.image_id for im in images), np.int64, n),
      'votes': (np.stack([im.votes for im in images]) if n
                else np.zeros((0, NUM_BUCKETS), np.int64)),
      'tags': np.array([im.padded_tags for im in images], np.int32).reshape(n, 2),
      'challenge_id': np.fromiter((im.challenge_id for im in images), np.int32, n),
  }


def votes_to_targets(votes: np.ndarray) -> dict[str, np.ndarray]:
  """Vote histograms → training targets (vectorised).

  Args:
    votes: `[N, 10]` non-negative counts (any int/float dtype), each row with > 0 votes.
  Returns:
    `distribution f32 [N,10]`, `mean_score f32 [N]`, `std_score f32 [N]`,
    `label i32 [N]` (1 if mean > 5; decided in float64, so it matches `AvaImage.label`).
  """
  v = np.asarray(votes, np.float64)
  if v.ndim != 2 or v.shape[1] != NUM_BUCKETS:
    raise ValueError(f'votes must be [N, {NUM_BUCKETS}], got shape {v.shape}')
  total = v.sum(axis=1, keepdims=True)
  if np.any(v < 0) or np.any(total <= 0):
    bad = int(np.flatnonzero((v < 0).any(axis=1) | (total[:, 0] <= 0))[0])
    raise ValueError(f'votes row {bad} has negative counts or no votes')
  p = v / total
  mean = p @ _SCORES
  std = np.sqrt(np.sum(p * (_SCORES[None, :] - mean[:, None]) ** 2, axis=1))
  return {
      'distribution': p.astype(np.float32),
      'mean_score': mean.astype(np.float32),
      'std_score': std.astype(np.float32),
      'label': (mean > 5.0).astype(np.int32),
  }


def tags_to_soft_labels(tags: np.ndarray, num_tags: int = NUM_TAGS) -> np.ndarray:
  """Tag ids → soft labels.

  Args:
    tags: int `[N, 2]` AVA tag ids, 0 = none.
    num_tags: number of tag classes; id k maps to column k - 1.
  Returns:
    f32 `[N, num_tags]`: 1/n on each of the n distinct tags of a row; all-zero if untagged.
  """
  t = np.asarray(tags)
  if t.ndim != 2:
    raise ValueError(f'tags must be [N, 2], got shape {t.shape}')
  if np.any((t < 0) | (t > num_tags)):
    raise ValueError(f'tag ids must be in 0..{num_tags}, got {t[(t < 0) | (t > num_tags)][0]}')
  n = t.shape[0]
  hot = np.zeros((n, num_tags + 1), np.float32)
  rows = np.repeat(np.arange(n), t.shape[1])
  hot[rows, t.reshape(-1)] = 1.0  # duplicates collapse to one 1.0
  hot = hot[:, 1:]                # drop column 0 ('none')
  count = hot.sum(axis=1, keepdims=True)
  return np.divide(hot, count, out=np.zeros_like(hot), where=count > 0)


def write_ava_txt(path: os.PathLike | str, images: Iterable[AvaImage]) -> None:
  """Writes AVA.txt rows (1-based row index) atomically."""
  rows = []
  for i, im in enumerate(images, start=1):
    t1, t2 = im.padded_tags
    rows.append(' '.join(map(str, [i, im.image_id, *im.votes.tolist(), t1, t2,
                                    im.challenge_id])))
  atomic_write_text(path, '\n'.join(rows) + '\n')
