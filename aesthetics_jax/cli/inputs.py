"""What `aesthetics-predict` takes as inputs: files, folders (recursive) and glob patterns.

Kept apart from the command's flags so that it can be imported (and tested) on its own.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


def _images_under(folder: Path) -> list[str]:
  """Image files below `folder`, recursively, sorted by path; hidden entries skipped."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    found += [os.path.join(root, f) for f in files
              if not f.startswith('.') and f.lower().endswith(IMAGE_SUFFIXES)]
  return sorted(found)


def expand(args: Sequence[str]) -> list[str | dict]:
  """Command-line inputs → image paths in order, or `{"path", "error"}` for an input that
  names no image (empty folder, pattern matching nothing). A missing file stays a path: its
  error comes from reading it, like any other unreadable file."""
  out: list[str | dict] = []
  for arg in args:
    p = Path(arg)
    if p.is_dir():
      found = _images_under(p)
      out += found or [{'path': arg, 'error': f'{arg}: no image files '
                        f'({", ".join(IMAGE_SUFFIXES)}) in this folder'}]
    elif not p.exists() and glob.has_magic(arg):
      matches = sorted(glob.glob(arg, recursive=True))
      found = []
      for m in matches:
        found += _images_under(Path(m)) if os.path.isdir(m) else (
            [m] if m.lower().endswith(IMAGE_SUFFIXES) else [])
      out += found or [{'path': arg, 'error': f'{arg}: no image files match this pattern'}]
    else:
      out.append(arg)
  return out
