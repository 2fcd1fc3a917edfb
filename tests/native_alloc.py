"""A child-process workload for `bench.memory` tests: native (numpy) memory of a known size,
to check that peak RSS sees allocations tracemalloc would miss."""
from typing import Callable

import numpy as np


def allocate_setup(mb: int = 64) -> Callable[[], dict]:
  """`run()` allocates and touches `mb` MiB with numpy; returns {'touched_mb': mb}."""

  def run():
    a = np.ones(mb * 2**20 // 8, np.float64)
    return {'touched_mb': float(a.nbytes / 2**20 * (a[::512].sum() > 0))}
  return run
