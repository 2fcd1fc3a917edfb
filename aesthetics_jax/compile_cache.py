"""JAX's persistent compilation cache for the commands (`configure`, called by `cli.common.run`).

Every command compiles its jitted steps afresh, and for short commands that is much of the
time: `aesthetics-predict` on 4 photos took 5.9-7.2 s each run, and with the cache the second
and later runs took 4.3-5.1 s (2-core CPU, 2026-12-04, the demo's MobileNetV2). JAX keys each
entry on the computation, the compile options, the backend and the JAX/jaxlib versions, so a
changed model or an upgrade compiles anew. It keeps compilations that took >= 1 s (JAX's
default; keeping those over 0.1 s too made a second `aesthetics-evaluate` of the demo's
MobileNetV2 79.2 instead of 81.4 s, one run each: not worth the entries); least recently used
entries go when the folder passes `MAX_BYTES`.

Where: `AESTHETICS_JAX_COMPILE_CACHE` if set to a folder; `0` (or off/false/no) turns it off;
else `$XDG_CACHE_HOME/aesthetics_jax/xla` (`~/.cache/...`). A cache the user configured for JAX
itself (`JAX_COMPILATION_CACHE_DIR`, or `jax.config`) wins. A folder that cannot be created is
skipped with a warning: the command runs as without the cache.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import logging

ENV = 'AESTHETICS_JAX_COMPILE_CACHE'
JAX_ENV = 'JAX_COMPILATION_CACHE_DIR'
MAX_BYTES = 2 << 30  # 2 GiB; a MobileNetV2 evaluation's steps take a few MB


def default_dir() -> Path:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return Path(base) / 'aesthetics_jax' / 'xla'


def chosen_dir() -> Path | None:
  """The folder `configure` would use, None when off or when the user set JAX's own."""
  value = os.environ.get(ENV, '').strip()
  if value.lower() in ('0', 'off', 'false', 'no'):
    return None
  if os.environ.get(JAX_ENV):
    return None
  if 'jax' in sys.modules and sys.modules['jax'].config.jax_compilation_cache_dir:
    return None
  return Path(value).expanduser() if value else default_dir()


def configure() -> Path | None:
  """Turns the cache on for this process (before its first compilation); the folder or None."""
  path = chosen_dir()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.warning('compilation cache off: cannot create %s (%s); set %s to a writable '
                    'folder, or 0', path, e.strerror or e, ENV)
    return None
  if 'jax' in sys.modules:  # JAX read its environment at import: set its config instead
    jax = sys.modules['jax']
    jax.config.update('jax_compilation_cache_dir', str(path))
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  else:
    os.environ[JAX_ENV] = str(path)
    os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(MAX_BYTES))
  return path
