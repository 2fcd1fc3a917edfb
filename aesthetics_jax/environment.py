"""What a run's numbers were computed on: CPU, vector instructions, devices, library versions.

Why this is recorded next to every training and evaluation: on XLA:CPU the same code, data
and seed trained the demo's models to different accuracies and different maps on a CPU with
AVX-512 and on the same CPU limited to AVX2 (`--xla_cpu_max_isa=AVX2`; README, "The demo's
figures depend on the CPU"): XLA generates other vector code, the last bits of the float sums
differ, and training amplifies them. A figure without its machine cannot be compared with
another, and a run resumed on another machine is not the run an uninterrupted one would be.

- `describe()`: the record (JSON-ready dict) for this process.
- `summary(rec)`: one line for logs and the report.
- `differences(old, new)`: what changed between two records that changes the numbers.
- `record_run(workdir, step)`: appends this process's record to `W/environment.json`
  (atomically) and returns the differences from the record before, for a warning.

No JAX at import: the flag checks and the report read records without starting a backend.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Mapping

from aesthetics_jax import io

FILE_NAME = 'environment.json'
MAX_RUNS = 100  # records kept in environment.json (each start or resume adds one)
# Libraries whose versions change the numbers (kernels, initialisers, optimiser maths, decode).
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'pillow',
            'tensorflow-datasets')
# SIMD / matrix extensions that change XLA:CPU, oneDNN and libjpeg-turbo speed.
CPU_FLAG_PREFIXES = ('avx', 'amx', 'fma', 'f16c', 'sse4', 'vnni', 'bmi2')
# CPU features whose presence changes which kernels XLA / oneDNN pick (reported as booleans).
KEY_CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16',
                 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8', 'avx_vnni')
# x86 vector ISAs in the order XLA:CPU's --xla_cpu_max_isa ranks them (widest last), with the
# /proc/cpuinfo flag that says the CPU has each.
_X86_ISAS = (('SSE4_2', 'sse4_2'), ('AVX', 'avx'), ('AVX2', 'avx2'), ('AVX512', 'avx512f'))
MAX_ISA_FLAG = '--xla_cpu_max_isa'
# What, when it differs between two records, makes results differ beyond the last bits.
_NUMERIC_KEYS = ('backend', 'device_kind', 'num_devices', 'num_processes', 'vector_isa',
                 'cpu_microarchitecture')

# (vendor, family) -> [(first model, last model, name)]: the generations that cloud 2-core VMs
# come in; model numbers from the vendors' revision guides. Unlisted CPUs get no name.
_MICROARCHITECTURES = {
    ('AuthenticAMD', 23): [(0x00, 0x2F, 'Zen / Zen+'), (0x30, 0x3F, 'Zen 2 (Rome)'),
                           (0x60, 0x7F, 'Zen 2')],
    ('AuthenticAMD', 25): [(0x00, 0x0F, 'Zen 3 (Milan)'), (0x10, 0x1F, 'Zen 4 (Genoa)'),
                           (0x20, 0x5F, 'Zen 3'), (0x60, 0x7F, 'Zen 4'),
                           (0xA0, 0xAF, 'Zen 4c (Bergamo)')],
    ('AuthenticAMD', 26): [(0x00, 0xFF, 'Zen 5')],
    ('GenuineIntel', 6): [(0x55, 0x55, 'Skylake-SP / Cascade Lake'),
                          (0x6A, 0x6C, 'Ice Lake-SP'), (0x8F, 0x8F, 'Sapphire Rapids'),
                          (0xCF, 0xCF, 'Emerald Rapids'), (0xAD, 0xAE, 'Granite Rapids')],
}


def microarchitecture(vendor: str | None, family: Any, model: Any) -> str | None:
  """The core generation of a /proc/cpuinfo (vendor_id, cpu family, model), e.g.
  ('AuthenticAMD', 25, 17) -> 'Zen 4 (Genoa)'; None when not in the table."""
  for lo, hi, name in _MICROARCHITECTURES.get((vendor, family), []):
    if isinstance(model, int) and lo <= model <= hi:
      return name
  return None


def package_version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpuinfo(text: str | None = None) -> dict[str, Any]:
  """Model, clock (median over cores), cache size and SIMD flags of /proc/cpuinfo (or of
  `text`); {} where there is none (not Linux)."""
  if text is None:
    try:
      with open('/proc/cpuinfo') as f:
        text = f.read()
    except OSError:
      return {}
  fields: dict[str, list[str]] = {}
  for line in text.splitlines():
    key, sep, value = line.partition(':')
    if sep:
      fields.setdefault(key.strip(), []).append(value.strip())
  out: dict[str, Any] = {}
  if 'model name' in fields:
    out['cpu_model'] = fields['model name'][0]
  mhz = []
  for v in fields.get('cpu MHz', ()):
    try:
      mhz.append(float(v))
    except ValueError:
      pass
  if mhz:
    out['cpu_mhz'] = statistics.median(mhz)
  if 'cache size' in fields:
    out['cpu_cache'] = fields['cache size'][0]
  # 'AMD EPYC' alone names Zen 3 (AVX2) and Zen 4 (AVX-512, BF16) alike: the numbers tell.
  ident = {k: fields[f][0] for k, f in (('cpu_vendor', 'vendor_id'), ('cpu_family', 'cpu family'),
                                         ('cpu_model_number', 'model'),
                                         ('cpu_stepping', 'stepping')) if f in fields}
  for k in ('cpu_family', 'cpu_model_number', 'cpu_stepping'):
    if ident.get(k, '').isdigit():
      ident[k] = int(ident[k])
  out.update(ident)
  arch = microarchitecture(ident.get('cpu_vendor'), ident.get('cpu_family'),
                           ident.get('cpu_model_number'))
  if arch:
    out['cpu_microarchitecture'] = arch
  if 'flags' in fields:
    flags = set(fields['flags'][0].split())
    out['cpu_flags'] = sorted(f for f in flags if f.startswith(CPU_FLAG_PREFIXES))
    out['cpu_features'] = {f: f in flags for f in KEY_CPU_FLAGS}
  if mhz:
    out['cpu_mhz_min_max'] = [min(mhz), max(mhz)]
  return out


def vector_isa(cpu_flags: list[str] | None, xla_flags: str) -> str | None:
  """The widest x86 vector ISA XLA:CPU generates code for: the CPU's widest, lowered to
  `--xla_cpu_max_isa` where XLA_FLAGS sets a narrower one. None off x86 or without cpuinfo.

  >>> vector_isa(['avx', 'avx2', 'avx512f', 'sse4_2'], '--xla_cpu_max_isa=AVX2')
  'AVX2'
  """
  if not cpu_flags:
    return None
  names = [name for name, flag in _X86_ISAS if flag in cpu_flags]
  if not names:
    return None
  widest = names[-1]
  for part in xla_flags.split():
    key, _, value = part.partition('=')
    if key == MAX_ISA_FLAG and value.upper() in names:
      widest = min(widest, value.upper(), key=[n for n, _ in _X86_ISAS].index)
  return widest


def describe() -> dict[str, Any]:
  """This process's record: time, host, CPU, vector ISA, JAX backend and devices, versions and
  the XLA flags in effect. Starts JAX's backend (call it where the run has started it)."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  cpu = cpuinfo()
  xla_flags = os.environ.get('XLA_FLAGS', '')
  rec: dict[str, Any] = {
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'hostname': platform.node(), 'platform': platform.platform(),
      'python': sys.version.split()[0],
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind if devices else None,
      'num_devices': jax.device_count(), 'num_processes': jax.process_count(),
      'cpu_model': cpu.get('cpu_model') or platform.processor() or platform.machine(),
      'cpu_microarchitecture': cpu.get('cpu_microarchitecture'),
      'cpu_count': os.cpu_count(),
      'vector_isa': vector_isa(cpu.get('cpu_flags'), xla_flags),
      'avx512_bf16': (cpu.get('cpu_features') or {}).get('avx512_bf16'),
      'xla_flags': xla_flags,
      'versions': {p: package_version(p) for p in PACKAGES},
  }
  return rec


