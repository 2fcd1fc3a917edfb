"""Crop files of predict: JPEG with a JPEG photo's own tables, PNG otherwise, ICC kept."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from aesthetics_jax.data import decoder
from aesthetics_jax.evaluation import image_files


def _photo(h=96, w=128):
  """A smooth picture with mild noise (JPEG-like content), uint8 [h, w, 3]."""
  y, x = np.mgrid[0:h, 0:w]
  base = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.float64)
  noise = np.random.default_rng(0).normal(0, 3, base.shape)
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _psnr(a, b) -> float:
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float('inf') if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize('choice,source,want', [
    ('auto', 'JPEG', '.jpg'), ('auto', 'PNG', '.png'), ('auto', None, '.png'),
    ('png', 'JPEG', '.png'), ('jpeg', 'PNG', '.jpg'), ('jpeg', 'JPEG', '.jpg')])
def test_crop_suffix(choice, source, want):
  assert image_files.crop_suffix(choice, source) == want


def test_crop_suffix_refuses_an_unknown_format():
  with pytest.raises(ValueError, match="use one of \\('auto', 'jpeg', 'png'\\)"):
    image_files.crop_suffix('webp', 'JPEG')


@pytest.mark.parametrize('quality,subsampling', [(75, 2), (92, 0), (85, 1)])
def test_jpeg_crop_reuses_the_photos_tables(tmp_path, quality, subsampling):
  """The crop of a JPEG has its quantisation tables and chroma subsampling, about its bytes
  per pixel, and is close to the lossless cut (a second quantisation with the same tables)."""
  src = tmp_path / 'p.jpg'
  Image.fromarray(_photo()).save(src, quality=quality, subsampling=subsampling)
  photo = Image.open(src)
  cut = photo.convert('RGB').crop((13, 7, 13 + 90, 7 + 60))
  data = image_files.encode_crop(cut, '.jpg', src)
  out = Image.open(io.BytesIO(data))
  assert out.format == 'JPEG' and out.size == cut.size
  assert out.quantization == photo.quantization
  assert JpegImagePlugin.get_sampling(out) == subsampling
  assert _psnr(out.convert('RGB'), cut) > 33
  per_pixel = len(data) / (90 * 60), src.stat().st_size / (96 * 128)
  assert 0.5 < per_pixel[0] / per_pixel[1] < 2, per_pixel


def test_png_crop_is_lossless_and_both_keep_the_icc_profile(tmp_path):
  icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
  src = tmp_path / 'p.jpg'
  Image.fromarray(_photo()).save(src, quality=90, icc_profile=icc)
  cut = image_files.with_icc(Image.open(src).convert('RGB').crop((0, 0, 64, 48)), src)
  png = Image.open(io.BytesIO(image_files.encode_crop(cut, '.png', src)))
  jpg = Image.open(io.BytesIO(image_files.encode_crop(cut, '.jpg', src)))
  assert png.format == 'PNG' and np.array_equal(np.asarray(png), np.asarray(cut))
  assert png.info.get('icc_profile') == icc and jpg.info.get('icc_profile') == icc


def test_jpeg_crop_of_a_greyscale_photo_is_greyscale_with_its_table(tmp_path):
  """A black-and-white JPEG's crop was an RGB JPEG at quality 95: three channels, 2.2x the
  bytes of the whole photo for a full-frame crop. It is greyscale, with the photo's table."""
  src = tmp_path / 'bw.jpg'
  Image.fromarray(_photo()).convert('L').save(src, quality=70)
  photo = Image.open(src)
  cut = photo.convert('RGB').crop((13, 7, 13 + 90, 7 + 60))  # as decoded: grey in RGB
  data = image_files.encode_crop(cut, '.jpg', src)
  out = Image.open(io.BytesIO(data))
  assert out.mode == 'L' and out.size == cut.size and out.quantization == photo.quantization
  assert _psnr(out.convert('RGB'), cut) > 33
  per_pixel = len(data) / (90 * 60), src.stat().st_size / (96 * 128)
  assert 0.5 < per_pixel[0] / per_pixel[1] < 2, per_pixel


