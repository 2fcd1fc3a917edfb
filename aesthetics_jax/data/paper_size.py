"""Paper-size synthetic AVA: the style lists' sizes, AVA-like image sizes, realistic rejects.

`generate(out_dir, num_train=8900, num_test=2203, seed)` writes the demo layout
(`data/demo.py`: AVA.txt, tags.txt, challenges.txt, style_image_lists/, images/, defect_masks/,
demo_meta.csv, demo_manifest.json last) at the scale of the paper's subset:

  * The style lists hold `round(kept * 11270 / 8900)` train and `round(kept * 2809 / 2203)` test
    ids: at the defaults 11,270 / 2,809, of which `prepare_data` keeps 8,900 / 2,203. The others
    are what a real AVA copy loses: ids without a tag (most of them, as in AVA), listed images
    whose file is absent (~0.5%) and corrupt JPEGs (~0.1%; truncated or empty files, like
    AVA's known-bad ids).
  * Images look like AVA's: long side 500-800 px (`long_side`), the demo's aspect ratios and
    orientations, JPEG quality 95, ~100-190 KB (10th-90th percentile), so decoding costs what
    it costs on AVA. Scenes are the demo's (`demo.render_image`, ~250-400 px, where the defects
    and their masks are made), upscaled and given fine grain: a real photo's sensor noise is
    what makes its JPEG that large.
  * Images are rendered by a pool of `workers` processes; every byte is a function of
    (seed, image id), so any worker count writes the same folder.
Reuse: a folder whose manifest has the same parameters is returned as is.
"""
from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
from PIL import Image

from aesthetics_jax import cpu_backend
from aesthetics_jax.data import ava
from aesthetics_jax.data import demo
from aesthetics_jax.io import atomic_write_json, atomic_write_text

GENERATOR_VERSION = 1
# The demo's global vividness cue (demo.VIVID_GAIN) at generator version 3's strength: the
# paper-scale figures in the README were measured with it, and real AVA has global cues too.
VIVID_GAIN = 0.1
# AVA's photographic-style lists and what the tag filter keeps of them (PAPER.md).
PAPER_LISTED = {'train': 11270, 'test': 2809}
PAPER_KEPT = {'train': 8900, 'test': 2203}
MISSING_FRAC = 0.005   # listed images absent from the copy (common AVA copies miss a few dozen)
CORRUPT_FRAC = 0.001   # truncated / empty JPEGs (AVA's known-bad ids are such files)
LONG_SIDE = (500, 800)
JPEG_QUALITY = 95
# Grain amplitude (uniform, in 8-bit levels): shared by the channels / per channel.
GRAIN_LUMA, GRAIN_CHROMA = 6, 3

KEPT, UNTAGGED, MISSING, CORRUPT = 'kept', 'untagged', 'missing', 'corrupt'


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """Entries of one style list: `listed` = kept + untagged + missing + corrupt."""
  listed: int
  kept: int
  untagged: int
  missing: int
  corrupt: int


def plan_split(kept: int, split: str) -> SplitPlan:
  """The list of a split whose tag/file filter keeps `kept` ids, in AVA's proportions."""
  listed = int(round(kept * PAPER_LISTED[split] / PAPER_KEPT[split]))
  dropped = listed - kept
  # Each kind at least once when there is room, so a small folder exercises every skip.
  missing = max(1, int(round(listed * MISSING_FRAC))) if dropped >= 3 else 0
  corrupt = max(1, int(round(listed * CORRUPT_FRAC))) if dropped >= 3 else 0
  return SplitPlan(listed, kept, dropped - missing - corrupt, missing, corrupt)


def _params(num_train: int, num_test: int, seed: int, long_side: tuple[int, int]) -> dict:
  return {'size': 'paper', 'num_train': int(num_train), 'num_test': int(num_test),
          'seed': int(seed), 'long_side': [int(long_side[0]), int(long_side[1])],
          'generator_version': GENERATOR_VERSION, 'vivid_gain': VIVID_GAIN,
          'demo_generator_version': demo.GENERATOR_VERSION}


# ----------------------------------------------------------------------------------------
# One image (runs in a worker process).

