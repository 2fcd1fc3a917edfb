"""decoder.decode under hostile input: caps before decoding, bounded memory, EXIF orientation.

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

from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax.data import selection
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
  dec = decoder.decode(data)
  np.testing.assert_array_equal(dec.image, want)
  assert dec.size == (48, 64) == decoder.image_size(data)  # displayed, not stored
  np.testing.assert_array_equal(decoder.decode_image(data), want)


def _tiff(shown: np.ndarray, orientation: int) -> bytes:
  """`shown` stored as a camera would in a TIFF with `orientation` (in the TIFF tags)."""
  stored = Image.open(io.BytesIO(image_fixture.encode(shown, 'PNG', orientation)))
  buf = io.BytesIO()
  stored.convert('RGB').save(buf, 'TIFF', tiffinfo={decoder.ORIENTATION_TAG: orientation})
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
    exif[decoder.ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    stored.convert('RGB').save(buf, 'WEBP', lossless=True, exif=exif.tobytes())
    data = buf.getvalue()
  for target in (None, 20):
    dec = decoder.decode(data, target=target)
    assert dec.size == (48, 64) == decoder.image_size(data), (dec.size, target)
    if target is None:
      np.testing.assert_array_equal(dec.image, shown)
    else:
      assert dec.image.shape[1] > dec.image.shape[0]  # landscape, as displayed
  # A PIL image handed in (the notebook API), opened or already loaded.
  img = Image.open(io.BytesIO(data))
  np.testing.assert_array_equal(decoder.decode(img).image, shown)
  img = Image.open(io.BytesIO(data))
  img.load()
  np.testing.assert_array_equal(decoder.decode(img).image, shown)


@pytest.mark.parametrize('fmt,tol', [('PNG', 0.0), ('JPEG', 2.0)])
def test_rotated_photo_gets_the_upright_model_input(fmt, tol):
  """Orientation 6 (a phone held upright): same preprocessed input as the upright photo, on
  the predict path (working copy, then resize) and the dataset path (bytes, DCT-reduced)."""
  shown = image_fixture.smooth_photo(96, 128)
  upright, rotated = (image_fixture.encode(shown, fmt, o) for o in (1, 6))
  assert Image.open(io.BytesIO(rotated)).size == (96, 128)  # stored sideways
  for target in (None, 40):
    a, b = (decoder.decode(d, target=target) for d in (upright, rotated))
    assert a.size == b.size == (96, 128) and a.image.shape == b.image.shape
    x, y = (preprocess.preprocess_eval_np(d.image, 32).astype(float) for d in (a, b))
    assert np.abs(x - y).mean() <= tol
  x, y = (preprocess.preprocess_eval_np(d, 32).astype(float) for d in (upright, rotated))
  assert np.abs(x - y).mean() <= tol


def test_large_images_decode_reduced_with_the_original_size():
  shown = image_fixture.smooth_photo(600, 900)
  for fmt in ('JPEG', 'PNG'):
    dec = decoder.decode(image_fixture.encode(shown, fmt), target=100)
    assert dec.size == (600, 900) and dec.reduced
    assert 100 <= min(dec.image.shape[:2]) < 200  # both sides >= target, not much more
    assert abs(dec.image.shape[1] / dec.image.shape[0] - 1.5) < 0.02
  # The long side bound wins for an extreme aspect ratio (and needs no target).
  dec = decoder.decode(image_fixture.encode(image_fixture.smooth_photo(40, 1000), 'PNG'),
                          target=64, max_side=256)
  assert dec.size == (40, 1000) and max(dec.image.shape[:2]) <= 256
  # Palette and 16-bit images reduce band by band to the same picture as converting first.
  pal = Image.fromarray(shown).convert('P', palette=Image.Palette.ADAPTIVE, colors=32)
  buf = io.BytesIO()
  pal.save(buf, 'PNG')
  want = np.asarray(pal.convert("RGB").reduce(6))  # 600 // 100
  np.testing.assert_array_equal(decoder.decode(buf.getvalue(), target=100).image, want)


# predict's working copy (`image_files.WORK_SIDE`, `.WORK_MAX_PIXELS`; this module stays off the
# Predictor's imports) and the long side that capped it before the pixel budget.
_WORK_SIDE, _WORK_PIXELS, _OLD_MAX_SIDE = 1024, 2048 * 4096, 4096


def _planned(hw, jpeg, target=_WORK_SIDE, max_side=None, budget=_WORK_PIXELS):
  """((h, w) of the DCT-reduced decode, (h, w) of the copy) `decode` makes of an image of
  header size hw, by its own arithmetic: the JPEG draft 1/n (sides rounded up), then the
  integer reduce factor (rounded up)."""
  h, w = hw
  scale = decoder._work_scale(hw, target, max_side, budget)
  n = decoder._dct_denominator(hw, target, max_side, budget) if jpeg else 1
  size = (-(-w // n), -(-h // n))  # PIL's (W, H)
  f = decoder._reduce_factor(size, (w, h), scale, max_side, budget)
  return (size[1], size[0]), (-(-size[1] // f), -(-size[0] // f))


def test_the_working_copy_budget_keeps_photos_and_strips():
  """predict's working copy was capped by its long side (4096): a 40x20000 JPEG strip came out
  5x2500, a smear at the model's 224x224. A pixel budget of 2048x4096 (the old cap's largest
  copy) keeps a strip's short side, bounds every copy, and leaves every copy the cap did not
  shrink as it was (all photos up to 2:1)."""
  # The arithmetic is what decode does (tiny or flat images, JPEG and PNG).
  for hw, target, budget in (((40, 20000), _WORK_SIDE, _WORK_PIXELS),
                             ((256, 8192), _WORK_SIDE, 2**17), ((600, 900), 100, 2**16),
                             ((300, 200), 64, None)):
    for fmt in ('JPEG', 'PNG'):
      data = image_fixture.encode(np.full(hw + (3,), 90, np.uint8), fmt)
      dec = decoder.decode(data, target=target, budget=budget)
      assert dec.size == hw and dec.image.shape[:2] == _planned(hw, fmt == 'JPEG', target,
                                                                budget=budget)[1], (hw, fmt)
  assert _planned((40, 20000), True)[1] == (40, 20000)
  assert _planned((40, 20000), True, max_side=_OLD_MAX_SIDE, budget=None)[1] == (5, 2500)
  # Photos (<= 2:1, either way up) and, about the old cap's largest copy, every copy the cap did
  # not shrink: as before; those it shrank keep more of their short side now.
  sides = list(range(32, 9000, 127)) + [2047, 2048, 2049, 4095, 4096, 4097]
  photos = [(h, w) for h in sides for w in sides if max(h, w) <= 2 * min(h, w)]
  edge = [(h, w) for h in range(2040, 2056, 2) for w in range(4080, 4112, 3)]
  for hw in photos + edge:
    for jpeg in (True, False):
      new = _planned(hw, jpeg)[1]
      old = _planned(hw, jpeg, max_side=_OLD_MAX_SIDE, budget=None)[1]
      if new != old:  # only where the cap shrank the copy, keeping more of its short side
        assert hw not in photos and min(new) > min(old), (hw, jpeg, new, old)
        assert max(_planned(hw, jpeg, budget=None)[1]) > _OLD_MAX_SIDE, (hw, jpeg)
  # Strips within the budget stay whole; no copy (nor a JPEG's DCT decode) exceeds it, up to
  # the 100 MP cap and JPEG's 65535-px side.
  for hw in ((40, 20000), (100, 65000), (32, 65535), (1000, 8000), (20, 3000)):
    assert _planned(hw, True)[1] == _planned(hw, False)[1] == hw
  for hw in ((1000, 100_000), (32, 3_125_000), (1525, 65535), (10_000, 10_000), (7000, 14000),
             (2000, 10_000), (4000, 25_000), (9999, 10_001)):
    for jpeg in (True, False):
      draft, copy = _planned(hw, jpeg)
      assert copy[0] * copy[1] <= _WORK_PIXELS, (hw, jpeg, copy)
      assert not jpeg or draft[0] * draft[1] <= _WORK_PIXELS, (hw, draft)
      assert abs(copy[1] / copy[0] - hw[1] / hw[0]) <= hw[1] / hw[0] / copy[0] + 1e-9


def test_a_pixel_budget_reduces_a_jpeg_in_the_dct(monkeypatch):
  """The fast path holds under a budget: a 256x8192 JPEG within 2**17 pixels is decoded at 1/4
  by the JPEG decoder (draft), 64x2048, never at full size."""
  from PIL import JpegImagePlugin
  calls = []
  draft = JpegImagePlugin.JpegImageFile.draft

  def spy(self, mode, size):
    calls.append(size)
    return draft(self, mode, size)

  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', spy)
  data = image_fixture.encode(image_fixture.smooth_photo(256, 8192), 'JPEG')
  dec = decoder.decode(data, target=_WORK_SIDE, budget=2**17)
  assert calls == [(2048, 64)] and dec.size == (256, 8192) and dec.image.shape == (64, 2048, 3)


def test_a_tall_strip_resizes_to_the_model_input_height_first(monkeypatch):
  """Pillow < 13 resizes the width first, through a 224 x h temporary (0.7 GB for the working
  copy of a 32 x 3,125,000 PNG, 8 x 781250); a tall image goes height first (the pixels of a
  one-call resize on Pillow 13, which orders the passes so itself)."""
  sizes = []
  resize = Image.Image.resize

  def spy(self, size, *args, **kwargs):
    sizes.append((self.size, tuple(size)))
    return resize(self, size, *args, **kwargs)

  a = np.random.default_rng(0).integers(0, 255, (20000, 40, 3), np.uint8)
  one = np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.BILINEAR))
  monkeypatch.setattr(Image.Image, 'resize', spy)
  out = preprocess.preprocess_eval_np(a, 224)
  assert sizes == [((40, 20000), (40, 224)), ((40, 224), (224, 224))]
  assert np.abs(out.astype(int) - one).max() <= 1
  sizes.clear()
  preprocess.preprocess_eval_np(a[:600], 224)  # a photo: one call, as before
  assert sizes == [((40, 600), (224, 224))]


def test_bomb_is_refused_from_the_header():
  with pytest.raises(decoder.DecodeError) as e:
    decoder.decode(huge_header_png(12000, 12000), what='big.png')
  assert e.value.reason == decoder.DECOMPRESSION_BOMB
  _one_line(e, 'big.png: decompression bomb: 144 MP > cap 100 MP', '12000x12000')
  with pytest.raises(decoder.DecodeError) as e:  # past PIL's own limit: raised in open()
    decoder.decode(huge_header_png(), what='x')
  _one_line(e, 'decompression bomb: 10,000 MP > cap 100 MP')


def test_oversize_file_is_refused_before_it_is_read(tmp_path):
  p = tmp_path / 'huge.png'
  with open(p, 'wb') as f:  # sparse: 2 GB on paper, nothing on disk
    f.truncate(2 * 2**30)
  with pytest.raises(decoder.DecodeError) as e:
    decoder.read_file(p)
  assert e.value.reason == decoder.TOO_LARGE
  _one_line(e, str(p), 'file too large: 2048 MB > cap 64 MB')
  with pytest.raises(decoder.DecodeError) as e:
    decoder.decode(b'x' * 101, max_bytes=100, what='rec 7')
  _one_line(e, 'rec 7: file too large')


@pytest.mark.parametrize('make,reason,text', [
    (lambda: b'', decoder.EMPTY, 'empty file'),
    (lambda: b'plain text, not an image', decoder.UNDECODABLE, 'not an image'),
    (lambda: image_fixture.encode(image_fixture.smooth_photo(64, 64))[:-300],
     decoder.TRUNCATED, 'truncated file'),
    (lambda: image_fixture.encode(np.zeros((1, 1, 3), np.uint8), 'PNG'), decoder.TOO_SMALL,
     'too small: 1x1 px, under 32 px a side'),
])
def test_each_cause_is_one_line(make, reason, text):
  with pytest.raises(decoder.DecodeError) as e:
    decoder.decode(make(), min_side=decoder.MIN_SIDE, what='photo.jpg')
  assert e.value.reason == reason
  _one_line(e, 'photo.jpg: ' + text)


def test_missing_file_is_one_line(tmp_path):
  with pytest.raises(decoder.DecodeError) as e:
    decoder.read_file(tmp_path / 'nope.jpg')
  assert e.value.reason == decoder.MISSING
  _one_line(e, 'nope.jpg: no such file')
  # Links that lead nowhere say so (both read 'no such file; check the path').
  (tmp_path / 'dangling.jpg').symlink_to(tmp_path / 'gone.jpg')
  (tmp_path / 'loop.jpg').symlink_to(tmp_path / 'loop.jpg')
  for name, text in (('dangling.jpg', f'a broken symbolic link (to {tmp_path / "gone.jpg"})'),
                     ('loop.jpg', 'a loop of symbolic links')):
    with pytest.raises(decoder.DecodeError) as e:
      decoder.read_file(tmp_path / name)
    assert e.value.reason == decoder.MISSING
    _one_line(e, f'{name}: {text}')


def test_a_missing_path_with_white_space_says_so(tmp_path, monkeypatch):
  """'a.jpg\r' (a list with Windows line ends, through xargs or mapfile) beside an existing
  a.jpg was 'a.jpg\r: no such file; check the path': the path looked right, its '\r' moved
  the cursor back. The path is shown escaped, with what is wrong with it."""
  (tmp_path / 'a.jpg').write_bytes(b'x')
  monkeypatch.chdir(tmp_path)
  for name in ('a.jpg\r', ' a.jpg', 'a.jpg\t', str(tmp_path / 'a.jpg\r')):
    with pytest.raises(decoder.DecodeError) as e:
      decoder.read_file(name)
    assert e.value.reason == decoder.MISSING
    msg = _one_line(e, repr(name) + ': no such file', 'white space', 'strip')
    assert msg.isprintable()


_CHILD = textwrap.dedent('''
    import resource, sys
    from aesthetics_jax.data import decoder
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = peak()
    for path in sys.argv[1:]:
      d = decoder.decode(decoder.read_file(path), target=1024, budget=2048 * 4096)
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
  scored with a RuntimeWarning); a finite one in [0, 1] is scaled by 255."""
  a = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
  finite = io.BytesIO()
  Image.fromarray(a, 'F').save(finite, format='TIFF')
  img = decoder.decode(finite.getvalue(), what='finite.tif').image
  assert img.shape == (40, 50, 3) and img.max() == 255 and img.min() == 0
  for bad in (np.nan, np.inf):
    b = a.copy()
    b[3, 7] = bad
    buf = io.BytesIO()
    Image.fromarray(b, 'F').save(buf, format='TIFF')
    with pytest.raises(decoder.DecodeError) as e:
      decoder.decode(buf.getvalue(), what='science.tif')
    assert str(e.value) == ('science.tif: float pixels that are not finite (NaN or inf); save '
                            'it as an 8- or 16-bit image')
    assert e.value.reason == decoder.UNDECODABLE


