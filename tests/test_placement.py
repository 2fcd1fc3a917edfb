"""bench.placement: the CPUs' round-trip latency the benchmark records beside head-to-head
rounds, and the rounds split by it."""
import os

import pytest

from aesthetics_jax.bench import placement, timing


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs two CPUs to bounce between')
def test_core_latency_measures_and_cleans_up():
  mask = os.sched_getaffinity(0)
  cl = placement.CoreLatency(batches=3, trips=50)
  path, proc = cl._path, cl._proc
  values = [cl.measure() for _ in range(3)]
  assert all(isinstance(v, float) and 0 < v < 1e6 for v in values), values
  assert os.sched_getaffinity(0) == mask          # pinned for the measurement only
  cl.close()
  assert proc.returncode == 0 and not os.path.exists(path)
  assert cl.measure() is None
  cl.close()                                       # twice is fine


def test_core_latency_without_two_cpus_measures_nothing(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0})
  with placement.probe(True) as measure:
    assert measure() is None
  with placement.probe(False) as measure:
    assert measure is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs two CPUs to bounce between')
def test_a_dead_helper_gives_no_figure_instead_of_a_hang():
  with placement.CoreLatency(batches=2, trips=10) as cl:
    assert cl.measure() is not None
    cl._proc.kill()
    cl._proc.wait()
    assert cl.measure() is None


def test_is_far_reads_values_against_the_runs_fastest():
  assert placement.is_far([180.0, 200.0, 300.0, None]) == [False, False, True, None]
  assert placement.is_far([None, None]) == [None, None]
  assert placement.is_far([400.0, 410.0]) == [False, False]  # all far looks all near


def test_head_to_head_splits_rounds_by_placement(monkeypatch):
  # A fake clock: ours costs 1 unit and 2.5 when the CPUs are far apart; theirs always 3.
  # The probe says far before calls 3-6 (round 1 and round 2's first call).
  now, state = [0.0], {'far': False}
  probes = iter([100.0, 100.0, 300.0, 300.0, 300.0, 110.0, 100.0, 100.0])

  def probe():
    v = next(probes)
    state['far'] = v > 150
    return v

  def ours():
    now[0] += 2.5 if state['far'] else 1.0

  def theirs():
    now[0] += 3.0

  def timed(fn):
    start = now[0]
    fn()
    return now[0] - start

  monkeypatch.setattr(timing, 'timed', timed)
  h = timing.head_to_head(ours, theirs, items=6, repeats=4, placement=probe)
  pl = h['placement']
  # rounds: (ours, theirs), (theirs, ours), (ours, theirs), (theirs, ours)
  assert pl['round_trip_ns'] == {'ours': [100.0, 300.0, 300.0, 100.0],
                                 'theirs': [100.0, 300.0, 110.0, 100.0]}
  assert pl['far_rounds'] == [False, True, True, False]
  assert pl['near']['rounds'] == 2 and pl['near']['ratio'] == 3.0
  assert pl['far']['rounds'] == 2 and pl['far']['ratio'] == pytest.approx(1.2)
  assert pl['near']['ours_items_per_s'] == 6.0 and pl['far']['theirs_items_per_s'] == 2.0
  note = timing.placement_note(h)
  assert note == '; CPUs far apart in 2 of 4 rounds (ratio near 3.00, far 1.20)'
  assert 'placement' not in timing.head_to_head(ours, theirs, items=6, repeats=2)
