"""The PyTorch formulations a competent user would try, and the best-of selection.

Every reference figure of the benchmark is the BEST of these, not torch's default layout:
memory layout (NCHW 'contiguous' or 'channels_last'), chunking (a Python loop over chunks of
1/2/4/8 images instead of one whole-batch call), the autograd mode (`torch.inference_mode`,
`torch.no_grad`; Grad-CAM needs gradients, so 'grad' there) and `torch.compile` (modes
'default' and 'max-autotune-no-cudagraphs'; guarded: a failure or time-out is recorded as
'failed: <reason>', never fatal; compile time is recorded apart from steady-state figures).

Sets (`--torch_formulations`): 'all' = the whole grid; 'fast' = both layouts, whole batch
and our micro-batch size only, eager. No torch import here: the sections build the callables
(`bench.torch_ref`) and this module names, selects and reports them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping

SETS = ('all', 'fast')
LAYOUTS = ('contiguous', 'channels_last')
CHUNKS = (1, 2, 4, 8)
COMPILE_MODES = ('default', 'max-autotune-no-cudagraphs')
COMPILE_TIMEOUT_S = 900.0   # per torch.compile (2-core CPU: MobileNetV2 ~1-3 min, VGG16 less)
FIRST_CALL_TIMEOUT_S = 300.0  # an eager first call past this is recorded as failed, not timed


@dataclasses.dataclass(frozen=True)
class Formulation:
  """One way of running the same torch computation."""
  layout: str = 'contiguous'       # 'contiguous' (NCHW) | 'channels_last'
  chunk: int = 0                   # images per call (a Python loop); 0 = the whole batch
  grad: str = 'inference_mode'     # 'inference_mode' | 'no_grad' | 'grad' (CAM)
  compile: str = ''                # '' = eager; else a torch.compile mode
  autocast: str = ''               # '' = float32; 'bfloat16' = torch.autocast (CUDA only)
  grads: str = ''                  # hand-written Grad-CAM: 'batched' (is_grads_batched) |
                                   # 'loop' (one autograd.grad per target); '' = not that

  @property
  def name(self) -> str:
    """e.g. 'channels_last_chunk4_inference_mode', 'contiguous_batch_compile_default'."""
    parts = [self.layout, f'chunk{self.chunk}' if self.chunk else 'batch']
    if self.grad != 'grad':
      parts.append(self.grad)
    if self.compile:
      parts.append('compile_' + self.compile.replace('-', '_'))
    if self.autocast:
      parts.append('autocast')
    if self.grads:
      parts.append('grads_' + self.grads)
    return '_'.join(parts)


def _chunks(which: str, batch: int, our_chunk: int) -> list[int]:
  """0 (whole batch) then the chunk sizes below `batch` of the set."""
  sizes = CHUNKS if which == 'all' else ((our_chunk,) if our_chunk else ())
  return [0] + [c for c in sizes if 0 < c < batch]


def check_set(which: str) -> str:
  if which not in SETS:
    raise ValueError(f'torch formulations {which!r}: use one of {", ".join(SETS)}')
  return which


def forward(which: str, batch: int, our_chunk: int, cuda: bool = False) -> list[Formulation]:
  """Inference forward: layouts x chunks under inference_mode; with 'all' also no_grad
  (whole batch) and torch.compile (whole batch, channels_last: inductor picks its own conv
  layouts, so the input layout matters little once compiled). On CUDA also bfloat16
  autocast in both layouts (the bfloat16 reference of our bfloat16 model); chunking, which
  only pays on small CPU caches, is left out there."""
  check_set(which)
  if cuda:
    out = [Formulation(layout, 0, autocast=a) for a in ('', 'bfloat16') for layout in LAYOUTS]
    if which == 'all':
      out += [Formulation('channels_last', 0, 'inference_mode', 'default', a)
              for a in ('', 'bfloat16')]
    return out
  out = [Formulation(layout, c) for layout in LAYOUTS for c in _chunks(which, batch, our_chunk)]
  if which == 'all':
    out += [Formulation(layout, 0, 'no_grad') for layout in LAYOUTS]
    out += [Formulation('channels_last', 0, 'inference_mode', m) for m in COMPILE_MODES]
  return out


def gradcam(which: str, batch: int, our_chunk: int) -> list[Formulation]:
  """pytorch-grad-cam: layouts x chunks, with gradients (inference_mode / no_grad would
  remove the backward pass it needs)."""
  check_set(which)
  return [Formulation(layout, c, 'grad') for layout in LAYOUTS
          for c in _chunks(which, batch, our_chunk)]


def handwritten_gradcam(which: str, batch: int, our_chunk: int,
                        grads: tuple[str, ...] = ('batched',)) -> list[Formulation]:
  """Hand-written torch Grad-CAM (`torch_models.handwritten_gradcam`): layouts x chunks of
  the features' forward under no_grad (the gradients are taken at A, past it), each with the
  `grads` ways of taking the T targets' gradients; with 'all' also inference_mode (whole
  batch) and the features' forward compiled (`torch.compile(features, mode=...)`, every
  COMPILE_MODES, whole batch, channels_last, no_grad: as `forward` screens it; the head and
  gradients at A, a small part of the time, stay eager). One target: 'batched' alone (one
  gradient either way)."""
  check_set(which)
  out = [Formulation(layout, c, 'no_grad', grads=g) for layout in LAYOUTS
         for c in _chunks(which, batch, our_chunk) for g in grads]
  if which == 'all':
    out += [Formulation(layout, 0, 'inference_mode', grads=g) for layout in LAYOUTS
            for g in grads]
    out += [Formulation('channels_last', 0, 'no_grad', m, grads=g) for m in COMPILE_MODES
            for g in grads]
  return out


def with_grads(names: list[str], forms: list[Formulation],
               grads: tuple[str, ...] = ('batched', 'loop')) -> list[Formulation]:
  """The formulations `names` (of `forms`), each with every way of taking the gradients in
  `grads` (the 10-bucket and study runs of the one-target screening's fastest)."""
  by_name = {f.name: f for f in forms}
  return [dataclasses.replace(by_name[n], grads=g) for n in names for g in grads]


# Why formulations of the grid are not tried for a workload (recorded in the JSON).
GRADCAM_NOT_TRIED = {
    'inference_mode/no_grad': 'Grad-CAM needs the backward pass',
    'torch.compile': "pytorch-grad-cam's forward/tensor hooks on the target layer and its "
                     'per-call backward break dynamo graphs; the eager formulations are the '
                     "library's supported path"}

HANDWRITTEN_NOT_TRIED = {
    'grad (a forward hook on the full graph)': 'the gradients are taken at A, so the '
                                               "features' graph is never used; no_grad / "
                                               'inference_mode compute the same maps with '
                                               'less work',
    'torch.compile of the head and gradients': "the features' forward (compiled in the "
                                               "'compile' formulations) is most of the time; "
                                               'the head on A, its autograd.grad and the '
                                               'resize stay eager',
    'torch.compile chunked / NCHW / inference_mode': 'whole batch, channels_last, no_grad '
                                                     'only, as --what=model (1-3 min of '
                                                     'compile each on 2 cores)'}


# The Grad-CAM references (cam, study): run-name prefix -> what the summary calls it. Their
# ratios are against the faster of the two.
LIB, HANDWRITTEN = 'pytorch_grad_cam', 'torch_handwritten'
GRADCAM_REFERENCES = {LIB: 'pytorch-grad-cam', HANDWRITTEN: 'hand-written torch'}


def reference_of(run_name: str | None) -> str:
  """'pytorch-grad-cam' / 'hand-written torch' of a Grad-CAM reference run's name."""
  return next((v for k, v in GRADCAM_REFERENCES.items()
               if (run_name or '').startswith(k + '_')), '?')


TOP_K = {'all': 2, 'fast': 1}  # formulations kept after a screening (10 buckets, study)


def failed(reason: str, **extra: Any) -> dict[str, Any]:
  """The record of a formulation that did not run: {'status': 'failed: <reason>', ...}."""
  return {'status': f'failed: {reason}', 'failed': reason, **extra}


def ok(run: Mapping[str, Any]) -> bool:
  return 'failed' not in run and 'items_per_s' in run


def best(runs: Mapping[str, Mapping[str, Any]]) -> str | None:
  """The name of the fastest run (highest median items/s), failed runs skipped; None if
  none ran."""
  timed = {k: r for k, r in runs.items() if ok(r)}
  if not timed:
    return None
  return max(timed, key=lambda k: timed[k]['items_per_s']['median'])


def top(runs: Mapping[str, Mapping[str, Any]], k: int) -> list[str]:
  """The names of the k fastest runs, fastest first (failed runs skipped)."""
  timed = [n for n, r in runs.items() if ok(r)]
  return sorted(timed, key=lambda n: -runs[n]['items_per_s']['median'])[:k]


def report(runs: Mapping[str, Mapping[str, Any]], prefix: str = '') -> dict[str, Any]:
  """{'tried': {formulation: its figures or {'failed': why}}, 'best': name, 'best_items_per_s'}
  over the runs whose names start with `prefix` (the prefix stripped)."""
  tried = {k[len(prefix):]: dict(r) for k, r in runs.items() if k.startswith(prefix)}
  name = best(tried)
  return {'tried': tried, 'best': name,
          'best_items_per_s': None if name is None else tried[name]['items_per_s']['median']}


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
  """Raises TimeoutError in this (main) thread after `seconds`; elsewhere no limit (signals
  reach only the main thread)."""
  if threading.current_thread() is not threading.main_thread() or seconds <= 0:
    yield
    return

  def on_alarm(signum, frame):
    raise TimeoutError(f'no result after {seconds:.0f} s')
  old = signal.signal(signal.SIGALRM, on_alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def first_calls(fns: Mapping[str, tuple[Formulation, Callable[[], Any]]],
                failures: dict[str, Any], timeout_s: float,
                compile_timeout_s: float = COMPILE_TIMEOUT_S,
                reset: Callable[[], None] = lambda: None) -> tuple[dict[str, Callable[[], Any]],
                                                                   dict[str, float]]:
  """Calls each of `fns` ({run name: (formulation, callable)}) once, guarded
  (`guarded_first_call`; a compiled formulation's first call compiles, so it gets
  `compile_timeout_s`). Returns ({name: callable} of those that ran, {name: compile + first
  run seconds} of the compiled ones); each failure goes to `failures` (printed), and after a
  failed compile `reset()` runs (`torch_ref.reset_compiler`: dynamo's state after one makes
  the next compile fail too)."""
  ran, compile_s = {}, {}
  for name, (f, fn) in fns.items():
    secs, why = guarded_first_call(fn, compile_timeout_s if f.compile else timeout_s)
    if why is not None:
      failures[name] = failed(why, first_call_s=secs)
      print(f'  {name} failed: {why} ({secs:.0f} s)', flush=True)
      if f.compile:
        reset()
      continue
    if f.compile:
      compile_s[name] = secs
      print(f'  torch.compile {name}: compile + first run {secs:.1f} s', flush=True)
    ran[name] = fn
  return ran, compile_s


def guarded_first_call(fn: Callable[[], Any],
                       timeout_s: float = COMPILE_TIMEOUT_S) -> tuple[float, str | None]:
  """(seconds, None) after one call of `fn` (for torch.compile: compile + first run), or
  (seconds, '<Type>: <first line>') if it raised or ran past `timeout_s`.

  Best effort: the alarm interrupts Python code, not a native call or a wait inside a
  library that swallows the exception; a compile that finishes late is kept (and its time
  recorded)."""
  t0 = time.perf_counter()
  try:
    with _alarm(timeout_s):
      fn()
  except Exception as e:  # pylint: disable=broad-except
    msg = (str(e).strip().splitlines() or [''])[0][:200]
    return time.perf_counter() - t0, f'{type(e).__name__}: {msg}'
  return time.perf_counter() - t0, None