def _saved(img: Image.Image, fmt: str) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt)
  return buf.getvalue()


def test_wide_grey_modes_follow_one_rule_not_their_own_maximum():
  """16-bit and 32-bit grey were scaled by 1/257 only in the 'I;16' modes; an 'I' image (PIL
  opens 16-bit PGM so) and a float one beyond 1 were stretched to their own maximum: a dark
  16-bit PGM came out 4x brighter than the same image as a 16-bit PNG, and a value's pixel
  depended on the rest of the image. Now v / 257 for both integer modes, v x 255 for floats
  in [0, 1]; what the rule cannot map is refused in one line."""
  g8 = np.linspace(0, 255, 40 * 48).round().astype(np.uint8).reshape(40, 48)
  dark = (g8.astype(np.uint16) * 257) // 4  # a quarter of the 16-bit range
  want = (dark >> 8).astype(np.uint8)
  as_png, as_pgm = (decoder.decode(_saved(Image.fromarray(dark), f)).image
                    for f in ('PNG', 'PPM'))
  assert np.array_equal(as_pgm, as_png), (as_pgm.max(), as_png.max())  # was 255 against 63
  for fmt in ('PNG', 'TIFF', 'PPM'):  # modes I;16, I;16, I
    for data, expect in ((g8.astype(np.uint16) * 257, g8), (dark, want)):
      got = decoder.decode(_saved(Image.fromarray(data), fmt)).image
      assert np.array_equal(got, np.repeat(expect[..., None], 3, -1)), fmt
  big_endian = Image.frombytes('I;16B', (48, 40), dark.astype('>u2').tobytes())
  assert np.array_equal(decoder.decode(_saved(big_endian, 'TIFF')).image[..., 0], want)
  half = (g8 / 510).astype(np.float32)  # floats in [0, 0.5]: half brightness, not stretched
  assert np.array_equal(decoder.decode(Image.fromarray(half, 'F')).image[..., 0],
                        np.rint(half.astype(np.float64) * 255).astype(np.uint8))
  for a, match in (((g8 / 64).astype(np.float32), r'float pixels outside \[0, 1\] \(from 0 '
                    r'to 3\.98\d*\); scale them to \[0, 1\] or save it as an 8- or 16-bit'),
                   (g8.astype(np.int32) * 1000, r'32-bit integer pixels outside \[0, 65535\] '
                    r'\(from 0 to 255000\); save it as an 8- or 16-bit image')):
    with pytest.raises(decoder.DecodeError, match='^deep.tif: ' + match) as e:
      decoder.decode(_saved(Image.fromarray(a), 'TIFF'), what='deep.tif')
    assert e.value.reason == decoder.UNDECODABLE


