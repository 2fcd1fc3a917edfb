"""The user's choices of an explanation, parsed without JAX: CAM method names (with their usual
spellings) and crop aspects. The commands check their flags with these before JAX loads
(`aesthetics-predict --aspect=bogus` took ~3 s of imports to refuse); `cam` and `crop` use
them too.
"""
from __future__ import annotations

METHODS = ('gradcam', 'gradcampp', 'hirescam', 'xgradcam', 'layercam', 'eigencam', 'scorecam')
GRADIENT_METHODS = ('gradcam', 'gradcampp', 'hirescam', 'xgradcam', 'layercam')


def canonical_method(name: str) -> str:
  """A user's spelling of a method → its name in `METHODS` ('gradcam++', 'GradCAMPlusPlus',
  'Score-CAM' → 'gradcampp', 'gradcampp', 'scorecam'); one-line ValueError if unknown."""
  key = str(name).lower().replace('-', '').replace('_', '').replace(' ', '')
  key = key.replace('++', 'pp').replace('plusplus', 'pp')
  if key not in METHODS:
    raise ValueError(f'unknown CAM method {name!r}; use one of {", ".join(METHODS)} '
                     "(gradcam++ = gradcampp)")
  return key


# Widest / tallest crop aspect accepted (width:height), either way: an inf or 1e9 ratio used to
# give a one-pixel strip.
MAX_ASPECT = 20.0


def parse_aspect(aspect: str | float) -> float:
  """'W:H' (e.g. '4:3', '16:9', '1:1'; also 'W/H', 'WxH') or a number → width / height, within
  1:20 .. 20:1."""
  if isinstance(aspect, (int, float)) and not isinstance(aspect, bool):
    r = float(aspect)
  else:
    # '4:3' (also as '4/3', '4x3', '4×3', how photo tools write it), or a number written
    # as text ('1.5', as --aspect passes it)
    text = str(aspect).strip()
    for sep in ('/', 'x', 'X', '×'):
      text = text.replace(sep, ':')
    try:
      w, _, h = text.partition(':')
      r = float(w) / float(h or 1)
    except (ValueError, ZeroDivisionError):
      r = -1.0
  if not 1 / MAX_ASPECT <= r <= MAX_ASPECT:  # also NaN
    raise ValueError(f"crop aspect {aspect!r} is not valid; use 'W:H' like '4:3' or a ratio "
                     f'from 1:{MAX_ASPECT:g} to {MAX_ASPECT:g}:1')
  return r
