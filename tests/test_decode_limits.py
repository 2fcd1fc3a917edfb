"""preprocess.decode under hostile input: caps before decoding, bounded memory, EXIF orientation.

Everything here is fast (tiny images, or big ones that are never decoded); the Predictor path
(score and boxes of an EXIF-rotated photo, peak RSS with overlays and crops) is checked in
test_predict.py's single CLI run.
"""
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from aesthetics_jax.data import preprocess
import image_fixture
from image_fixture import huge_header_png

ROOT = Path(__file__).resolve().parents[1]


def _one_line(e: pytest.ExceptionInfo, *parts: str) -> str:
  msg = str(e.value)
  assert '\n' not in msg, msg
  for p in parts:
    assert p in msg, (p, msg)
  return msg


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_exif_orientation_is_applied_as_exif_transpose_does(orientation, fmt):
  shown = image_fixture.smooth_photo(48, 64)
  data = image_fixture.encode(shown, fmt, orientation)
  want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert('RGB'))
  dec = preprocess.decode(data)
  np.testing.assert_array_equal(dec.image, want)
  assert dec.size == (48, 64) == preprocess.image_size(data)  # displayed, not stored
  np.testing.assert_array_equal(preprocess.decode_image(data), want)


def _tiff(shown: np.ndarray, orientation: int) -> bytes:
  """`shown` stored as a camera would in a TIFF with `orientation` (in the TIFF tags)."""
  stored = Image.open(io.BytesIO(image_fixture.encode(shown, 'PNG', orientation)))
  buf = io.BytesIO()
  stored.convert('RGB').save(buf, 'TIFF', tiffinfo={preprocess.ORIENTATION_TAG: orientation})
  return buf.getvalue()


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('fmt', ['TIFF', 'WEBP'])
def test_tiff_and_webp_orientations_are_applied_once(orientation, fmt):
  """Pillow's TIFF plugin turns the image itself (recent versions): ours turned it a second
  time, so a rotated TIFF was scored, boxed and cropped in the wrong frame."""
  shown = image_fixture.smooth_photo(48, 64)
  if fmt == 'TIFF':
    data = _tiff(shown, orientation)
  else:
    stored = Image.open(io.BytesIO(image_fixture.encode(shown, 'PNG', orientation)))
    exif = Image.Exif()
    exif[preprocess.ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    stored.convert('RGB').save(buf, 'WEBP', lossless=True, exif=exif.tobytes())
    data = buf.getvalue()
  for target in (None, 20):
    dec = preprocess.decode(data, target=target)
    assert dec.size == (48, 64) == preprocess.image_size(data), (dec.size, target)
    if target is None:
      np.testing.assert_array_equal(dec.image, shown)
    else:
      assert dec.image.shape[1] > dec.image.shape[0]  # landscape, as displayed
  # A PIL image handed in (the notebook API), opened or already loaded.
  img = Image.open(io.BytesIO(data))
  np.testing.assert_array_equal(preprocess.decode(img).image, shown)
  img = Image.open(io.BytesIO(data))
  img.load()
  np.testing.assert_array_equal(preprocess.decode(img).image, shown)


@pytest.mark.parametrize('fmt,tol', [('PNG', 0.0), ('JPEG', 2.0)])
def test_rotated_photo_gets_the_upright_model_input(fmt, tol):
  """Orientation 6 (a phone held upright): same preprocessed input as the upright photo, on
  the predict path (working copy, then resize) and the dataset path (bytes, DCT-reduced)."""
  shown = image_fixture.smooth_photo(96, 128)
  upright, rotated = (image_fixture.encode(shown, fmt, o) for o in (1, 6))
  assert Image.open(io.BytesIO(rotated)).size == (96, 128)  # stored sideways
  for target in (None, 40):
    a, b = (preprocess.decode(d, target=target) for d in (upright, rotated))
    assert a.size == b.size == (96, 128) and a.image.shape == b.image.shape
    x, y = (preprocess.preprocess_eval_np(d.image, 32).astype(float) for d in (a, b))
    assert np.abs(x - y).mean() <= tol
  x, y = (preprocess.preprocess_eval_np(d, 32).astype(float) for d in (upright, rotated))
  assert np.abs(x - y).mean() <= tol


def test_large_images_decode_reduced_with_the_original_size():
  shown = image_fixture.smooth_photo(600, 900)
  for fmt in ('JPEG', 'PNG'):
    dec = preprocess.decode(image_fixture.encode(shown, fmt), target=100)
    assert dec.size == (600, 900) and dec.reduced
    assert 100 <= min(dec.image.shape[:2]) < 200  # both sides >= target, not much more
    assert abs(dec.image.shape[1] / dec.image.shape[0] - 1.5) < 0.02
  # The long side bound wins for an extreme aspect ratio (and needs no target).
  dec = preprocess.decode(image_fixture.encode(image_fixture.smooth_photo(40, 1000), 'PNG'),
                          target=64, max_side=256)
  assert dec.size == (40, 1000) and max(dec.image.shape[:2]) <= 256
  # Palette and 16-bit images reduce band by band to the same picture as converting first.
  pal = Image.fromarray(shown).convert('P', palette=Image.Palette.ADAPTIVE, colors=32)
  buf = io.BytesIO()
  pal.save(buf, 'PNG')
  want = np.asarray(pal.convert("RGB").reduce(6))  # 600 // 100
  np.testing.assert_array_equal(preprocess.decode(buf.getvalue(), target=100).image, want)


def test_bomb_is_refused_from_the_header():
  with pytest.raises(preprocess.DecodeError) as e:
    preprocess.decode(huge_header_png(12000, 12000), what='big.png')
  assert e.value.reason == preprocess.DECOMPRESSION_BOMB
  _one_line(e, 'big.png: decompression bomb: 144 MP > cap 100 MP', '12000x12000')
  with pytest.raises(preprocess.DecodeError) as e:  # past PIL's own limit: raised in open()
    preprocess.decode(huge_header_png(), what='x')
  _one_line(e, 'decompression bomb: 10,000 MP > cap 100 MP')


def test_oversize_file_is_refused_before_it_is_read(tmp_path):
  p = tmp_path / 'huge.png'
  with open(p, 'wb') as f:  # sparse: 2 GB on paper, nothing on disk
    f.truncate(2 * 2**30)
  with pytest.raises(preprocess.DecodeError) as e:
    preprocess.read_file(p)
  assert e.value.reason == preprocess.TOO_LARGE
  _one_line(e, str(p), 'file too large: 2048 MB > cap 64 MB')
  with pytest.raises(preprocess.DecodeError) as e:
    preprocess.decode(b'x' * 101, max_bytes=100, what='rec 7')
  _one_line(e, 'rec 7: file too large')


@pytest.mark.parametrize('make,reason,text', [
    (lambda: b'', preprocess.EMPTY, 'empty file'),
    (lambda: b'plain text, not an image', preprocess.UNDECODABLE, 'not an image'),
    (lambda: image_fixture.encode(image_fixture.smooth_photo(64, 64))[:-300],
     preprocess.TRUNCATED, 'truncated file'),
    (lambda: image_fixture.encode(np.zeros((1, 1, 3), np.uint8), 'PNG'), preprocess.TOO_SMALL,
     'too small: 1x1 px, under 32 px a side'),
])
def test_each_cause_is_one_line(make, reason, text):
  with pytest.raises(preprocess.DecodeError) as e:
    preprocess.decode(make(), min_side=preprocess.MIN_SIDE, what='photo.jpg')
  assert e.value.reason == reason
  _one_line(e, 'photo.jpg: ' + text)


def test_missing_file_is_one_line(tmp_path):
  with pytest.raises(preprocess.DecodeError) as e:
    preprocess.read_file(tmp_path / 'nope.jpg')
  assert e.value.reason == preprocess.MISSING
  _one_line(e, 'nope.jpg: no such file')
  # Links that lead nowhere say so (both read 'no such file; check the path').
  (tmp_path / 'dangling.jpg').symlink_to(tmp_path / 'gone.jpg')
  (tmp_path / 'loop.jpg').symlink_to(tmp_path / 'loop.jpg')
  for name, text in (('dangling.jpg', f'a broken symbolic link (to {tmp_path / "gone.jpg"})'),
                     ('loop.jpg', 'a loop of symbolic links')):
    with pytest.raises(preprocess.DecodeError) as e:
      preprocess.read_file(tmp_path / name)
    assert e.value.reason == preprocess.MISSING
    _one_line(e, f'{name}: {text}')


_CHILD = textwrap.dedent('''
    import resource, sys
    from aesthetics_jax.data import preprocess
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = peak()
    for path in sys.argv[1:]:
      d = preprocess.decode(preprocess.read_file(path), target=1024, max_side=4096)
      print(d.image.shape[0], d.image.shape[1], d.size[0], d.size[1], peak() - base, flush=True)
''')


def test_big_png_decodes_with_bounded_memory(tmp_path):
  """A 48 MP PNG of a few hundred KB: peak RSS grows by about PIL's one full-size buffer (4
  bytes a pixel; 1 for a palette image, converted band by band), never by full-size copies (a
  numpy copy: +3 bytes a pixel; converting a palette image whole: +4)."""
  w, h = 8000, 6000
  pal = image_fixture.big_png(tmp_path / 'p.png', w, h, 'P')
  rgb = image_fixture.big_png(tmp_path / 'rgb.png', w, h, 'RGB')
  assert rgb.stat().st_size < 2**20
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  r = subprocess.run([sys.executable, '-c', _CHILD, str(pal), str(rgb)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  (ph, pw, pH, pW, p_mb), (rh, rw, rH, rW, rgb_mb) = [
      [float(v) for v in line.split()] for line in r.stdout.split('\n') if line]
  mp = w * h / 2**20
  assert (pH, pW) == (rH, rW) == (h, w) and 1024 <= min(rh, rw) < 2048 and (ph, pw) == (rh, rw)
  assert p_mb < 3 * mp, f'palette PNG: +{p_mb:.0f} MB for {mp:.0f} MP'
  assert rgb_mb < 5 * mp, f'RGB PNG: +{rgb_mb:.0f} MB for {mp:.0f} MP'


def test_float_image_with_nan_is_refused_and_a_finite_one_decodes():
  """A float TIFF with a NaN scaled every pixel by a NaN white level (an all-black image,
  scored with a RuntimeWarning); a finite one is scaled to its own maximum."""
  a = np.linspace(0, 4, 40 * 50, dtype=np.float32).reshape(40, 50)
  finite = io.BytesIO()
  Image.fromarray(a, 'F').save(finite, format='TIFF')
  img = preprocess.decode(finite.getvalue(), what='finite.tif').image
  assert img.shape == (40, 50, 3) and img.max() == 255 and img.min() == 0
  for bad in (np.nan, np.inf):
    b = a.copy()
    b[3, 7] = bad
    buf = io.BytesIO()
    Image.fromarray(b, 'F').save(buf, format='TIFF')
    with pytest.raises(preprocess.DecodeError) as e:
      preprocess.decode(buf.getvalue(), what='science.tif')
    assert str(e.value) == ('science.tif: float pixels that are not finite (NaN or inf); save '
                            'it as an 8- or 16-bit image')
    assert e.value.reason == preprocess.UNDECODABLE