def test_transparent_pixels_are_composited_over_white_in_every_mode():
  """Alpha was dropped: a transparent pixel counted as the colour stored under it, so two
  cut-outs that look the same (one editor stores black under alpha 0, another stale colours)
  decoded, and scored, differently; a palette PNG's transparent index showed its colour. Now
  every alpha mode is composited over white (decoder.ALPHA_BACKGROUND)."""
  rng = np.random.default_rng(3)
  rgb = rng.integers(0, 256, (40, 48, 3), np.uint8)
  alpha = np.full((40, 48), 255, np.uint8)
  alpha[:, :16], alpha[:, 16:24] = 0, 128
  white = 255.0  # decoder.ALPHA_BACKGROUND
  blend = np.rint(rgb[:, 16:24] * (128 / 255) + white * (127 / 255))
  hidden = rgb.copy()
  hidden[:, :16] = 0  # what another editor stores under alpha 0
  outs = [decoder.decode(_saved(Image.fromarray(np.dstack([c, alpha]), 'RGBA'), fmt)).image
          for c in (rgb, hidden) for fmt in ('PNG', 'TIFF')]
  for out in outs:
    assert np.array_equal(out, outs[0])
  assert (outs[0][:, :16] == 255).all() and np.array_equal(outs[0][:, 24:], rgb[:, 24:])
  assert np.abs(outs[0][:, 16:24] - blend).max() <= 1
  grey = rgb[..., 0]
  la = decoder.decode(_saved(Image.fromarray(np.dstack([grey, alpha]), 'LA'), 'PNG')).image
  assert (la[:, :16] == 255).all() and np.array_equal(la[:, 24:, 0], grey[:, 24:])
  pal = Image.fromarray(rgb).quantize(8)
  index = np.asarray(pal)[0, 0]
  p = decoder.decode(_saved_kw(pal, 'PNG', transparency=int(index))).image
  shown = np.asarray(pal.convert('RGB'))
  is_index = np.asarray(pal) == index
  assert (p[is_index] == 255).all() and np.array_equal(p[~is_index], shown[~is_index])
  # A PIL image in the premultiplied modes: the same as its straight form.
  straight = Image.fromarray(np.dstack([rgb, alpha]), 'RGBA')
  assert np.abs(decoder.decode(straight.convert('RGBa')).image.astype(int)
                - outs[0]).max() <= 2


