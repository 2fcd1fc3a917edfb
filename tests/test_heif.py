"""HEIC / HEIF, the format phones save photos in, through pillow-heif (the `heif` extra).

Without it a phone's photos were refused one by one ('a format this Pillow cannot read'), and a
folder of them gave 'no images'. The test extra installs it; the test without it runs the
decoder in a child process that cannot import it.
"""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import image_fixture
from aesthetics_jax.cli import inputs
from aesthetics_jax.data import decoder
from aesthetics_jax.data import selection

pillow_heif = pytest.importorskip(
    'pillow_heif', reason="needs pillow-heif: pip install -e '.[test]' (or '.[heif]')")

ROOT = Path(__file__).resolve().parents[1]


def _heic(a: np.ndarray, **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, 'HEIF', quality=95, **kw)
  return buf.getvalue()


def test_a_phone_photo_decodes_upright_in_srgb_with_its_limits():
  a = image_fixture.smooth_photo(64, 96)
  data = _heic(a)
  got = decoder.decode(data, what='IMG_0001.HEIC')
  assert got.format == 'HEIF' and got.size == (64, 96)
  assert np.abs(got.image.astype(int) - a).mean() < 3  # lossy, as a JPEG of it
  # Stored sideways with EXIF orientation 6: shown (and boxed) upright, turned once only.
  exif = Image.new('RGB', (1, 1)).getexif()
  exif[decoder.ORIENTATION_TAG] = 6
  turned = decoder.decode(_heic(np.rot90(a, 1).copy(), exif=exif.tobytes()))
  assert turned.size == (64, 96)
  assert np.abs(turned.image.astype(int) - a).mean() < 3
  # A Display P3 profile is applied as for JPEG and PNG.
  p3 = decoder.decode(_heic(a, icc_profile=image_fixture.matrix_profile()))
  assert np.abs(p3.image.astype(int) - got.image).max() >= 10
  # The caps hold: the pixel count is refused from the header, before decoding.
  with pytest.raises(decoder.DecodeError, match='decompression bomb'):
    decoder.decode(data, max_pixels=1000)
  assert selection.check_image_bytes(data) is None


def test_damaged_heic_files_are_one_line_errors():
  data = _heic(image_fixture.smooth_photo(64, 96))
  for cut, reason in ((len(data) // 2, decoder.TRUNCATED), (100, decoder.UNDECODABLE)):
    with pytest.raises(decoder.DecodeError) as e:
      decoder.decode(data[:cut], what='IMG_0002.HEIC')
    assert e.value.reason == reason and '\n' not in str(e.value), str(e.value)
    assert str(e.value).startswith('IMG_0002.HEIC: ')
    assert 'no plugin' not in str(e.value)  # the plugin is there: the file is damaged


def test_without_the_plugin_each_heic_names_the_extra(tmp_path):
  photo = tmp_path / 'IMG_0003.HEIC'
  photo.write_bytes(_heic(image_fixture.smooth_photo(64, 96)))
  code = ("import sys; sys.modules['pillow_heif'] = None\n"
          'from aesthetics_jax.data import decoder\n'
          'try:\n'
          '  decoder.decode(decoder.read_file(sys.argv[1]), what=sys.argv[1])\n'
          'except decoder.DecodeError as e:\n'
          '  print(e)\n')
  r = subprocess.run([sys.executable, '-c', code, str(photo)], capture_output=True, text=True,
                     cwd=ROOT, timeout=120, check=True)
  assert r.stdout.strip() == (f'{photo}: HEIC/HEIF image: a format this Pillow cannot read (no '
                              f'plugin for it); {decoder.HEIF_HINT}')
  # A folder of them is listed with or without the plugin: each file gets its line.
  assert inputs._is_image_name('IMG_0003.HEIC') and inputs._is_image_name('x.heif')


def test_predict_lists_and_scores_a_folder_of_heic_photos(tmp_path):
  import checkpoint_fixture
  wd = checkpoint_fixture.write_init_checkpoint(
      tmp_path / 'mnv2', checkpoint_fixture.smoke_config('mobilenet_v2', image_size=64),
      aesthetic_sign=1)
  folder = tmp_path / 'phone'
  folder.mkdir()
  for i in range(2):
    (folder / f'IMG_000{i}.HEIC').write_bytes(
        _heic(np.roll(image_fixture.smooth_photo(64, 96), 20 * i, axis=1)))
  r = subprocess.run([sys.executable, '-m', 'launch.predict', f'--workdir={wd}',
                      f'--crop_dir={tmp_path / "crops"}', '--aspect=1:1', str(folder)],
                     capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  recs = [json.loads(line) for line in r.stdout.splitlines()]
  assert [Path(x['path']).name for x in recs] == ['IMG_0000.HEIC', 'IMG_0001.HEIC']
  assert all(isinstance(x['mean_score'], float) for x in recs), recs
  for x in recs:  # a crop of a non-JPEG source is a PNG (lossless), as for PNG inputs
    assert x['crop'].endswith('.png') and Image.open(x['crop']).size[0] > 0
