"""JAX's persistent compilation cache for the commands (`configure`, called by `cli.common.run`).

Every command compiles its jitted steps afresh, and for short commands that is much of the
time: `aesthetics-predict` on 4 photos took 5.9-7.2 s each run, and with the cache the second
and later runs took 4.3-5.1 s (2-core CPU, 2026-12-04, the demo's MobileNetV2). JAX keys each
entry on the computation, the compile options, the backend and the JAX/jaxlib versions, so a
changed model or an upgrade compiles anew. It keeps compilations that took >= 1 s (JAX's
default; keeping those over 0.1 s too made a second `aesthetics-evaluate` of the demo's
MobileNetV2 79.2 instead of 81.4 s, one run each: not worth the entries); least recently used
entries go when the folder passes `MAX_BYTES`.

Default: on where an accelerator's JAX plugin is installed (CUDA, ROCm, TPU: JAX's common
path), off on a CPU-only install. On CPU the cache has failure modes reported elsewhere:
XLA:CPU rejecting every cached executable on a Cascade Lake Xeon (jax-ml/jax#38445: an error
line per entry each run, no gain), and another project's crashes loading large entries with
jaxlib < 0.10 on macOS (uwplasma/vmex#142). So a CPU user turns it on knowingly:
`AESTHETICS_JAX_COMPILE_CACHE=1` (the folder below) or a folder; `0` (or off/false/no) turns
it off anywhere. The folder: `$XDG_CACHE_HOME/aesthetics_jax/xla` (`~/.cache/...`). A cache
the user configured for JAX itself (`JAX_COMPILATION_CACHE_DIR`, or `jax.config`) wins. A
folder that cannot be created is skipped with a warning: the command runs as without it.
"""
from __future__ import annotations

import importlib.util
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


# JAX plugins whose presence means JAX will most likely run on an accelerator.
_ACCELERATOR_PLUGINS = ('jax_cuda13_plugin', 'jax_cuda12_plugin', 'jax_rocm7_plugin',
                        'jax_rocm60_plugin', 'libtpu')


def accelerator_likely() -> bool:
  """Whether JAX will run on a GPU/TPU, known without starting it: JAX_PLATFORMS when set,
  else whether an accelerator plugin is installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return any(p.strip() not in ('', 'cpu') for p in platforms.split(','))
  return any(importlib.util.find_spec(m) is not None for m in _ACCELERATOR_PLUGINS)


def chosen_dir() -> Path | None:
  """The folder `configure` would use; None when off (the CPU default) or when the user set
  JAX's own."""
  value = os.environ.get(ENV, '').strip()
  if value.lower() in ('0', 'off', 'false', 'no'):
    return None
  if os.environ.get(JAX_ENV):
    return None
  if 'jax' in sys.modules and sys.modules['jax'].config.jax_compilation_cache_dir:
    return None
  if value.lower() in ('1', 'on', 'true', 'yes'):
    return default_dir()
  if value:
    return Path(value).expanduser()
  return default_dir() if accelerator_likely() else None


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
  # JAX's size bound (LRU eviction) needs filelock (a dependency); without it JAX warns at
  # every compilation and caches nothing, so the bound is left out then (no limit, JAX's own
  # default).
  bounded = importlib.util.find_spec('filelock') is not None
  if 'jax' in sys.modules:  # JAX read its environment at import: set its config instead
    jax = sys.modules['jax']
    jax.config.update('jax_compilation_cache_dir', str(path))
    if bounded:
      jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  else:
    os.environ[JAX_ENV] = str(path)
    if bounded:
      os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(MAX_BYTES))
  return path
