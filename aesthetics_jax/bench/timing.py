"""Interleaved timing: JAX and reference runs alternate, so machine noise hits both alike."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aesthetics_jax.bench import placement


def summarize(values: list[float]) -> dict[str, float]:
  """{'median', 'min', 'max'} of a non-empty list."""
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def median_interval(values: list[float], level: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> list[float]:
  """[lo, hi]: bootstrap percentile interval of the median of `values` (seeded, so a JSON
  can be recomputed). How far the median of a few noisy rounds can be trusted."""
  v = np.asarray(values, np.float64)
  draws = np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))
  medians = np.median(v[draws], axis=1)
  tail = (1.0 - level) / 2
  return [float(np.quantile(medians, tail)), float(np.quantile(medians, 1.0 - tail))]


def summarize_rounds(ratios: list[float]) -> dict[str, Any]:
  """`summarize` of per-round ratios plus 'ci95', the 95% `median_interval` of the median."""
  return dict(summarize(ratios), ci95=median_interval(ratios))


def timed(fn: Callable[[], Any]) -> float:
  """Seconds of one call of `fn` (which must block until its result is ready)."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def measure(fn: Callable[[], Any], *, items: int, repeats: int,
            warmup: int = 1) -> dict[str, Any]:
  """Times `fn()` (which processes `items` items) `repeats` times after `warmup` untimed
  calls: {'items', 'repeats', 'seconds': {median,min,max}, 'items_per_s': {median,min,max}}."""
  for _ in range(warmup):
    fn()
  secs = [timed(fn) for _ in range(repeats)]
  return {'items': items, 'repeats': repeats, 'seconds': summarize(secs),
          'items_per_s': summarize([items / s for s in secs])}


def interleaved(fns: Mapping[str, Callable[[], Any]], *, items: int | Mapping[str, int],
                repeats: int, warmup: int = 1, self_timed: bool = False,
                settle_s: float = 0.0,
                probe: Callable[[], Any] | None = None) -> dict[str, dict[str, Any]]:
  """Times every `fns[name]()` `repeats` times, one call of each per round.

  The first call of each is timed on its own (`first_call_s`: jit compile + run for JAX, lazy
  initialisation for torch); then `warmup - 1` more untimed rounds, then the timed rounds. The
  order within a round alternates (forward, then reversed) so neither side always runs first.
  Each fn must block until its result is ready (`block_until_ready`, numpy output).
  `self_timed`: each fn returns the seconds of its own timed part (it may do untimed work
  first). `settle_s`: an untimed sleep before every timed call, for work a previous call left
  running in the background (a pipeline refilling its queue) to end outside the next window.
  `probe`: called untimed right before every timed call; its values go to 'probe_each' (the
  machine's state at each call, e.g. `placement.CoreLatency.measure`).

  Returns: {name: {'first_call_s', 'items', 'repeats', 'seconds': {median,min,max},
  'items_per_s': {median,min,max}, 'each_s': [seconds of round 0, 1, ...]
  (, 'probe_each': [probe value before round 0, 1, ...])}}.
  """
  names = list(fns)
  n_items = {k: (items[k] if isinstance(items, Mapping) else items) for k in names}

  probed: dict[str, list[Any]] = {k: [] for k in names}

  def one(k: str) -> float:
    if settle_s > 0:
      time.sleep(settle_s)
    if probe is not None:
      probed[k].append(probe())
    return float(fns[k]()) if self_timed else timed(fns[k])
  first = {k: timed(fns[k]) for k in names}
  for _ in range(max(0, warmup - 1)):
    for k in names:
      fns[k]()
  secs: dict[str, list[float]] = {k: [] for k in names}
  for r in range(repeats):
    for k in (names if r % 2 == 0 else names[::-1]):
      secs[k].append(one(k))
  out = {k: _figures(first[k], n_items[k], secs[k]) for k in names}
  if probe is not None:
    for k in names:
      out[k]['probe_each'] = probed[k]
  return out


def _figures(first_call_s: float, items: int, each_s: list[float]) -> dict[str, Any]:
  """One timed function's figures: {'first_call_s', 'items', 'repeats', 'seconds':
  {median,min,max}, 'items_per_s': {median,min,max}, 'each_s'}."""
  return {'first_call_s': first_call_s, 'items': items, 'repeats': len(each_s),
          'seconds': summarize(each_s), 'items_per_s': summarize([items / s for s in each_s]),
          'each_s': each_s}


