"""Per-op time of a jitted call on XLA:CPU/GPU, from a `jax.profiler` trace (no TensorBoard).

`top_ops(fn, calls=2)` traces `calls` runs of `fn` (already compiled) and returns the
slowest XLA thunks, averaged per call — what `--profile` prints to show what bounds a figure
(e.g. MobileNetV2's early 1x1 convs, memory bound on a whole batch).
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable

import jax

_SKIP = ('ThunkExecutor', '$', 'PjitFunction', 'PjRt', 'Execute')


def op_names(hlo_text: str) -> dict[str, str]:
  """{HLO instruction name: the JAX op it came from} from compiled HLO text
  (`jitted.lower(...).compile().as_text()`), e.g. 'ynn_fusion.32' →
  'features_2/expand/conv/conv_general_dilated'."""
  out = {}
  for m in re.finditer(r'%([\w.\-]+) = [^\n]*?op_name="([^"]+)"', hlo_text):
    out[m[1]] = '/'.join(m[2].split('/')[-4:])
  return out


def top_ops(fn: Callable[[], Any], calls: int = 2, n: int = 12,
            names: dict[str, str] | None = None) -> list[dict[str, Any]]:
  """[{'op', 'source', 'ms_per_call', 'share'}] for the `n` slowest ops of `fn()` (which must
  block); `names` (from `op_names`) says which layer each op is."""
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(calls):
        fn()
    files = glob.glob(os.path.join(d, '**', '*perfetto_trace.json.gz'), recursive=True)
    if not files:
      return []
    with gzip.open(files[0]) as f:
      doc = json.load(f)
  events = doc['traceEvents'] if isinstance(doc, dict) else doc
  total: collections.Counter = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e and not str(e.get('name', '')).startswith(_SKIP):
      total[e['name']] += e['dur']
  all_us = sum(total.values()) or 1.0
  names = names or {}
  return [{'op': k, 'source': names.get(k, ''), 'ms_per_call': v / 1e3 / calls,
           'share': v / all_us} for k, v in total.most_common(n)]
