"""Per-image preprocessing tests: decoding any mode, draft fast path, crops, normalisation."""
import io

import numpy as np
import pytest
from PIL import Image

from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from source_fixture import encode_image


def test_normalisation_modes():
  x = np.array([[[0, 128, 255]]], np.uint8)
  np.testing.assert_allclose(preprocess.to_model_input(x), x / 255.0, rtol=1e-6)
  want = (x / 255.0 - np.array(preprocess.IMAGENET_MEAN)) / np.array(preprocess.IMAGENET_STD)
  np.testing.assert_allclose(preprocess.to_model_input(x, normalize='imagenet'), want, rtol=1e-5)
  with pytest.raises(preprocess.InputError, match='normalize'):
    preprocess.to_model_input(x, normalize='zscore')


@pytest.mark.parametrize('mode,fmt', [('L', 'JPEG'), ('CMYK', 'JPEG'), ('P', 'PNG'),
                                      ('RGBA', 'PNG'), ('RGB', 'PNG'), ('LA', 'PNG')])
def test_decode_any_mode_to_rgb(mode, fmt):
  data = encode_image(np.random.default_rng(1), 20, 30, mode, fmt)
  out = decoder.decode_image(data)
  assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
  want = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
  np.testing.assert_array_equal(out, want)
  if mode in ('L', 'LA'):
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_decode_16bit_and_corrupt():
  a = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'PNG')
  out = decoder.decode_image(buf.getvalue())
  assert out.shape == (20, 30, 3) and out.max() > 200  # scaled, not clipped to 255
  with pytest.raises(preprocess.InputError) as e:
    decoder.decode_image(b'not an image')
  assert '\n' not in str(e.value) and 'prepare_data' in str(e.value)
  good = encode_image(np.random.default_rng(0), 64, 64)
  with pytest.raises(preprocess.InputError):
    decoder.decode_image(good[:len(good) // 3])  # truncated


def test_draft_fast_path_matches_full_decode():
  rng = np.random.default_rng(0)
  # smooth image so DCT downscaling and full-resolution resize agree closely
  yy, xx = np.mgrid[0:400, 0:560]
  a = np.stack([xx * 255 / 560, yy * 255 / 400, (xx + yy) * 255 / 960], -1).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'JPEG', quality=95)
  data = buf.getvalue()
  small = decoder.decode_image(data, min_size=64)
  assert small.shape[0] >= 64 and small.shape[1] >= 64 and small.shape[0] < 400
  fast = preprocess.preprocess_eval_np(data, 64).astype(float)
  slow = preprocess.preprocess_eval_np(decoder.decode_image(data), 64).astype(float)
  assert fast.shape == (64, 64, 3) and np.abs(fast - slow).mean() < 3.0
  crop = preprocess.preprocess_train_np(data, 72, 64, rng, random_flip=True)
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  with pytest.raises(preprocess.InputError, match='resize_size'):
    preprocess.preprocess_train_np(data, 32, 64, rng)


def test_augment_draws_cover_the_crop_range_and_mirror_only_with_flips():
  """A batch's crop offsets are in [0, resize - size], reproducible, different between steps,
  the same with and without flips; mirrors half the time with flips, never without."""
  offsets, mirror = preprocess.augment_draws(3, 7, 512, 40, 32, random_flip=True)
  assert offsets.shape == (512, 2) and mirror.shape == (512,) and mirror.dtype == bool
  assert offsets.min() == 0 and offsets.max() == 8
  assert 0.4 < mirror.mean() < 0.6
  again, mirror_again = preprocess.augment_draws(3, 7, 512, 40, 32, random_flip=True)
  np.testing.assert_array_equal(again, offsets)
  np.testing.assert_array_equal(mirror_again, mirror)
  plain, none = preprocess.augment_draws(3, 7, 512, 40, 32)
  np.testing.assert_array_equal(plain, offsets)
  assert not none.any()
  assert not np.array_equal(preprocess.augment_draws(3, 8, 512, 40, 32)[0], offsets)
  assert not np.array_equal(preprocess.augment_draws(4, 7, 512, 40, 32)[0], offsets)
  with pytest.raises(preprocess.InputError, match='resize_size'):
    preprocess.augment_draws(3, 7, 8, 32, 40)


def test_crop_np_crops_the_resized_image_at_the_offset():
  data = encode_image(np.random.default_rng(1), 50, 70)
  resized = preprocess.resize_train_np(data, 40)
  np.testing.assert_array_equal(preprocess.crop_np(data, 40, 32, (5, 2)),
                                resized[5:37, 2:34])
  view = preprocess.crop_np(resized, 40, 32, (8, 0))  # already resized: a view, no copy
  assert np.shares_memory(view, resized)
  np.testing.assert_array_equal(view, resized[8:40, 0:32])
