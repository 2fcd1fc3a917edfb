r"""Builds the TFDS `ava` dataset (array_record, no TensorFlow) from an AVA root.

  aesthetics-prepare-data --ava_dir=/data/AVA --data_dir=/data/tfds --subset=style
  (python -m launch.prepare_data from a checkout)

Prints kept / skipped counts per split and the paths of skipped.csv, stats.json and the
figures. Rerunning with the same --ava_dir and --max_pixels reuses an already prepared dataset
(also when another prepare of the same --data_dir finishes first). Malformed metadata prints
one line on stderr and exits 1, as does a disk that fills while the dataset is written (the
partial dataset is removed); an --ava_dir without AVA.txt, tags.txt or (--subset=style)
its style_image_lists/{train,test}.jpgl, a --data_dir that cannot be written, that holds
the dataset of another AVA root or --max_pixels, a --max_pixels over the decoder's 100 MP
cap, a negative --num_workers or a --resized_max_gb that is not a positive number exits 2
before any image is validated (an already prepared dataset is reused read-only, but for
the resized images below). Images are validated with the shared
bounded decoder (`decoder.decode`); EXIF-rotated photos are stored upright. A train id also in
the test list is kept in test only. The training images are also stored decoded and resized
to each `--resized_sizes` side (`data/resized_store.py`, 192 KiB an image at 256): training
then crops them instead of decoding; a folder that cannot be written or a disk without room
leaves them out (training decodes). Ctrl-C is one line and exit 130 (SIGTERM: 143), with what
was half written removed; what a killed prepare left (TFDS's incomplete.* folder,
resized/.*.tmp) is removed by the next one that finds no other prepare of the dataset running.
"""
from pathlib import Path

from absl import flags
from absl import logging

from aesthetics_jax import io
from aesthetics_jax.cli import common
from aesthetics_jax.data import ava
from aesthetics_jax.data import dataset
from aesthetics_jax.data import decoder
from aesthetics_jax.data import selection
from aesthetics_jax.train import stop as stop_lib

_AVA_DIR = flags.DEFINE_string('ava_dir', None, 'AVA root (AVA.txt, tags.txt, images/, ...).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir to write the dataset to.')
_SUBSET = flags.DEFINE_enum('subset', 'style', list(selection.SUBSETS),
                            'style: style lists, tagged images only (paper); all: AVA.txt.')
_MAX_PIXELS = flags.DEFINE_integer(
    'max_pixels', dataset.DEFAULT_MAX_PIXELS, 'Images with more pixels are skipped '
    '(decompression bombs); at most the decoder\'s cap, decoder.MAX_PIXELS (100 MP).')
_NUM_WORKERS = flags.DEFINE_integer('num_workers', 0, 'Validation threads; 0 = one per core.')
_RESIZED = flags.DEFINE_list(
    'resized_sizes', ['256'], 'Also store the training images decoded and resized to each of '
    'these sides (config.input.resize_size; R*R*3 bytes an image), so that training crops '
    'them instead of decoding every image every epoch; empty (--resized_sizes=) for none.')
_RESIZED_MAX_GB = flags.DEFINE_float(
    'resized_max_gb', dataset.RESIZED_MAX_GB, 'Leave out a --resized_sizes store larger than '
    'this many GiB (the style subset at 256 px: 1.6 GiB; all of AVA: 48 GiB).')
