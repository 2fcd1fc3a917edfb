"""One process per --process_id of a multi-process job on each host, checked before it connects.

A second process 1 started while process 1 of a job ran made JAX's coordinator abort the
running job, every process with a C++ stack (exit 134), and the duplicate then waited out
--initialization_timeout. `claim` binds a Linux abstract socket named after the job (its
--coordinator_address) and the id, held for the life of the process: no file to go stale,
freed by the kernel however the process ends. A second claim of the name is refused with one
line, exit 2. Another host's duplicate cannot be seen from here; elsewhere than Linux this
checks nothing. No flags here: tests import it.
"""
from __future__ import annotations

import socket
import sys

from aesthetics_jax.cli import common

# The claims this process holds, alive until it ends.
_HELD: list[socket.socket] = []


def name(address: str, process_id: int) -> str:
  """The abstract socket name that process `process_id` of the job at `address` holds."""
  return f'\0aesthetics-jax-train {address} process {process_id}'


def claim(script: str, address: str | None, process_id: int | None) -> None:
  """Holds this process's id in the job at `address` (host:port; nothing for 'auto', whose
  ids JAX reads from the cluster later, or a single-process run); exit 2 if held already."""
  if not address or address == 'auto' or process_id is None or not sys.platform.startswith(
      'linux'):
    return
  s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    s.bind(name(address, process_id))
    s.listen(1)  # so that others (the tests) can see it is held: a connect succeeds
  except OSError:
    s.close()
    common.usage_error(script, f'--process_id={process_id} of the job at --coordinator_address='
                       f'{address} is already running on this host; start each --process_id '
                       'once (a second one would make the coordinator stop the whole job)')
  _HELD.append(s)
