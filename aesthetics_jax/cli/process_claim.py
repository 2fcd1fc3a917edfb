"""Claims held for the life of a process: one process per --process_id of a multi-process job
on each host, checked before it connects; one aesthetics-predict run per output.

A second process 1 started while process 1 of a job ran made JAX's coordinator abort the
running job, every process with a C++ stack (exit 134), and the duplicate then waited out
--initialization_timeout. `claim` binds a Linux abstract socket named after the job (its
--coordinator_address) and the id, held for the life of the process: no file to go stale,
freed by the kernel however the process ends. A second claim of the name is refused with one
line, exit 2. Another host's duplicate cannot be seen from here; elsewhere than Linux this
checks nothing. No flags here: tests import it.

`hold_output` does the same for an output path (its real path, hashed into the name): two
aesthetics-predict runs writing one --crop_dir or --output on this host overwrote each other's
files, both exit 0, with records pointing at the other run's crops.
"""
from __future__ import annotations

import hashlib
import os
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
  if not address or address == 'auto' or process_id is None:
    return
  if not hold(name(address, process_id)):
    common.usage_error(script, f'--process_id={process_id} of the job at --coordinator_address='
                       f'{address} is already running on this host; start each --process_id '
                       'once (a second one would make the coordinator stop the whole job)')


def hold(claim_name: str) -> bool:
  """Binds the abstract socket `claim_name` until this process ends; False if another process
  holds it. True elsewhere than Linux (no abstract sockets: nothing is checked)."""
  if not sys.platform.startswith('linux'):
    return True
  s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    s.bind(claim_name)
    s.listen(1)  # so that others (the tests) can see it is held: a connect succeeds
  except OSError:
    s.close()
    return False
  _HELD.append(s)
  return True


def output_name(path: str) -> str:
  """The abstract socket name held while `path` (a file or folder, by real path) is written.
  Hashed: an abstract name holds at most 107 bytes, a path up to 4096."""
  real = os.path.realpath(path).encode('utf-8', 'surrogateescape')
  return f'\0aesthetics-jax-output {hashlib.sha256(real).hexdigest()}'


def hold_output(script: str, flag: str, path: str | None) -> None:
  """Claims a local output (`--flag=path`) for this run; exit 2 with one line if another run
  on this host writes it now. A URL is not claimed (other hosts could write it anyway)."""
  if not path or '://' in path:
    return
  if not hold(output_name(path)):
    what = 'file' if flag == 'output' else 'folder'
    common.usage_error(script, f'--{flag}={path} is being written by another '
                       f'aesthetics-{script} run on this host; wait for it to finish, or pass '
                       f'another {what}')
