"""Image files for prediction: the model input (as evaluation makes it), the working copy,
overlay sizes, full-size crops.

Bounded memory for any input (`decoder.decode`'s byte and pixel caps): the model's input is
decoded as evaluation decodes a test image (`model_input`); for drawing, each file is decoded
reduced to a working copy (both sides >= `WORK_SIDE` where the image is larger, at most
`WORK_MAX_PIXELS` pixels: a pixel budget, so a 40x20000 strip keeps its 40 rows); overlays
are drawn with their long side <= `OVERLAY_MAX_SIDE`, a thin strip's with its short side up
to `OVERLAY_MIN_SIDE` instead (`overlay_grid`, at most `OVERLAY_MAX_SIDE`² pixels,
`OVERLAY_STRIP_PIXELS` for a strip the overlay folds); crops are cut from the image decoded
again, at full resolution up to `CROP_MAX_PIXELS` (36 MP, whatever the aspect: a 40x20000
strip is cut at full size too), beyond it JPEGs DCT-reduced to that many pixels and other
formats (which PIL decodes only at full size) cut from the working copy.
"""
from __future__ import annotations

import io
import math
import os
from typing import Sequence

import numpy as np
from PIL import ExifTags
from PIL import Image
from PIL import ImageChops
from PIL import JpegImagePlugin

from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax.explain import crop
from aesthetics_jax.report import overlays


# Working copy of each image (model input, overlays): both sides >= WORK_SIDE where the image
# is larger, at most WORK_MAX_PIXELS pixels (which wins: a long panorama). A pixel budget, not a
# long side: a 4096-px long side left a 40x20000 JPEG strip 5x2500, a smear at the model's
# 224x224; it now stays 40x20000.
WORK_SIDE = 1024
# 2048 x 4096: about the largest copy the former 4096-px long side allowed (a 2048x4095 photo
# was kept whole), so the largest copy is as large as before, and every copy that cap did not
# shrink (all photos up to 2:1) is the same.
WORK_MAX_PIXELS = 2 * WORK_SIDE * 4096
OVERLAY_MAX_SIDE = 1024  # long side of --overlay_dir images
# A thinner overlay keeps this short side (or the image's own, never enlarged) within
# OVERLAY_MAX_SIDE² pixels, a square photo's overlay: a 40x20000 strip's was 2x1024.
OVERLAY_MIN_SIDE = 128
# A strip the overlay folds into rows (beyond `overlays.FOLD_ASPECT`:1, shown about 2:1) keeps
# that short side within this many pixels instead: at OVERLAY_MAX_SIDE² a 32x100000 strip's
# rows were 18 px high, now 32 (its whole 3.2 MP; ~22 bytes a pixel while drawn).
OVERLAY_STRIP_PIXELS = 4 * OVERLAY_MAX_SIDE ** 2
# Beyond this aspect ratio a record carries a `note`: the model's square input squashes the
# image so far (a 40x20000 strip 500 times) that its score and maps say little.
EXTREME_ASPECT = 5
# Crops are cut at full resolution up to this many pixels (6000², 36 MP), from a reduced
# decode beyond (see the module docstring).
CROP_MAX_PIXELS = 6000 * 6000
# --crop_format: 'auto' writes a JPEG photo's crop as JPEG with the photo's own quantisation
# tables and chroma subsampling (Pillow's quality='keep'), other sources' as PNG. Why: a 10 MP
# JPEG's crop as PNG took ~1 s to compress and 2.7x the photo's bytes (measured on 16 photos).
CROP_FORMATS = ('auto', 'jpeg', 'png')
# A JPEG crop of a source whose tables cannot be reused (PNG, CMYK or greyscale JPEG).
CROP_JPEG_QUALITY = 95


class PredictError(ValueError):
  """One-line user error about a single input image."""


