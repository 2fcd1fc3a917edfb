"""The command-line programs (installed as `aesthetics-*`, see pyproject's [project.scripts]).

One module per command: absl flags, `main(argv)`, and `run_cli()` (the entry point: checks
argv, then `common.run(main, __doc__)`). They hold no library code: each parses and checks its flags
before anything slow loads, calls the library, and turns its one-line errors into exit
statuses (`common`). `launch/<command>.py` in a checkout forwards here.
"""
import os
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT: a command stopped by Ctrl-C, as a shell reports it
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a run SIGTERM ended


def command_name() -> str:
  """`predict` for `aesthetics-predict` and for `python -m launch.predict`."""
  stem = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ''))[0]
  return stem.removeprefix('aesthetics-').replace('-', '_')


def _is_command() -> bool:
  """Whether this process runs one of the commands (`aesthetics-X`, `python -m launch.X`), not
  a library user, a test or a demo's model process (spawned: its Ctrl-C is the trainer's)."""
  if '--multiprocessing-fork' in getattr(sys, 'orig_argv', ()):
    return False
  spec = getattr(sys.modules.get('__main__'), '__spec__', None)
  return (os.path.basename(sys.argv[0] if sys.argv else '').startswith('aesthetics-')
          or (getattr(spec, 'name', None) or '').startswith('launch.'))


def _stop_while_starting(signum, frame) -> None:
  """Ctrl-C or SIGTERM before a command's own handlers (common.run) are in place, while its
  modules load: nothing is written yet, so one line and out. It was a 15-line traceback
  (Ctrl-C) or a silent -15 (SIGTERM) in the first ~0.5 s of every command."""
  del frame
  what = 'interrupted (Ctrl-C)' if signum == signal.SIGINT else 'terminated (SIGTERM)'
  os.write(2, f'{command_name()}: {what} while starting; nothing was written\n'.encode())
  # pylint: disable-next=protected-access
  os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED)


if _is_command():
  try:
    for _signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(_signum, _stop_while_starting)
  except ValueError:  # imported off the main thread: its signals are not ours to handle
    pass
