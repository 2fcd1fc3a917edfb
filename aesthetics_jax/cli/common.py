"""What every command shares: one-line errors and the checks that run before any model loads.

Exit statuses of every command: 0 success; 1 the run failed, or (predict) some inputs failed;
2 a usage error found before any work started (bad flag value, unknown config or key,
unwritable output, a --workdir / --step that cannot be used: no checkpoint, a damaged or
another model's checkpoint, a workdir in use by another trainer; see `exit_code`). Errors are
one line on stderr, `<command>: <what> ...`, never a traceback.
"""
from __future__ import annotations

import atexit
import errno
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from absl import app
from absl import flags
from ml_collections import config_flags

from aesthetics_jax import compile_cache, cpu_backend
# Shared with the start-up handlers (cli/__init__), which run before this module loads.
from aesthetics_jax.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, command_name  # noqa: F401
from aesthetics_jax.configs import default
from aesthetics_jax.train import orbax_logging  # absl and the standard library only
from aesthetics_jax.train import stop as stop_lib

EXIT_FAILED = 1
EXIT_USAGE = 2


def first_line(e: BaseException | str) -> str:
  """The first non-empty line of an error (library errors are one line; others may not be)."""
  text = str(e).strip()
  if not text and isinstance(e, BaseException):
    return type(e).__name__
  return text.splitlines()[0] if text else ''


def fail(script: str, message: BaseException | str, code: int = EXIT_FAILED) -> NoReturn:
  print(f'{script}: {first_line(message)}', file=sys.stderr, flush=True)
  sys.exit(code)


def usage_error(script: str, message: str) -> NoReturn:
  fail(script, message, EXIT_USAGE)


# A write the storage refused: full, over quota, read-only, failing.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def storage_line(e: BaseException, where: str | os.PathLike,
                 then: str = 'rerun the same command to continue') -> str | None:
  """The one line for an OSError that the storage under `where` raised, naming the file and
  the fix; None for any other error. A disk that filled under a paper run's training logs
  said only 'paper_run: [Errno 28] No space left on device'."""
  if not (isinstance(e, OSError) and e.errno in STORAGE_ERRNOS):
    return None
  return f'{e.filename or where}: {e.strerror}; free space or fix the storage, then {then}'


def fail_now(script: str, message: BaseException | str, code: int = EXIT_FAILED) -> NoReturn:
  """`fail` without the exit handlers: for a process of a multi-process JAX job whose peers
  are gone or stuck. At exit `jax.distributed.shutdown` waits at a barrier for every process:
  for a killed one until JAX's heartbeat timeout (100 s) and then aborts with a C++ stack;
  for one blocked in a collective with this process, for ever."""
  print(f'{script}: {first_line(message)}', file=sys.stderr, flush=True)
  exit_now(code)


