"""What `aesthetics-predict` takes as inputs: files, folders (recursive) and glob patterns.

Kept apart from the command's flags so that it can be imported (and tested) on its own.

Patterns are matched here, not by `glob.glob(recursive=True)`: its `**` follows symbolic
links to folders, so a link to a parent folder repeats every image below it (41 times for one
`ln -s .. up`) and two such links make the walk exponential (a hang before any image is
scored). Here `**` does not descend into linked folders (pathlib's rule since Python 3.13);
a linked folder named by the pattern or on the command line is still followed once, and an
image reached by two paths is scored once.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

# Other names of JPEG, and formats that only some Pillow builds decode (AVIF, JPEG 2000): folders
# and patterns skipped them although the files scored when named.
_MORE_SUFFIXES = ('.jfif', '.jpe', '.avif', '.jp2', '.j2k', '.jpx', '.jpf', '.ico')
# Phones' HEIC photos are listed with or without the plugin: without it each gets its line
# naming the extra to install (a folder of them said 'no images' and nothing more).
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.heic',
                  '.heif') + tuple(s for s in _MORE_SUFFIXES if s in Image.registered_extensions())


# Names of the files predict writes into --overlay_dir / --crop_dir: `records.output_stem`
# (the input's position, 4 digits or more, and its stem) + '_cam.png' / '_crop.png' / '_crop.jpg'.
OUTPUT_NAME = re.compile(r'\d{4,}_.*_(cam\.png|crop\.(png|jpg))', re.S)


def _is_image_name(name: str) -> bool:
  return name.lower().endswith(IMAGE_SUFFIXES)


def _images_under(folder: str | Path, skip: frozenset[str] = frozenset()) -> list[str]:
  """Image files below `folder`, recursively, sorted by path; hidden entries, linked folders
  (os.walk's default) and the folders in `skip` (real paths) left out."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')
               and os.path.realpath(os.path.join(root, d)) not in skip]
    found += [os.path.join(root, f) for f in files
              if not f.startswith('.') and _is_image_name(f)]
  return sorted(found)


def _folders_below(base: str) -> list[str]:
  """`base` and every folder below it (`**`): hidden and linked folders not entered."""
  out = [base]
  for root, dirs, _ in os.walk(base or os.curdir):
    dirs[:] = sorted(d for d in dirs
                     if not d.startswith('.') and not os.path.islink(os.path.join(root, d)))
    for d in dirs:
      p = os.path.join(root, d)
      out.append(os.path.relpath(p) if not base else p)
  return out


def _match(pattern: str) -> list[str]:
  """The existing paths a glob pattern names (glob's rules: `*`, `?`, `[...]` within one
  name, hidden names only when the pattern's name starts with '.', `**` any depth)."""
  paths = [os.sep if os.path.isabs(pattern) else '']
  for part in (p for p in pattern.split(os.sep) if p):
    nxt: list[str] = []
    for base in paths:
      if part == '**':
        nxt += _folders_below(base)
      elif glob.has_magic(part):
        try:
          names = sorted(os.listdir(base or os.curdir))
        except OSError:  # not a folder, or unreadable: nothing below it matches
          continue
        nxt += [os.path.join(base, n) for n in names
                if fnmatch.fnmatchcase(n, part) and (part.startswith('.') or n[0] != '.')]
      else:
        nxt.append(os.path.join(base, part))
    paths = nxt
  return sorted(p for p in paths if os.path.lexists(p))


def _inside(path: str, folders: frozenset[str]) -> bool:
  """Whether `path` is one of `folders` (real paths) or below one."""
  real = os.path.realpath(path)
  return any(real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _literal_prefix(arg: str) -> str:
  """The folder an argument starts from: itself, or a pattern's names before the first
  wildcard."""
  parts = arg.split(os.sep)
  for i, part in enumerate(parts):
    if glob.has_magic(part):
      return os.sep.join(parts[:i]) or (os.sep if arg.startswith(os.sep) else os.curdir)
  return arg


def _without_earlier_outputs(paths: list[str], folders: frozenset[str]) -> tuple[list[str], str]:
  """(`paths` less the files an earlier run wrote into one of the output `folders` (real
  paths): named as predict's outputs, right in that folder; a clause for the 'no image files'
  error saying how many were left out, or '')."""
  kept = [p for p in paths if not (
      OUTPUT_NAME.fullmatch(os.path.basename(p))
      and os.path.realpath(os.path.dirname(p) or os.curdir) in folders)]
  n = len(paths) - len(kept)
  if not n:
    return kept, ''
  return kept, (f' besides {n} file{"" if n == 1 else "s"} an earlier run wrote there (this '
                "run's --overlay_dir / --crop_dir: not inputs)")


def _unique(paths: Iterable[str]) -> list[str]:
  """First occurrence of each file (by real path): a file seen through two links once."""
  seen, out = set(), []
  for p in paths:
    real = os.path.realpath(p)
    if real not in seen:
      seen.add(real)
      out.append(p)
  return out


def expand(args: Sequence[str], skip: Iterable[str | os.PathLike] = ()) -> list[str | dict]:
  """Command-line inputs → image paths in order, or `{"path", "error"}` for an input that
  names no image (empty folder, pattern matching nothing, an empty argument). A missing file stays a path: its
  error comes from reading it, like any other unreadable file.

  skip: folders whose images are not inputs when met inside a folder or pattern (the run's
    own --overlay_dir / --crop_dir: a rerun would score last run's overlays); named by the
    argument itself (`--overlay_dir=photos photos/`), such a folder's files named as predict's
    outputs (`OUTPUT_NAME`) are not inputs, its other images are.
  """
  skip_all = frozenset(os.path.realpath(s) for s in skip if s)
  out: list[str | dict] = []
  for arg in args:
    if not arg:
      # Path('') is '.': an unset variable ("$photo") or a list's blank line scored every
      # image below the current folder (a home folder: all of it).
      out.append({'path': arg, 'error': "empty argument ''; pass an image file, folder or "
                  'pattern (an unset shell variable, or a blank line of a list of files?)'})
      continue
    if arg == '-' and not os.path.lexists(arg):  # was '-: no such file; check the path'
      out.append({'path': arg, 'error': "'-': standard input is not read; pass image files, "
                  "folders or patterns (a list of files: xargs -d '\\n' aesthetics-predict "
                  "--workdir=W < list.txt)"})
      continue
    p = Path(arg)
    # An output folder named by the argument itself (`ovA`, 'ovA/*.png') is listed, less the
    # earlier outputs in it; one met below it is not listed at all.
    skipped = frozenset(s for s in skip_all if not _inside(_literal_prefix(arg), {s}))
    if p.is_dir():
      # Once by real path, as a pattern's: a linked file beside its target was scored twice.
      found, earlier = _without_earlier_outputs(_unique(_images_under(p, skipped)), skip_all)
      out += found or [{'path': arg, 'error': f'{arg}: no image files '
                        f'({", ".join(IMAGE_SUFFIXES)}) in this folder{earlier}'}]
    elif not p.exists() and glob.has_magic(arg):
      found = []
      for m in _match(arg):
        if _inside(m, skipped):
          continue
        if os.path.isdir(m):
          found += _images_under(m, skipped)
        elif _is_image_name(m):
          found.append(m)
      found, earlier = _without_earlier_outputs(_unique(found), skip_all)
      out += found or [{'path': arg, 'error': f'{arg}: no image files match this '
                        f'pattern{earlier}'}]
    else:
      out.append(arg)
  return out
