"""A tiny AVA-layout dataset with a learnable signal, prepared as TFDS, for training tests.

Mean score rises with image brightness, so a model can learn something in a few steps.
Shared by test_train.py / test_checkpoints.py / test_multidevice_train.py.
"""
import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_tiny_ava(root: Path, num_train: int = 24, num_test: int = 16, size: int = 40,
                   seed: int = 0) -> Path:
  rng = np.random.default_rng(seed)
  (root / 'images').mkdir(parents=True, exist_ok=True)
  (root / 'style_image_lists').mkdir(exist_ok=True)
  rows, lists = [], {'train': [], 'test': []}
  n = num_train + num_test
  for k in range(n):
    image_id = 1000 + k
    quality = (k % 4) / 3.0  # 0..1, alternating so both splits cover both classes
    mean = 3.5 + 4.0 * quality
    probs = np.exp(-0.5 * ((np.arange(1, 11) - mean) / 1.2) ** 2)
    votes = rng.multinomial(60, probs / probs.sum())
    tags = (1 + k % 3, 0 if k % 2 else 2 + k % 2)
    rows.append((image_id, votes, tags))
    pix = rng.integers(0, 60, (size, size, 3)) + int(180 * quality)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8), 'RGB').save(buf, 'JPEG', quality=90)
    (root / 'images' / f'{image_id}.jpg').write_bytes(buf.getvalue())
    lists['train' if k < num_train else 'test'].append(image_id)
  lines = [' '.join(str(x) for x in (i + 1, image_id, *votes, *tags, 7))
           for i, (image_id, votes, tags) in enumerate(rows)]
  (root / 'AVA.txt').write_text('\n'.join(lines) + '\n')
  (root / 'tags.txt').write_text(''.join(f'{t} Tag{t}\n' for t in range(1, 67)))
  (root / 'challenges.txt').write_text('7 Test challenge\n')
  for split, ids in lists.items():
    (root / 'style_image_lists' / f'{split}.jpgl').write_text(''.join(f'{i}\n' for i in ids))
  return root


def prepare_tiny(tmp: Path, **kw) -> Path:
  """Writes and prepares the tiny dataset; returns the TFDS data_dir."""
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  ava_dir = write_tiny_ava(Path(tmp) / 'ava', **kw)
  data_dir = Path(tmp) / 'tfds'
  dataset.prepare(ava_dir, data_dir, 'style')
  return data_dir