def exit_now(code: int) -> NoReturn:
  """Exits with `code` once stdout and stderr are flushed, running no exit handlers (see
  `fail_now`)."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)


def crash_now(e: BaseException) -> NoReturn:
  """What `run` does with an unexpected error (a traceback; out of memory: one line), without
  the exit handlers (see `fail_now`)."""
  if out_of_memory(e):
    fail_now(command_name(), out_of_memory_line(e))
  traceback.print_exception(e)
  exit_now(EXIT_FAILED)


def exit_code(e: BaseException) -> int:
  """The exit status of an error that reached a command.

  EXIT_USAGE for `train.checkpoints.CheckpointError`s raised before any work (the workdir or
  the checkpoint to start from cannot be used: missing, damaged, another model's, busy,
  unwritable or a file; fix --workdir / --step) and for errors whose raiser set
  `before_work` (evaluate's unprepared --config.data.data_dir); EXIT_FAILED for everything
  else, a failed checkpoint save (`CheckpointSaveError`, mid-run) included.
  """
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  if getattr(e, 'before_work', False):  # raised before any work, flagged so by its raiser
    return EXIT_USAGE
  if (isinstance(e, checkpoints.CheckpointError)
      and not isinstance(e, checkpoints.CheckpointSaveError)):
    return EXIT_USAGE
  return EXIT_FAILED


def nearest_existing(p: Path) -> Path:
  """`p` or its nearest ancestor that exists."""
  while not p.exists() and p != p.parent:
    p = p.parent
  return p


def _can_create_in(folder: Path) -> bool:
  """Probes with a real temporary file: os.access() says yes to root on read-only mounts."""
  try:
    fd, name = tempfile.mkstemp(dir=folder, prefix='.aesthetics-write-check-')
  except OSError:
    return False
  os.close(fd)
  os.unlink(name)
  return True


def _folder_reason(p: Path) -> str | None:
  """Why `p` cannot be (created as) a writable folder; None if it can. Creates nothing."""
  if p.exists():
    if not p.is_dir():
      return 'is a file, not a folder'
    return None if _can_create_in(p) else 'is a folder you cannot write to'
  anc = nearest_existing(p.absolute())
  if not anc.is_dir():
    return f'cannot be created: {anc} is a file'
  return None if _can_create_in(anc) else f'cannot be created: {anc} is not writable'


def folder_problem(path: str | os.PathLike, flag: str) -> str | None:
  """One-line reason why `--flag=path` cannot be an output folder; None if it can.

  Cloud URLs (gs://...) are not checked here: their errors come from the write itself.
  """
  if not path or '://' in str(path):
    return None
  reason = _folder_reason(Path(path).expanduser())
  return reason and f'--{flag}={path} {reason}; pass a folder you can write to'


def file_problem(path: str | os.PathLike, flag: str) -> str | None:
  """One-line reason why `--flag=path` cannot be written as a file; None if it can.

  Files are written atomically (a temporary file renamed into place), so the folder must
  take new files.
  """
  if not path or '://' in str(path):
    return None
  p = Path(path).expanduser()
  if p.is_dir() or str(path).endswith(('/', os.sep)):
    return f'--{flag}={path} is a folder; pass a file path'
  reason = _folder_reason(p.absolute().parent)
  return reason and f'--{flag}={path}: {p.absolute().parent} {reason}; pass a path you can write to'


# Folders whose files C++ libraries open by name: UTF-8 names only (`io.utf8_problem`).
NATIVE_FOLDERS = ('workdir', 'data_dir')


def utf8_problem(path: str | os.PathLike, flag: str) -> str | None:
  """One-line reason why `--flag=path` is no UTF-8 name (`io.utf8_problem`); None if it is."""
  from aesthetics_jax import io  # pylint: disable=import-outside-toplevel (etils: 0.1 s)
  return io.utf8_problem(path, f'--{flag}')


def check_outputs(script: str, folders: dict[str, str | None] = None,
                  files: dict[str, str | None] = None, local_only: bool = False) -> None:
  """Exits 2 with one line if a given output flag ({flag: value}; None = not given) cannot be
  written. An empty value (`--workdir=`) is refused: it meant the current folder, and the demo
  wrote its whole workdir there. `local_only`: the command writes through local paths, where
  `gs://b/run` is the folder ./gs:/b/run (the paper run, demo and control then trained there
  and failed at the first checkpoint; make-demo-data and the weight tools exited 0)."""
  for flag, value in {**(folders or {}), **(files or {})}.items():
    if local_only and value and '://' in str(value):
      usage_error(script, f'--{flag}={value}: this command writes local paths only (a URL '
                  'would be a local folder named after it); pass a local path, and copy the '
                  'result to the bucket (aesthetics-train and aesthetics-evaluate take gs:// '
                  'workdirs)')
  for flag, value in (folders or {}).items():
    if value == '':
      usage_error(script, f'--{flag} is empty; pass a folder to write to')
    if value and (problem := folder_problem(value, flag)):
      usage_error(script, problem)
    if value and flag in NATIVE_FOLDERS and (problem := utf8_problem(value, flag)):
      usage_error(script, problem)
  for flag, value in (files or {}).items():
    if value == '':
      usage_error(script, f'--{flag} is empty; pass a file path to write to')
    if value and (problem := file_problem(value, flag)):
      usage_error(script, problem)


def run(main: Callable[[list[str]], None], doc: str | None,
        argv: Sequence[str] | None = None) -> None:
  """`absl.app.run(main)` with the command's own docstring as `--help` text.

  absl prints `__main__.__doc__`, which for an installed command is pip's generated stub and
  for `python -m launch.X` the forwarding shim's.
  """
  cpu_backend.reexec_with_malloc_tunable()  # once, before any work: glibc reads it at start
  sys.modules['__main__'].__doc__ = doc
  _help_lists_flags_of(main.__module__)
  cpu_backend.configure()  # before any JAX computation starts the backends
  if problem := cpu_backend.device_flag_problem():  # the user's XLA_FLAGS: a traceback in JAX
    usage_error(command_name(), problem)
  compile_cache.configure()  # before the first compilation
  # A failed save or restore reaches the user as one line: without this, orbax's and asyncio's
  # echoes of it came first (~380 lines for a full disk in the demo, 192 in paper-run).
  orbax_logging.quiet_orbax_errors()
  if not isinstance(sys.stdout, _TaggedStdout):
    sys.stdout = _TaggedStdout(sys.stdout)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, interrupt_once)
    # Every command, from here on: SIGTERM (`timeout`, a job's time limit, `docker stop`)
    # killed evaluate, prepare_data, benchmark, ... at once (exit -15, no line). It stops them
    # as Ctrl-C does, one line, 143; a trainer's command installs its own to hold it.
    stop_on_sigterm()
    if not getattr(sys.unraisablehook, 'redelivers_interrupt', False):
      sys.unraisablehook = _redeliver_lost_interrupt(sys.unraisablehook)
  try:
    try:
      app.run(main, argv=None if argv is None else list(argv), flags_parser=parse_flags)
    finally:  # what print() left buffered, while its errors can still be told apart
      sys.stdout.flush()
  except OSError as e:
    if not getattr(e, 'on_stdout', False):
      raise
    stdout_failed(e)
  except stop_lib.Terminated as e:  # SIGTERM (`stop_on_sigterm`): before Ctrl-C, its base
    print(f'{command_name()}: {terminated_line(e)}', file=sys.stderr, flush=True)
    exit_interrupted(EXIT_TERMINATED)
  except KeyboardInterrupt:  # was a traceback; commands with more to say catch it themselves
    print(f'{command_name()}: interrupted (Ctrl-C); what was written is kept (checkpoints, '
          'finished stages, atomic outputs): rerun the same command to continue',
          file=sys.stderr, flush=True)
    exit_interrupted()
  except SystemExit as e:
    if e.code in (EXIT_INTERRUPTED, EXIT_TERMINATED):  # a command that said more itself
      exit_interrupted(e.code)
    raise
  except (RuntimeError, MemoryError) as e:
    if not out_of_memory(e):
      raise
    fail(command_name(), out_of_memory_line(e))


def _help_lists_flags_of(module: str) -> None:
  """Makes `--help` list the flags `module` defines. absl's short help lists those of the
  module named by sys.argv[0], which for an installed command is pip's stub and for
  `python -m launch.X` the shim: `aesthetics-predict --help` listed no flag at all."""
  fv = flags.FLAGS
  for flag in fv.get_key_flags_for_module(module):
    fv.register_key_flag_for_module(sys.argv[0], flag)


# What to lower when a command runs out of memory, by command.
_OOM_FIX = {
    'train': 'lower --config.batch_size or --config.eval.batch_size',
    'evaluate': 'lower --config.eval.batch_size',
    'control': 'lower --config.batch_size or --config.eval.batch_size',
    'demo': 'free memory (the demo needs about 3 GB)',
}


def out_of_memory_line(e: BaseException) -> str:
  """The one line for an `out_of_memory` error: what failed and the flag to lower."""
  fix = _OOM_FIX.get(command_name(), 'free memory, or run it on a machine with more')
  return f'out of memory ({first_line(e)}); {fix}; what was written is kept'


def out_of_memory(e: BaseException) -> bool:
  """An allocation that failed: Python's MemoryError or XLA's RESOURCE_EXHAUSTED (a
  JaxRuntimeError, a RuntimeError), told apart without importing JAX. A batch too large for
  the machine (batch_size=10**6 on the cached head: 25.7 GB for one step) was a traceback.
  XLA:CPU says 'INTERNAL: Error dispatching computation: Out of memory allocating N bytes.'
  when a temporary buffer cannot be had (aesthetics-evaluate printed it bare, no flag named)."""
  head = first_line(e)
  return isinstance(e, MemoryError) or ('RESOURCE_EXHAUSTED' in head and 'memory' in head.lower()
                                        ) or 'out of memory allocating' in head.lower()


def interrupt_once(signum, frame) -> None:
  """SIGINT: KeyboardInterrupt once, then ignored, so that a second Ctrl-C does not cut short
  the cleanup of the first (a checkpoint save being waited for, a half-written folder being
  removed) with a traceback. One that comes during an import is delivered again once it is
  over, as SIGTERM's (`train.stop`): raised there, an extension's initialisation made it an
  ImportError traceback, exit 1; but not after `IMPORT_WAIT_S`: an import that hangs (a
  network file system) must still stop on Ctrl-C."""
  global _ctrl_c_deferred_since  # pylint: disable=global-statement
  del signum
  now = time.monotonic()
  if stop_lib.importing(frame) and now - (_ctrl_c_deferred_since or now) < IMPORT_WAIT_S:
    _ctrl_c_deferred_since = _ctrl_c_deferred_since or now
    stop_lib.send_later(signal.SIGINT)
    return
  _ctrl_c_deferred_since = None
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  raise KeyboardInterrupt


IMPORT_WAIT_S = 2.0  # how long a Ctrl-C waits for an import to end
_ctrl_c_deferred_since: float | None = None


def exit_interrupted(code: int = EXIT_INTERRUPTED) -> NoReturn:
  """Exits `code` (Ctrl-C's, or SIGTERM's EXIT_TERMINATED) after the exit handlers (atexit:
  JAX's, orbax's) without the interpreter's teardown: a thread that the Ctrl-C left inside
  XLA (the input-prefetch thread, decoders) crashed it after the interrupted line, exit 134
  with 'LLVM ERROR: ...' or 'FATAL: exception not rethrown' (1 in 4 Ctrl-Cs of
  aesthetics-control --smoke).

  JAX's own exit handler is replaced by the one part of it that matters before `os._exit`,
  `jax.distributed.shutdown`: its clearing of the backends let such a thread start them again
  after the interrupted line (its probe of each platform logged then)."""
  # JAX's private name, looked up, not assumed: were it gone, its handler simply runs.
  jax_clean_up = getattr(sys.modules.get('jax._src.api'), 'clean_up', None)
  if jax_clean_up is not None:
    atexit.unregister(jax_clean_up)
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  if jax_clean_up is not None:
    try:
      sys.modules['jax'].distributed.shutdown()  # a no-op unless jax.distributed was started
    except Exception:  # pylint: disable=broad-except
      pass  # peers already gone: atexit printed this as 'Exception ignored'; the line is out
  exit_now(code)


def stop_on_sigterm() -> stop_lib.StopRequest | None:
  """Installs a `train.stop.StopRequest` as SIGTERM's handler and returns it (None off the
  main thread, where signals cannot be handled). Pass it to the trainer: the step in flight is
  checkpointed; elsewhere SIGTERM stops the command as Ctrl-C does, and `run` ends it with
  `terminated_line`, exit 143. Without it SIGTERM (a scheduler's preemption, `timeout`,
  `docker stop`) killed a command at once (exit -15, no line), losing the steps since the
  last checkpoint. `run` installs one for every command; a command that trains installs its
  own, the request it passes to the trainer."""
  if threading.current_thread() is not threading.main_thread():
    return None
  stop = stop_lib.StopRequest()
  signal.signal(signal.SIGTERM, stop)
  return stop


def terminated_line(e: stop_lib.Terminated) -> str:
  """The line of a command SIGTERM stopped (aesthetics-train's names its resume point)."""
  if e.saved:
    return (f'terminated (SIGTERM): training checkpointed in {e.saved}; rerun the same '
            'command to continue')
  return ('terminated (SIGTERM); what was written is kept (checkpoints, finished stages, '
          'atomic outputs): rerun the same command to continue')


def _redeliver_lost_interrupt(previous: Callable) -> Callable:
  """sys.unraisablehook that raises again a KeyboardInterrupt Python dropped: Ctrl-C landing
  in a callback whose errors are only printed (JAX's gc callback, a __del__) printed 'Exception
  ignored ... KeyboardInterrupt', and the run went on to the end, exit 0, with Ctrl-C ignored
  from then on (`interrupt_once`)."""

  def hook(unraisable) -> None:
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
      previous(unraisable)
      return
    if type(unraisable.exc_value) is not KeyboardInterrupt:
      # A subclass (SIGTERM's stop.Terminated): raised again as Ctrl-C it said 'interrupted
      # (Ctrl-C)', exit 130. Its StopRequest raises it again (the trainer, holding it, notices
      # it at its next step): dropped, SIGTERM in evaluate's weakref callbacks was ignored,
      # the run went on to exit 0.
      request = signal.getsignal(signal.SIGTERM)
      if (isinstance(unraisable.exc_value, stop_lib.Terminated)
          and isinstance(request, stop_lib.StopRequest)):
        request.deliver_again()
      return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # interrupt_once's: not for good
      signal.signal(signal.SIGINT, interrupt_once)
    # From another thread, a moment later: raised now, it would land in this hook and be
    # dropped again. A real signal, not _thread.interrupt_main: that only trips the handler at
    # the main thread's next bytecode, so a main thread blocked in a sleep or a wait went on
    # until the call returned (5 s in test_cli's case); the signal ends such a wait at once.
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()

  hook.redelivers_interrupt = True
  return hook


class _TaggedStdout:
  """sys.stdout whose write errors are tagged `on_stdout`, so that `run` can tell a stdout
  that is full or closed (`> /dev/full`, `| head`) from the command's own OSErrors: printing
  the results to a full disk ended in a traceback."""

  def __init__(self, stream):
    self._stream = stream

  def __getattr__(self, name):
    return getattr(self._stream, name)

  def write(self, text: str) -> int:
    return _tagged(self._stream.write, text)

  def flush(self) -> None:
    _tagged(self._stream.flush)


def _tagged(call: Callable, *args):
  """call(*args), its OSError tagged `on_stdout`."""
  try:
    return call(*args)
  except OSError as e:
    e.on_stdout = True
    raise


EXIT_SIGPIPE = 141  # 128 + SIGPIPE: what `yes | head -1` reports for `yes`


def quiet_stdout() -> None:
  """Points stdout at /dev/null, so that the interpreter's final flush does not raise again."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, sys.stdout.fileno())
  os.close(devnull)


def stdout_failed(e: OSError) -> NoReturn:
  """Exit after stdout refused a write: quietly with 141 when the reader left (`| head` has
  what it wanted), else one line and EXIT_FAILED (files the command wrote are kept)."""
  quiet_stdout()
  if isinstance(e, BrokenPipeError):
    sys.exit(EXIT_SIGPIPE)
  fail(command_name(), f'could not write to stdout ({e.strerror or first_line(e)}); files '
       'written before are kept: rerun with stdout on a disk with free space')


_HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad flag value as one usage line (absl prints 'FATAL Flags
  parsing error: ...' plus a second line and exits 1), and help exiting 0 (absl exits 1 after
  printing it, which reads as a failed run)."""
  try:
    rest = flags.FLAGS(argv)
    _expand_home_in_flags()
    return rest
  except flags.Error as e:
    msg = first_line(e)
    args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
    files = [a for a in args if a.startswith('-') and '=' not in a and os.path.isfile(a)]
    if files:  # `predict -dash.jpg`: absl reads a flag
      msg += (f"; {files[0]} is a file: put -- before file names that start with '-' "
              f'(... -- {files[0]})')
    usage_error(command_name(), msg)
  except SystemExit as e:
    args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
    if e.code == 1 and any(a in _HELP_FLAGS for a in args):
      raise SystemExit(0) from None
    raise


def _expand_home_in_flags() -> None:
  """A string flag given as `--flag=~/x` gets the home folder for its '~': the shell expands a
  '~' only at a word's start, so `--workdir=~/runs/mnv2` reached the command as written, and
  predict said 'no such folder' of a folder that is there (train made one named '~'). So does
  a `--config.KEY=~/x` override (`--config.data.data_dir=~/tfds` was 'no prepared dataset')."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if flag.present and isinstance(flag.value, str) and flag.value.startswith('~'):
      # parse, not `.value =`: a --config.KEY flag's parse also sets the config's field
      flag.parse(os.path.expanduser(flag.value))
      flag.present -= 1  # given once


def run_with_overrides(main: Callable[[list[str]], None], doc: str | None, command: str,
                       allowed: Sequence[str], help_text: str) -> None:
  """`run` for a command that restores a workdir's config and takes `--config.KEY=VALUE`
  overrides under the prefixes `allowed` (e.g. `('eval.',)`).

  The keys are checked first (one line, exit 2), and only then is the `--config` flag defined:
  ml_collections reads the overrides in argv while the flag is DEFINED, and meets a misspelled
  key with a traceback.
  """
  # config_args imports this module: a top-level import would be circular.
  from aesthetics_jax.cli import config_args  # pylint: disable=import-outside-toplevel
  config_args.check(sys.argv, command, allowed, "the workdir's config.json")
  config_flags.DEFINE_config_dict('config', default.get_config(), help_text)
  run(main, doc)

