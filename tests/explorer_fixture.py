"""Synthetic explorer inputs (no JAX, no model): shared by test_explorer.py and test_browser.py."""
import io

import numpy as np
from PIL import Image

MNV2_TARGETS = ['aesthetic', 'low'] + [f'bucket:{k}' for k in range(1, 11)] + ['top_tag']
VGG_TARGETS = ['aesthetic', 'low']
# Tag names that would break a page or a figure that took them as markup or math.
ODD_TAGS = ('Macro', '$\\foo{1$', '</script><b>bold</b>')


def jpeg(h: int, w: int, seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def region(i: int, side: int = 8):
  """Row i's region on a side² grid: an L shape for even rows, none for odd rows."""
  r = np.zeros((side, side), bool)
  if i % 2 == 0:
    r[1:6, 2:4] = True
    r[4:6, 2:7] = True
  return r


def images(n: int, arch: str, methods, map_hw=(6, 6), limited: dict | None = None,
           regions: bool = False):
  """`ExplorerImage`s of varied aspect; `limited`: method -> number of rows that have it;
  row 2's first-method aesthetic map is all zero (an empty map). With `regions`, even rows have
  a region (`region`); the low map of row 0 peaks inside it, of rows 2 and 6 outside, of row 4
  nowhere (no positive value)."""
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  t = len(MNV2_TARGETS if arch == 'mobilenet_v2' else VGG_TARGETS)
  out = []
  for i in range(n):
    hw = (60 + 30 * (i % 3), 90 - 20 * (i % 2))
    maps = {m: rng.random((t,) + tuple(map_hw)).astype(np.float32) for m in methods
            if i < (limited or {}).get(m, n)}
    if i == 2:
      maps[methods[0]][0] = 0.0
    out.append(explorer.ExplorerImage(
        row=i, image_id=1000 + i, image=jpeg(*hw, i), true=3.0 + 0.5 * i,
        pred=5.0 + 0.3 * (i % 3), intensity=0.1 * i, intensity_global=0.05 * i,
        label=int(3.0 + 0.5 * i > 5), pred_label=1, hw=hw,
        tag=ODD_TAGS[i % 3] if arch == 'mobilenet_v2' else '', maps=maps,
        empty={m: v.reshape(t, -1).max(1) <= 0 for m, v in maps.items()},
        boxes={m: {'aesthetic': [0.1, 0.1, 0.6, 0.7], 'average': [0.2, 0.15, 0.8, 0.8],
                   'attribute': [0.3, 0.2, 0.9, 0.9]} if arch == 'mobilenet_v2' else
               {'aesthetic': [0.1, 0.1, 0.6, 0.7]} for m in maps},
        region=region(i) if regions else None,
        low_peaks={m: ((0.3, 0.35, True) if i == 0 else (None, None, False) if i == 4 else
                       (0.85, 0.85, False)) if regions and i % 2 == 0 else None for m in maps}))
  return out


def write(out_dir, arch: str = 'mobilenet_v2', n: int = 7, methods=('gradcam', 'scorecam'),
          limited: dict | None = None, **kw):
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  targets = MNV2_TARGETS if arch == 'mobilenet_v2' else VGG_TARGETS
  regions = kw.pop('regions', False)
  return explorer.write_explorer(out_dir, images(n, arch, list(methods), limited=limited,
                                                 regions=regions),
                                 arch=arch, methods=list(methods), targets=targets,
                                 method_images=limited or {}, **kw)