@pytest.mark.parametrize('kind', ['png', 'grey_jpeg', 'cmyk_jpeg', 'missing'])
def test_jpeg_crop_of_other_sources_is_quality_95_without_subsampling(tmp_path, kind):
  """Tables that do not fit an RGB crop (greyscale: one, CMYK: four), a PNG source, or a file
  gone since it was scored: quality 95, 4:4:4, and no error."""
  rgb = Image.fromarray(_photo())
  src = tmp_path / ('p.png' if kind == 'png' else 'p.jpg')
  if kind == 'png':
    rgb.save(src)
  elif kind == 'grey_jpeg':
    rgb.convert('L').save(src, quality=60)
  elif kind == 'cmyk_jpeg':
    rgb.convert('CMYK').save(src, quality=60)
  cut = rgb.crop((0, 0, 64, 48))
  out = Image.open(io.BytesIO(image_files.encode_crop(cut, '.jpg', src)))
  assert out.format == 'JPEG' and out.mode == 'RGB' and JpegImagePlugin.get_sampling(out) == 0
  want = Image.new('RGB', (8, 8))
  buf = io.BytesIO()
  want.save(buf, format='JPEG', quality=95)
  assert out.quantization == Image.open(buf).quantization


def test_crops_keep_the_photos_exif_upright_and_at_their_size(tmp_path):
  """Crops were written without EXIF: a photographer's crops lost when, with what and where
  they were taken. They keep it now (JPEG and PNG crops), without the orientation (a crop is
  cut upright: a kept 6 turned it again in every viewer) and with the crop's pixel size."""
  from PIL import ExifTags
  src = tmp_path / 'p.jpg'
  a = _photo()
  exif = Image.new('RGB', (1, 1)).getexif()
  exif[0x010F] = 'Canon'
  exif[0x0132] = '2026:01:01 10:00:00'
  exif[decoder.ORIENTATION_TAG] = 6
  sub = exif.get_ifd(ExifTags.IFD.Exif)
  sub[0x9003] = '2026:01:01 10:00:00'
  sub[0xA002], sub[0xA003] = a.shape[1], a.shape[0]
  exif.get_ifd(ExifTags.IFD.GPSInfo)[1] = 'N'
  Image.fromarray(np.rot90(a, 1).copy()).save(src, quality=90, exif=exif.tobytes())
  work = image_files.load_image(str(src))
  for suffix in ('.jpg', '.png'):
    cut = image_files.crop_image(str(src), work, (0, 0, 20, 30))
    with Image.open(io.BytesIO(image_files.encode_crop(cut, suffix, src))) as got:
      got.load()
      e = got.getexif()
      assert got.size == (30, 20)
      assert e.get(0x010F) == 'Canon' and decoder.ORIENTATION_TAG not in e, dict(e)
      inner = e.get_ifd(ExifTags.IFD.Exif)
      assert inner[0x9003] == '2026:01:01 10:00:00' and (inner[0xA002], inner[0xA003]) == (30, 20)
      assert e.get_ifd(ExifTags.IFD.GPSInfo)[1] == 'N'
  # A file without EXIF, or with EXIF Pillow cannot parse, gives a crop without it.
  plain = tmp_path / 'plain.jpg'
  Image.fromarray(a).save(plain)
  cut = image_files.crop_image(str(plain), image_files.load_image(str(plain)), (0, 0, 8, 8))
  assert 'exif' not in cut.info
  # Sub-directories the photo did not have are not added (empty Exif / GPS pointers).
  exif = Image.new('RGB', (1, 1)).getexif()
  exif[0x010F] = 'Apple'
  Image.fromarray(a).save(plain, exif=exif.tobytes())
  cut = image_files.crop_image(str(plain), image_files.load_image(str(plain)), (0, 0, 8, 8))
  with Image.open(io.BytesIO(image_files.encode_crop(cut, '.jpg', plain))) as got:
    assert dict(got.getexif()) == {0x010F: 'Apple'}