def _saved_kw(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def test_truncated_files_are_refused_whatever_load_truncated_images_says(monkeypatch,
                                                                         tmp_path):
  """A notebook (or a library it imports) that set PIL's ImageFile.LOAD_TRUNCATED_IMAGES got a
  JPEG cut mid-scan (or a cut PNG) scored from its grey-padded remains by predict's decoder
  and the API; only prepare_data refused it, by switching the flag off process-wide while it
  validated. The decoder refuses it whatever the flag says, and the caller's own loads keep
  the flag (in other threads too, while the decoder loads)."""
  import threading
  from PIL import ImageFile
  from aesthetics_jax import api
  jpg = image_fixture.encode(image_fixture.smooth_photo(200, 300))
  png = image_fixture.encode(image_fixture.smooth_photo(200, 300), 'PNG')
  monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
  for name, whole in (('cut.jpg', jpg), ('cut.png', png)):
    cut = whole[:len(whole) * 2 // 3]
    with pytest.raises(decoder.DecodeError, match=f'^{name}: truncated file') as e:
      decoder.decode(cut, what=name)
    assert e.value.reason == decoder.TRUNCATED
    assert selection.check_image_bytes(cut) == selection.TRUNCATED
    (tmp_path / name).write_bytes(cut)
    with pytest.raises(ValueError, match='truncated file'):
      api.to_array(str(tmp_path / name))
    with pytest.raises(ValueError, match='truncated file'):
      api.to_array(Image.open(tmp_path / name))
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # still the caller's setting
    Image.open(io.BytesIO(cut)).load()  # padded, as the caller asked
  setting = ImageFile.LOAD_TRUNCATED_IMAGES
  seen = []
  with setting.off():  # as inside the decoder's load: off here, on in another thread
    assert not setting
    t = threading.Thread(target=lambda: seen.append(bool(ImageFile.LOAD_TRUNCATED_IMAGES)))
    t.start()
    t.join()
  assert seen == [True] and setting == True  # noqa: E712  (the caller compares so)


def test_formats_pillow_cannot_read_are_named(monkeypatch):
  """A phone's HEIC photo (or a JPEG XL file) was 'not an image (no image format recognised);
  pass a JPEG or PNG file', as a damaged file is: the user looked for damage. It names the
  format and the fix (for HEIC: the extra that reads it); a file of no image format keeps its
  words. (As without pillow-heif: tests/test_heif.py has a real HEIC with and without it.)"""
  monkeypatch.setattr(decoder, 'HEIF', False)
  heic = (b'\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heicmiaf' + bytes(64)
          + b'\x00\x00\x00\x08meta')
  mif1 = b'\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic' + bytes(64)
  jxl = b'\xff\x0a' + bytes(64)
  for data, name, fix in ((heic, 'HEIC/HEIF', decoder.HEIF_HINT),
                          (mif1, 'HEIC/HEIF', decoder.HEIF_HINT),
                          (jxl, 'JPEG XL', 'convert it to JPEG or PNG')):
    with pytest.raises(decoder.DecodeError) as e:
      decoder.decode(data, what='IMG_0001.HEIC')
    assert str(e.value) == (f'IMG_0001.HEIC: {name} image: a format this Pillow cannot read '
                            f'(no plugin for it); {fix}')
    assert selection.check_image_bytes(data) == selection.UNDECODABLE
  mp4 = b'\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom' + bytes(64)
  with pytest.raises(decoder.DecodeError, match=r'not an image \(no image format recognised'):
    decoder.decode(mp4)


def test_a_png_with_damaged_pixel_data_is_refused_not_decoded_wrong():
  """PIL checks no IDAT CRC and stops inflating once it has the pixels, so a PNG with a byte
  damaged near the end of its pixel data decoded silently to wrong pixels (prepare_data kept
  it, predict scored it); its chunk's CRC says so, as libpng does."""
  import struct
  png = image_fixture.encode(image_fixture.smooth_photo(64, 64), 'PNG')
  start = png.find(b'IDAT') + 4
  end = start + struct.unpack('>I', png[start - 8:start - 4])[0]
  want = np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
  for at in range(end - 5, end - 64, -1):  # a flip PIL decodes without a word
    bad = bytearray(png)
    bad[at] ^= 0x55
    try:
      quiet = np.asarray(Image.open(io.BytesIO(bytes(bad))).convert('RGB'))
    except OSError:
      continue
    if not np.array_equal(quiet, want):
      break
  else:
    pytest.fail('no silently wrong flip found')
  with pytest.raises(decoder.DecodeError) as e:
    decoder.decode(bytes(bad), what='x.png')
  assert str(e.value) == ('x.png: damaged PNG: its IDAT chunk fails its CRC check; re-export '
                          'or re-download it')
  assert selection.check_image_bytes(bytes(bad)) == selection.UNDECODABLE
  assert np.array_equal(decoder.decode(png).image, want)  # intact: as before


def test_16_bit_grey_is_scaled_as_pil_reads_16_bit_colour():
  """PIL reads a 16-bit colour PNG by its high byte; 16-bit grey was v / 257 rounded, so a
  grey image decoded one level off the same image in colour (a pixel of 0x80FF: 129 against
  128). Both are v >> 8 now."""
  import struct
  import zlib

  def png16(a: np.ndarray, colour_type: int) -> bytes:
    h, w = a.shape[:2]
    raw = b''.join(b'\x00' + row.astype('>u2').tobytes() for row in a)
    chunks = [(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, 0)),
              (b'IDAT', zlib.compress(raw)), (b'IEND', b'')]
    return b'\x89PNG\r\n\x1a\n' + b''.join(
        struct.pack('>I', len(d)) + k + d + struct.pack('>I', zlib.crc32(k + d)) for k, d in chunks)

  v = (np.arange(40 * 48, dtype=np.uint32).reshape(40, 48) * 37 % 65536).astype(np.uint16)
  colour = decoder.decode(png16(np.repeat(v[..., None], 3, -1), 2)).image
  grey = decoder.decode(png16(v, 0)).image
  assert np.array_equal(grey, colour)
  assert np.array_equal(grey[..., 0], (v >> 8).astype(np.uint8))


def _scan_bomb(extra: int, app_noise: int = 0) -> bytes:
  """A small progressive JPEG with its last scan repeated `extra` times (a "scan bomb": each
  copy is a pass over the whole image), and `app_noise` SOS marker bytes inside an APP15
  segment before it (not scans)."""
  buf = io.BytesIO()
  Image.fromarray(image_fixture.smooth_photo(48, 64)).save(buf, 'JPEG', progressive=True)
  data = buf.getvalue()
  assert decoder.jpeg_scans(data) == 10
  eoi = data.rindex(b'\xff\xd9')
  last = data.rindex(b'\xff\xda', 0, eoi)  # the last scan: its header and data up to EOI
  noise = b'\xff\xda' * app_noise
  app = b'\xff\xef' + (len(noise) + 2).to_bytes(2, 'big') + noise if app_noise else b''
  return data[:2] + app + data[2:eoi] + data[last:eoi] * extra + data[eoi:]


def test_a_progressive_jpeg_of_too_many_scans_is_refused_before_decoding(monkeypatch):
  """Its scans were all decoded, however many (each a pass over the whole image): no cap."""
  ok = _scan_bomb(decoder.MAX_JPEG_SCANS - 10, app_noise=2000)
  assert decoder.jpeg_scans(ok) == decoder.MAX_JPEG_SCANS  # the APP segment's bytes: no scans
  assert decoder.decode(ok, what='ok.jpg').image.shape == (48, 64, 3)
  bomb = _scan_bomb(decoder.MAX_JPEG_SCANS - 9)
  with pytest.raises(decoder.DecodeError) as e:
    decoder.decode(bomb, what='bomb.jpg')
  assert e.value.reason == decoder.UNDECODABLE
  _one_line(e, 'bomb.jpg: a progressive JPEG of over 500 scans (decoder.MAX_JPEG_SCANS; '
            'photos have ~10), each a pass over the whole image; re-encode it')
  # Refused before the pixels are decoded, by every path (prepare's validation: a skip).
  monkeypatch.setattr(Image.Image, 'load', lambda self: pytest.fail('decoded'))
  assert selection.check_image_bytes(bomb) == decoder.UNDECODABLE
  with pytest.raises(decoder.DecodeError, match='rec 3: a progressive JPEG of over 500'):
    preprocess.resize_train_np(bomb, 40, 'rec 3')