def upscale_with_grain(image: np.ndarray, mask: np.ndarray, long: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """uint8 `[h,w,3]` + mask `[h,w]` → `[H,W,3]` + `[H,W]` with max(H, W) = long.

  Bicubic resize, then uniform grain (±GRAIN_LUMA shared, ±GRAIN_CHROMA per channel): the
  fine detail a photo has and a render at a quarter of the pixels lacks.
  """
  h, w = image.shape[:2]
  s = long / max(h, w)
  size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
  up = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC), np.int16)
  # Random bytes reduced mod (2a+1): ~3x cheaper than rng.integers (a hair off uniform).
  n = up.shape[0] * up.shape[1]
  raw = np.frombuffer(rng.bytes(4 * n), np.uint8)
  luma = (raw[:n] % (2 * GRAIN_LUMA + 1)).astype(np.int16) - GRAIN_LUMA
  chroma = (raw[n:] % (2 * GRAIN_CHROMA + 1)).astype(np.int16) - GRAIN_CHROMA
  up += luma.reshape(*up.shape[:2], 1)
  up += chroma.reshape(up.shape)
  out = np.clip(up, 0, 255).astype(np.uint8)
  big_mask = np.asarray(Image.fromarray(mask, 'L').resize(size, Image.NEAREST))
  return out, big_mask


def _render_job(job: tuple) -> dict[str, Any]:
  """Renders and writes one listed image; returns what the metadata needs (no pixels)."""
  out_dir, seed, image_id, q, status, long_side = job
  r = demo.render_image([seed, image_id, 1], q, VIVID_GAIN)
  rng = np.random.default_rng([seed, image_id, 3])
  long = int(rng.integers(long_side[0], long_side[1] + 1))
  image, mask = upscale_with_grain(r['image'], r['mask'], long, rng)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'JPEG', quality=JPEG_QUALITY)
  data = buf.getvalue()
  if status == CORRUPT:
    # Half empty files, half cut mid-stream: the decoder's 'empty' and 'truncated'.
    data = b'' if rng.uniform() < 0.5 else data[:int(len(data) * rng.uniform(0.3, 0.8))]
  # Plain writes: the manifest, written last, marks the folder complete (see demo.py).
  (Path(out_dir) / 'images' / f'{image_id}.jpg').write_bytes(data)
  if status != CORRUPT:
    mbuf = io.BytesIO()
    Image.fromarray(mask, 'L').save(mbuf, 'PNG', compress_level=1)
    (Path(out_dir) / 'defect_masks' / f'{image_id}.png').write_bytes(mbuf.getvalue())
  return {'subject': r['subject'], 'ground': r['ground'], 'grayscale': r['grayscale'],
          'defects': r['defects'], 'damage': r['damage'],
          'defect_area': float(mask.mean() / 255), 'bytes': len(data),
          'height': int(image.shape[0]), 'width': int(image.shape[1])}


def workers_problem(workers: int) -> str | None:
  """One line on why `--workers` cannot be used, or None. The pool starts every process at
  once, each a spawned interpreter (~40 MB): --workers=40 took 1.6 GB to render 7 images, and
  a typo of 100000 would exhaust the memory; more than the cores only adds processes."""
  most = 4 * cpu_backend.host_cpu_count()
  if 0 <= workers <= most:
    return None
  return (f'--workers={workers}: pass 0 (one per core) or 1 to {most} (4 per core: more '
          'processes only take memory)')


def _map(jobs: list[tuple], workers: int, progress: bool):
  """`_render_job` over jobs, in order; a spawned pool for workers > 1 (the caller may hold
  JAX's threads, which a fork would copy mid-lock)."""
  bar = None
  if progress:
    import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm.tqdm(total=len(jobs), desc='paper-size images', unit='img', dynamic_ncols=True)
  try:
    if workers <= 1:
      for job in jobs:
        yield _render_job(job)
        if bar:
          bar.update(1)
      return
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      for out in pool.imap(_render_job, jobs, chunksize=8):
        yield out
        if bar:
          bar.update(1)
  finally:
    if bar:
      bar.close()


# ----------------------------------------------------------------------------------------
# Dataset.

