"""What evaluation knows about the data beyond the records: tag names and region masks.

Both come from the dataset's metadata, which `prepare_data` records from the AVA root
(`data.layout.root_metadata`), so a moved workdir or AVA root still finds them; a user can
point `config.eval.masks_dir` (`launch.evaluate --masks_dir=`) at their own annotated regions.
Datasets prepared before the metadata existed fall back to `config.data.ava_dir`.
"""
from __future__ import annotations

from pathlib import Path

from aesthetics_jax.data import ava
from aesthetics_jax.data import layout  # not data.dataset: no TFDS at start-up


def _metadata(config) -> dict:
  if not config.data.data_dir or not layout.is_prepared(config.data.data_dir,
                                                        config.data.subset):
    return {}
  return layout.load_metadata(config.data.data_dir, config.data.subset)


def masks_dir(config) -> str:
  """Folder of `<image_id>.png` region masks ('' = none): `config.eval.masks_dir`, else the
  demo's `defect_masks/` recorded at prepare time (else under `config.data.ava_dir`)."""
  if config.eval.masks_dir:
    d = Path(config.eval.masks_dir)
    if not d.is_dir():
      what = ('is a file, not a folder' if d.is_file() else 'is not a folder' if d.exists()
              else 'masks folder not found')
      raise FileNotFoundError(f'{d}: {what}; pass --masks_dir=<folder of <image_id>.png '
                              'masks>')
    return str(d)
  recorded = _metadata(config).get('defect_masks_dir', '')
  if recorded and Path(recorded).is_dir():
    return recorded
  legacy = Path(config.data.ava_dir) / 'defect_masks' if config.data.ava_dir else None
  return str(legacy) if legacy is not None and legacy.is_dir() else ''


def tag_names(config) -> dict[int, str]:
  """AVA tag id → name: the list recorded at prepare time, else `ava_dir/tags.txt` ({})."""
  names = _metadata(config).get('tag_names')
  if names:
    return {i: str(n) for i, n in enumerate(names, start=1)}
  path = Path(config.data.ava_dir) / 'tags.txt' if config.data.ava_dir else None
  if path is None or not path.is_file():
    return {}
  try:
    return ava.read_tags(path)
  except ValueError:
    return {}
