"""The explorer's data: every CAM method's maps for every target of every test image.

One more streamed pass over the evaluated test images (`report/explorer.py` writes the files).
Per batch, one jitted function (`make_maps_fn`) computes every method's maps from one encoder
pass, each exactly as `forward.make_forward` (where the evaluation's maps come from) does;
per image, its raw maps `[T, h, w]` (`targets`: T = 13 for MobileNetV2: aesthetic, low, 10
score buckets, top tag; 2 for VGG16: aesthetic, low), empty flags and boxes (`crop.image_boxes`,
as `aesthetics-predict` takes them, at the image's own aspect) go to the writer, which keeps one
chunk of maps in memory.

With region masks (the demo's `defect_masks/`, or `--masks_dir`), each image also carries its
region (at most `REGION_SIDE` cells a side) and, per method, where its LOW map peaks and whether
that is inside the region: the pointing game of `evaluators/localization.py`, on the same
model-input grid, so a reader can check the localisation table image by image.

Cost: the gradient methods share one forward + backward per image and EigenCAM is one SVD, but
ScoreCAM re-runs the whole model once per feature channel (hundreds of channels on the paper
models), so it is computed for the first `scorecam_images` test images only; the page says so
for the others. Boxes are taken as per_image.csv, predict and the API take them
(`crop.image_boxes`), so the same image shows the same boxes everywhere.
"""
from __future__ import annotations

import functools
import io
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from aesthetics_jax import cpu_backend
from aesthetics_jax import io as io_lib
from aesthetics_jax import memory_fit
from aesthetics_jax import parallel
from aesthetics_jax.data import pipeline
from aesthetics_jax.evaluation import forward
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.explain import cam
from aesthetics_jax.evaluation.evaluators import localization
from aesthetics_jax.explain import crop
from aesthetics_jax.explain import faithfulness as faith_lib
from aesthetics_jax.report import explorer as report_explorer

# Side of the square grid (the model input's, stretched back to the image's aspect on the
# page) at which a region is stored for its outline.
REGION_SIDE = 128


def targets(arch: str) -> tuple[str, ...]:
  """The explorer's CAM targets: the evaluation's (`forward.target_names`) with 'low' (the
  localisation's target, the negated aesthetic score) second; the top tag stays last, where
  `image_boxes` reads it."""
  names = forward.target_names(arch)
  return (names[0], 'low', *names[1:])


def method_order(primary: str, methods: Sequence[str]) -> list[str]:
  """The evaluation's own method first, then `methods`, each once."""
  return list(dict.fromkeys([primary, *methods]))


def _image_hw(data: bytes) -> tuple[int, int]:
  with Image.open(io.BytesIO(data)) as im:
    return im.size[1], im.size[0]


def _fractions(box: np.ndarray, hw: tuple[int, int]) -> list[float]:
  y0, x0, y1, x1 = (float(v) for v in box)
  return [y0 / hw[0], x0 / hw[1], y1 / hw[0], x1 / hw[1]]


def image_boxes(maps: np.ndarray, hw: tuple[int, int], arch: str,
                threshold: float) -> dict[str, list[float]]:
  """Raw maps `[T, h, w]` (targets as `targets(arch)`) of one image → its boxes as fractions
  of (H, W)."""
  attribute = maps[-1] if arch == 'mobilenet_v2' else None
  d = crop.image_boxes(maps[0], attribute, hw, threshold)
  return {k: _fractions(v, hw) for k, v in d['boxes'].items()}


def make_maps_fn(model, arch: str, methods: Sequence[str], layers: Sequence[str],
                 num_shards: int | None = None):
  """jitted `(variables, x) -> {method: raw maps f32 [B,T,h,w]}` for `methods` (not ScoreCAM);
  `num_shards`: devices the batch is sharded over (default: all).

  Per method the maps of `forward.make_forward(model, arch, method, None, layers=layers)`,
  but in ONE function: the encoder runs once, and the gradient methods share one forward +
  backward pass (`forward.layer_maps_many`; measured on the demo MobileNetV2, 64 images,
  when XLA was left to merge per-method passes: 22 s to compile and 1.5 s a batch for six
  methods, against ~70 s and ~4 s as six separate functions).
  """
  target_fn = cam.targets_for(arch, targets(arch))
  chunk = parallel.default_chunk()
  num_shards = jax.device_count() if num_shards is None else int(num_shards)

  @functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
  def maps_fn(variables, x):
    first = parallel.map_batch(
        lambda xi: model.apply(variables, xi, layers[0], method='features_until'), x, chunk,
        num_shards)
    return forward.layer_maps_many(model, variables, layers, methods, first, x,
                                     target_fn, num_shards)[1]

  return maps_fn


def _scorecam_maps(forward, variables, x, need: int, mesh) -> np.ndarray:
  """ScoreCAM on the first `need` rows of the batch only (padded to the device count)."""
  rows, _ = parallel.pad_to_multiple(np.asarray(jax.device_get(x))[:need], mesh.devices.size)
  _, maps = forward(variables, jax.device_put(rows, parallel.data_sharding(mesh)))
  return np.asarray(jax.device_get(maps))[:need]


def region_grid(mask: np.ndarray, side: int = REGION_SIDE) -> np.ndarray:
  """bool `[S, S]` region on the model-input grid → bool `[s, s]`, s = min(S, side): a cell is
  inside when at least half of it is."""
  if mask.shape[0] <= side:
    return mask.astype(bool)
  small = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BOX)
  return np.asarray(small) >= 128


