"""A file's model input is the same in aesthetics-predict, the notebook interface and
aesthetics-evaluate (the test pipeline's decode), so all three score a file alike."""
import numpy as np
from PIL import Image

import checkpoint_fixture
import image_fixture


def test_predict_and_the_api_feed_the_model_as_evaluation_does(tmp_path):
  """Predict and the API resized a >= 1024 px working copy; evaluation decodes a test image
  reduced to >= the model's side (JPEG DCT scaling) first. The demo's 300 test images then
  scored up to 0.30 apart between predict and evaluate, 4 labels flipped."""
  import aesthetics_jax
  from aesthetics_jax.data import preprocess
  from aesthetics_jax.evaluation import predictor
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'w', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=32))
  photo = tmp_path / 'p.jpg'
  Image.fromarray(image_fixture.smooth_photo(260, 300)).save(photo, quality=90)
  data = photo.read_bytes()
  want = preprocess.preprocess_eval_np(data, 32)  # what pipeline.eval_batches feeds
  p = predictor.Predictor(wd)
  for keep in (True, False):
    image, x = p._load(str(photo), keep=keep)  # pylint: disable=protected-access
    np.testing.assert_array_equal(x, want)
    assert image.size == (260, 300)
  assert p._load(str(photo), keep=True)[0].image.shape == (260, 300, 3)  # drawn full
  m = aesthetics_jax.load(wd)
  for x in (str(photo), data):
    np.testing.assert_array_equal(m._load_input(x).model, want)  # pylint: disable=W0212
    loaded = m._load(x)  # pylint: disable=protected-access
    assert loaded.full.shape == (260, 300, 3) and loaded.size == (260, 300)
  # One score for both ways in (the same input, the same forward pass).
  assert m.score(str(photo))['mean_score'] == next(p.predict_files([str(photo)]))['mean_score']
