r"""Writes the procedural demo dataset in AVA layout (plus defect_masks/<id>.png).

  python -m launch.make_demo_data --out_dir=/tmp/demo_ava [--num_train=2000 --num_test=500 --seed=0]

Deterministic per seed; rerunning with the same parameters reuses the finished dataset.
Prints counts, score statistics (AVA: mean of means ≈ 5.4, ~72% high, vote std ≈ 1.4) and
the time taken. A bad flag or an unwritable out_dir prints one line on stderr and exits 1.
"""
import sys

from absl import app
from absl import flags

from aesthetics_jax.data import demo as demo_data

_OUT_DIR = flags.DEFINE_string('out_dir', None, 'AVA root to write (created if needed).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 2000, 'Train images kept by the style subset.')
_NUM_TEST = flags.DEFINE_integer('num_test', 500, 'Test images kept by the style subset.')
_SEED = flags.DEFINE_integer('seed', 0, 'Everything (ids, scenes, votes, bytes) follows it.')
flags.mark_flags_as_required(['out_dir'])


def main(argv):
  if len(argv) > 1:
    print(f'make_demo_data: unexpected arguments {argv[1:]} (use --flag=value)', file=sys.stderr)
    sys.exit(1)
  try:
    s = demo_data.generate(_OUT_DIR.value, _NUM_TRAIN.value, _NUM_TEST.value, _SEED.value,
                           progress=True)
  except demo_data.DemoDataError as e:
    print(f'make_demo_data: {e}'.splitlines()[0], file=sys.stderr)
    sys.exit(1)
  print(demo_data.format_summary(s))


if __name__ == '__main__':
  app.run(main)
