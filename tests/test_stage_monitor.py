"""Per-stage measurements of aesthetics-paper-run: peak RSS (self, children), disk."""
import multiprocessing
import time

import numpy as np

from aesthetics_jax.bench import stage_monitor


def _hold(mb: int, seconds: float) -> None:
  x = np.ones(mb * 2**20 // 8)  # touched: resident
  time.sleep(seconds)
  del x


def test_children_peak_is_sampled():
  with stage_monitor.StageMonitor(interval=0.1) as m:
    p = multiprocessing.get_context('spawn').Process(target=_hold, args=(150, 2.0))
    p.start()
    p.join()
  r = m.result()
  assert r['peak_children_mb'] >= 150 and r['peak_total_mb'] >= r['peak_rss_mb'] + 150


def test_own_peak_is_reset_per_stage():
  x = np.ones(300 * 2**20 // 8)
  del x  # a peak before the stage
  with stage_monitor.StageMonitor() as m:
    time.sleep(0.05)
  quiet = m.result()
  with stage_monitor.StageMonitor() as m:
    _hold(200, 0.05)
  busy = m.result()
  assert busy['peak_rss_mb'] >= quiet['peak_rss_mb'] + 150
  if quiet['hwm_reset']:  # Linux: the earlier 300 MB peak is forgotten
    assert busy['peak_rss_mb'] < quiet['peak_rss_mb'] + 280


def test_disk_mb(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'f.bin').write_bytes(np.random.default_rng(0).bytes(3 * 2**20))
  assert 2.9 <= stage_monitor.disk_mb([tmp_path, tmp_path / 'missing']) <= 3.2
