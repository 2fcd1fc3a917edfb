r"""Trains a model; rerunning the same command resumes from the latest checkpoint.

  aesthetics-train --config=demo:mobilenet_v2 --workdir=/tmp/w \
      --config.data.data_dir=/tmp/demo_tfds [--config.key=value ...]

(`python -m launch.train` from a checkout is the same command.) `--config` takes a packaged
config name (`demo`, `mobilenet_v2_emd`, `vgg16_binary`), `configs/NAME.py` or the path of
your own config file, each with an optional `:arg` (`demo:vgg16,smoke`).

If `config.data.ava_dir` is set and `config.data.data_dir` is not prepared yet, the dataset
is prepared first; if it is, it must have been prepared from that root (exit 2 otherwise).
Multi-process: pass --coordinator_address/--num_processes/--process_id (or
--coordinator_address=auto on managed clusters that `jax.distributed.initialize()` detects);
every process needs the same other flags and data (exit 2 on all, naming the first setting
that differs: a config key, --workdir, --num_processes, the prepared data's AVA root). When
one process dies, the others exit 1 with one line naming it at their next collective (within
JAX's heartbeat timeout, 100 s, where that is a checkpoint save's barrier): rerun them all.
A job whose processes do not all connect within --initialization_timeout (300 s) ends each
with one line (exit 1): no coordinator at the address, or not all processes started.
User errors print one line on stderr: exit 2 for problems found before anything runs (config
file, config argument, `--config.KEY`, a value that cannot work (`train/config_checks.py`:
`input.image_size` under 32, a `best_metric` no evaluation reports, ...); a --workdir that is
unwritable, a file, in use by another trainer (`W/.lock`), or holds another model's checkpoint,
only damaged ones, or checkpoints of another input or loss recipe or data; an empty or
unprepared --config.data.data_dir), 1 for failures later (a failed checkpoint save, disk full
or read-only under the logs), 130 on Ctrl-C, 143 on SIGTERM (a scheduler's preemption): the
step in flight is finished, checkpointed and named (in a multi-process job the same step by
every process, whichever got the signal); rerun to continue.
"""
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from absl import flags
from absl import logging
from ml_collections import config_flags

from aesthetics_jax import io as io_lib
from aesthetics_jax.cli import common
from aesthetics_jax.cli import config_args
from aesthetics_jax.cli import process_claim

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config: a packaged name (demo, mobilenet_v2_emd, vgg16_binary), '
    'configs/NAME.py or a .py file path, with an optional :arg, e.g. demo:vgg16,smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (checkpoints, logs).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for jax.distributed.initialize, '
                                   'or "auto" on managed clusters (TPU pods, SLURM) that JAX '
                                   'detects itself.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
