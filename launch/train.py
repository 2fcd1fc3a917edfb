r"""Trains a model; rerunning the same command resumes from the latest checkpoint.

  python -m launch.train --config=configs/demo.py:mobilenet_v2 --workdir=/tmp/w \
      --config.data.data_dir=/tmp/demo_tfds [--config.key=value ...]

If `config.data.ava_dir` is set and `config.data.data_dir` is not prepared yet, the dataset
is prepared first. Multi-process: pass --coordinator_address/--num_processes/--process_id
(or --coordinator_address=auto on managed clusters that `jax.distributed.initialize()` detects).
User errors (bad config, unusable or busy workdir, damaged checkpoints, a failed save) print
one line on stderr and exit 1.
"""
import errno
import json
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import config_args

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (checkpoints, logs).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for jax.distributed.initialize, or "auto" on '
                                   'managed clusters (TPU pods, SLURM) that JAX detects itself.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    print(f'train: unexpected arguments {argv[1:]}; use --config.key=value', file=sys.stderr)
    sys.exit(1)
  import jax  # pylint: disable=import-outside-toplevel
  if _COORDINATOR.value == 'auto':
    jax.distributed.initialize()  # TPU pods, SLURM, ...: JAX reads the cluster's environment.
  elif _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.set_verbosity(logging.WARNING)
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  checkpoints.quiet_orbax_errors()  # failed saves arrive as one CheckpointError line
  # CheckpointError: workdir (busy, read-only, a file), damaged checkpoints, failed saves.
  user_errors = (trainer.TrainingError, checkpoints.CheckpointError,
                 preprocess.InputError, parallel.ShardingError, ava.AvaError, FileNotFoundError,
                 NotADirectoryError, PermissionError)
  try:
    if config.data.ava_dir and not dataset.is_prepared(config.data.data_dir, config.data.subset):
      if not config.data.data_dir:
        raise trainer.TrainingError('config.data.ava_dir is set but config.data.data_dir is empty; '
                                  'pass --config.data.data_dir=<where to write the dataset>')
      if jax.process_index() == 0:
        dataset.prepare(config.data.ava_dir, config.data.data_dir, config.data.subset)
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices('prepare_data')
    if not config.data.data_dir:
      raise trainer.TrainingError('config.data.data_dir is empty; pass '
                                '--config.data.data_dir=<prepared TFDS dir> (launch/prepare_data.py)')
    result = trainer.train_and_evaluate(config, _WORKDIR.value)
  except user_errors as e:
    print(f'train: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}',
          file=sys.stderr)
    sys.exit(1)
  except OSError as e:  # the storage filled up or went read-only under the logs
    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
      raise
    print(f'train: {e.filename or _WORKDIR.value}: {e.strerror}; free space or fix the storage, '
          'then rerun to resume from the last checkpoint', file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in result.items()}, sort_keys=True))


if __name__ == '__main__':
  config_args.check(sys.argv, 'train')
  app.run(main)
