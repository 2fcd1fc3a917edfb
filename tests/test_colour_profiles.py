"""Embedded colour profiles (ICC): the model sees the colours a browser shows.

A Display P3 photo (every recent phone's) was read as if its numbers were sRGB: its colours
came out duller than shown, and it scored differently from the same photo exported as sRGB.
"""
import io

import numpy as np
import pytest
from PIL import Image
from PIL import ImageCms

import image_fixture
from aesthetics_jax.data import decoder
from aesthetics_jax.data import resize
from aesthetics_jax.data import resized_store
from aesthetics_jax.evaluation import image_files
from aesthetics_jax.evaluation import image_inputs

P3 = image_fixture.matrix_profile()


def _tagged(path, a, icc=P3, fmt='PNG'):
  Image.fromarray(a).save(path, fmt, icc_profile=icc)
  return path


def _in_srgb(a: np.ndarray, icc: bytes = P3) -> np.ndarray:
  """What a colour-managed viewer shows: Pillow's own profile-to-profile conversion."""
  source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
  out = ImageCms.profileToProfile(Image.fromarray(a), source, ImageCms.createProfile('sRGB'),
                                  outputMode='RGB')
  return np.asarray(out)


def test_a_display_p3_photo_is_decoded_to_srgb_on_every_path(tmp_path):
  a = image_fixture.smooth_photo(64, 96)
  path = _tagged(tmp_path / 'p3.png', a)
  data = path.read_bytes()
  want = _in_srgb(a)
  assert np.abs(want.astype(int) - a).max() >= 10  # a real change, not rounding
  np.testing.assert_array_equal(decoder.decode(data).image, want)
  np.testing.assert_array_equal(decoder.decode(data, srgb=False).image, a)  # its own numbers
  # Training and evaluation (dataset records), predict's working copy, the API (a path, bytes,
  # a PIL image opened from the file): one rule.
  np.testing.assert_array_equal(np.asarray(decoder.decode_record(data, None)), want)
  np.testing.assert_array_equal(image_files.load_image(str(path)).image, want)
  for x in (str(path), data, Image.open(path)):
    np.testing.assert_array_equal(image_inputs.to_array(x), want)
  # The training resize converts after reducing (cheap; a JPEG's DCT scaling comes first
  # anyway): within a few levels of the same photo exported as sRGB (box filter in another
  # space), where the unconverted photo is far off.
  resized = resize.resize_train_np(data, 32).astype(int)
  exported = resize.resize_train_np(_png(want), 32).astype(int)
  assert np.abs(resized - exported).mean() < 1
  assert np.abs(resize.resize_train_np(_png(a), 32).astype(int) - exported).mean() > 3


def _png(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'PNG')
  return buf.getvalue()


def test_a_reduced_jpeg_is_converted_too(tmp_path):
  a = image_fixture.smooth_photo(512, 768)
  path = _tagged(tmp_path / 'p3.jpg', a, fmt='JPEG')
  raw = decoder.decode(path.read_bytes(), target=64, srgb=False)
  managed = decoder.decode(path.read_bytes(), target=64)
  assert raw.image.shape == managed.image.shape and raw.image.shape[0] < 512  # DCT-reduced
  np.testing.assert_array_equal(managed.image, _in_srgb(raw.image))


@pytest.mark.parametrize('icc', [
    ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes(),  # sRGB itself
    b'\0' * 16 + b'RGB ' + b'junk' * 40,  # does not parse: shown as sRGB, as browsers do
    P3[:16] + b'CMYK' + P3[20:],  # not an RGB profile
], ids=['srgb', 'unparseable', 'cmyk'])
def test_profiles_that_change_nothing_leave_the_pixels_as_they_are(tmp_path, icc):
  a = image_fixture.smooth_photo(48, 64)
  path = _tagged(tmp_path / 'x.png', a, icc=icc)
  np.testing.assert_array_equal(decoder.decode(path.read_bytes()).image, a)


def test_crops_keep_their_colours(tmp_path):
  """A crop re-cut from the file keeps the file's numbers and its profile (its gamut), whatever
  the photo's size: a photo smaller than the working copy was cut from that sRGB copy, without
  its profile and its gamut clipped. One cut from the decoded copy (an sRGB photo) carries no
  P3 profile (applied twice, it showed colours more saturated than the photo)."""
  small_a = image_fixture.smooth_photo(64, 96)
  small = _tagged(tmp_path / 'small.png', small_a)
  work = image_files.load_image(str(small))
  assert not work.reduced and work.converted
  cut = image_files.crop_image(str(small), work, (0, 0, 32, 48))
  assert cut.info.get('icc_profile') == P3
  np.testing.assert_array_equal(np.asarray(cut), small_a[:32, :48])
  plain = tmp_path / 'plain.png'
  Image.fromarray(small_a).save(plain)
  work = image_files.load_image(str(plain))
  assert not work.reduced and not work.converted
  cut = image_files.crop_image(str(plain), work, (0, 0, 32, 48))
  assert 'icc_profile' not in cut.info
  np.testing.assert_array_equal(np.asarray(cut), small_a[:32, :48])
  rotated = tmp_path / 'rotated.jpg'
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(small_a).save(rotated, quality=95, exif=exif)
  assert not image_files.load_image(str(rotated)).converted  # rotating converts no colour
  big_a = image_fixture.smooth_photo(2400, 2400)
  big = _tagged(tmp_path / 'big.png', big_a)
  work = image_files.load_image(str(big))
  assert work.reduced
  cut = image_files.crop_image(str(big), work, (0, 0, 100, 200))
  assert cut.info.get('icc_profile') == P3
  np.testing.assert_array_equal(np.asarray(cut), big_a[:100, :200])


def test_stores_made_by_another_decoding_rule_are_not_reused(tmp_path, monkeypatch, caplog):
  """A resized store decoded before profiles were applied holds other pixels: training decodes
  instead, saying why, and prepare_data rebuilds it (its `load` is what both ask)."""
  rows = [{'image': _png(image_fixture.smooth_photo(40, 48)), 'image_id': i} for i in range(2)]
  f = resized_store.build(rows, 32, tmp_path / 'store.npy', progress=False, dataset='d')
  assert resized_store.load(f, 2, 32, 'd') is not None
  monkeypatch.setattr(decoder, 'RULE', 'another')
  assert resized_store.load(f, 2, 32, 'd') is None
  assert 'decoded by an earlier rule (srgb-1' in caplog.text
