r"""Writes the procedural demo dataset in AVA layout (plus defect_masks/<id>.png).

  aesthetics-make-demo-data --out_dir=/tmp/demo_ava [--num_train=2000 --num_test=500 --seed=0]
  aesthetics-make-demo-data --out_dir=/data/synthetic_ava --size=paper [--workers=0]
  (python -m launch.make_demo_data from a checkout)

--size=demo (default): small images (~250-400 px), the given counts after the style filter.
--size=paper: the paper's subset at AVA's scale: style lists of 11,270 / 2,809 ids of which
prepare_data keeps 8,900 / 2,203 (--num_train / --num_test; the rest untagged, missing or
corrupt JPEGs), images with a 500-800 px long side, ~140 KB JPEGs, rendered by --workers
processes (~2.1 GB; see aesthetics_jax/data/paper_size.py).
Deterministic per seed; rerunning with the same parameters reuses the finished dataset.
Prints counts, score statistics (AVA: mean of means ≈ 5.4, ~72% high, vote std ≈ 1.4) and
the time taken. A problem prints one line on stderr: exit 2 for a bad flag (nothing written),
1 for a failed run (an unwritable or full out_dir).
"""
import os

from absl import flags

from aesthetics_jax.cli import common
from aesthetics_jax.data import demo as demo_data
from aesthetics_jax.data import paper_size

_OUT_DIR = flags.DEFINE_string('out_dir', None, 'AVA root to write (created if needed).')
_SIZE = flags.DEFINE_enum('size', 'demo', ['demo', 'paper'],
                          'demo: small demo images; paper: AVA-sized lists and images.')
_NUM_TRAIN = flags.DEFINE_integer(
    'num_train', None, 'Train images kept by the style subset (default: demo 2000, paper 8900).')
_NUM_TEST = flags.DEFINE_integer(
    'num_test', None, 'Test images kept by the style subset (default: demo 500, paper 2203).')
_SEED = flags.DEFINE_integer('seed', 0, 'Everything (ids, scenes, votes, bytes) follows it.')
_VIVID_GAIN = flags.DEFINE_float(
    'vivid_gain', None, 'Colour vividness per unit of quality, a global cue beside the local '
    'defects (default: demo 0 = none, paper 0.1; generator version 3 used 0.1 for both).')
_WORKERS = flags.DEFINE_integer('workers', 0, '--size=paper: rendering processes (0 = one per '
                                'CPU core); the bytes do not depend on it.')
flags.mark_flags_as_required(['out_dir'])

DEFAULTS = {'demo': (2000, 500), 'paper': (paper_size.PAPER_KEPT['train'],
                                           paper_size.PAPER_KEPT['test'])}


def main(argv):
  if len(argv) > 1:
    common.usage_error('make_demo_data', f'unexpected arguments {argv[1:]} (use --flag=value)')
  if problem := paper_size.workers_problem(_WORKERS.value):
    common.usage_error('make_demo_data', problem)
  if _SIZE.value == 'paper' and _VIVID_GAIN.value not in (None, paper_size.VIVID_GAIN):
    common.usage_error('make_demo_data', f'--vivid_gain={_VIVID_GAIN.value}: --size=paper '
                       f'uses {paper_size.VIVID_GAIN} (drop the flag, or use --size=demo)')
  out = _OUT_DIR.value
  if not out:
    common.usage_error('make_demo_data', '--out_dir is empty; pass the folder to write the '
                       'demo AVA root to')
  if (os.path.isfile(os.path.join(out, 'AVA.txt'))
      and not os.path.exists(os.path.join(out, demo_data.MANIFEST))
      and not os.path.exists(os.path.join(out, 'demo_meta.csv'))):
    # A real AVA root (no demo files): generating here replaced its AVA.txt, tags and lists.
    common.usage_error('make_demo_data', f'--out_dir={out} holds an AVA.txt that this '
                       'command did not write (an AVA root?); pass a new or empty folder')
  d_train, d_test = DEFAULTS[_SIZE.value]
  n_train = d_train if _NUM_TRAIN.value is None else _NUM_TRAIN.value
  n_test = d_test if _NUM_TEST.value is None else _NUM_TEST.value
  try:  # flag values no dataset can be made with: exit 2, as every command's bad flags
    demo_data.check_args(n_train, n_test, _SEED.value, _VIVID_GAIN.value)
  except demo_data.DemoDataError as e:
    common.usage_error('make_demo_data', str(e))
  common.check_outputs('make_demo_data', folders={'out_dir': out}, local_only=True)
  try:
    if _SIZE.value == 'paper':
      s = paper_size.generate(_OUT_DIR.value, n_train, n_test, _SEED.value,
                              workers=_WORKERS.value, progress=True)
      print(paper_size.format_summary(s))
    else:
      gain = demo_data.VIVID_GAIN if _VIVID_GAIN.value is None else _VIVID_GAIN.value
      s = demo_data.generate(_OUT_DIR.value, n_train, n_test, _SEED.value, progress=True,
                             vivid_gain=gain)
      print(demo_data.format_summary(s))
  except demo_data.DemoDataError as e:
    common.fail('make_demo_data', e)


def run_cli() -> None:
  """`aesthetics-make-demo-data`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