def load_image(path: str | os.PathLike | bytes, target: int | None = WORK_SIDE,
               budget: int | None = WORK_MAX_PIXELS, what: str | None = None
               ) -> decoder.Decoded:
  """Reads and decodes an image file, or a file's bytes (`decoder.read_file` /
  `decoder.decode`: size caps, reduced decoding to `target` within `budget` pixels, EXIF
  orientation). The defaults make the working copy (`aesthetics-predict` and the API feed the
  model from it); `target=None, budget=None`: full resolution.

  Returns `Decoded` (image uint8 [h,w,3], displayed size (H, W)); PredictError (one line: the
  path and the cause) for a missing, oversized, truncated, non-image, bomb or < 32 px file.
  what: names bytes in errors (default: the path, or 'image bytes').
  """
  data = read_bytes(path)
  what = input_name(path) if what is None else what
  try:
    return decoder.decode(data, target=target, budget=budget, min_side=decoder.MIN_SIDE,
                          what=what)
  except decoder.DecodeError as e:
    raise PredictError(str(e)) from None


def input_name(path: str | os.PathLike | bytes) -> str:
  """How errors name an input: its path, or 'image bytes' for a file's content."""
  return 'image bytes' if isinstance(path, bytes) else str(path)


def read_bytes(path: str | os.PathLike | bytes) -> bytes:
  """A file's bytes (bytes pass through): read once, for every decode of it."""
  if isinstance(path, bytes):
    return path
  try:
    return decoder.read_file(path)
  except decoder.DecodeError as e:
    raise PredictError(str(e)) from None


def model_input(data: bytes, size: int, what: str) -> tuple[decoder.Decoded, np.ndarray]:
  """(the decode, uint8 [size, size, 3] model input) of a file's bytes, made as evaluation
  makes a test image's (`pipeline.eval_batches`: decoded reduced to >= `size` a side, then
  resized), so that predict, the API and aesthetics-evaluate score a file alike. Resized from
  the >= 1024 px working copy instead, 157 of the demo's 300 test images scored over 0.01
  apart (up to 0.30) and 4 labels flipped."""
  image = load_image(data, target=size, budget=None, what=what)
  return image, preprocess.preprocess_eval_np(image.image, size)