def generate(out_dir: os.PathLike | str, num_train: int = PAPER_KEPT['train'],
             num_test: int = PAPER_KEPT['test'], seed: int = 0, *,
             long_side: tuple[int, int] = LONG_SIDE, workers: int = 0,
             progress: bool = False) -> dict[str, Any]:
  """Writes the paper-size dataset (module docstring) and returns its summary.

  Args:
    out_dir: AVA root to write (created if needed).
    num_train, num_test: ids of each style list that prepare_data keeps; the lists hold
      ~27% more (untagged, missing, corrupt), as AVA's.
    seed: ids, scenes, votes and bytes follow it.
    long_side: (min, max) pixels of an image's long side; tests use ~(56, 64).
    workers: rendering processes (0 = one per CPU core).
    progress: tqdm bar.
  Returns:
    demo.generate's summary keys plus `num_listed`, `num_missing`, `num_corrupt`,
    `images_per_second`, `mean_jpeg_kb`, `image_mb`, `workers`.
  """
  demo.check_args(num_train, num_test, seed)
  lo, hi = (int(v) for v in long_side)
  if not 56 <= lo <= hi:
    raise demo.DemoDataError(f'long_side must be (min, max) with 56 <= min <= max, got '
                             f'{long_side} (shorter sides would fall under the decoder\'s '
                             'minimum of 32 px)')
  workers = int(workers) or cpu_backend.host_cpu_count()
  out_dir = Path(out_dir)
  params = _params(num_train, num_test, seed, (lo, hi))
  done = demo._is_complete(out_dir, params)  # pylint: disable=protected-access
  if done is not None:
    return dict(done['summary'], out_dir=str(out_dir), seconds=0.0, reused=True)
  try:
    return _generate(out_dir, num_train, num_test, seed, (lo, hi), workers, params, progress)
  except OSError as e:
    where = e.filename or out_dir
    need = space_needed(num_train, num_test, (lo, hi))
    raise demo.DemoDataError(f'{where}: cannot write the paper-size dataset ({e.strerror or e})'
                             f' (choose a writable --out_dir with ~{_size_text(need)} free)'
                             ) from None


def space_needed(num_train: int, num_test: int, long_side: tuple[int, int] = LONG_SIDE) -> int:
  """Bytes the dataset takes, with a margin: ~180 KB per listed file (a ~150 KB JPEG and its
  mask) at the default long side, ~2.5 GB at the paper's counts. The full disk's line said
  ~2.5 GB for any --num_train / --num_test (68 MB at 300 / 80)."""
  listed = plan_split(num_train, 'train').listed + plan_split(num_test, 'test').listed
  scale = (sum(long_side) / sum(LONG_SIDE)) ** 2
  return int(listed * 180e3 * scale)


def _size_text(n: int) -> str:
  return f'{n / 1e9:.1f} GB' if n >= 1e9 else f'{max(1, round(n / 1e6))} MB'


def _statuses(rng: np.random.Generator, plan: SplitPlan) -> list[str]:
  s = ([KEPT] * plan.kept + [UNTAGGED] * plan.untagged + [MISSING] * plan.missing
       + [CORRUPT] * plan.corrupt)
  return [s[j] for j in rng.permutation(len(s))]