flags.mark_flags_as_required(['ava_dir', 'data_dir'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('prepare_data', f'unexpected arguments {argv[1:]}; use --flag=value')
  if not 0 < _MAX_PIXELS.value <= decoder.MAX_PIXELS:
    common.usage_error('prepare_data', f'--max_pixels={_MAX_PIXELS.value}: use '
                       f'1..{decoder.MAX_PIXELS} (the decoder\'s cap, which training and '
                       'evaluation apply too)')
  if _NUM_WORKERS.value < 0:  # ThreadPoolExecutor's own refusal named neither flag nor fix
    common.usage_error('prepare_data', f'--num_workers={_NUM_WORKERS.value}: use 0 (one '
                       'thread per CPU core) or a positive number of threads')
  if not _RESIZED_MAX_GB.value > 0:  # nan compared false everywhere: no bound at all
    common.usage_error('prepare_data', f'--resized_max_gb={_RESIZED_MAX_GB.value:g}: use a '
                       'positive number of GiB, e.g. 16 (--resized_sizes= for no stores)')
  if '://' in _AVA_DIR.value:  # read as a local path: 'gs:/b/ava/AVA.txt: not found'
    common.usage_error('prepare_data', f'--ava_dir={_AVA_DIR.value}: pass a local folder (the '
                       'images are read from files; copy the AVA root from the bucket first)')
  try:  # gs:// without gcsfs: an ImportError traceback from TFDS
    io.require_backend(_DATA_DIR.value, 'data_dir', ValueError)
  except ValueError as e:
    common.usage_error('prepare_data', str(e))
  try:  # a missing AVA root is a bad flag: exit 2 before any work, as every command's
    dataset.check_ava_root(_AVA_DIR.value, _SUBSET.value)
  except ava.AvaError as e:
    common.usage_error('prepare_data', str(e))
  # Validating every image takes minutes on AVA: an unwritable destination is found first.
  if not dataset.is_prepared(_DATA_DIR.value, _SUBSET.value):
    common.check_outputs('prepare_data', folders={'data_dir': _DATA_DIR.value})
  try:
    sizes = [int(x) for x in _RESIZED.value]
    if any(x <= 0 for x in sizes):
      raise ValueError
  except ValueError:
    common.usage_error('prepare_data', f'--resized_sizes={",".join(_RESIZED.value)}: use '
                       'positive sides in pixels, e.g. --resized_sizes=256 (empty for none)')
  logging.set_verbosity(logging.WARNING)  # TFDS's INFO lines would drown the summary
  res = None
  try:
    res = _prepare()
    verb = 'Reused prepared' if res.reused else 'Prepared'
    print(f'{verb} dataset ava/{res.subset} at {res.dataset_dir}'
          + (' (no rebuild)' if res.reused else ''))
    for split in dataset.SPLITS:
      print(f'  {split}: kept {res.kept[split]}, skipped {res.skipped[split]}')
    print(f'skipped.csv: {res.skipped_csv}')
    print(f'stats.json:  {res.stats_json}')
    for name, path in res.figures.items():
      print(f'figure {name}: {path}')
    for size, (path, what) in dataset.prepare_resized(_DATA_DIR.value, _SUBSET.value, sizes,
                                                       max_gb=_RESIZED_MAX_GB.value).items():
      print(f'train images resized to {size}: {path} ({what})')
  except KeyboardInterrupt as e:
    # Whatever was half-written is gone by now (TFDS's incomplete folder, the store's
    # temporary file: both removed as the interrupt unwound). SIGTERM's is a subclass: it
    # said 'interrupted', exit 130.
    how, code = (('terminated (SIGTERM)', common.EXIT_TERMINATED)
                 if isinstance(e, stop_lib.Terminated) else
                 ('interrupted', common.EXIT_INTERRUPTED))
    if res is None:
      common.fail('prepare_data', f'{how}; nothing of this run was kept: rerun the same '
                  'command to start over', code)
    common.fail('prepare_data', f'{how} while storing the resized training images; the '
                f'dataset at {res.dataset_dir} is kept: rerun the same command to store them '
                '(training decodes without them)', code)


def _prepare() -> dataset.PrepareResult:
  """`dataset.prepare` with the flags; its errors as one line (exit 1, or 2 for a data_dir
  that holds another dataset)."""
  try:
    return dataset.prepare(_AVA_DIR.value, _DATA_DIR.value, _SUBSET.value,
                           max_pixels=_MAX_PIXELS.value, num_workers=_NUM_WORKERS.value)
  except dataset.ReuseError as e:
    common.usage_error('prepare_data', e)
  except NotADirectoryError as e:  # errno's text alone does not say what to do
    blocker = next((p for p in Path(e.filename or _DATA_DIR.value).parents
                    if p.exists() and not p.is_dir()), e.filename)
    common.fail('prepare_data', f'{blocker}: a file stands where --data_dir needs a folder; '
                'move it away or choose another --data_dir')
  except (ava.AvaError, FileNotFoundError, PermissionError, dataset.NoSpaceError,
          ValueError) as e:
    common.fail('prepare_data', e)


def run_cli() -> None:
  """`aesthetics-prepare-data`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
