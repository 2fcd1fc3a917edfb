"""`config.eval.num_example_images`: how many highest- and lowest-rated test images the
evaluation's example figures show (half each; 0 = none)."""
import types

import numpy as np
import pytest

from aesthetics_jax.evaluation import streaming
from aesthetics_jax.evaluation.evaluators import figures


class _Drawn(Exception):
  pass


@pytest.mark.parametrize('asked, each', [(0, 0), (1, 1), (6, 3)])
def test_num_example_images_is_split_between_high_and_low(asked, each, monkeypatch):
  """0, which the config check allows, still drew one image of each (max(1, n // 2))."""
  seen = []

  def examples(forward, variables, source, indices, *a, **k):
    seen.append(list(indices))
    raise _Drawn

  def after_examples(*a, **k):
    raise _Drawn  # the next figures: not this test's subject

  monkeypatch.setattr(figures, 'examples', examples)
  monkeypatch.setattr(streaming, 'intensities', after_examples)
  test = types.SimpleNamespace(true={'mean_score': np.array([5.0, 7.0, 3.0, 6.0, 4.0, 8.0])})
  with pytest.raises(_Drawn):
    figures.run(None, None, [], test, {}, None, arch='vgg16', image_size=32,
                num_examples=asked)
  assert seen == ([[5, 1, 3][:each] + [2, 4, 0][:each]] if each else [])