def overlay_grid(hw: tuple[int, int]) -> tuple[int, int]:
  """(h', w') an overlay of an image of (H, W) pixels is drawn at: the aspect kept, the long side
  <= OVERLAY_MAX_SIDE, unless that leaves the short side under min(OVERLAY_MIN_SIDE, its own):
  then that short side (a 40x20000 strip: 40x20000, not 2x1024), within OVERLAY_MAX_SIDE²
  pixels, or OVERLAY_STRIP_PIXELS for a strip the overlay folds (a 100x65000 one: 80x52000; a
  32x100000 one whole). Never enlarged (`crop.box_grid`)."""
  grid = crop.box_grid(hw, OVERLAY_MAX_SIDE, OVERLAY_MIN_SIDE)
  short, long_side = min(hw), max(hw)
  want = min(short, OVERLAY_MIN_SIDE)
  if min(grid) >= want or long_side <= overlays.FOLD_ASPECT * short:
    return grid
  s = min(want / short, math.sqrt(OVERLAY_STRIP_PIXELS / (short * long_side)))
  new_short = max(1, round(short * s))
  new_long = max(1, min(round(long_side * s), OVERLAY_STRIP_PIXELS // new_short))
  return (new_short, new_long) if hw[0] <= hw[1] else (new_long, new_short)


def _source_metadata(source: str | os.PathLike | bytes
                     ) -> tuple[bytes | None, Image.Exif | None]:
  """(the RGB ICC profile, the EXIF) of an image file (a path or its bytes), each None when
  absent or unreadable: a crop never fails for its metadata."""
  try:
    data = isinstance(source, (bytes, bytearray, memoryview))
    with Image.open(io.BytesIO(bytes(source)) if data else source) as im:
      icc = im.info.get('icc_profile')
      try:
        exif = im.getexif()
        exif.get_ifd(ExifTags.IFD.Exif)  # read now: the file closes below
        exif.get_ifd(ExifTags.IFD.GPSInfo)
      except Exception:  # pylint: disable=broad-except  (malformed EXIF: the pixels count)
        exif = None
  except Exception:  # pylint: disable=broad-except
    return None, None
  return (icc if isinstance(icc, bytes) and icc[16:20] == b'RGB ' else None), (exif or None)


def rgb_icc_profile(source: str | os.PathLike | bytes) -> bytes | None:
  """The ICC profile of an image file (a path or its bytes), if it describes RGB: a crop keeps
  its colours in Display P3 or Adobe RGB only with it (a CMYK file's profile does not fit the
  RGB crop, so it is dropped, as is every other error: a crop never fails for it)."""
  return _source_metadata(source)[0]


def crop_exif(exif: Image.Exif | None, size: tuple[int, int]) -> bytes | None:
  """The source's EXIF for its crop of PIL `size` (W, H): date, camera, lens and GPS kept, as
  photo tools keep them (crops had none: a photographer's crops lost when and how they were
  taken); the orientation removed, a crop being cut upright, and the pixel dimensions set to
  the crop's. No thumbnail (Pillow writes none: it would show the whole photo)."""
  if not exif:
    return None
  try:
    out = Image.Exif()  # a copy holding only what the photo had (no empty sub-directories)
    for tag, value in exif.items():
      if tag not in (decoder.ORIENTATION_TAG, ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        out[tag] = value
    sub = dict(exif.get_ifd(ExifTags.IFD.Exif))
    sub.pop(ExifTags.IFD.Interop, None)  # an offset into the photo's file, not the crop's
    # PixelX/YDimension: the image's size, which a crop's are not.
    for tag, value in zip((ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight), size):
      if tag in sub:
        sub[tag] = value
    for ifd, entries in ((ExifTags.IFD.Exif, sub),
                         (ExifTags.IFD.GPSInfo, dict(exif.get_ifd(ExifTags.IFD.GPSInfo)))):
      if entries:
        out[ifd] = entries
    return out.tobytes() if len(out) else None
  except Exception:  # pylint: disable=broad-except  (a value Pillow cannot write again)
    return None


def crop_image(path: str | os.PathLike, image: decoder.Decoded,
               box: Sequence[int]) -> Image.Image:
  """`box` (original pixels) cut from the image, an RGB PIL image: from the file decoded again
  (at full resolution up to CROP_MAX_PIXELS, reduced to about that many beyond), or from the
  working copy when that is the whole image in the file's colours, or when a re-decode would
  materialise a huge non-JPEG image (another full-size transient after the model's memory is
  in use). A small Display P3 photo is cut from the file too: the same crop whatever the
  photo's size (its numbers and profile, its gamut kept), not sRGB below the working size."""
  h, w = image.size
  if ((not image.reduced and not image.converted)
      or (image.format != 'JPEG' and h * w > CROP_MAX_PIXELS)):
    y0, x0, y1, x1 = crop.scale_box(box, image.size, image.image.shape[:2])
    return with_icc(Image.fromarray(image.image[y0:y1, x0:x1]), path, converted=True)
  # A pixel budget, not a long side: a thin strip within it is cut at full size.
  max_side = None if h * w <= CROP_MAX_PIXELS else max(
      1, math.floor(max(h, w) * math.sqrt(CROP_MAX_PIXELS / (h * w))))
  try:  # cut and saved in PIL: no numpy copy of a full-resolution crop
    # In the file's own colours, saved with its profile: a Display P3 crop keeps its gamut.
    src, _ = decoder.decode_pil(decoder.read_file(path), max_side=max_side, what=str(path),
                                srgb=False)
  except decoder.DecodeError as e:
    raise PredictError(str(e)) from None
  y0, x0, y1, x1 = crop.scale_box(box, image.size, src.size[::-1])
  return with_icc(src.crop((x0, y0, x1, y1)), path)


def with_icc(cut: Image.Image, source: str | os.PathLike | bytes | bytearray,
             converted: bool = False) -> Image.Image:
  """`cut` carrying the source's RGB ICC profile and its EXIF for the crop (`crop_exif`) in
  `cut.info` (`encode_crop` embeds both; Pillow's PNG writer embeds the profile by itself).
  `converted`: `cut` was decoded to sRGB (`decoder.to_srgb`), so it carries the profile only
  where the decoder left the pixels as they were (an sRGB profile): another would be applied
  twice."""
  cut.info.pop('icc_profile', None)
  cut.info.pop('exif', None)
  icc, exif = _source_metadata(source)
  if (exif_bytes := crop_exif(exif, cut.size)):
    cut.info['exif'] = exif_bytes
  if icc and converted and decoder.srgb_transform(icc) is not None:
    return cut
  if icc:
    cut.info['icc_profile'] = icc
  return cut


def crop_suffix(crop_format: str, source_format: str | None) -> str:
  """'.jpg' or '.png': the file type of a crop of an image decoded from `source_format`
  ('JPEG', 'PNG', ... as `Decoded.format`) under `crop_format` (one of `CROP_FORMATS`)."""
  if crop_format not in CROP_FORMATS:
    raise ValueError(f'crop_format={crop_format!r}; use one of {CROP_FORMATS}')
  if crop_format == 'png' or (crop_format == 'auto' and source_format != 'JPEG'):
    return '.png'
  return '.jpg'


def encode_crop(cut: Image.Image, suffix: str, source: str | os.PathLike) -> bytes:
  """A crop's file bytes: PNG (lossless) for '.png'; for '.jpg' a JPEG with `source`'s own
  quantisation tables and chroma subsampling when it is an RGB JPEG (about its quality and
  bytes per pixel), a greyscale crop of a greyscale JPEG as greyscale with its table, else
  quality `CROP_JPEG_QUALITY` without chroma subsampling. The ICC profile and EXIF in
  `cut.info` (`with_icc`) are embedded either way (the RGB profile not in a greyscale crop)."""
  buf = io.BytesIO()
  meta = {'icc_profile': cut.info.get('icc_profile')}
  if cut.info.get('exif'):
    meta['exif'] = cut.info['exif']
  if suffix == '.png':
    cut.save(buf, format='PNG', **meta)
    return buf.getvalue()
  options = _jpeg_options(source)
  if options.pop('grey', False):
    if _is_grey(cut):  # as the photo is: one channel, its own table
      cut, meta['icc_profile'] = cut.convert('L'), None
    else:  # its table does not fit a colour crop
      options = {'quality': CROP_JPEG_QUALITY, 'subsampling': 0}
  cut.save(buf, format='JPEG', **meta, **options)
  return buf.getvalue()


def _is_grey(image: Image.Image) -> bool:
  """Whether an RGB (or L) image's channels are equal: a greyscale photo decoded to RGB."""
  if image.mode == 'L':
    return True
  if image.mode != 'RGB':
    return False
  r, g, b = image.split()
  return (ImageChops.difference(r, g).getbbox() is None
          and ImageChops.difference(g, b).getbbox() is None)


def _jpeg_options(source: str | os.PathLike) -> dict:
  """Pillow's JPEG save options that reuse `source`'s tables (its header only is read)."""
  try:
    with Image.open(source) as im:
      tables = getattr(im, 'quantization', None) or {}
      sampling = JpegImagePlugin.get_sampling(im) if im.format == 'JPEG' else -1
      # RGB JPEGs have a luma and a chroma table; greyscale (1) and CMYK (4) do not fit RGB.
      if im.format == 'JPEG' and im.mode == 'RGB' and len(tables) == 2 and sampling >= 0:
        return {'qtables': tables, 'subsampling': sampling}
      # A greyscale JPEG's crop was an RGB JPEG at quality 95: three channels, twice the
      # photo's bytes. `grey`: its table, for a crop that is grey too (`encode_crop`).
      if im.format == 'JPEG' and im.mode == 'L' and len(tables) == 1:
        return {'qtables': tables, 'grey': True}
  except Exception:  # pylint: disable=broad-except  (changed or unreadable: the default)
    pass
  return {'quality': CROP_JPEG_QUALITY, 'subsampling': 0}
