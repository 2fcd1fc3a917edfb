r"""Writes the procedural demo dataset in AVA layout (plus defect_masks/<id>.png).

  aesthetics-make-demo-data --out_dir=/tmp/demo_ava [--num_train=2000 --num_test=500 --seed=0]
  (python -m launch.make_demo_data from a checkout)

Deterministic per seed; rerunning with the same parameters reuses the finished dataset.
Prints counts, score statistics (AVA: mean of means ≈ 5.4, ~72% high, vote std ≈ 1.4) and
the time taken. A bad flag or an unwritable out_dir prints one line on stderr and exits 1.
"""
from absl import flags

from aesthetics_jax.cli import common
from aesthetics_jax.data import demo as demo_data

_OUT_DIR = flags.DEFINE_string('out_dir', None, 'AVA root to write (created if needed).')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 2000, 'Train images kept by the style subset.')
_NUM_TEST = flags.DEFINE_integer('num_test', 500, 'Test images kept by the style subset.')
_SEED = flags.DEFINE_integer('seed', 0, 'Everything (ids, scenes, votes, bytes) follows it.')
flags.mark_flags_as_required(['out_dir'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('make_demo_data', f'unexpected arguments {argv[1:]} (use --flag=value)')
  try:
    s = demo_data.generate(_OUT_DIR.value, _NUM_TRAIN.value, _NUM_TEST.value, _SEED.value,
                           progress=True)
  except demo_data.DemoDataError as e:
    common.fail('make_demo_data', e)
  print(demo_data.format_summary(s))


def run_cli() -> None:
  """`aesthetics-make-demo-data`."""
  common.run(main, __doc__)


if __name__ == '__main__':
  run_cli()