def low_peaks(low: np.ndarray, masks: np.ndarray) -> list[tuple | None]:
  """Per image, where the low map `[B, h, w]` peaks and whether the pointing game counts a
  hit there against `masks` bool `[B, S, S]` (`faithfulness.pointing_game`'s `hit`):
  (y, x) of the argmax cell's centre as fractions of the grid, and the hit; (None, None,
  False) for a map with no positive value (it points nowhere: a miss, with no peak to show);
  None for an image without a region (the localisation leaves it out)."""
  g = jax.device_get(faith_lib.pointing_game(low, masks))
  h, w = low.shape[1:]
  return [None if not valid else (None, None, False) if not points else
          (float((i // w + 0.5) / h), float((i % w + 0.5) / w), bool(hit))
          for i, points, hit, valid in zip(g['peak_cell'], g['points'], g['hit'], g['valid'])]


def _top_tags(test: streaming.SplitSummary, tag_names: Mapping[int, str]) -> list[str]:
  if 'tag_probs' not in test.pred:
    return [''] * test.num_images
  ids = np.argmax(test.pred['tag_probs'], axis=-1) + 1  # AVA tag ids start at 1
  return [tag_names.get(int(t), f'tag {int(t)}') for t in ids]


def run(model, variables, source: Sequence, test: streaming.SplitSummary,
        batches: streaming.BatchesFn, mesh, out_dir: str | Path, *, arch: str,
        methods: Sequence[str], layers: Sequence[str], threshold: float,
        tag_names: Mapping[int, str], scorecam_images: int, map_size: int, thumb_size: int,
        title: str, demo: bool, notes: Sequence[str] = (),
        global_scale: tuple[float, float] | None = None, masks_dir: str = '',
        image_size: int = 0, staged: io_lib.Staged | None = None) -> dict[str, Any]:
  """Writes `out_dir/index.html` (+ thumbs/, maps/) for the `test` rows of `source`.

  methods: in display order (`method_order`); `layers` as the evaluation's forward takes them.
  masks_dir: region masks `<id>.png` (as the localisation reads them, at `image_size`); the
    page then outlines each image's region and marks its low maps' peaks.
  global_scale: (lo, hi) of the global intensity (the intensity study's; default the test's).
  staged: the folder lands with these files (`io_lib.Staged`) instead of at once.
  Returns `explorer_images`, `explorer_methods`, `explorer_scorecam_images`,
  `explorer_seconds` for metrics.json.
  """
  t0 = time.time()
  n = test.num_images
  methods = list(methods)
  layers = tuple(layers)
  maps_fn = make_maps_fn(model, arch, [m for m in methods if m != 'scorecam'], layers,
                         mesh.size)
  scorecam = (forward.make_forward(model, arch, 'scorecam', None, targets(arch), layers,
                                   mesh.size) if 'scorecam' in methods else None)
  names = cam.target_names(arch, targets(arch))
  low_t = names.index('low')
  with_masks = localization.load_masks(masks_dir, [], 1) is not None
  n_score = min(n, int(scorecam_images)) if 'scorecam' in methods else 0
  scores = test.pred['mean_score'] if 'mean_score' in test.pred else test.pred['p_high']
  ints = streaming.intensities(test, global_scale)
  tags = _top_tags(test, tag_names)
  writer = report_explorer.ExplorerWriter(
      out_dir, arch=arch, methods=methods, targets=names, title=title, demo=demo,
      method_images={'scorecam': n_score} if n_score < n and 'scorecam' in methods else {},
      notes=notes, thumb_size=thumb_size, map_size=map_size, staged=staged)
  row = 0
  with writer, tqdm(total=n, desc='explorer', unit='img', leave=False) as bar, \
      pipeline.closing(batches(source, max_examples=n)) as it:
    for batch in it:
      keep = np.asarray(jax.device_get(batch['mask'])) > 0
      k = int(keep.sum())
      maps = {m: np.asarray(v)[keep]
              for m, v in jax.device_get(memory_fit.call(  # one line if it cannot fit
                  maps_fn, variables, batch['image'], flag='config.eval.batch_size',
                  batch=int(batch['image'].shape[0]))).items()}
      need = min(k, n_score - row)
      if scorecam is not None and need > 0:
        maps['scorecam'] = _scorecam_maps(scorecam, variables, batch['image'], need, mesh)
      ids = test.true['image_id'][row:row + k]
      # Unreadable masks are scored as no region, as the localisation does (it reports them).
      masks = (localization.load_masks(masks_dir, ids, image_size, errors={})
               if with_masks else None)
      peaks = ({m: low_peaks(v[:, low_t], masks[:len(v)]) for m, v in maps.items()}
               if masks is not None else {})
      for j in range(k):
        i = row + j
        data = source[i]['image']
        hw = _image_hw(data)
        per = {m: maps[m][j] for m in methods if m in maps and j < len(maps[m])}
        region = None if masks is None else region_grid(masks[j])
        writer.add(report_explorer.ExplorerImage(
            row=i, image_id=int(test.true['image_id'][i]), image=data,
            true=float(test.true['mean_score'][i]), pred=float(scores[i]),
            intensity=float(ints['per_image'][i]), intensity_global=float(ints['global'][i]),
            label=int(test.true['label'][i]), pred_label=int(test.pred['label_pred'][i]),
            hw=hw, tag=tags[i], maps=per,
            empty={m: np.asarray(crop.empty_maps(v)) for m, v in per.items()},
            boxes={m: image_boxes(v, hw, arch, threshold) for m, v in per.items()},
            region=region,
            low_peaks={m: peaks[m][j] for m in per if m in peaks}))
      row += k
      bar.update(k)
  return {'explorer_images': n, 'explorer_methods': methods,
          'explorer_scorecam_images': n_score, 'explorer_seconds': round(time.time() - t0, 1)}
