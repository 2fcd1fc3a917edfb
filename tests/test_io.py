"""aesthetics_jax.io: JSON that stays valid."""
import json

import numpy as np

from aesthetics_jax import io as io_lib


def test_json_safe_turns_non_finite_into_null():
  v = io_lib.json_safe({'lcc': float('nan'), 'x': np.float32(0.5), 'ci': [np.inf, -np.inf, 1],
                        'n': np.int64(3), 's': 'ok'})
  assert json.dumps(v, allow_nan=False) == (
      '{"lcc": null, "x": 0.5, "ci": [null, null, 1], "n": 3, "s": "ok"}')
