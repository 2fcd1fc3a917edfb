"""The command-line programs (installed as `aesthetics-*`, see pyproject's [project.scripts]).

One module per command: absl flags, `main(argv)`, and `run_cli()` (the entry point: checks
argv, then `common.run(main, __doc__)`). They hold no library code: each parses and checks its flags
before anything slow loads, calls the library, and turns its one-line errors into exit
statuses (`common`). `launch/<command>.py` in a checkout forwards here.
"""
import os
import signal
import sys


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
  name = os.path.basename(sys.argv[0]).removesuffix('.py').removeprefix('aesthetics-')
  what = 'interrupted (Ctrl-C)' if signum == signal.SIGINT else 'terminated (SIGTERM)'
  os.write(2, f'{name.replace("-", "_")}: {what} while starting; nothing was written\n'
           .encode())
  os._exit(130 if signum == signal.SIGINT else 143)  # pylint: disable=protected-access


if _is_command():
  try:
    for _signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(_signum, _stop_while_starting)
  except ValueError:  # imported off the main thread: its signals are not ours to handle
    pass