def _generate(out_dir: Path, num_train: int, num_test: int, seed: int,
              long_side: tuple[int, int], workers: int, params: dict,
              progress: bool) -> dict[str, Any]:
  t0 = time.perf_counter()
  for sub in ('images', 'defect_masks', 'style_image_lists'):
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
  earlier = demo.earlier_files(out_dir)
  (out_dir / demo.MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten last

  plans = {'train': plan_split(num_train, 'train'), 'test': plan_split(num_test, 'test')}
  rng = np.random.default_rng([seed, 0xA7A, 2])
  n_total = sum(p.listed for p in plans.values())
  pool = rng.choice(np.arange(1000, 1_000_000), size=n_total + 16, replace=False)
  ids = [int(i) for i in pool if int(i) not in ava.KNOWN_BAD_IDS][:n_total]
  demo.remove_earlier(out_dir, earlier, ids)  # its missing ids among them: removed below
  split_of, status, q = [], [], []
  for split, plan in plans.items():
    split_of += [split] * plan.listed
    status += _statuses(rng, plan)
    q += list(demo._stratified_quality(rng, plan.listed))  # pylint: disable=protected-access

  for i in range(n_total):
    if status[i] == MISSING:  # an earlier generation's file there would make it present
      (out_dir / 'images' / f'{ids[i]}.jpg').unlink(missing_ok=True)
      (out_dir / 'defect_masks' / f'{ids[i]}.png').unlink(missing_ok=True)
  jobs = [(str(out_dir), seed, ids[i], float(q[i]), status[i], long_side)
          for i in range(n_total) if status[i] != MISSING]
  rendered = dict(zip((j[2] for j in jobs), _map(jobs, workers, progress)))
  t_render = time.perf_counter() - t0

  records: list[ava.AvaImage] = []
  meta_rows = ['image_id,split,status,latent_quality,damage,defects,subject,ground,grayscale']
  for i, image_id in enumerate(ids):
    r = rendered.get(image_id)
    vr = np.random.default_rng([seed, image_id, 2])
    votes = demo.sample_votes(vr, q[i])
    if r is None:  # missing file: AVA.txt still describes it; its scene is not needed
      tags = demo._choose_tags(vr, 'none', 'grass', False)  # pylint: disable=protected-access
    else:
      tags = demo._choose_tags(vr, r['subject'], r['ground'],  # pylint: disable=protected-access
                               r['grayscale'])
    if status[i] == UNTAGGED:
      tags = ()
    challenge = demo.CHALLENGES[vr.integers(len(demo.CHALLENGES))][0]
    records.append(ava.AvaImage(image_id, votes, tuple(t for t in tags if t), challenge))
    r = r or {'damage': 0.0, 'defects': [], 'subject': '', 'ground': '', 'grayscale': False}
    meta_rows.append(f"{image_id},{split_of[i]},{status[i]},{q[i]:.4f},{r['damage']:.4f},"
                     f"{'+'.join(r['defects'])},{r['subject']},{r['ground']},"
                     f"{int(r['grayscale'])}")

  demo.write_metadata(out_dir, records, ids, meta_rows)
  for split in plans:
    lst = [ids[i] for i in range(n_total) if split_of[i] == split]
    atomic_write_text(out_dir / 'style_image_lists' / f'{split}.jpgl',
                      ''.join(f'{i}\n' for i in lst))

  good = [rendered[ids[i]] for i in range(n_total) if status[i] in (KEPT, UNTAGGED)]
  kept_idx = [i for i in range(n_total) if status[i] == KEPT]
  targets = ava.votes_to_targets(np.stack([records[i].votes for i in kept_idx]))
  means = targets['mean_score']
  area = np.array([r['defect_area'] for r in good])
  nbytes = np.array([r['bytes'] for r in good], np.float64)
  summary = {
      'num_train': num_train, 'num_test': num_test, 'num_images': n_total,
      'num_listed': {s: p.listed for s, p in plans.items()},
      'num_untagged': sum(p.untagged for p in plans.values()),
      'num_missing': sum(p.missing for p in plans.values()),
      'num_corrupt': sum(p.corrupt for p in plans.values()),
      'num_listed_missing': 0,
      'mean_of_means': round(float(means.mean()), 4),
      'std_of_means': round(float(means.std()), 4),
      'frac_high': round(float(targets['label'].mean()), 4),
      'mean_vote_std': round(float(targets['std_score'].mean()), 4),
      'mean_num_votes': round(float(np.mean([records[i].num_votes for i in kept_idx])), 1),
      'frac_with_defects': round(float(np.mean(area > 0)), 4),
      'mean_defect_area': round(float(area.mean()), 4),
      'mean_jpeg_kb': round(float(nbytes.mean() / 1e3), 1),
      'image_mb': round(float(sum(r['bytes'] for r in rendered.values()) / 1e6), 1),
      'mean_long_side': round(float(np.mean([max(r['height'], r['width']) for r in good])), 1),
      'seed': seed,
  }
  # Written images + masks: what `demo._is_complete` checks for a reuse.
  written = sorted(ids[i] for i in range(n_total) if status[i] in (KEPT, UNTAGGED))
  manifest = {'params': params, 'summary': summary, 'image_ids': written,
              'corrupt_ids': sorted(ids[i] for i in range(n_total) if status[i] == CORRUPT),
              'missing_ids': sorted(ids[i] for i in range(n_total) if status[i] == MISSING)}
  atomic_write_json(out_dir / demo.MANIFEST, manifest, indent=1)
  return dict(summary, out_dir=str(out_dir), reused=False, workers=workers,
              seconds=round(time.perf_counter() - t0, 2),
              images_per_second=round(len(jobs) / max(t_render, 1e-9), 1))


def format_summary(s: dict[str, Any]) -> str:
  """A few human-readable lines for make_demo_data and paper_run."""
  verb = 'Reused' if s.get('reused') else 'Wrote'
  listed = s['num_listed']
  speed = ('reused (complete, same parameters)' if s.get('reused') else
           f"generated in {s['seconds']:.1f} s ({s['images_per_second']:.1f} images/s on "
           f"{s['workers']} workers)")
  return (f"{verb} paper-size synthetic AVA at {s['out_dir']}: style lists {listed['train']} "
          f"train / {listed['test']} test ids, of which prepare_data keeps {s['num_train']} / "
          f"{s['num_test']} ({s['num_untagged']} untagged, {s['num_missing']} missing files, "
          f"{s['num_corrupt']} corrupt JPEGs)\n"
          f"  images: mean long side {s['mean_long_side']:.0f} px, mean JPEG "
          f"{s['mean_jpeg_kb']:.0f} KB, {s['image_mb']:.0f} MB in all\n"
          f"  mean of means {s['mean_of_means']:.3f} (std {s['std_of_means']:.3f}), high (mean > 5) "
          f"{100 * s['frac_high']:.1f}%, mean vote std {s['mean_vote_std']:.3f}\n  {speed}")
