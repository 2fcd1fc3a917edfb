"""Pre-flight of a big jitted computation: XLA's own estimate of its memory against what the
devices have, before its first batch runs (`check`, `call`).

The config checks count a batch's raw images (`train.config_checks`); its activations can need
far more. VGG16 at 224 px with --config.eval.batch_size=1024 holds 154 MB of images and its
evaluation forward 9.1 GB of temporaries per CPU device (two on 2 cores): on a 2-core 24 GB
machine `aesthetics-evaluate` decoded and compiled for 2 minutes, then stopped with 'INTERNAL:
Error dispatching computation: Out of memory allocating 9093251384 bytes' (exit 1); a training
batch of 1024 asked for 205 GB once its first step was compiled. An allocation below the RAM
but above what is free is granted, and the kernel's OOM killer ends the process without a word.
Now such a batch is one line naming the flag and about the largest batch that fits, exit 2.

`check` compiles the function for the batch's arguments: the compilation its first call would
do anyway, since `jax.jit` then reuses the trace and the executable (jax 0.10: the call after
`lower(...).compile()` dispatched in 0.7 ms where a fresh jit compiled for 2.2 s; evaluate
traces, lowers and compiles the same functions, as many times, with the checks as without).
The estimate: temporaries, outputs not aliased to donated inputs and generated code (the inputs
are in memory already). What the devices have: an accelerator's `bytes_limit - bytes_in_use`;
on CPU MemAvailable, shared by every CPU device of the computation (each allocates its own
temporaries at once). A backend without an estimate is not checked.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Sequence

from aesthetics_jax import cpu_backend


class BatchMemoryError(ValueError):
  """One line: the batch flag to lower, what it needs, what the machine has, what fits.
  Raised before the computation ran: a bad value for this machine (a usage error, exit 2),
  caught where the commands catch their ValueErrors."""
  before_work = True


def available_memory(device) -> int | None:
  """Bytes `device` can still allocate: an accelerator's limit less what it holds; on CPU the
  kernel's MemAvailable (RAM the process can get without swapping), else all RAM; None where
  unknown."""
  if device.platform != 'cpu':
    try:
      stats = device.memory_stats() or {}
    except (NotImplementedError, RuntimeError):
      stats = {}
    if 'bytes_limit' not in stats:
      return None
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return cpu_backend.physical_memory()


def needed_bytes(compiled) -> int | None:
  """Bytes one device allocates to run `compiled` (a `jax.stages.Compiled`) beyond its
  inputs; None where the backend gives no estimate."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if stats is None:
    return None
  get = lambda name: int(getattr(stats, name, 0) or 0)  # noqa: E731
  return (get('temp_size_in_bytes') + get('output_size_in_bytes') - get('alias_size_in_bytes')
          + get('generated_code_size_in_bytes'))


def _devices(compiled) -> list:
  """This process's devices the computation runs on (a multi-process job's others are on
  other hosts, each checked by its own process)."""
  shardings = [s for s in _leaves(compiled.input_shardings) if hasattr(s, 'device_set')]
  return sorted({d for s in shardings for d in s.addressable_devices}, key=lambda d: d.id)


def _leaves(tree) -> list:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, 'device_set'))


def problem(compiled, flag: str, batch: int) -> str | None:
  """The one line when `compiled`, run on a batch of `batch` (`flag`'s value), needs more
  memory than its devices have; else None (also when either is unknown)."""
  need = needed_bytes(compiled)
  devices = _devices(compiled)
  if not need or not devices:
    return None
  cpu = [d for d in devices if d.platform == 'cpu']
  if cpu:  # the CPU devices share the RAM
    need, have = need * len(cpu), available_memory(cpu[0])
  else:  # each accelerator its own memory: the fullest decides
    frees = [available_memory(d) for d in devices]
    if any(f is None for f in frees):
      return None
    have = min(frees)
  if have is None or need <= have:
    return None
  # Temporaries grow about linearly in the batch (weights' gradients and the like do not); a
  # tenth is left for the rest of the run (decoded images, results on the host).
  fits = batch * (have * 9 // 10) // need
  where = 'RAM available' if cpu else f'free on {devices[0].platform.upper()} {devices[0].id}'
  fit = (f'lower it to about {fits}' if fits >= 1 else
         'even a batch of 1 may not fit: free memory or use a larger machine')
  return (f'{flag}: a batch of {batch} images needs about {need / 2**30:.1f} GiB (XLA\'s '
          f'estimate) and this machine has {max(have, 0) / 2**30:.1f} GiB {where}; {fit}')


# Per function, the argument signatures it was checked for and fitted: a check once compiled
# still lowered for ~30 ms (a MobileNetV2 forward), its key takes ~0.2 ms.
_FITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(args: Sequence[Any], kwargs: dict) -> tuple:
  import jax  # pylint: disable=import-outside-toplevel
  leaves = jax.tree.leaves((args, kwargs))
  return tuple((x.shape, x.dtype, x.sharding) if hasattr(x, 'sharding') else
               (type(x), getattr(x, 'shape', None) or x) for x in leaves)


def check(fn: Callable, args: Sequence[Any], *, flag: str, batch: int,
          kwargs: dict | None = None) -> None:
  """Raises BatchMemoryError (its line: `problem`) when the `jax.jit` function `fn` cannot
  run on `args` (`kwargs`: its static keyword arguments) in this machine's memory. Call it
  before the first call with these shapes: `fn(*args)` then reuses this compilation. A
  function that is not jitted is not checked; one checked for these shapes is not again."""
  lower = getattr(fn, 'lower', None)
  if lower is None:
    return
  kwargs = kwargs or {}
  try:
    fitted = _FITTED.setdefault(fn, set())
  except TypeError:  # not weakly referable: checked every time
    fitted = set()
  key = _signature(args, kwargs)
  if key in fitted:
    return
  line = problem(lower(*args, **kwargs).compile(), flag, batch)
  if line:
    raise BatchMemoryError(line)
  fitted.add(key)


def call(fn: Callable, *args, flag: str, batch: int, **kwargs) -> Any:
  """`fn(*args, **kwargs)` after `check`."""
  check(fn, args, flag=flag, batch=batch, kwargs=kwargs)
  return fn(*args, **kwargs)
