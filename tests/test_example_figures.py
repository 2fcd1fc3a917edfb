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


@pytest.mark.parametrize('scores, want', [([5.0], [[0]]), ([5.0, 7.0], [[1, 0]]),
                                          ([5.0, 7.0, 3.0, 6.0, 4.0], [[1, 3, 0, 2, 4]])])
def test_each_test_image_is_drawn_once_when_there_are_fewer_than_asked(scores, want,
                                                                        monkeypatch):
  """--config.data.max_test_images=1 (num_example_images 6): the one image filled '3
  highest-rated' three times and '3 lowest-rated' again; with 5 images the middle one was in
  both."""
  seen = []

  def examples(forward, variables, source, indices, *a, **k):
    seen.append([int(i) for i in indices])
    raise _Drawn

  monkeypatch.setattr(figures, 'examples', examples)
  test = types.SimpleNamespace(true={'mean_score': np.array(scores)})
  with pytest.raises(_Drawn):
    figures.run(None, None, [], test, {}, None, arch='vgg16', image_size=32, num_examples=6)
  assert seen == want


def test_example_boxes_are_the_csv_and_predict_boxes():
  """The example figures boxed the map on the panel's grid (long side 256), per_image.csv,
  predict and the explorer on the image's (up to 512): a region near the threshold made the
  panel's box the whole frame where the others stop at 2/3 of it. They now draw the boxes
  evaluate took once for per_image.csv (`run._image_boxes`), scaled to the panel."""
  import io  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.explain import crop  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.evaluation import run as run_lib  # pylint: disable=import-outside-toplevel
  raw = (np.random.default_rng(194).random((4, 4)) ** 4).astype(np.float32)
  buf = io.BytesIO()
  Image.new('RGB', (300, 400), 'gray').save(buf, 'JPEG')  # H x W = 400 x 300
  source = [{'image': buf.getvalue(), 'image_id': 7}]
  test = streaming.SplitSummary(pred={}, true={'image_id': np.array([7]),
                                               'mean_score': np.array([5.0])}, maps={})

  def forward(variables, x):
    return {'p_high': np.full((x.shape[0],), 0.5, np.float32)}, np.tile(raw, (x.shape[0], 1, 1, 1))

  test.maps['cam_aesthetic'] = raw[None]  # the test pass's raw map, as evaluate keeps it
  panels, _ = figures.examples(forward, None, source, [0], test,
                               parallel.make_mesh(jax.devices()[:1]), arch='vgg16',
                               image_size=32, normalize='none', threshold=0.5, batch_size=1,
                               tag_names={},
                               image_boxes=run_lib._image_boxes(test, source, 0.5))
  want = crop.image_boxes(raw, None, (400, 300), 0.5)['boxes']['aesthetic']
  grid = panels[0]['image'].shape[:2]
  np.testing.assert_array_equal(panels[0]['boxes']['aesthetic'],
                                crop.scale_box(want, (400, 300), grid))