def bracketed(reference: Callable[[], Any], fns: Mapping[str, Callable[[], Any]], *,
              items: int, repeats: int, warmup: int = 1, self_timed: bool = False,
              settle_after: Mapping[str, float] | None = None) -> dict[str, Any]:
  """Times each of `fns` against `reference`, every call of them between two reference calls.

  A round runs reference, f1, reference, f2, ..., reference (the order of `fns` alternates
  forward / reversed between rounds); a call of `fns[k]` is judged against the mean seconds of
  the two reference calls on either side of it. A drift in the shared machine's speed over a
  round (tens of seconds here) thus cancels to first order, where pairing every call with one
  reference call per round leaves in the distance between them. First calls and `warmup - 1`
  untimed rounds as in `interleaved`. `self_timed`: as in `interleaved`. `settle_after[k]`: an
  untimed sleep after every call of `k` (its pipeline refilling must not run into the next
  timed call).

  Returns {'runs': {'reference' and each name: `interleaved`'s figures (the reference's over
  all its calls)}, 'over_reference': {name: per-round ratios, its images/s over the mean of
  its two neighbours'}}.
  """
  settle = dict(settle_after or {})
  names = list(fns)

  def call(fn: Callable[[], Any]) -> float:
    return float(fn()) if self_timed else timed(fn)

  def run(k: str) -> float:
    s = call(fns[k])
    if settle.get(k, 0.0) > 0:
      time.sleep(settle[k])
    return s
  first = {'reference': timed(reference), **{k: timed(fns[k]) for k in names}}
  for _ in range(max(0, warmup - 1)):
    for fn in (reference, *fns.values()):
      fn()
  ref_s: list[float] = []
  secs: dict[str, list[float]] = {k: [] for k in names}
  ratios: dict[str, list[float]] = {k: [] for k in names}
  for r in range(repeats):
    before = call(reference)
    ref_s.append(before)
    for k in (names if r % 2 == 0 else names[::-1]):
      s = run(k)
      after = call(reference)
      ref_s.append(after)
      secs[k].append(s)
      ratios[k].append(((before + after) / 2) / s)  # same items: rate ratio = seconds ratio
      before = after
  runs = {'reference': _figures(first['reference'], items, ref_s),
          **{k: _figures(first[k], items, secs[k]) for k in names}}
  return {'runs': runs, 'over_reference': ratios}


def head_to_head(ours: Callable[[], Any], theirs: Callable[[], Any], *, items: int,
                 repeats: int, placement: Callable[[], float | None] | None = None
                 ) -> dict[str, Any]:
  """Our run against one reference: one untimed call of each, then `repeats` rounds of one
  call each, the order alternating.

  The headline is the median of the per-round ratios (their seconds / ours in the same
  round): the two calls of a round run back to back, so a change in the shared machine's
  speed that lasts longer than a round cancels out, where medians of separate calls keep it.
  Used to confirm a reference formulation that won a screening over many: the winner's own
  screening median is biased upwards (the maximum of several noisy medians), the re-measured
  one is not.

  `placement` (`placement.CoreLatency.measure`): the two CPUs' round-trip latency before
  every call, and the rounds split by it (`placement_split`): a VM's vCPUs sharing an L3 or
  not changes our fine-grained two-thread runs far more than the reference's.

  Returns {'ours', 'theirs': `interleaved`'s figures, 'ratio_per_round': {median,min,max,
  ci95}, 'ratio': the median per-round ratio (x faster than the reference)
  (, 'placement': `placement_split`'s)}.
  """
  res = interleaved({'ours': ours, 'theirs': theirs}, items=items, repeats=repeats, warmup=1,
                    probe=placement)
  per_round = [t / o for o, t in zip(res['ours']['each_s'], res['theirs']['each_s'])]
  out = {'ours': res['ours'], 'theirs': res['theirs'],
         'ratio_per_round': summarize_rounds(per_round),
         'ratio': statistics.median(per_round)}
  if placement is not None:
    out['placement'] = placement_split(res['ours'], res['theirs'], per_round)
  return out


def placement_split(ours: Mapping[str, Any], theirs: Mapping[str, Any],
                    per_round: list[float]) -> dict[str, Any]:
  """Head-to-head rounds split by where the machine had put the two CPUs: 'far' rounds are
  those where the round trip before either call was over `placement.FAR_FACTOR` x the run's
  fastest. {'round_trip_ns': {'ours', 'theirs': per call}, 'far_rounds': [bool], 'near' /
  'far': {'rounds', 'ratio' (median per-round ratio), 'ours_items_per_s',
  'theirs_items_per_s' (medians)} or None where no round was so}."""
  po, pt = list(ours['probe_each']), list(theirs['probe_each'])
  flags = placement.is_far(po + pt)
  fo, ft = flags[:len(po)], flags[len(po):]
  far = [None if a is None or b is None else bool(a or b) for a, b in zip(fo, ft)]

  def part(want: bool) -> dict[str, Any] | None:
    idx = [i for i, f in enumerate(far) if f is want]
    if not idx:
      return None
    return {'rounds': len(idx), 'ratio': statistics.median(per_round[i] for i in idx),
            'ours_items_per_s': statistics.median(ours['items'] / ours['each_s'][i] for i in idx),
            'theirs_items_per_s': statistics.median(theirs['items'] / theirs['each_s'][i]
                                                    for i in idx)}
  return {'round_trip_ns': {'ours': po, 'theirs': pt}, 'far_rounds': far,
          'near': part(False), 'far': part(True)}