# Seconds; JAX adds ours + 60 to a C++ int.
MAX_INIT_TIMEOUT = 7 * 24 * 3600
_INIT_TIMEOUT = flags.DEFINE_integer(
    'initialization_timeout', 300, 'Multi-process: seconds each process waits for all '
    '--num_processes processes to connect to the coordinator; then one line, exit 1.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    common.usage_error('train', f'unexpected arguments {argv[1:]}; use --config.key=value')
  common.check_outputs('train', folders={'workdir': _WORKDIR.value})
  _check_processes(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  process_claim.claim('train', _COORDINATOR.value, _PROCESS_ID.value)
  _check_port(_COORDINATOR.value, _PROCESS_ID.value)  # after the claim: a duplicate is named
  config = _CONFIG.value
  _check_values(config)
  import jax  # pylint: disable=import-outside-toplevel
  timeout = _INIT_TIMEOUT.value
  # JAX's own timeout, later than ours: it aborts with a C++ stack ('Terminating process
  # because the JAX distributed service detected fatal errors ... DEADLINE_EXCEEDED').
  jax_timeout = timeout + 60
  if _COORDINATOR.value:
    # Not `common.run`'s handler (it stops one process as Ctrl-C does: the others would stop
    # at other steps): jax.distributed.initialize's preemption notifier takes SIGTERM, and
    # the trainer saves the step all processes agree on (`_preemption_notice`). Should that
    # service be off, SIGTERM kills the job at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
  if _COORDINATOR.value == 'auto':
    with _connect_deadline(None, None, None, timeout):
      # TPU pods, SLURM, ...: JAX reads the cluster's environment.
      try:
        jax.distributed.initialize(initialization_timeout=jax_timeout)
      except ValueError as e:  # no cluster found here: a traceback
        common.usage_error('train', f'--coordinator_address=auto: {common.first_line(e)} (JAX '
                           'found no TPU pod, SLURM or other cluster it reads); pass '
                           'host:port of process 0 with --num_processes and --process_id')
  elif _COORDINATOR.value:
    with _connect_deadline(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           timeout):
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                 initialization_timeout=jax_timeout)
  with _multiprocess_exits(_WORKDIR.value, outermost=True):
    _train(config)


def _train(config) -> None:
  """Everything after jax.distributed.initialize."""
  import jax  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # before JAX starts its backends (an INFO line each)
  _check_device_counts()
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  mine = sum(d.process_index == jax.process_index() for d in parallel.train_mesh().devices.flat)
  # Each process picks its training devices from its own XLA_FLAGS (cpu_backend's per-core
  # devices train on one): a job of 2 and 1 trained into a Gloo timeout and a C++ abort.
  _check_agreement({**_settings(config, _WORKDIR.value, _NUM_PROCESSES.value),
                    'the devices training uses on each process (XLA_FLAGS, '
                    'CUDA_VISIBLE_DEVICES)': str(mine)})
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import preprocess  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import config_checks  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import memory_fit  # pylint: disable=import-outside-toplevel
  try:  # the model's enumerations (arch, dtype, depthwise, ...): building it needs JAX
    config_checks.check(config)
  except config_checks.ConfigError as e:
    common.usage_error('train', e)
  # CheckpointError: workdir (busy, read-only, a file), damaged checkpoints, failed saves.
  user_errors = (trainer.TrainingError, checkpoints.CheckpointError,
                 preprocess.InputError, parallel.ShardingError, ava.AvaError, FileNotFoundError,
                 NotADirectoryError, PermissionError, memory_fit.BatchMemoryError)
  try:
    # Inside the try: a lost process's error must not reach the handlers below (a failed
    # checkpoint save's line).
    with _multiprocess_exits(_WORKDIR.value):
      if config.data.ava_dir and dataset.is_prepared(config.data.data_dir, config.data.subset):
        # Prepared earlier, perhaps from another root: training on it would ignore ava_dir.
        dataset.check_reuse(config.data.ava_dir, config.data.data_dir, config.data.subset)
      elif config.data.ava_dir:
        if not config.data.data_dir:
          common.usage_error('train', 'config.data.ava_dir is set but config.data.data_dir is '
                             'empty; pass --config.data.data_dir=<where to write the dataset>')
        if jax.process_index() == 0:
          dataset.prepare(config.data.ava_dir, config.data.data_dir, config.data.subset)
          dataset.prepare_resized(config.data.data_dir, config.data.subset,
                                  [int(config.input.resize_size)])
        if jax.process_count() > 1:
          from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
          multihost_utils.sync_global_devices('prepare_data')
      if not config.data.data_dir:  # bad flags (exit 2), found before the workdir is made
        common.usage_error('train', 'config.data.data_dir is empty; pass '
                           '--config.data.data_dir=<prepared TFDS dir> (aesthetics-prepare-data)')
      try:
        _check_prepared(config.data.data_dir, config.data.subset, dataset)
      except FileNotFoundError as e:
        common.usage_error('train', str(e))
      if jax.process_count() > 1:  # per-host copies of the data under one path: the same?
        _check_agreement({'the data in --config.data.data_dir (its AVA fingerprint)':
                          dataset.identity(config.data.data_dir, config.data.subset)[
                              'ava_fingerprint']})
      # SIGTERM (a scheduler's preemption, `timeout`, `docker stop`) killed training at once,
      # losing every step since the last scheduled checkpoint; now the step reached is saved
      # (train.stop.StopRequest). A multi-process job's processes agree on the step through
      # JAX's preemption sync point instead (the trainer's `_preemption_notice`).
      stop = common.stop_on_sigterm() if jax.process_count() == 1 else None
      result = trainer.train_and_evaluate(config, _WORKDIR.value, stop)
  except trainer.Terminated as e:
    common.fail('train', terminated_line(_WORKDIR.value, e.step, jax.process_count()),
                common.EXIT_TERMINATED)
  except pretrained.PretrainedError as e:
    # --config.model.init_weights missing, unreadable or another model's: the trainer loads
    # them before it writes anything, so this is a bad flag (exit 2).
    common.usage_error('train', e)
  except dataset.ReuseError as e:  # found before any work
    common.usage_error('train', str(e).replace('--ava_dir=', '--config.data.ava_dir=').replace(
        ' --data_dir', ' --config.data.data_dir'))
  except user_errors as e:
    common.fail('train', e, common.exit_code(e))
  except OSError as e:  # the storage filled up or went read-only under the logs
    line = common.storage_line(e, _WORKDIR.value, 'rerun to resume from the last checkpoint')
    if line is None:
      raise
    common.fail('train', line)
  if jax.process_index() == 0:
    print(json.dumps(io_lib.json_safe(dict(result)), sort_keys=True, allow_nan=False))


def terminated_line(workdir: str, step: int | None, processes: int = 1) -> str:
  """The line of a run SIGTERM stopped: at `step`, checkpointed; None: before the loop (the
  feature cache build), where 'the checkpoints so far' could be none. `processes`: the job's."""
  rerun = ('rerun the same command' if processes == 1 else
           f'rerun all {processes} processes with the same flags')
  if step is None:
    return f'terminated (SIGTERM): {rerun} to {_resume_point(workdir)}'
  return (f'terminated (SIGTERM) at step {step}, checkpointed in '
          f'{os.path.join(workdir, "checkpoints", str(step))}: {rerun} to continue')


def _check_values(config) -> None:
  """A config that contradicts itself is a usage error, found before JAX loads: a second
  rather than the eight that importing the trainer took."""
  from aesthetics_jax.data import errors, sampling  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import config_checks  # pylint: disable=import-outside-toplevel
  try:
    sampling.check_weighting(bool(config.input.balanced), str(config.input.weighting))
    config_checks.check_values(config)
  except (errors.InputError, config_checks.ConfigError) as e:
    common.usage_error('train', e)


def _check_processes(address: str | None, num: int | None, pid: int | None) -> None:
  """The multi-process flags, before JAX sees them: without this, a lone --num_processes was
  silently a single-process run, a bad port segfaulted grpc, an unreachable one hung for
  minutes, and a --process_id out of range was a traceback from jax.distributed."""
  if not address:
    if num is not None or pid is not None:
      common.usage_error('train', '--num_processes / --process_id need --coordinator_address='
                         'host:port (the address of process 0), or auto')
    return
  if not 1 <= _INIT_TIMEOUT.value <= MAX_INIT_TIMEOUT:
    # Above JAX's C++ int (with our 60 s on top) it was a TypeError traceback.
    common.usage_error('train', f'--initialization_timeout={_INIT_TIMEOUT.value}: pass a '
                       f'number of seconds from 1 to {MAX_INIT_TIMEOUT} (a week)')
  if address == 'auto':
    return
  if num is None or pid is None:
    common.usage_error('train', f'--coordinator_address={address} needs --num_processes and '
                       '--process_id')
  if num < 1 or not 0 <= pid < num:
    common.usage_error('train', f'--process_id={pid} with --num_processes={num}: pass '
                       f'0 <= process_id < num_processes (>= 1)')
  host, _, port = address.rpartition(':')
  if not host or '/' in address or not port.isdigit() or not 1 <= int(port) <= 65535:
    common.usage_error('train', f'--coordinator_address={address}: pass host:port with a port '
                       'in 1-65535, e.g. 10.0.0.1:1234 (or auto)')


def _check_port(address: str | None, pid: int | None) -> None:
  """Process 0 serves the coordinator on every interface at the address's port: a port in
  use segfaulted it in grpc, and the other processes waited out the timeout."""
  if pid != 0 or not address or address == 'auto':
    return
  port = address.rpartition(':')[2]
  if why := _port_taken(int(port)):
    common.usage_error('train', f'--coordinator_address={address}: port {port} is in use on '
                       f'this host ({why}); pass another port to every process')


def _port_taken(port: int) -> str | None:
  """Why process 0 could not serve the coordinator at `port` (the OS's words), or None."""
  for family, host in ((socket.AF_INET6, '::'), (socket.AF_INET, '')):
    try:
      s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
      continue  # no IPv6 here
    try:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-ended job's TIME_WAIT
      s.bind((host, port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        return e.strerror
    finally:
      s.close()
  return None


@contextlib.contextmanager
def _connect_deadline(address: str | None, num: int | None, pid: int | None,
                      timeout: int) -> Iterator[None]:
  """Ends this process with one line (exit 1) if the job has not assembled after `timeout`
  seconds. A process started without its coordinator (process 0), twice with one
  --process_id, or a larger --num_processes on process 0 than processes started, waited 300 s
  and aborted with JAX's C++ stack."""
  def give_up() -> None:
    if address is None:
      why = (f'the job did not assemble within --initialization_timeout={timeout} s '
             '(jax.distributed with the cluster\'s settings); check that every process started')
    elif pid != 0 and not _reachable(address):
      why = (f'no coordinator at --coordinator_address={address} after '
             f'--initialization_timeout={timeout} s: start process 0 (--process_id=0) of the '
             'job there, or fix the address')
    else:
      why = (f'not all {num} processes connected to the coordinator at {address} within '
             f'--initialization_timeout={timeout} s: start each --process_id from 0 to '
             f'{num - 1} once, all with --num_processes={num}')
    common.fail_now('train', why)
  timer = threading.Timer(timeout, give_up)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def _reachable(address: str) -> bool:
  """Whether something accepts TCP connections at host:port."""
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]'), int(port)), timeout=5):
      return True
  except OSError:
    return False


@contextlib.contextmanager
def _multiprocess_exits(workdir: str, outermost: bool = False) -> Iterator[None]:
  """In a multi-process job, exits at once, running no exit handlers (`common.fail_now`):
  at exit `jax.distributed.shutdown` waits at a barrier for every process, and the others,
  blocked in their next collective with this one, never come: both hung for ever.
  - a collective that failed because another process went away (killed, crashed, stopped by
    its own error): one line, exit 1. It was a traceback, then a 100 s wait at exit for the
    lost process (JAX's heartbeat timeout) ending in an abort;
  `outermost` (around all the work after jax.distributed.initialize), also:
  - Ctrl-C: one line, exit 130 (a second Ctrl-C is ignored: only kill -9 ended the hang);
  - an error of this process alone (its one line already printed; data missing on one host),
    or an unexpected one (traceback), with its exit status.
  The others then lose contact with this one and exit too.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  try:
    yield
  except KeyboardInterrupt:
    n = jax.process_count()
    if n == 1 or not outermost:
      raise
    common.fail_now('train', f'interrupted (Ctrl-C); what was written is kept (checkpoints): '
                    f'rerun all {n} processes with the same flags to continue',
                    common.EXIT_INTERRUPTED)
  except SystemExit as e:
    if jax.process_count() == 1 or not outermost or e.code in (None, 0):
      raise
    common.exit_now(e.code if isinstance(e.code, int) else common.EXIT_FAILED)
  except Exception as e:  # pylint: disable=broad-except
    n = jax.process_count()
    why = parallel.lost_process_error(e) if n > 1 else None
    if why is None:
      if n > 1 and outermost:
        common.crash_now(e)
      raise
    who = (f'process {1 - jax.process_index()} of 2' if n == 2
           else f'another of the {n} processes')
    common.fail_now('train', f'lost contact with {who} ({why}): it was killed or stopped (its '
                    f'own output says why); rerun all {n} processes with the same flags to '
                    f'{_resume_point(workdir)}')


def _resume_point(workdir: str) -> str:
  """Where a rerun of `workdir`'s job starts, for a message."""
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  folder = os.path.join(workdir, 'checkpoints')
  steps = (checkpoints.step_folders(folder)
           if '://' not in workdir and os.path.isdir(folder) else None)
  if steps is None:
    return f'resume from the last checkpoint in {folder}'
  if not steps:
    return 'start again (no checkpoint was saved yet)'
  return f'resume from the last checkpoint ({os.path.join(folder, str(max(steps)))})'


def _settings(config, workdir: str, num_processes: int | None) -> dict[str, str]:
  """What every process of a job must agree on: each config key, the workdir, and
  --num_processes (process 0's counts: a larger one elsewhere went unnoticed)."""
  from aesthetics_jax.evaluation import overrides  # pylint: disable=import-outside-toplevel
  where = workdir if '://' in workdir else os.path.abspath(os.path.expanduser(workdir))
  values = {**{k: str(v) for k, v in overrides.flat_keys(config, '--config.').items()},
            '--workdir': where,
            '--num_processes': str(num_processes)}
  # Named first when they differ: another model differs in a dozen keys, arch among them.
  first = ('--config.model.arch', '--config.model.width_mult', '--config.data.data_dir')
  return {**{k: values[k] for k in first if k in values}, **values}


def _exit_together() -> None:
  """Disconnects this process from the job (`jax.distributed.shutdown`: every process waits
  at its shutdown barrier) before it exits on a refusal: process 0, which hosts the
  coordination service, leaving first took it down under a process still connected, which then
  died in JAX's C++ abort (exit -6) instead of saying the line. Best effort."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    jax.distributed.shutdown()
  except Exception:  # pylint: disable=broad-except  (say the line anyway)
    pass


def _check_device_counts() -> None:
  """Exit 2 on every process when the processes hold different numbers of devices (another
  XLA_FLAGS or CUDA_VISIBLE_DEVICES): the agreement check's first collective then waited out
  the timeout and ended in a Gloo traceback, the others in JAX's C++ abort. Read from the
  global device list every process has after `jax.distributed.initialize`: no collective."""
  import jax  # pylint: disable=import-outside-toplevel
  counts: dict[int, int] = {}
  for d in jax.devices():
    counts[d.process_index] = counts.get(d.process_index, 0) + 1
  if len(set(counts.values())) > 1:
    held = '; '.join(f'{n} on process {i}' for i, n in sorted(counts.items()))
    _exit_together()
    common.usage_error('train', f'the {len(counts)} processes hold different numbers of '
                       f'devices ({held}); give each the same (XLA_FLAGS, '
                       'CUDA_VISIBLE_DEVICES)')


def _check_agreement(values: dict[str, str]) -> None:
  """Exit 2 on every process, naming the first setting the processes were started with
  differently (no-op with one process)."""
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  found = parallel.disagreement(values)
  if found is None:
    return
  key, per_process, n_differ = found
  by_value: dict[str, list[str]] = {}
  for i, v in enumerate(per_process):
    shown = '(not set)' if v is None else (v if len(v) <= 80 else v[:77] + '...')
    by_value.setdefault(shown, []).append(str(i))
  held = '; '.join(f"{v} on process{'es' if len(ids) > 1 else ''} {', '.join(ids)}"
                   for v, ids in by_value.items())
  more = f' (and {n_differ - 1} more)' if n_differ > 1 else ''
  common.usage_error('train', f'the {len(per_process)} processes disagree on {key}: {held}'
                     f'{more}; start every process with the same flags (--config, '
                     '--config.KEY, --workdir, --num_processes) and data')


def _check_prepared(data_dir: str, subset: str, dataset) -> None:
  """Before the trainer creates --workdir: a missing dataset must not leave it behind empty."""
  # A URL without its filesystem package read as 'no prepared dataset', whose fix (prepare
  # it there) then failed in a traceback.
  io_lib.require_backend(data_dir, 'data_dir', FileNotFoundError)
  if '://' not in data_dir and not dataset.is_prepared(data_dir, subset):
    raise FileNotFoundError(dataset.unprepared_line(data_dir, subset) + ', or pass '
                            '--config.data.ava_dir=<AVA root> to prepare it first')


def run_cli() -> None:
  """`aesthetics-train`: argv checked (config file, argument, keys) before absl parses it."""
  config_args.check(sys.argv, 'train')
  # Into sys.argv too: ml_collections reads the overrides' order there.
  sys.argv[:] = config_args.resolve_config_flag(sys.argv, 'train')
  common.run(main, __doc__, sys.argv)


if __name__ == '__main__':
  run_cli()