def summary(rec: Mapping[str, Any]) -> str:
  """One line, e.g. 'cpu (2 devices): AMD EPYC 9B14, Zen 4 (Genoa), AVX512 vector code;
  jax 0.10.2, jaxlib 0.10.2, flax 0.12.6'."""
  v = rec.get('versions') or {}
  where = f'{rec.get("backend")} ({rec.get("num_devices")} device' + (
      's' if rec.get('num_devices') != 1 else '') + ')'
  if rec.get('num_processes', 1) not in (None, 1):
    where += f' x {rec.get("num_processes")} processes'
  what = [str(rec.get('cpu_model') or 'unknown CPU')]
  if rec.get('cpu_microarchitecture'):
    what.append(str(rec['cpu_microarchitecture']))
  if rec.get('vector_isa') and rec.get('backend') == 'cpu':  # the host's ISA computes nothing
    what.append(f'{rec["vector_isa"]} vector code')
  if rec.get('backend') not in (None, 'cpu') and rec.get('device_kind'):
    what.insert(0, str(rec['device_kind']))
  libs = ', '.join(f'{p} {v[p]}' for p in ('jax', 'jaxlib', 'flax') if v.get(p))
  return f'{where}: {", ".join(what)}; {libs}'


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """What differs between two records that changes a run's numbers, e.g.
  ['vector_isa AVX512 -> AVX2', 'jaxlib 0.10.2 -> 0.10.3']; [] when nothing does."""
  out = [f'{k} {old.get(k)} -> {new.get(k)}' for k in _NUMERIC_KEYS
         if old.get(k) != new.get(k)]
  ov, nv = old.get('versions') or {}, new.get('versions') or {}
  out += [f'{p} {ov.get(p)} -> {nv.get(p)}' for p in PACKAGES if ov.get(p) != nv.get(p)]
  return out


