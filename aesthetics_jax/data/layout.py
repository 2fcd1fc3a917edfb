"""Where a prepared AVA dataset lives and what `prepare` recorded about its AVA root.

Paths and small JSON reads only, no TFDS: the predictor and evaluation read the tag names and
masks folder (`evaluation.ground_truth`) through here, and importing tensorflow_datasets
(`data.dataset`) took 0.17 s of the predictor's start-up. `data.dataset` re-exports
every name, so `dataset.is_prepared` and the rest still work.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from aesthetics_jax.data import ava

VERSION = '1.0.0'


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


def unprepared_line(data_dir: str | os.PathLike, subset: str, named: str = '') -> str:
  """The line for a `data_dir` without `ava/<subset>`: `named` (default: the folder) and the
  command that prepares it; the caller adds its own other way out ('..., or ...')."""
  return (f'{named or data_dir}: no prepared dataset ava/{subset}; run aesthetics-prepare-data '
          f'--ava_dir=<AVA root> --data_dir={data_dir} --subset={subset}')


def dataset_dir(data_dir: str | os.PathLike, subset: str = 'style') -> Path:
  """<data_dir>/ava/<subset>/<version>: where skipped.csv, stats.json, figures/ live."""
  return Path(data_dir) / 'ava' / subset / VERSION


def split_sizes(data_dir: str | os.PathLike, subset: str = 'style') -> dict[str, int]:
  """{split: number of records} from TFDS's dataset_info.json; {} if unreadable. Two
  preparations of one AVA root share its fingerprint, yet hold other images where files
  went missing or were damaged between them."""
  try:
    info = json.loads((dataset_dir(data_dir, subset) / 'dataset_info.json').read_text())
    return {str(sp['name']): sum(int(n) for n in sp.get('shardLengths', []))
            for sp in info.get('splits', [])}
  except (OSError, ValueError, TypeError, KeyError, AttributeError):
    return {}
