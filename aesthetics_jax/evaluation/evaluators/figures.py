"""The report's figures (PNG bytes) from the test pass, the metrics and a few re-read images.

* `examples_high` / `examples_low` (paper Figures 5-6): the highest- and lowest-rated test
  images, re-read at their original resolution and run through the eval forward again, with
  their maps and boxes (`crop.image_boxes`, as `launch.predict` shows them);
* `intensity_scatter_{per_image,global}` (Figure 7);
* `score_bucket_maps`, `map_entropy` (per-image map entropy by score, trained and untrained),
  and for MobileNetV2 `bucket_maps`, `bucket_maps_examples` (Figure 8);
* `faithfulness_deletion` / `faithfulness_insertion`: the normalised mean curves per method.
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from aesthetics_jax import parallel
from aesthetics_jax.data import decoder
from aesthetics_jax.data import preprocess
from aesthetics_jax.evaluation import forward as forward_lib
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop
from aesthetics_jax.report import charts

# Longest side of the example images in the figures (maps and boxes are taken at this size).
EXAMPLE_SIZE = 256


def examples(forward: streaming.ForwardFn, variables, source: Sequence, rows: Sequence[int],
             test: streaming.SplitSummary, mesh, *, arch: str, image_size: int, normalize: str,
             threshold: float, batch_size: int, tag_names: Mapping[int, str],
             image_boxes: Sequence[tuple[tuple[int, int], Mapping]]
             ) -> tuple[list[dict], list[dict]]:
  """Panels of `report.charts.examples_figure` and `image_bucket_maps_figure` for test rows.

  image_boxes: per test image ((H, W), its boxes in image pixels): per_image.csv's, which
  predict, the API and the explorer give too; the panels draw them scaled to their size.

  All rows go through the eval forward in ONE batch padded to a multiple of `batch_size` and
  sharded as the eval batches are, so the jitted function is not compiled again for a new
  shape or layout (an unsharded input compiled it a second time).
  """
  rows = [int(i) for i in rows]
  records = [source[i] for i in rows]
  # The model input exactly as the evaluation stream makes it; the shown image decoded reduced
  # (both sides >= EXAMPLE_SIZE) in its displayed orientation.
  x = np.stack([preprocess.preprocess_eval_np(r['image'], image_size) for r in records])
  imgs = [decoder.decode(r['image'], target=EXAMPLE_SIZE, hint=decoder.DATASET_HINT,
                            what=f'image_id {int(r["image_id"])}') for r in records]
  x, _ = parallel.pad_to_multiple(x, batch_size)
  x = preprocess.to_model_input(jax.device_put(x, parallel.data_sharding(mesh)), normalize)
  pred, maps = jax.device_get(forward(variables, x))
  maps = forward_lib.split_maps(np.asarray(maps), arch)
  panels, bucket_panels = [], []
  for j, (i, img) in enumerate(zip(rows, imgs)):
    grid = crop.box_grid(img.size, EXAMPLE_SIZE)
    small = np.asarray(Image.fromarray(img.image).resize((grid[1], grid[0]), Image.BILINEAR))
    attribute = maps['top_tag'][j] if 'top_tag' in maps else None
    d = crop.image_boxes(maps['aesthetic'][j], attribute, grid, threshold)
    # The boxes of per_image.csv, predict and the explorer (taken at the image's own size),
    # drawn at the panel's: boxed on the panel's grid, a region near the threshold could differ.
    hw, boxes = image_boxes[i]
    d['boxes'] = {k: crop.scale_box(v, hw, grid) for k, v in boxes.items()}
    tag_caption = ''
    if 'top_tag' in maps:
      t = int(np.argmax(pred['tag_probs'][j])) + 1
      tag_caption = f'attribute map: {tag_names.get(t, f"tag {t}")}'
    box = d['boxes'].get('average', d['boxes'].get('aesthetic'))
    score = (f'pred {pred["mean_score"][j]:.2f}' if 'mean_score' in pred
             else f'p_high {pred["p_high"][j]:.2f}')
    caption = (f'id {int(test.true["image_id"][i])}: true {test.true["mean_score"][i]:.2f}, '
               f'{score}')
    panels.append(dict(image=small, aesthetic_map=d['aesthetic_map'],
                       attribute_map=d['attribute_map'], attribute_name=tag_caption,
                       aesthetic_empty=d['empty']['aesthetic'],
                       boxes=d['boxes'], caption=caption,
                       crop=None if box is None else small[box[0]:box[2], box[1]:box[3]]))
    if 'bucket' in maps:
      bm = crop.resize_maps(np.asarray(cam.normalize(maps['bucket'][j])), grid)
      bucket_panels.append(dict(image=small, maps=bm, caption=caption))
  return panels, bucket_panels


def stack_pngs(pngs: Sequence[bytes]) -> bytes:
  """Stacks PNG panels vertically into one PNG."""
  ims = [Image.open(io.BytesIO(p)).convert('RGB') for p in pngs]
  out = Image.new('RGB', (max(i.width for i in ims), sum(i.height for i in ims)), 'white')
  y = 0
  for i in ims:
    out.paste(i, (0, y))
    y += i.height
  buf = io.BytesIO()
  out.save(buf, format='PNG')
  return buf.getvalue()


def run(forward: streaming.ForwardFn, variables, source: Sequence, test: streaming.SplitSummary,
        metrics: Mapping[str, Any], mesh, *, arch: str, image_size: int, normalize: str = 'none',
        threshold: float = 0.2, batch_size: int = 32, num_examples: int = 6,
        tag_names: Mapping[int, str] | None = None,
        image_boxes: Sequence[tuple[tuple[int, int], Mapping]] = ()) -> dict[str, bytes]:
  """{figure name: PNG bytes}; `metrics` supplies the Table 1 coefficients shown on the
  scatter plots and the faithfulness curves (the other evaluators' output); `image_boxes`
  per_image.csv's boxes (`examples`), needed when there are example figures."""
  figs: dict[str, bytes] = {}
  # Half the images the highest-rated, half the lowest; 0 = none. It was max(1, n // 2): 0,
  # which the config check allows, still drew one of each (and their per-bucket maps).
  # Each test image in one figure at most: with fewer test images than asked for
  # (--config.data.max_test_images=1) the one image filled '2 highest-rated' twice and
  # '2 lowest-rated' was drawn empty.
  n = len(test.true['mean_score'])
  k = min((int(num_examples) + 1) // 2, (n + 1) // 2)
  k_low = min(k, n - k)
  ex, bex = [], []
  if k:
    order = np.argsort(-test.true['mean_score'], kind='stable')
    rows = list(order[:k]) + list(order[::-1][:k_low])
    ex, bex = examples(forward, variables, source, rows,
                       test, mesh, arch=arch, image_size=image_size, normalize=normalize,
                       threshold=threshold, batch_size=batch_size, tag_names=tag_names or {},
                       image_boxes=image_boxes)
    figs['examples_high'] = charts.examples_figure(ex[:k], f'{k} highest-rated test images')
    if k_low:
      figs['examples_low'] = charts.examples_figure(ex[k:],
                                                    f'{k_low} lowest-rated test images')
  g = metrics.get('global_normalisation') or {}
  scale = (g['min'], g['max']) if 'min' in g and 'max' in g else None  # the study's scale
  for norm, x in streaming.intensities(test, scale).items():
    figs[f'intensity_scatter_{norm}'] = charts.intensity_scatter(
        x, test.true['mean_score'], pearson_all=metrics[f'cam_intensity_pearson_all_{norm}'],
        pearson_extreme=metrics[f'cam_intensity_pearson_extreme_{norm}'],
        title=f'{arch}: map intensity ({norm} normalisation) vs mean score')
  if test.score_maps is not None:
    cnt = test.score_maps[1]
    figs['score_bucket_maps'] = charts.bucket_maps_figure(
        streaming.mean_maps(test.score_maps)[None], cnt[None], ['aesthetic map'],
        'Average aesthetic map of test images per true score bucket',
        col_labels=[f'score {j + 1}\nn={int(c)}' for j, c in enumerate(cnt)])
  if metrics.get('map_concentration'):
    series = {'trained': metrics['map_concentration']}
    if metrics.get('map_concentration_untrained'):
      series['untrained (control)'] = metrics['map_concentration_untrained']
    figs['map_entropy'] = charts.concentration_figure(
        series, f'{arch}: how diffuse each image\'s aesthetic map is, by true score')
  if test.bucket_maps is not None:
    figs['bucket_maps'] = charts.bucket_maps_figure(
        streaming.mean_maps(test.bucket_maps), test.bucket_maps[1],
        [g[0] for g in streaming.SCORE_GROUPS], 'Average map per target bucket')
    panels = [charts.image_bucket_maps_figure(b['image'], b['maps'], b['caption'])
              for b in bex[:1] + bex[k:k + 1]]
    if panels:
      figs['bucket_maps_examples'] = stack_pngs(panels)
  figs.update(faithfulness_figures(metrics))
  return figs


def faithfulness_figures(metrics: dict) -> dict[str, bytes]:
  """The deletion and insertion curves of `metrics['faithfulness']` (with the random order's,
  chance level) as PNGs: {'faithfulness_deletion', 'faithfulness_insertion'}, or {}."""
  figs: dict[str, bytes] = {}
  faith = dict(metrics.get('faithfulness') or {})
  if faith:
    if metrics.get('faithfulness_random'):  # chance level, drawn with the methods
      faith['random order'] = metrics['faithfulness_random']
    # A baseline scoring at or above the images turns the areas' direction around (the
    # report's Caution): then the titles do not say which way is more faithful.
    ranked = all(v.get('baseline_gap') is None or v['baseline_gap'] > 0 for v in faith.values())
    unranked = 'baseline at or above the images: not ranked'
    figs['faithfulness_deletion'] = charts.curves_figure(
        {m: np.asarray(v['deletion_curve'], np.float64) for m, v in faith.items()},
        'Deletion (normalised target score; '
        + ('lower area = more faithful)' if ranked else unranked + ')'), 'normalised score')
    figs['faithfulness_insertion'] = charts.curves_figure(
        {m: np.asarray(v['insertion_curve'], np.float64) for m, v in faith.items()},
        'Insertion (normalised target score; '
        + ('higher area = more faithful)' if ranked else unranked + ')'), 'normalised score')
  return figs
