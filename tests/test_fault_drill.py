"""launch/fault_drill.py: its classifier, and a few of its cheapest cases run for real."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import fault_drill  # noqa: E402  pylint: disable=wrong-import-position

CHEAP = {'bad --config argument (train)': 'one-line',
         'misspelled override (evaluate)': 'one-line',
         'misspelled override (train)': 'one-line'}


def test_classifier_labels():
  tb = ('I1130 noise\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        'ValueError: boom\n')
  assert fault_drill.classify('fail', 1, '', tb) == 'traceback'
  assert fault_drill.classify('ok', 0, '', tb) == 'traceback'
  assert fault_drill.classify('fail', 2, '', 'predict: x.jpg: not an image\n') == 'one-line'
  assert fault_drill.classify('fail', 0, '{"mean_score": 5.0}', '') == 'wrong'
  assert fault_drill.classify('ok', 0, '{"mean_score": NaN}', '') == 'wrong'
  assert fault_drill.classify('ok', 0, '{"mean_score": 5.0}', '') == 'ok'
  assert fault_drill.classify('ok', 0, '', '', 'boxes differ') == 'wrong'


def test_cheapest_cases_are_one_line(tmp_path):
  m = fault_drill.Material(tmp_path, checkpoints=False)
  cases = fault_drill.catalogue(m, only=set(CHEAP))
  assert sorted(c.name for c in cases) == sorted(CHEAP)
  from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel
  with ThreadPoolExecutor(len(cases)) as ex:
    results = list(ex.map(fault_drill.run_case, cases))
  for r in results:
    assert r.outcome == CHEAP[r.fault], (r.fault, r.exit_code, r.stderr[-2000:])
    assert r.exit_code == 2 and r.stderr_line and 'Traceback' not in r.stderr
    assert r.peak_rss_mb > 0
