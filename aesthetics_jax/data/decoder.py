"""The one decoder of every input image (prepare, train, evaluate, predict, the evaluation
figures), host-side and JAX-free.

`decode`: a byte cap (`MAX_FILE_BYTES`, 64 MB) before anything is read, a pixel cap
(`MAX_PIXELS`, 100 MP) and a minimum side checked from the header before anything is decoded,
as is a progressive JPEG's number of scans (`MAX_JPEG_SCANS`: "scan bombs"), reduced
decoding of large images (JPEG `draft()`: the JPEG decoder's DCT downscaling; other formats
`Image.reduce`) to a bounded working size, the EXIF orientation, so that the model, boxes
and crops are in the displayed frame and reported sizes are displayed sizes, and the embedded
RGB colour profile (ICC), so that the model sees the colours a browser shows (`to_srgb`).
Every failure is a one-line `DecodeError` naming the image and its cause (`.reason`).
What follows decoding (resize, crops, mirrors, to float) is `preprocess`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import math
import os
from pathlib import Path
import re
import stat
import threading
import warnings
import zlib

import numpy as np
from PIL import Image
from PIL import ImageFile
try:  # LittleCMS: in every Pillow wheel; a Pillow built without it reads pixels as sRGB
  from PIL import ImageCms
except ImportError:  # pragma: no cover
  ImageCms = None

from aesthetics_jax.data.errors import InputError

# Limits of every image decode (prepare, train, evaluate, predict):
MAX_FILE_BYTES = 64 * 2**20  # bigger files are refused before they are read (or decoded)
# More pixels than this is refused from the header alone (decompression bomb). Real photos are
# below it (AVA ~1-3 MP; 24-61 MP cameras); non-JPEG formats decode at full size first, so this
# also bounds that transient (~4 bytes per pixel: <= 400 MB).
MAX_PIXELS = 100_000_000
MIN_SIDE = 32  # smaller images carry no usable content at 224 px (prepare skips, predict refuses)
# A progressive JPEG may hold any number of scans, each a pass over every coefficient of the
# image however few bytes it has: thousands of tiny scans in a small file are a "scan bomb"
# (milliseconds a scan for a photo). Real files have ~10; more than this is refused before
# decoding, as libjpeg-turbo's TurboJPEG does with its progressive scan limit.
MAX_JPEG_SCANS = 500

# Why an image cannot be used (DecodeError.reason; the skipped.csv reasons of prepare_data).
MISSING = 'missing'
UNREADABLE = 'unreadable'  # there, but refused to us (permissions) or failing (I/O error)
EMPTY = 'empty'
TOO_LARGE = 'too_large'
TRUNCATED = 'truncated'
UNDECODABLE = 'undecodable'
TOO_SMALL = 'too_small'
DECOMPRESSION_BOMB = 'decompression_bomb'
REASONS = (MISSING, UNREADABLE, EMPTY, TOO_LARGE, TRUNCATED, UNDECODABLE, TOO_SMALL,
           DECOMPRESSION_BOMB)

# Appended to decoding errors of dataset records (the input pipeline).
DATASET_HINT = 're-run launch/prepare_data.py, which skips unusable images'

ORIENTATION_TAG = 0x0112
# EXIF orientation → the transposition that displays it (PIL.ImageOps.exif_transpose's table).
_TRANSPOSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DCT = (1, 2, 4, 8)  # the JPEG decoder's scale denominators
_WIDE_GREY = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')
_ALPHA = ('RGBA', 'RGBa', 'LA', 'PA')
# What transparent pixels are composited over (`to_rgb`): white, as a page shows them.
ALPHA_BACKGROUND = (255, 255, 255)
BAND_PIXELS = 1 << 22  # pixels per band when a reduced image is converted band by band

# What decoded pixels mean, for what is stored or cached from them (the resized store, the
# feature cache): change it when the decoding rule changes, and they are rebuilt, not reused.
# 'srgb-1': RGB images with an ICC profile other than sRGB are converted to sRGB.
RULE = 'srgb-1'


def _register_heif() -> bool:
  """HEIC / HEIF (phones' photos) through pillow-heif when it is installed (`pip install
  'aesthetics-jax[heif]'`; optional: its wheels bundle the GPL-licensed x265 encoder). Its
  plugin applies the container's rotation itself and reports orientation 1."""
  try:
    import pillow_heif  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  pillow_heif.register_heif_opener()
  return True


HEIF = _register_heif()
HEIF_HINT = "pip install 'aesthetics-jax[heif]' (pillow-heif), or convert it to JPEG or PNG"

# Our header check rejects images over MAX_PIXELS with a one-line error; PIL's warning for
# them (above its own ~89 MP threshold) would only repeat it on stderr.
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)


class DecodeError(InputError):
  """An image that cannot be used, for one `reason` (a `REASONS` entry, as in skipped.csv)."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Decoded:
  """A decoded image in its displayed orientation.

  image: uint8 [h, w, 3], possibly reduced (see `decode`); size: (H, W) of the whole image as
  displayed (EXIF orientation applied): the frame boxes are reported in; format: PIL's name
  of the file format ('JPEG' decodes reduced without materialising the full image);
  converted: an embedded colour profile was applied (`to_srgb`): `image` is not the file's
  own numbers.
  """
  image: np.ndarray
  size: tuple[int, int]
  format: str | None = None
  converted: bool = False

  @property
  def reduced(self) -> bool:
    return tuple(self.image.shape[:2]) != tuple(self.size)


def _mp(pixels: int) -> str:
  mp = pixels / 1e6
  return f'{mp:,.0f} MP' if mp >= 100 else f'{mp:.3g} MP'


def _mb(num_bytes: int) -> str:
  return f'{num_bytes / 2**20:.4g} MB'


def _fail(reason: str, what: str, detail: str, hint: str = '') -> DecodeError:
  return DecodeError(reason, f'{what}: {detail}' + (f'; {hint}' if hint else ''))


def read_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
  """The bytes of an image file, refused BEFORE reading when larger than `max_bytes`.

  Raises `DecodeError` ('missing' | 'unreadable' | 'empty' | 'too_large'), one line naming the
  file.
  """
  p = Path(path)
  try:
    st = p.stat()
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise _fail(MISSING, str(p), 'a loop of symbolic links', 'pass the file itself') from None
    if e.errno not in (errno.ENOENT, errno.ENOTDIR):
      # Before is_symlink(), which raised this EACCES again (a folder of mode 000): the raw
      # errno line ended prepare_data instead of a skip.
      raise _unreadable(p, e) from None
    if p.is_symlink():
      raise _fail(MISSING, str(p), f'a broken symbolic link (to {os.readlink(p)})',
                  'fix or remove the link') from None
    text = str(p)
    if text != text.strip() or not text.isprintable():
      # A line of a list with Windows line ends ('a.jpg\r', through xargs or mapfile) or a
      # pasted name: 'check the path' showed nothing wrong, the '\r' itself moved the cursor.
      raise _fail(MISSING, repr(text), 'no such file', 'it has white space or control '
                  'characters at its ends or within (a line of a list with Windows line ends? '
                  'strip them)') from None
    raise _fail(MISSING, text, 'no such file', 'check the path') from None
  if not stat.S_ISREG(st.st_mode):
    raise _fail(UNDECODABLE, str(p), 'not a regular file', 'pass an image file')
  if st.st_size > max_bytes:
    raise _too_large(str(p), st.st_size, max_bytes)
  try:
    with open(p, 'rb') as f:
      data = f.read(max_bytes + 1)  # +1: a file that grew since stat() is still refused
  except OSError as e:
    raise _unreadable(p, e) from None
  if len(data) > max_bytes:
    raise _too_large(str(p), len(data), max_bytes)
  if not data:
    raise _fail(EMPTY, str(p), 'empty file (0 bytes)', 'pass an image file')
  return data


def _unreadable(p: Path, e: OSError) -> DecodeError:
  denied = e.errno in (errno.EACCES, errno.EPERM)
  return _fail(UNREADABLE, str(p), f'cannot read ({e.strerror or e})',
               'check the permissions of the file and its folders' if denied
               else 'check the disk it is on')


def _too_large(what: str, size: int, cap: int) -> DecodeError:
  return _fail(TOO_LARGE, what, f'file too large: {_mb(size)} > cap {_mb(cap)} '
               '(decoder.MAX_FILE_BYTES)', 'downscale or re-encode it')


def _bomb(what: str, pixels: int, cap: int, wh: tuple[int, int] | None = None) -> DecodeError:
  dims = f' ({wh[0]}x{wh[1]} px)' if wh else ''
  return _fail(DECOMPRESSION_BOMB, what, f'decompression bomb: {_mp(pixels)} > cap {_mp(cap)}'
               f'{dims}', 'downscale it below the cap (decoder.MAX_PIXELS)')


def _open(data: bytes | Image.Image, what: str, hint: str, max_bytes: int,
          max_pixels: int) -> Image.Image:
  """PIL image with its header parsed (pixels not decoded yet)."""
  if isinstance(data, Image.Image):
    return data
  if not data:
    raise _fail(EMPTY, what, 'empty file (0 bytes)', hint)
  if len(data) > max_bytes:
    raise _too_large(what, len(data), max_bytes)
  try:
    img = Image.open(io.BytesIO(data))
    img.size  # noqa: B018  (header parsed; pixel data decoded lazily)
    return img
  except Image.DecompressionBombError as e:
    # PIL's own limit (2x its MAX_IMAGE_PIXELS) fires inside open(), before our check can.
    m = re.search(r'\((\d+) pixels\)', str(e))
    raise _bomb(what, int(m.group(1)) if m else max_pixels + 1, max_pixels) from None
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
    unread = isinstance(e, Image.UnidentifiedImageError) and _unsupported_format(data)
    if unread == 'HEIC/HEIF' and HEIF:  # the plugin is there and could not read it
      raise _fail(UNDECODABLE, what, 'HEIC/HEIF image that pillow-heif cannot read (damaged, '
                  'or a variant it does not support)', hint or 're-export it as JPEG') from None
    if unread:  # 'not an image' sent a user with a phone's HEIC photo looking for damage
      raise _fail(UNDECODABLE, what, f'{unread} image: a format this Pillow cannot read (no '
                  'plugin for it)',
                  hint or (HEIF_HINT if unread == 'HEIC/HEIF' else 'convert it to JPEG or PNG')
                  ) from None
    why = ('no image format recognised' if isinstance(e, Image.UnidentifiedImageError)
           else f'{type(e).__name__}: {e}')
    raise _fail(UNDECODABLE, what, f'not an image ({why})',
                hint or 'pass a JPEG or PNG file') from None


# ISO base media file brands (the ftyp box) of image formats Pillow reads only with a plugin.
_HEIF_BRANDS = {b'heic', b'heix', b'heim', b'heis', b'hevc', b'hevx', b'hevm', b'hevs',
                b'mif1', b'msf1'}
_AVIF_BRANDS = {b'avif', b'avis'}
_JXL_SIGNATURES = (b'\xff\x0a', b'\x00\x00\x00\x0cJXL \r\n\x87\n')


def _unsupported_format(data: bytes) -> str:
  """The name of a known image format that `data` is in ('HEIC/HEIF', 'AVIF', 'JPEG XL'),
  from its signature, or '' (only asked once PIL recognised no format)."""
  if data.startswith(_JXL_SIGNATURES):
    return 'JPEG XL'
  if data[4:8] != b'ftyp':
    return ''
  end = min(len(data), int.from_bytes(data[:4], 'big'), 256)
  brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
  if brands & _AVIF_BRANDS:
    return 'AVIF'
  return 'HEIC/HEIF' if brands & _HEIF_BRANDS else ''


def orientation(img: Image.Image) -> int:
  """EXIF orientation 1..8 of an opened image, from its header (1 if absent or invalid).

  PNG: only an eXIf chunk before the pixel data counts (where the PNG spec puts it); PIL would
  otherwise decode the whole image to look for one after it.
  """
  if img.format == 'PNG' and 'exif' not in img.info:
    return 1
  try:
    value = int(img.getexif().get(ORIENTATION_TAG, 1))
  except Exception:  # pylint: disable=broad-except  (malformed EXIF: the pixels still count)
    return 1
  return value if value in _TRANSPOSE else 1


@functools.cache
def _plugin_orients(fmt: str | None) -> bool:
  """Whether PIL's plugin for `fmt` applies the EXIF orientation itself: Pillow's TIFF plugin
  does in recent versions (the size at open is already the displayed one, and load() turns
  the pixels), older ones do not. Found by trying, once per format: ours must then not turn
  the image a second time."""
  if fmt != 'TIFF':
    return False
  buf = io.BytesIO()
  Image.new('L', (2, 1)).save(buf, 'TIFF', tiffinfo={ORIENTATION_TAG: 6})
  buf.seek(0)
  return Image.open(buf).size == (1, 2)


def _to_apply(img: Image.Image) -> int:
  """The orientation left for us to apply to an opened (not yet loaded) image."""
  return 1 if _plugin_orients(img.format) else orientation(img)


def _displayed(size: tuple[int, int], orient: int) -> tuple[int, int]:
  """PIL (W, H) as stored → (H, W) as displayed."""
  w, h = size
  return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _fits(hw: tuple[int, int], max_side: int | None, budget: int | None) -> bool:
  """Whether a (h, w) copy meets the bounds: long side <= max_side, h * w <= budget pixels."""
  return (not max_side or max(hw) <= max_side) and (not budget or hw[0] * hw[1] <= budget)


def _work_scale(hw: tuple[int, int], target: int | None, max_side: int | None,
                budget: int | None = None) -> float:
  """The smallest scale (<= 1) the decoded copy may have: both sides stay >= target, the long
  side <= max_side and the pixels <= budget (those bounds win where they disagree with target:
  extreme aspect ratios, huge panoramas)."""
  s = 1.0
  if target:
    s = min(s, target / min(hw))
  if max_side:
    s = min(s, max_side / max(hw))
  if budget:
    s = min(s, math.sqrt(budget / (hw[0] * hw[1])))
  return s


def _dct_denominator(hw: tuple[int, int], target: int | None, max_side: int | None,
                     budget: int | None = None) -> int:
  """JPEG DCT scaling 1/n, n in 1, 2, 4, 8: the most reduction keeping both sides >= target,
  and at least the least reduction that fits max_side and budget (which win)."""
  keep = [n for n in _DCT if target and min(hw) // n >= target]
  fit = [n for n in _DCT if _fits((-(-hw[0] // n), -(-hw[1] // n)), max_side, budget)]
  bounded = bool(max_side or budget)
  return max(max(keep, default=1), min(fit, default=_DCT[-1]) if bounded else 1)


def _reduce_factor(size: tuple[int, int], header: tuple[int, int], scale: float,
                   max_side: int | None, budget: int | None = None) -> int:
  """Integer factor for `Image.reduce` of a decoded (maybe drafted) image of PIL `size`: the
  largest keeping it >= `scale` x the `header` size, at least enough for long side <= max_side
  and pixels <= budget (reduce rounds up: ceil(side / f))."""
  keep = min(size[0] // max(1, math.ceil(header[0] * scale)),
             size[1] // max(1, math.ceil(header[1] * scale)))
  fit = -(-max(size) // max_side) if max_side else 1
  if budget:  # ceil(w / f) * ceil(h / f) >= w * h / f²: start there, then round up
    fit = max(fit, math.isqrt(size[0] * size[1] // max(1, budget)))
    while not _fits((-(-size[1] // fit), -(-size[0] // fit)), None, budget):
      fit += 1
  return max(1, keep, fit)


class _UnmappedPixels(Exception):
  """Pixels of a 32-bit or float image outside the range `to_rgb` maps (NaN, inf, a float
  image beyond [0, 1]): no white level fits them; `str(e)` says why, `.hint` the fix."""

  def __init__(self, detail: str, hint: str):
    super().__init__(detail)
    self.hint = hint


# Float pixels this far outside [0, 1] (half an 8-bit level) are rounding, clipped, not refused.
_FLOAT_SLACK = 0.5 / 255


def _wide_to_grey(img: Image.Image) -> Image.Image:
  """A 16-bit, 32-bit integer or float grey image → 'L' by `to_rgb`'s rule."""
  a = np.asarray(img)  # PIL's own dtype: a float64 copy of a 100 MP image was 800 MB more
  if img.mode == 'F':
    if not np.isfinite(a).all():
      raise _UnmappedPixels('float pixels that are not finite (NaN or inf)',
                            'save it as an 8- or 16-bit image')
    white, slack = 1.0, _FLOAT_SLACK
  else:
    white, slack = 65535.0, 0.0
  lo, hi = float(a.min()), float(a.max())
  if lo < -slack or hi > white + slack:
    kind = 'float' if img.mode == 'F' else '32-bit integer'
    raise _UnmappedPixels(
        f'{kind} pixels outside [0, {white:g}] (from {lo:g} to {hi:g})',
        'scale them to [0, 1] or save it as an 8- or 16-bit image' if img.mode == 'F' else
        'save it as an 8- or 16-bit image')
  if img.mode == 'F':
    scaled = np.rint(np.clip(a.astype(np.float64) * 255.0, 0, 255))
    return Image.fromarray(scaled.astype(np.uint8), 'L')
  # The high byte, as PIL reads 16-bit colour PNG / TIFF (it has no 16-bit RGB mode): v / 257
  # rounded put a grey image one level off the same image in colour. In 0..65535 (checked).
  return Image.fromarray((a >> 8).astype(np.uint8), 'L')


def to_rgb(img: Image.Image) -> Image.Image:
  """THE conversion of a decoded image of any PIL mode to 8-bit RGB (files of every path,
  PIL images and RGBA arrays of the API), by one rule:

  - 16-bit grey ('I;16', 'I;16B', ...) and 32-bit integer grey ('I', as PIL opens 16-bit
    PGM/PPM): v >> 8, the high byte, as PIL reads 16-bit colour PNG and TIFF (65535 → 255;
    an 8-bit value x 257 gives it back); 'I' pixels outside 0..65535 are refused.
  - float grey ('F'): the [0, 1] convention, v x 255 rounded; NaN, inf or values outside
    [0, 1] (beyond half a level) are refused. Never scaled to the image's own maximum: the
    same value gave another pixel in each image, and a 16-bit PGM (mode 'I') came out
    brighter than the same image as a 16-bit PNG.
  - alpha ('RGBA', 'LA', 'PA', premultiplied 'RGBa' / 'La', a palette or grey or RGB image
    with a transparent colour): composited over white (ALPHA_BACKGROUND), so that pixels
    nobody sees do not count: dropping alpha scored the colours hidden under it, which differ
    between two files that look the same.
  - every other mode (palette, '1', 'L', CMYK incl. Adobe's inverted JPEGs, YCbCr, ...):
    PIL's convert('RGB').

  Raises `_UnmappedPixels` for the refusals (`_decode` makes them a `DecodeError`).
  """
  if img.mode == 'RGB' and 'transparency' not in img.info:
    return img
  if img.mode in _WIDE_GREY:
    return _wide_to_grey(img).convert('RGB')
  if img.mode == 'La':  # PIL converts La (premultiplied) to LA only: 'not supported' to RGB
    img = img.convert('LA')
  if img.mode in _ALPHA or 'transparency' in img.info:
    rgba = img.convert('RGBA')  # unpremultiplies RGBa; applies a palette's transparency
    back = Image.new('RGBA', rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(back, rgba).convert('RGB')
  return img.convert('RGB')


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')) if ImageCms else None
# Every 8-bit level step of 36 on each channel (8³ colours): what tells sRGB-like profiles.
_PROBE = np.stack(np.meshgrid(*[np.arange(0, 256, 36, dtype=np.uint8)] * 3), -1).reshape(1, -1, 3)


@functools.lru_cache(maxsize=32)
def srgb_transform(icc: bytes | None) -> ImageCms.ImageCmsTransform | None:
  """The transform from an embedded ICC profile to sRGB, or None where the pixels are used
  as they are: no profile, a profile that is not RGB (grey, CMYK: PIL's conversions), one that
  does not parse (shown as sRGB by browsers too), or one that moves no probe colour by more
  than one 8-bit level (sRGB under any of its names, or a variant of it: transforming would
  only add rounding)."""
  if ImageCms is None or not isinstance(icc, bytes) or icc[16:20] != b'RGB ':
    return None
  try:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    # NOCACHE: lcms's one-pixel cache is not safe when decoding threads share a transform.
    t = ImageCms.buildTransform(source, _SRGB, 'RGB', 'RGB',
                                flags=ImageCms.Flags.NOCACHE)
    probe = np.asarray(ImageCms.applyTransform(Image.fromarray(_PROBE, 'RGB'), t))
  except Exception:  # pylint: disable=broad-except  (any malformed profile: PyCMSError, ...)
    return None
  if np.abs(probe.astype(np.int16) - _PROBE).max() <= 1:
    return None
  return t


def to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
  """RGB `img` whose pixels are in the colour space of `icc` (the file's embedded profile:
  Display P3 of phones, Adobe RGB of cameras), converted to sRGB, the space the ImageNet
  weights and AVA's photos were seen in and that an untagged PNG / JPEG we write is shown in.
  Read as sRGB, a Display P3 photo's colours came out duller than any browser shows them, and
  differed from the same photo exported as sRGB. `img` itself where `srgb_transform` is None."""
  t = srgb_transform(icc)
  return img if t is None else ImageCms.applyTransform(img, t)


def _reduce_to_rgb(img: Image.Image, factor: int) -> Image.Image:
  """`img` (loaded) reduced by an integer factor (box filter) and converted to RGB.

  Modes that must be converted first (palette, 16-bit, CMYK, ...) are converted band by band,
  so a huge palette or grey image never exists at full size in a wider mode.
  """
  if img.mode == 'RGB' and 'transparency' not in img.info:
    return img.reduce(factor) if factor > 1 else img
  if factor == 1:
    return to_rgb(img)
  w, h = img.size
  rows = factor * max(1, BAND_PIXELS // (w * factor))  # a multiple of factor: same result
  out = Image.new('RGB', (-(-w // factor), -(-h // factor)))
  for y in range(0, h, rows):
    band = to_rgb(img.crop((0, y, w, min(h, y + rows))))
    out.paste(band.reduce(factor), (0, y // factor))
  return out


# The next marker after a scan's entropy-coded data: 0xFF (and fill 0xFFs) then a byte other
# than 0x00 (a stuffed 0xFF data byte) or 0xD0-0xD7 (restart markers, which stay in the scan).
_AFTER_SCAN = re.compile(rb'\xff+[^\x00\xd0-\xd7\xff]')


def jpeg_scans(data: bytes, stop: int = MAX_JPEG_SCANS + 1) -> int:
  """The number of scans (SOS markers) in the JPEG `data`, counted up to `stop`. Marker
  segments are skipped by their lengths, so bytes inside them (an EXIF thumbnail's own scans)
  do not count; a malformed stream ends the count (the decoder then says what is wrong)."""
  n, i, size = 0, 2, len(data)
  while n < stop and i + 4 <= size and data[i] == 0xFF:
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte before a marker
      i += 1
    elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a segment
      i += 2
    elif marker == 0xD9:  # end of image
      break
    else:
      end = i + 2 + int.from_bytes(data[i + 2:i + 4], 'big')
      if marker != 0xDA:
        i = end
        continue
      n += 1
      nxt = _AFTER_SCAN.search(data, end)
      if nxt is None:
        break
      i = nxt.end() - 2
  return n


def _check_scans(data: bytes | Image.Image, img: Image.Image, what: str, hint: str) -> None:
  """Refuses a progressive JPEG of more than MAX_JPEG_SCANS scans before it is decoded (the
  scan bomb above; a sequential JPEG's scans each cost their bytes' worth). Bytes only: a PIL
  image handed in has no bytes to look at here."""
  if (img.format != 'JPEG' or not img.info.get('progressive')
      or not isinstance(data, (bytes, bytearray))):
    return
  # An upper bound first, at memchr speed (the regex walk costs ~7 ns a byte): the marker's
  # two bytes may also lie inside other segments, never inside entropy-coded data.
  if data.count(b'\xff\xda') <= MAX_JPEG_SCANS:
    return
  if jpeg_scans(data) > MAX_JPEG_SCANS:
    raise _fail(UNDECODABLE, what, f'a progressive JPEG of over {MAX_JPEG_SCANS} scans '
                '(decoder.MAX_JPEG_SCANS; photos have ~10), each a pass over the whole image',
                hint or 're-encode it')


class _PaddingOffHere:
  """Stands in for a true `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` (set by a notebook or an
  imported library: PIL then pads a truncated file with grey, silently): true in every thread
  but one inside `_strict_load`, where a truncated file must fail ('truncated'). PIL reads the
  setting as a truth value at each use, so the user's threads keep theirs, and it is never
  switched off under them (prepare_data used to set it False process-wide while validating).
  """

  def __init__(self) -> None:
    self._strict = threading.local()

  def __bool__(self) -> bool:
    return not getattr(self._strict, 'on', False)

  def __eq__(self, other: object) -> bool:
    return bool(self) == other

  def __hash__(self) -> int:
    return hash(bool(self))

  def __repr__(self) -> str:
    return repr(bool(self))

  @contextlib.contextmanager
  def off(self):
    before, self._strict.on = getattr(self._strict, 'on', False), True
    try:
      yield
    finally:
      self._strict.on = before


_INSTALL = threading.Lock()


def _strict_load(img: Image.Image) -> None:
  """img.load(), a truncated file an error whatever ImageFile.LOAD_TRUNCATED_IMAGES says."""
  if not ImageFile.LOAD_TRUNCATED_IMAGES:  # PIL refuses truncated files itself
    img.load()
    return
  with _INSTALL:
    if not isinstance(ImageFile.LOAD_TRUNCATED_IMAGES, _PaddingOffHere):
      ImageFile.LOAD_TRUNCATED_IMAGES = _PaddingOffHere()
    setting = ImageFile.LOAD_TRUNCATED_IMAGES
  with setting.off():
    img.load()


def _check_png_crcs(data: bytes | Image.Image, img: Image.Image, what: str,
                    hint: str) -> None:
  """Refuses a PNG whose critical chunks (IHDR, PLTE, IDAT, IEND, ...) fail their CRC, as
  libpng does: PIL checks no IDAT CRC and stops inflating once it has the pixels (zlib's own
  check comes after them), so a byte damaged near the end of the pixel data decoded silently
  to wrong pixels. The walk stops where the chunks run past the end (the decoder then says
  'truncated'); ancillary chunks are PIL's to judge. Bytes only, as `_check_scans`."""
  if img.format != 'PNG' or not isinstance(data, (bytes, bytearray)):
    return
  i, size, view = 8, len(data), memoryview(data)  # no copy of each chunk
  while i + 12 <= size:
    end = i + 8 + int.from_bytes(data[i:i + 4], 'big')
    if end + 4 > size:
      return
    kind = bytes(data[i + 4:i + 8])
    if not kind[0] & 0x20 and zlib.crc32(view[i + 4:end]) != int.from_bytes(
        data[end:end + 4], 'big'):
      raise _fail(UNDECODABLE, what, f'damaged PNG: its {kind.decode("latin-1")} chunk fails '
                  'its CRC check', hint or 're-export or re-download it')
    if kind == b'IEND':
      return
    i = end + 4


def _classify(e: Exception, what: str, hint: str) -> DecodeError:
  if isinstance(e, Image.DecompressionBombError):
    return _fail(DECOMPRESSION_BOMB, what, f'decompression bomb ({e})', hint)
  message = ' '.join(str(e).split())  # one line: pillow-heif's messages end in a newline
  low = message.lower()
  reason = TRUNCATED if 'truncat' in low or 'end of file' in low else UNDECODABLE
  detail = 'truncated file' if reason == TRUNCATED else 'cannot decode image'
  return _fail(reason, what, f'{detail} ({type(e).__name__}: {message})',
               hint or 're-export or re-download it')


def decode_pil(data: bytes | Image.Image, *, target: int | None = None,
               max_side: int | None = None, min_side: int = 1,
               max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
               what: str = 'image', hint: str = '',
               budget: int | None = None, srgb: bool = True
               ) -> tuple[Image.Image, tuple[int, int]]:
  """`decode`, returning the RGB PIL image and the displayed (H, W). `srgb=False`: the
  pixels in the file's own colour space (for an image saved again with its profile)."""
  img, size, _, _ = _decode(data, target, max_side, min_side, max_pixels, max_bytes, what,
                            hint, budget, srgb)
  return img, size


def _decode(data: bytes | Image.Image, target: int | None, max_side: int | None, min_side: int,
            max_pixels: int, max_bytes: int, what: str, hint: str,
            budget: int | None = None, srgb: bool = True
            ) -> tuple[Image.Image, tuple[int, int], str | None, bool]:
  img = _open(data, what, hint, max_bytes, max_pixels)
  w, h = img.size
  if w * h > max_pixels:
    raise _bomb(what, w * h, max_pixels, (w, h))
  if min(w, h) < min_side:
    raise _fail(TOO_SMALL, what, f'too small: {w}x{h} px, under {min_side} px a side',
                'the model needs a larger image (prepare_data skips these too)')
  _check_scans(data, img, what, hint)
  _check_png_crcs(data, img, what, hint)
  try:
    orient = _to_apply(img)
    scale = _work_scale((h, w), target, max_side, budget)
    n = _dct_denominator((h, w), target, max_side, budget) if img.format == 'JPEG' else 1
    if n > 1:
      # DCT-domain downscaling by 1/n: the full image is never materialised. (draft picks the
      # largest 1/n whose sides stay >= the requested size.)
      img.draft('RGB', (w // n, h // n))
    _strict_load(img)
    out = _reduce_to_rgb(img, _reduce_factor(img.size, (w, h), scale, max_side, budget))
    converted = False
    if srgb:  # after reducing: cheap
      rgb, out = out, to_srgb(out, img.info.get('icc_profile'))
      converted = out is not rgb
    if orient != 1:
      out = out.transpose(_TRANSPOSE[orient])  # after reducing: cheap
    return out, _displayed((w, h), orient), img.format, converted
  except DecodeError:
    raise
  except _UnmappedPixels as e:
    raise _fail(UNDECODABLE, what, str(e), e.hint) from None
  except Exception as e:  # pylint: disable=broad-except  (any decoder failure)
    raise _classify(e, what, hint) from None


def decode(data: bytes | Image.Image, *, target: int | None = None,
           max_side: int | None = None, min_side: int = 1, max_pixels: int = MAX_PIXELS,
           max_bytes: int = MAX_FILE_BYTES, what: str = 'image', hint: str = '',
           budget: int | None = None, srgb: bool = True) -> Decoded:
  """THE decoder of every input image (prepare, train, evaluate, predict).

  In order: refuses more than `max_bytes` of data; reads the header and refuses more than
  `max_pixels` pixels (decompression bombs) or a side under `min_side`, and a progressive JPEG
  (given as bytes) of more than `MAX_JPEG_SCANS` scans or a PNG whose chunks fail their CRC,
  before decoding anything; refuses a truncated file whatever PIL's LOAD_TRUNCATED_IMAGES
  says; decodes
  reduced when `target` / `max_side` / `budget` allow it (JPEG: DCT scaling via `draft`; every
  format: then `Image.reduce` by an integer factor), so that both sides stay >= `target`, the
  long side <= `max_side` and the pixels <= `budget` (those two win where target disagrees:
  extreme aspect ratios, huge panoramas); converts any mode to RGB (`to_rgb`: its rule for
  16-bit, float and transparent images); converts an embedded RGB colour profile's pixels
  to sRGB (`to_srgb`); applies the EXIF orientation (as
  `PIL.ImageOps.exif_transpose`, on the reduced image). Non-JPEG formats are
  fully decoded first (PIL cannot decode them reduced): at most ~4 bytes per pixel, i.e. <= 400
  MB at the 100 MP cap.

  Args:
    data: encoded bytes (or an opened PIL image).
    target: keep both sides >= target (None: full resolution).
    max_side: bound on the long side of the result (None: none).
    budget: bound on the pixels of the result, h * w (None: none): unlike max_side it keeps a
      thin strip's short side (predict's working copy).
    min_side: smaller images raise 'too_small' (prepare and predict use `MIN_SIDE`).
    what: names the image in errors (path, image_id).
    hint: what the user should do, appended to decoding errors.
    srgb: False keeps the pixels in the file's colour space (masks are data, not colours).
  Returns:
    `Decoded`: image uint8 [h, w, 3] in the displayed orientation (reduced or not), and the
    displayed (H, W) of the whole image.
  Raises:
    DecodeError: one line `<what>: <cause>; <fix>`, `.reason` one of `REASONS`.
  """
  img, size, fmt, converted = _decode(data, target, max_side, min_side, max_pixels, max_bytes,
                                      what, hint, budget, srgb)
  return Decoded(np.asarray(img, dtype=np.uint8), size, fmt, converted)


def image_size(data: bytes, what: str = 'image') -> tuple[int, int]:
  """(H, W) as displayed (EXIF orientation applied), from the header only."""
  img = _open(data, what, '', MAX_FILE_BYTES, MAX_PIXELS)
  return _displayed(img.size, _to_apply(img))


def decode_record(data: bytes | Image.Image, min_size: int | None,
                  what: str = 'image') -> Image.Image:
  """RGB PIL image of a dataset record, reduced while both sides stay >= min_size."""
  return decode_pil(data, target=min_size, what=what, hint=DATASET_HINT)[0]


def decode_image(data: bytes, min_size: int | None = None) -> np.ndarray:
  """Decodes any PIL-readable image (JPEG, PNG, grey, CMYK, palette, RGBA) to RGB.

  Args:
    data: encoded file bytes.
    min_size: if set, the image may be decoded reduced with both sides >= min_size (fast path
      when the image is then resized to min_size² or smaller).
  Returns:
    uint8 [H, W, 3] in the displayed (EXIF) orientation; `decode` for the limits.
  """
  return np.asarray(decode_record(data, min_size), dtype=np.uint8)