def placement_note(h2h: Mapping[str, Any]) -> str:
  """'; CPUs far apart in k of n rounds (ratio near r1, far r2)' of a head to head with
  placement figures; '' without."""
  pl = h2h.get('placement')
  if not pl or all(f is None for f in pl['far_rounds']):
    return ''
  n = sum(f is not None for f in pl['far_rounds'])
  k = sum(bool(f) for f in pl['far_rounds'])
  parts = [f'{w} {pl[w]["ratio"]:.2f}' for w in ('near', 'far') if pl.get(w)]
  return f'; CPUs far apart in {k} of {n} rounds (ratio {", ".join(parts)})'


def confirm(res: dict[str, Any], name: str, ratio_key: str, fns: Mapping[str, Callable[[], Any]],
            ours: str, theirs: str | Sequence[str], *, items: int, repeats: int, label: str,
            placement: Callable[[], float | None] | None = None) -> str | None:
  """Re-measures `fns[ours]` against the screening's fastest references `fns[theirs]` (one
  name, or several, fastest first), each `head_to_head` over `repeats` rounds, and keeps the
  one ours beats least: `res[ratio_key]` becomes that median per-round ratio, the screening's
  moves to `res[ratio_key + '_screening']`, the rounds to `res['confirmation'][name]` (with
  'candidates': {run: its ratio} when there were several). The screening's winner is the best
  of many noisy medians (3 rounds of calls that run at two speeds on a shared VM), so its
  own figure is biased upwards, and a runner-up within the noise may be the faster one.
  Returns the reference kept; nothing is done (None) when `repeats` <= 0."""
  if repeats <= 0:
    return None
  cands = [theirs] if isinstance(theirs, str) else list(theirs)
  h2hs = {t: head_to_head(fns[ours], fns[t], items=items, repeats=repeats,
                          placement=placement) for t in cands}
  kept = min(cands, key=lambda t: h2hs[t]['ratio'])  # the fastest reference, head to head
  h2h = h2hs[kept]
  res.setdefault('confirmation', {})[name] = {'ours_run': ours, 'torch_run': kept, **h2h}
  if len(cands) > 1:
    res['confirmation'][name]['candidates'] = {t: h2hs[t]['ratio'] for t in cands}
  res[ratio_key + '_screening'] = res[ratio_key]
  res[ratio_key] = h2h['ratio']
  others = '; '.join(f'vs {t}: {h2hs[t]["ratio"]:.2f}' for t in cands if t != kept)
  print(f"  {label}: head to head, {repeats} rounds: ours {fmt_rate(h2h['ours']).strip()}, "
        f"reference {kept} {fmt_rate(h2h['theirs']).strip()}; ratio {h2h['ratio']:.2f}"
        f"{confirmation_note(res, name, ratio_key, rounds=False)}{placement_note(h2h)}"
        + (f' (kept: the lowest; {others})' if others else ''), flush=True)
  return kept


def confirmation_note(res: Mapping[str, Any], name: str, ratio_key: str,
                      rounds: bool = True) -> str:
  """' (95% interval lo-hi; per round min-max; screening r)' of `confirm`'s re-measurement
  (with `rounds`, ', head to head N rounds' before it); '' when there was none."""
  conf = res.get('confirmation', {}).get(name)
  if not conf:
    return ''
  pr = conf['ratio_per_round']
  ci = (f"95% interval {pr['ci95'][0]:.2f}-{pr['ci95'][1]:.2f}; " if 'ci95' in pr
        else '')  # JSONs written before the interval was recorded have none
  head = f", head to head {conf['ours']['repeats']} rounds" if rounds else ''
  return (f"{head} ({ci}per round {pr['min']:.2f}-{pr['max']:.2f}; "
          f"screening {res[ratio_key + '_screening']:.2f}"
          f"{placement_note(conf) if rounds else ''})")


def ratio(fast: Mapping[str, Any], slow: Mapping[str, Any], key: str = 'items_per_s') -> float:
  """Median throughput of `fast` / median throughput of `slow` (x faster)."""
  return float(fast[key]['median'] / slow[key]['median'])


def fmt_rate(r: Mapping[str, Any], unit: str = 'img/s') -> str:
  s = r['items_per_s']
  return f"{s['median']:8.1f} {unit} ({s['min']:.1f}-{s['max']:.1f})"


def print_runs(runs: Mapping[str, Mapping[str, Any]]) -> None:
  """One line per run: images/s (median, min-max) and the first call's seconds."""
  width = max([46] + [len(n) for n in runs])
  for name, r in runs.items():
    if 'items_per_s' not in r:   # a formulation that did not run
      print(f'  {name:{width}s} {r.get("status", "not run")}', flush=True)
      continue
    print(f'  {name:{width}s} {fmt_rate(r)}  first call {r["first_call_s"]:.1f} s', flush=True)
