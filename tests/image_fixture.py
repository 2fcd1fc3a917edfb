"""Test images built cheaply: big flat PNGs streamed row by row, EXIF-rotated copies."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
# Turning the stored pixels by this shows the image upright: the inverse of what
# PIL.ImageOps.exif_transpose applies for each orientation.
_STORE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + kind + data
          + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))


def huge_header_png(w=100_000, h=100_000) -> bytes:
  """A ~60-byte PNG whose header declares w x h pixels (10 gigapixels by default)."""
  ihdr = struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)  # 1-bit grayscale
  return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr)
          + _chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + _chunk(b'IEND', b''))


def big_png(path: Path, w: int, h: int, mode: str = 'RGB') -> Path:
  """A w x h PNG ('RGB' or 'P') of a dark frame with a bright block, written row by row: a
  few hundred KB and well under a second, whatever its pixel count (the PIL route would hold
  the whole image in memory twice)."""
  colour_type, channels = {'RGB': (2, 3), 'P': (3, 1)}[mode]
  dark = b'\x00' + bytes(w * channels)
  bright = bytearray(dark)
  value = b'\xc8\x78\x28' if mode == 'RGB' else b'\x01'
  lo, hi = w // 5, w * 4 // 5
  bright[1 + lo * channels:1 + hi * channels] = value * (hi - lo)
  z = zlib.compressobj(1)
  idat = [z.compress(bytes(bright) if h // 4 <= y < h // 2 else dark) for y in range(h)]
  idat.append(z.flush())
  out = [b'\x89PNG\r\n\x1a\n',
         _chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, colour_type, 0, 0, 0))]
  if mode == 'P':
    out.append(_chunk(b'PLTE', bytes([0, 0, 0, 200, 120, 40])))
  out += [_chunk(b'IDAT', b''.join(idat)), _chunk(b'IEND', b'')]
  path.write_bytes(b''.join(out))
  return path


def smooth_photo(h: int = 96, w: int = 128) -> np.ndarray:
  """uint8 [h, w, 3]: gradients plus a bright off-centre disc (something for a CAM to find)."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  a = np.stack([xx * 255 / w, yy * 255 / h, 255 - (xx + yy) * 255 / (h + w)], -1)
  disc = (yy - h * 0.3) ** 2 + (xx - w * 0.7) ** 2 < (min(h, w) * 0.2) ** 2
  a[disc] = (250, 240, 60)
  return a.astype(np.uint8)


def encode(shown: np.ndarray, fmt: str = 'JPEG', orientation: int = 1) -> bytes:
  """`shown` (the displayed image) encoded as a camera would store it with EXIF
  `orientation`: pixels turned so that applying the orientation displays `shown`."""
  img = Image.fromarray(shown)
  kw = {'quality': 95, 'subsampling': 0} if fmt == 'JPEG' else {}
  if orientation != 1:
    img = img.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    kw['exif'] = exif.tobytes()
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def unfold(folded, hw, k, left=0):
  """The (h, w) picture `overlays.fold` cut into k pieces, put back together from the folded
  overlay (its image part starting at column `left`), and the gaps' pixels."""
  tall = hw[0] > hw[1]
  short, long_side = min(hw), max(hw)
  seg, gap = -(-long_side // k), max(3, short // 8)
  strip = folded.transpose(1, 0, 2) if tall else folded
  strip = strip[:, left:] if not tall else strip[left:]
  pieces = [strip[i * (short + gap):i * (short + gap) + short, :seg] for i in range(k)]
  gaps = [strip[i * (short + gap) + short:(i + 1) * (short + gap), :seg] for i in range(k - 1)]
  whole = np.concatenate(pieces, axis=1)[:, :long_side]
  return (whole.transpose(1, 0, 2) if tall else whole), np.concatenate(gaps, axis=0)


# D50-adapted colorants (the XYZ of full red, green, blue: columns sum to the D50 white).
DISPLAY_P3 = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))


def _s15(v: float) -> bytes:
  return struct.pack('>i', round(v * 65536))


def matrix_profile(colorants=DISPLAY_P3, gamma: float = 2.2, name: str = 'Display P3 test'
                   ) -> bytes:
  """An ICC v2 RGB display profile (matrix + one gamma curve), written here so that tests need
  no profile file: `DISPLAY_P3`'s primaries by default, as phones tag their photos."""
  xyz = lambda v: b'XYZ ' + bytes(4) + b''.join(_s15(c) for c in v)
  curve = b'curv' + bytes(4) + struct.pack('>IH', 1, round(gamma * 256)) + bytes(2)
  text = name.encode('ascii') + b'\0'
  desc = (b'desc' + bytes(4) + struct.pack('>I', len(text)) + text + bytes(4) + bytes(4)
          + bytes(2) + bytes(1) + bytes(67))
  desc += bytes(-len(desc) % 4)
  tags = [(b'desc', desc), (b'wtpt', xyz((0.9642, 1.0, 0.8249))),
          (b'rXYZ', xyz(colorants[0])), (b'gXYZ', xyz(colorants[1])),
          (b'bXYZ', xyz(colorants[2])), (b'rTRC', curve), (b'gTRC', curve), (b'bTRC', curve)]
  offset = 128 + 4 + 12 * len(tags)
  table, body = b'', b''
  for sig, data in tags:
    table += sig + struct.pack('>II', offset + len(body), len(data))
    body += data
  size = offset + len(body)
  header = (struct.pack('>I', size) + b'lcms' + bytes([2, 0x10, 0, 0]) + b'mntr' + b'RGB '
            + b'XYZ ' + bytes(12) + b'acsp' + bytes(4) * 2 + bytes(8) + bytes(8)
            + struct.pack('>I', 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(4)
            + bytes(16) + bytes(28))
  assert len(header) == 128, len(header)
  return header + struct.pack('>I', len(tags)) + table + body
