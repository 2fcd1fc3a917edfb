"""The interactive explorer: `eval/explorer/index.html` plus thumbnails and lazily loaded maps.

Plain data in, files out (no JAX; `evaluation/evaluators/explorer.py` computes the maps):

  explorer/index.html        page, styles, script and the per-image table (inline JSON)
  explorer/thumbs/<row>.jpg  one small JPEG per test image (longest side `thumb_size`)
  explorer/maps/<k>.js       `explorerChunk(k, {...})`: the maps, boxes, regions and low-map
                             peaks of `chunk_size` rows

Why this layout: the page must open from disk (`file://`), where browsers refuse `fetch` of
sibling files but still run `<script src>` and show `<img src>`; a chunk is loaded only when
one of its images is opened, so 2,203 images (the paper's test split) cost one table of a few
hundred KB up front. Maps are stored per image, method and target as uint8 at the CAM
resolution (at most `map_size` a side), base64; the page colours them (jet) and upsamples
them on a canvas over the thumbnail, at the image's own aspect.

The folder is written next to its final place and swapped in when complete, so a reader sees
either the previous explorer or the new one, never a mix.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import re
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from aesthetics_jax import io as io_lib
from aesthetics_jax.report import html as report_html

# Row fields of the inline table, in this order (the page reads them by name).
# region: the image has a region mask (None: no masks at all); hit: the first method's low map
# peaks inside it (None: no region); low_flat: that map points nowhere (a miss, no peak).
COLUMNS = ('row', 'image_id', 'true', 'pred', 'intensity', 'intensity_global', 'tag', 'label',
           'pred_label', 'empty', 'w', 'h', 'region', 'hit', 'low_flat')


@dataclasses.dataclass
class ExplorerImage:
  """One test image as the explorer shows it.

  image: the encoded original (JPEG/PNG bytes), thumbnailed here.
  pred: predicted mean score (MobileNetV2) or p(high) (VGG16).
  tag: name of the top predicted tag ('' without a tag head).
  maps: method -> raw maps f32 `[T, h, w]` (targets in `ExplorerWriter.targets` order); a
    method computed for fewer images (ScoreCAM) is simply absent.
  empty: method -> bool `[T]`, the map points nowhere (`crop.empty_maps`).
  boxes: method -> {'aesthetic' | 'attribute' | 'average': (y0, x0, y1, x1)} as fractions of
    the image height / width (end-exclusive).
  hw: (H, W) of the original image.
  region: bool `[s, s]` the image's region (a defect mask) on the model-input grid, which the
    page stretches to the image's aspect as it does the maps; all False: no region; None: no
    masks were given.
  low_peaks: method -> (y, x, hit): where its low map peaks (fractions of the grid) and whether
    the pointing game counts that as inside the region; (None, None, False) for a low map that
    points nowhere; None without a region.
  """
  row: int
  image_id: int
  image: bytes
  true: float
  pred: float
  intensity: float
  intensity_global: float
  label: int
  pred_label: int
  hw: tuple[int, int]
  tag: str = ''
  maps: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  empty: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  boxes: Mapping[str, Mapping[str, Sequence[float]]] = dataclasses.field(default_factory=dict)
  region: np.ndarray | None = None
  low_peaks: Mapping[str, tuple[float, float, bool] | None] = dataclasses.field(
      default_factory=dict)


def quantize_maps(maps: np.ndarray, max_side: int) -> np.ndarray:
  """Raw maps f32 `[T, h, w]` → uint8 `[T, h', w']`: min-max per map (as the report's
  per-image normalisation), area-averaged down to at most `max_side` a side."""
  maps = np.asarray(maps, np.float32)
  h, w = maps.shape[-2:]
  if max(h, w) > max_side:
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    maps = np.stack([np.asarray(Image.fromarray(m, 'F').resize(size, Image.BOX)) for m in maps])
  lo = maps.min(axis=(-2, -1), keepdims=True)
  span = maps.max(axis=(-2, -1), keepdims=True) - lo
  norm = (maps - lo) / np.maximum(span, 1e-12)
  return np.round(np.clip(norm, 0.0, 1.0) * 255.0).astype(np.uint8)


def thumbnail_jpeg(data: bytes, size: int, quality: int = 80) -> tuple[bytes, tuple[int, int]]:
  """Encoded image → (JPEG bytes with longest side <= `size`, (w, h) of the thumbnail)."""
  with Image.open(io.BytesIO(data)) as im:
    if im.format == 'JPEG':
      im.draft('RGB', (size, size))  # DCT downscale: decodes a large JPEG several times faster
    rgb = im.convert('RGB')
  rgb.thumbnail((size, size), Image.Resampling.BILINEAR)
  buf = io.BytesIO()
  rgb.save(buf, format='JPEG', quality=quality, optimize=True)
  return buf.getvalue(), rgb.size


def _json_for_script(obj: Any) -> str:
  """JSON safe inside `<script>`: no `</script>` or `<!--` can end it early."""
  return json.dumps(obj, separators=(',', ':'), allow_nan=False).replace('<', '\\u003c')


def _num(v: float, digits: int = 4) -> float | None:
  v = float(v)
  return round(v, digits) if np.isfinite(v) else None


def _asset(name: str) -> str:
  return resources.files('aesthetics_jax.report').joinpath(name).read_text('utf-8')


def _remove_dead_writers(out_dir: Path) -> None:
  """Removes the hidden siblings of `out_dir` that killed writers left: a SIGKILLed or
  OOM-killed evaluation kept its whole partial explorer (thumbnails and maps, tens of MB at
  AVA's size) as `.explorer.<pid>.<id>.tmp`, one more each time. A folder whose pid still
  runs on this host is another writer's, and stays."""
  pattern = re.compile(re.escape(f'.{out_dir.name}.') + r'(?:(\d+)\.[0-9a-f]{8}\.tmp|'
                       r'[0-9a-f]{8}\.old)$')
  try:
    names = os.listdir(out_dir.parent)
  except OSError:
    return
  for name in names:
    m = pattern.match(name)
    if m is None:
      continue
    if m.group(1) is not None and io_lib.writer_alive(int(m.group(1))):
      continue
    # '.old': the previous explorer, left if the swap's removal was cut short.
    shutil.rmtree(out_dir.parent / name, ignore_errors=True)


class ExplorerWriter:
  """Streams `ExplorerImage`s into `out_dir` (memory: one chunk of maps); use as a context
  manager, or call `close()` to publish (`abort()` drops the partial folder)."""

  def __init__(self, out_dir: str | os.PathLike, *, arch: str, methods: Sequence[str],
               targets: Sequence[str], title: str = 'aesthetics-jax explorer',
               demo: bool = False, method_images: Mapping[str, int] | None = None,
               notes: Sequence[str] = (), chunk_size: int = 50, thumb_size: int = 256,
               map_size: int = 32, staged: io_lib.Staged | None = None):
    self.out_dir = io_lib.path(out_dir)
    # The swap into place joins `staged` (landing with the evaluation's other files) if given.
    self._staged = staged
    # Local: written in a temporary folder swapped into place; object stores have no folder
    # rename, so the files go straight to `out_dir` there.
    self._local = io_lib.is_local(out_dir)
    self.arch, self.methods, self.targets = arch, list(methods), list(targets)
    self.title, self.demo, self.notes = title, bool(demo), list(notes)
    self.method_images = dict(method_images or {})
    self.chunk_size, self.thumb_size = int(chunk_size), int(thumb_size)
    self.map_size = int(map_size)
    tag = f'{os.getpid()}.{uuid.uuid4().hex[:8]}'
    self._tmp = (self.out_dir.parent / f'.{self.out_dir.name}.{tag}.tmp' if self._local
                 else self.out_dir)
    if self._local:
      _remove_dead_writers(Path(self.out_dir))
    (self._tmp / 'thumbs').mkdir(parents=True, exist_ok=not self._local)
    (self._tmp / 'maps').mkdir(exist_ok=not self._local)
    self._rows: list[list[Any]] = []
    self._chunk: dict[int, dict] = {}
    self._map_hw: list[int] | None = None

  def __enter__(self) -> 'ExplorerWriter':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()

  def add(self, im: ExplorerImage) -> None:
    """Writes the thumbnail now and buffers the maps until the chunk is full."""
    if im.row != len(self._rows):
      raise ValueError(f'explorer: rows must come in order; got {im.row}, '
                       f'expected {len(self._rows)}')
    jpeg, (tw, th) = thumbnail_jpeg(im.image, self.thumb_size)
    io_lib.atomic_write_bytes(self._tmp / 'thumbs' / f'{im.row}.jpg', jpeg, durable=False)
    # The grid flags an empty aesthetic map of the first (the evaluation's own) method.
    first = im.empty.get(self.methods[0]) if self.methods else None
    aes_empty = bool(np.asarray(first)[0]) if first is not None else False
    region = None if im.region is None else bool(np.asarray(im.region).any())
    peak = im.low_peaks.get(self.methods[0]) if self.methods else None
    self._rows.append([im.row, int(im.image_id), _num(im.true), _num(im.pred),
                       _num(im.intensity), _num(im.intensity_global), report_html.bidi_closed(im.tag),
                       int(im.label),
                       int(im.pred_label), aes_empty, tw, th, region,
                       bool(peak[2]) if region and peak else None,
                       bool(peak[0] is None) if region and peak else None])
    self._chunk[im.row] = self._maps_record(im)
    if len(self._chunk) >= self.chunk_size:
      self._flush()

  def _maps_record(self, im: ExplorerImage) -> dict:
    maps, empty = {}, {}
    for method, m in im.maps.items():
      q = quantize_maps(m, self.map_size)
      if self._map_hw is None:
        self._map_hw = [int(q.shape[1]), int(q.shape[2])]
      maps[method] = base64.b64encode(q.tobytes()).decode('ascii')
      empty[method] = [bool(e) for e in np.asarray(im.empty.get(method, np.zeros(len(q))))]
    boxes = {method: {k: [_num(v, 4) for v in b] for k, b in bx.items()}
             for method, bx in im.boxes.items()}
    rec = {'maps': maps, 'empty': empty, 'boxes': boxes, 'hw': list(map(int, im.hw)),
           'map_hw': self._map_hw}
    if im.region is not None and np.asarray(im.region).any():
      r = np.asarray(im.region, bool)
      rec['region'] = {'hw': [int(r.shape[0]), int(r.shape[1])],
                       'bits': base64.b64encode(np.packbits(r.reshape(-1)).tobytes())
                       .decode('ascii')}
      rec['peaks'] = {m: None if p is None else
                      [None if p[0] is None else _num(p[0]),
                       None if p[1] is None else _num(p[1]), bool(p[2])]
                      for m, p in im.low_peaks.items()}
    return rec

  def _flush(self) -> None:
    if not self._chunk:
      return
    k = min(self._chunk) // self.chunk_size
    body = f'explorerChunk({k},{_json_for_script(self._chunk)});\n'
    io_lib.atomic_write_text(self._tmp / 'maps' / f'{k}.js', body, durable=False)
    self._chunk = {}

  def index(self) -> dict:
    """The inline table and settings the page reads."""
    return {'title': self.title, 'arch': self.arch, 'demo': self.demo,
            'notes': [report_html.bidi_closed(n) for n in self.notes],
            'methods': self.methods, 'method_images': self.method_images,
            'targets': self.targets, 'columns': list(COLUMNS), 'rows': self._rows,
            'chunk_size': self.chunk_size, 'map_hw': self._map_hw,
            'regions': any(r[COLUMNS.index('region')] is not None for r in self._rows),
            'score_name': 'predicted mean score' if self.arch == 'mobilenet_v2' else 'p(high)'}

  def close(self) -> Path:
    """Writes the last chunk and index.html, then swaps the folder into place (given a
    `staged`, when that commits); on failure (a full disk) the partial folder is removed, and
    the old explorer stays."""
    try:
      return self._close()
    except BaseException:
      # __exit__ aborts only on errors inside the block: one here left the partial folder,
      # holding the space that a full disk needed back.
      self.abort()
      raise

  def _close(self) -> Path:
    self._flush()
    parts = {'TITLE': html.escape(report_html.bidi_closed(report_html.text(self.title))),
             'CSS': _asset('explorer.css'),
             'DATA': _json_for_script(self.index()), 'JS': _asset('explorer.js')}
    # One pass over the template: text inside DATA (tag names) is never substituted again.
    page = re.sub(r'\{\{(TITLE|CSS|DATA|JS)\}\}', lambda m: parts[m.group(1)],
                  _asset('explorer.html'))
    io_lib.atomic_write_text(self._tmp / 'index.html', page)
    if not self._local:
      return self.out_dir / 'index.html'
    if self._staged is not None:
      self._staged.add(self._swap, self.abort)
    else:
      self._swap()
    return self.out_dir / 'index.html'

  def _swap(self) -> None:
    """The finished folder into place: the old one renamed away, the new one in, the old
    removed (put back if the second rename fails)."""
    old = self.out_dir.parent / f'.{self.out_dir.name}.{uuid.uuid4().hex[:8]}.old'
    if self.out_dir.exists():
      os.replace(self.out_dir, old)
    try:
      os.replace(self._tmp, self.out_dir)
    except BaseException:
      if os.path.exists(old):  # the old explorer back in its place
        os.replace(old, self.out_dir)
      raise
    shutil.rmtree(old, ignore_errors=True)

  def abort(self) -> None:
    if self._local:
      shutil.rmtree(self._tmp, ignore_errors=True)


def write_explorer(out_dir: str | os.PathLike, images: Sequence[ExplorerImage],
                   **kw) -> Path:
  """All images at once (small sets, tests); `ExplorerWriter` streams."""
  with ExplorerWriter(out_dir, **kw) as w:
    for im in images:
      w.add(im)
  return Path(out_dir) / 'index.html'


def read_index(path: str | os.PathLike) -> dict:
  """The inline table of an explorer's index.html (for tests and scripts)."""
  text = Path(path).read_text('utf-8')
  m = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', text, re.S)
  if m is None:
    raise ValueError(f'{path}: no explorer data found')
  return json.loads(m.group(1))


def read_chunk(path: str | os.PathLike) -> dict[int, dict]:
  """One `maps/<k>.js` chunk: row -> record; maps decoded to uint8 `[T, h, w]` arrays, a
  region to bool `[s, s]`."""
  text = Path(path).read_text('utf-8')
  body = json.loads(text[text.index(',') + 1:text.rindex(')')])
  out = {}
  for row, rec in body.items():
    h, w = rec['map_hw']
    rec['maps'] = {m: np.frombuffer(base64.b64decode(b), np.uint8).reshape(-1, h, w)
                   for m, b in rec['maps'].items()}
    if 'region' in rec:
      rh, rw = rec['region']['hw']
      bits = np.unpackbits(np.frombuffer(base64.b64decode(rec['region']['bits']), np.uint8))
      rec['region'] = bits[:rh * rw].reshape(rh, rw).astype(bool)
    out[int(row)] = rec
  return out