def read_runs(workdir: io.PathLike) -> list[dict]:
  """The records of `W/environment.json`, oldest first; [] if missing or unreadable (it is a
  record for people, never a reason to stop a run)."""
  p = io.path(workdir) / FILE_NAME
  try:
    runs = json.loads(p.read_text()).get('runs')
  except (OSError, ValueError, AttributeError):
    return []
  return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def record_run(workdir: io.PathLike, step: int, command: str,
               num_devices: int | None = None) -> tuple[dict, list[str]]:
  """Appends this process's record (started at `step`, by `command`) to W/environment.json.

  `num_devices`: the devices the run computes on, where fewer than JAX's (training takes one
  per process of the CPU devices `cpu_backend` adds per core: recording JAX's count, a resume
  on another device count went unwarned); not compared with an earlier record of JAX's
  count. Returns (the record, what differs from the latest
  earlier record of the same command): a resumed run that computes on other hardware or
  libraries goes on, but is not the run an uninterrupted one would have been, and the caller
  says so."""
  rec = {'command': command, 'step': int(step), **describe()}
  if num_devices is not None:
    rec['num_devices'], rec['num_devices_of'] = int(num_devices), 'run'
  runs = read_runs(workdir)
  before = next((r for r in reversed(runs) if r.get('command') == command), None)
  changed = differences(before, rec) if before is not None else []
  if num_devices is not None and before is not None and before.get('num_devices_of') != 'run':
    # Recorded before the run's own count was: JAX's (one CPU device per core) against the
    # run's warned 'num_devices 2 -> 1' at every resume of a workdir trained before.
    changed = [c for c in changed if not c.startswith('num_devices ')]
  io.atomic_write_json(io.path(workdir) / FILE_NAME, {'runs': (runs + [rec])[-MAX_RUNS:]},
                       indent=1)
  return rec, changed
