"""Evaluation job: metrics, the CAM intensity study, faithfulness checks, figures and report.

`evaluate(workdir, step=None)` restores a checkpoint and streams over the test split in
batches (memory flat in the number of images, apart from a few numbers per image):
  * per batch, ONE jitted call (`inference.make_forward`): features once → head → predictions and
    raw CAMs for the aesthetic target (+ the 10 score buckets and the top predicted tag for
    MobileNetV2) → per-image-normalised, upsampled maps → intensity and boxes;
  * kept per image: predictions, truths, the mean raw map upsampled (for the dataset-global
    normalisation, which is affine in the raw map: global intensity = (mean_raw - lo) /
    (hi - lo), so no second pass is needed), boxes; per group of true scores, the sums of the
    per-image-normalised bucket maps (paper Figure 8);
  * afterwards the few example images (highest / lowest rated) are read again for figures.
The split-point threshold is fitted on the TRAINING split's maps (the first
`config.eval.split_point_fit_images` training images, eval preprocessing) and applied to
the test split. Faithfulness runs per CAM method on the first
`config.eval.faithfulness_images` test images.

Writes `W/eval/metrics.json`, `W/eval/per_image.csv`, `W/eval/figures/*.png`,
`W/eval/report.html` (all atomically) and returns the metrics dict.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from aesthetics_jax.evaluation import study
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop
from aesthetics_jax.data import dataset
from aesthetics_jax.explain import faithfulness
from aesthetics_jax.report import figures
from aesthetics_jax.data import pipeline
from aesthetics_jax.data import preprocess
from aesthetics_jax.train import metrics as metrics_lib
from aesthetics_jax.evaluation import inference
from aesthetics_jax.report import html as report_html
from aesthetics_jax import parallel
from aesthetics_jax.train import checkpoints

EVAL_DIR = 'eval'
# Rows of the per-bucket figure: test images grouped by their true mean score.
SCORE_GROUPS = (('low (< 4.5)', -np.inf, 4.5), ('mid (4.5 - 6.5)', 4.5, 6.5),
                ('high (> 6.5)', 6.5, np.inf))
CSV_FIELDS = ('image_id', 'true_mean', 'label', 'pred', 'pred_mean', 'p_high',
              'intensity_per_image', 'intensity_global', 'orig_height', 'orig_width',
              'box_aesthetic', 'box_attribute', 'box_average')


def _atomic_bytes(path: Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + f'.tmp{os.getpid()}')
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _atomic_json(path: Path, obj: Any) -> None:
  _atomic_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + '\n').encode())


def _json_default(o):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(type(o))


def _clean(v):
  """NaN/inf → None so metrics.json stays valid JSON."""
  if isinstance(v, dict):
    return {k: _clean(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_clean(x) for x in v]
  if isinstance(v, (float, np.floating)):
    v = float(v)
    return v if np.isfinite(v) else None
  if isinstance(v, np.integer):
    return int(v)
  return v


def _image_size(record) -> tuple[int, int]:
  """(H, W) of a record's original image from its header (no full decode)."""
  with Image.open(io.BytesIO(record['image'])) as im:
    return im.size[1], im.size[0]


def make_summarize(size: int, threshold: float, arch: str):
  """jitted raw maps [B,T,h,w] → per-image summaries (all over the S×S model input grid).

  Returns dict: `intensity [B]` (per-image-normalised aesthetic map, upsampled, mean),
  `raw_mean [B]` (raw aesthetic map upsampled, mean), `raw_min/raw_max [B]`,
  `box_aesthetic [B,4]`, and for MobileNetV2 `box_attribute`, `box_average [B,4]`,
  `bucket [B,10,h,w]` (per-image normalised bucket maps).
  """

  @jax.jit
  def summarize(maps):
    aes = maps[:, 0]                                           # [B,h,w]
    up_raw = cam.upsample(aes[:, None], (size, size))[:, 0]    # [B,S,S]
    norm = cam.normalize(aes[:, None], 'per_image')            # [B,1,h,w]
    up = cam.upsample(norm, (size, size))[:, 0]
    out = {'intensity': up.mean((1, 2)), 'raw_mean': up_raw.mean((1, 2)), 'aes_norm': norm[:, 0],
           'raw_min': up_raw.min((1, 2)), 'raw_max': up_raw.max((1, 2)),
           'box_aesthetic': crop.boxes(up, threshold)}
    if arch == 'mobilenet_v2':
      att = cam.upsample(cam.normalize(maps[:, 11:12], 'per_image'), (size, size))[:, 0]
      out['box_attribute'] = crop.boxes(att, threshold)
      out['box_average'] = crop.average_boxes(out['box_aesthetic'], out['box_attribute'])
      out['bucket'] = cam.normalize(maps[:, 1:11], 'per_image')
    return out

  return summarize


def _scale_boxes(boxes: np.ndarray, size: int, hw: np.ndarray) -> np.ndarray:
  """[N,4] boxes on the S×S grid → original pixels given hw [N,2]."""
  out = np.empty_like(boxes)
  for i in range(boxes.shape[0]):
    out[i] = inference.scale_box(boxes[i], (size, size), (int(hw[i, 0]), int(hw[i, 1])))
  return out


def _global_intensity(raw_mean: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Mean of the globally min-max-normalised map: affine in the raw mean (see module doc)."""
  return (raw_mean - lo) / max(hi - lo, 1e-12)


def _stream(forward, summarize, variables, source, config, mesh, max_examples, desc,
            keep_buckets: bool) -> dict[str, np.ndarray]:
  """One pass over a split; returns per-image arrays (+ per-group bucket sums)."""
  acc: dict[str, list] = {}
  bucket_sum = bucket_cnt = None
  score_sums = None  # study.bucket_mean_maps running sums: aesthetic map per true bucket
  batches = pipeline.eval_batches(source, config, mesh, max_examples=max_examples or None)
  n_total = len(source) if not max_examples else min(len(source), int(max_examples))
  with tqdm(total=n_total, desc=desc, unit='img', leave=False) as bar:
    for batch in batches:
      pred, maps = forward(variables, batch['image'])
      summ = summarize(maps)
      host = jax.device_get({'pred': pred, 'summ': summ,
                             **{k: batch[k] for k in ('mask', 'mean_score', 'label',
                                                      'distribution', 'tags', 'image_id')}})
      keep = host['mask'] > 0
      for k, v in host['pred'].items():
        acc.setdefault('pred_' + k, []).append(np.asarray(v)[keep])
      for k, v in host['summ'].items():
        if k in ('bucket', 'aes_norm'):
          continue
        acc.setdefault(k, []).append(np.asarray(v)[keep])
      for k in ('mean_score', 'label', 'distribution', 'tags', 'image_id'):
        acc.setdefault('true_' + k, []).append(np.asarray(host[k])[keep])
      if keep_buckets:
        _, _, score_sums = study.bucket_mean_maps(
            np.asarray(host['summ']['aes_norm'])[keep], np.asarray(host['mean_score'])[keep],
            sums=score_sums)
      if keep_buckets and 'bucket' in host['summ']:
        b = np.asarray(host['summ']['bucket'])[keep]           # [b,10,h,w]
        if bucket_sum is None:
          bucket_sum = np.zeros((len(SCORE_GROUPS),) + b.shape[1:], np.float64)
          bucket_cnt = np.zeros((len(SCORE_GROUPS),), np.int64)
        s = np.asarray(host['mean_score'])[keep]
        for g, (_, lo, hi) in enumerate(SCORE_GROUPS):
          sel = (s > lo) & (s <= hi) if np.isfinite(lo) else (s < hi)
          if g == len(SCORE_GROUPS) - 1:
            sel = s > lo
          bucket_sum[g] += b[sel].sum(0)
          bucket_cnt[g] += int(sel.sum())
      bar.update(int(keep.sum()))
  out = {k: np.concatenate(v) for k, v in acc.items()}
  if bucket_sum is not None:
    out['bucket_sum'], out['bucket_cnt'] = bucket_sum, bucket_cnt
  if score_sums is not None:
    out['score_bucket_sum'], out['score_bucket_cnt'] = score_sums
  return out


def _examples(fwd, variables, config, source, rows: Sequence[int], meta: Mapping,
              tag_names: Mapping[int, str]) -> tuple[list[dict], list[dict]]:
  """Re-reads a few test images (original resolution) for Figures 5, 6 and 8.

  All rows go through the eval forward in ONE batch padded to the eval batch size, so the
  jitted function is not compiled again for a new shape.
  """
  arch, size = str(config.model.arch), int(config.input.image_size)
  thr = float(config.eval.box_threshold)
  bs = int(config.eval.get('batch_size', 0) or config.batch_size)
  rows = [int(i) for i in rows]
  imgs = [preprocess.decode_image(source[i]['image']) for i in rows]
  x = np.stack([preprocess.preprocess_eval_np(im, size) for im in imgs])
  pad = (-len(rows)) % bs
  x = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
  x = preprocess.to_model_input(jnp.asarray(x), str(config.input.get('normalize', 'none')))
  pred, maps = jax.device_get(fwd(variables, x))
  maps = inference.split_maps(np.asarray(maps), arch)
  examples, bucket_examples = [], []
  for j, (i, img) in enumerate(zip(rows, imgs)):
    h, w = img.shape[:2]
    grid = inference.box_grid((h, w), 256)
    small = np.asarray(Image.fromarray(img).resize((grid[1], grid[0]), Image.BILINEAR))
    aes = inference.resize_maps(np.asarray(cam.normalize(maps['aesthetic'][j:j + 1])), grid)
    boxes = {'aesthetic': np.asarray(crop.boxes(aes, thr))[0]}
    attr, tag_caption = None, ''
    if 'top_tag' in maps:
      attr = inference.resize_maps(np.asarray(cam.normalize(maps['top_tag'][j:j + 1])), grid)
      boxes['attribute'] = np.asarray(crop.boxes(attr, thr))[0]
      boxes['average'] = np.asarray(crop.average_boxes(boxes['aesthetic'][None],
                                                       boxes['attribute'][None]))[0]
      t = int(np.argmax(pred['tag_probs'][j])) + 1
      tag_caption = f'attribute map: {tag_names.get(t, f"tag {t}")}'
    y0, x0, y1, x1 = (int(v) for v in boxes.get('average', boxes['aesthetic']))
    score = (f'pred {pred["mean_score"][j]:.2f}' if 'mean_score' in pred
             else f'p_high {pred["p_high"][j]:.2f}')
    caption = f'id {int(meta["image_id"][i])}: true {meta["mean_score"][i]:.2f}, {score}'
    examples.append(dict(image=small, aesthetic_map=aes[0],
                         attribute_map=None if attr is None else attr[0],
                         attribute_name=tag_caption, boxes=boxes, crop=small[y0:y1, x0:x1],
                         caption=caption))
    if 'bucket' in maps:
      bm = inference.resize_maps(np.asarray(cam.normalize(maps['bucket'][j])), grid)
      bucket_examples.append(dict(image=small, maps=bm, caption=caption))
  return examples, bucket_examples


def _study(test_int: Mapping[str, np.ndarray], fit_int: Mapping[str, np.ndarray],
           test_scores: np.ndarray, fit_scores: np.ndarray, config) -> dict:
  """Table 1 via `study.summarize`: intensity/score correlations (all, extremes) with
  bootstrap CIs and the split-point classifier fitted on `fit_*`, for both normalisations.
  Keys suffixed `_per_image` / `_global`; the unsuffixed keys repeat per_image."""
  band = tuple(config.input.get('weight_band', study.EXTREME_BAND))
  out: dict[str, Any] = study.summarize(
      dict(test_int), test_scores, dict(fit_int), fit_scores,
      num_bootstrap=int(config.eval.get('bootstrap_samples', 1000)), seed=int(config.seed),
      band=band)
  ext = study.extreme_mask(test_scores, band)
  out['cam_intensity_n_all'] = int(test_scores.size)
  out['cam_intensity_n_extreme'] = int(ext.sum())
  out['split_point_fit_n'] = int(np.asarray(fit_scores).size)
  for k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme',
            'split_point_threshold', 'split_point_accuracy'):
    out[k] = out[f'{k}_per_image']
  for k in ('cam_intensity_pearson_all', 'cam_intensity_pearson_extreme'):
    out[k + '_ci'] = out[f'{k}_per_image_ci']
  return out


def evaluate(workdir: str | os.PathLike, step: int | None = None, *,
             demo: bool | None = None, write_html: bool = True,
             overrides: Mapping[str, Any] | None = None) -> dict:
  """Evaluates the checkpoint of `workdir` (latest or `step`); returns the metrics dict.

  demo: show the demo-data banner in the report (default: detected from the AVA root, which
    the demo generator marks with `defect_masks/`).
  overrides: dotted config keys to change for this evaluation only, e.g.
    `{'eval.faithfulness_images': 8, 'eval.cam_methods': ('gradcam',)}`.
  """
  t0 = time.time()
  workdir = Path(workdir)
  model, variables, config, step = checkpoints.restore_for_inference(workdir, step)
  for key, value in (overrides or {}).items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  arch = str(config.model.arch)
  size = int(config.input.image_size)
  thr = float(config.eval.box_threshold)
  method = str(config.eval.cam_method)
  sources = dataset.load_sources(config.data.data_dir, config.data.subset)
  test, train_src = sources['test'], sources['train']
  mesh = parallel.make_mesh()
  # Replicated over the mesh so the jitted calls see one device set with the sharded batches.
  variables = parallel.replicate(jax.device_get(variables), mesh)
  out_dir = workdir / EVAL_DIR
  fig_dir = out_dir / 'figures'
  fig_dir.mkdir(parents=True, exist_ok=True)

  fwd = inference.make_forward(model, arch, method, None)
  summarize = make_summarize(size, thr, arch)
  max_test = int(config.data.get('max_test_images', 0) or 0)
  res = _stream(fwd, summarize, variables, test, config, mesh, max_test, 'eval test', True)
  n = int(res['true_mean_score'].shape[0])

  # --- metrics -------------------------------------------------------------------------
  pred = {k[5:]: v for k, v in res.items() if k.startswith('pred_')}
  true = {'label': res['true_label'], 'mean_score': res['true_mean_score'],
          'distribution': res['true_distribution'], 'tags': res['true_tags']}
  m: dict[str, Any] = {'step': step, 'arch': arch, 'cam_method': method, 'box_threshold': thr}
  m.update(metrics_lib.compute(pred, true, float(config.loss.get('emd_r', 2.0))))
  m['binary_accuracy_ci'] = study.accuracy_ci(
      pred['label_pred'], res['true_label'], int(config.eval.get('bootstrap_samples', 1000)),
      int(config.seed))

  # --- intensity study: test maps + training maps for the split-point fit ---------------
  fit_n = int(config.eval.get('split_point_fit_images', 1024))
  # Same jitted functions as the test pass (no recompilation); bucket maps are dropped.
  fit = _stream(fwd, summarize, variables, train_src, config, mesh, fit_n, 'fit split point',
                False)
  lo, hi = float(res['raw_min'].min()), float(res['raw_max'].max())
  flo, fhi = float(fit['raw_min'].min()), float(fit['raw_max'].max())
  test_int = {'per_image': res['intensity'],
              'global': _global_intensity(res['raw_mean'], lo, hi)}
  fit_int = {'per_image': fit['intensity'],
             'global': _global_intensity(fit['raw_mean'], flo, fhi)}
  m.update(_study(test_int, fit_int, res['true_mean_score'], fit['true_mean_score'], config))
  m['split_point_fit'] = (f'the first {fit["intensity"].shape[0]} training-split images '
                          '(eval preprocessing; global normalisation with the training maps\' '
                          'own min/max)')
  m['global_normalisation'] = {'test_min': lo, 'test_max': hi, 'fit_min': flo, 'fit_max': fhi}

  # --- faithfulness ----------------------------------------------------------------------
  m.update(_faithfulness(model, variables, config, test, mesh))

  # --- per-image CSV ---------------------------------------------------------------------
  limit = n
  hw = np.array([_image_size(test[i]) for i in range(limit)], np.int64).reshape(-1, 2)
  boxes = {k: _scale_boxes(res[k], size, hw) for k in ('box_aesthetic', 'box_attribute',
                                                        'box_average') if k in res}
  _write_csv(out_dir / 'per_image.csv', res, pred, test_int, hw, boxes)

  # --- figures ---------------------------------------------------------------------------
  figs: dict[str, bytes] = {}
  k = max(1, int(config.eval.num_example_images) // 2)
  order = np.argsort(-res['true_mean_score'], kind='stable')
  tag_names = _tag_names(config)
  meta = {'image_id': res['true_image_id'], 'mean_score': res['true_mean_score']}
  ex, bex = _examples(fwd, variables, config, test, list(order[:k]) + list(order[::-1][:k]),
                      meta, tag_names)
  ex_hi, ex_lo, bex_hi, bex_lo = ex[:k], ex[k:], bex[:k], bex[k:]
  figs['examples_high'] = figures.examples_figure(ex_hi, f'{k} highest-rated test images')
  figs['examples_low'] = figures.examples_figure(ex_lo, f'{k} lowest-rated test images')
  for norm in ('per_image', 'global'):
    figs[f'intensity_scatter_{norm}'] = figures.intensity_scatter(
        test_int[norm], res['true_mean_score'],
        pearson_all=m[f'cam_intensity_pearson_all_{norm}'],
        pearson_extreme=m[f'cam_intensity_pearson_extreme_{norm}'],
        title=f'Map intensity ({norm} normalisation) vs mean score')
  if 'score_bucket_sum' in res:
    cnt = res['score_bucket_cnt']
    mean_maps = res['score_bucket_sum'] / np.maximum(cnt, 1)[:, None, None]
    figs['score_bucket_maps'] = figures.bucket_maps_figure(
        mean_maps[None], cnt[None], ['aesthetic map'],
        'Average aesthetic map of test images per true score bucket',
        col_labels=[f'score~{j + 1} (n={int(c)})' for j, c in enumerate(cnt)])
    m['score_bucket_counts'] = [int(c) for c in cnt]
  if 'bucket_sum' in res:
    cnt = res['bucket_cnt']
    mean_maps = res['bucket_sum'] / np.maximum(cnt, 1)[:, None, None, None]
    figs['bucket_maps'] = figures.bucket_maps_figure(
        mean_maps, cnt, [g[0] for g in SCORE_GROUPS], 'Average map per target bucket')
    panels = [figures.image_bucket_maps_figure(b['image'], b['maps'], b['caption'])
              for b in (bex_hi[:1] + bex_lo[:1])]
    if panels:
      figs['bucket_maps_examples'] = _stack_pngs(panels)
    m['bucket_map_counts'] = [int(c) for c in cnt]
  for key, png in m.pop('_faithfulness_figures', {}).items():
    figs[key] = png
  for key, png in figs.items():
    _atomic_bytes(fig_dir / f'{key}.png', png)

  m['eval_seconds'] = round(time.time() - t0, 1)
  m = _clean(m)
  _atomic_json(out_dir / 'metrics.json', m)
  if write_html:
    if demo is None:
      demo = is_demo(config)
    section = model_section(workdir, m, figs, config)
    report_html.write_report(out_dir / 'report.html', [section], dataset_section(config), demo=demo,
                        title=f'aesthetics-jax: {section["name"]} evaluation')
  return m


def _stack_pngs(pngs: Sequence[bytes]) -> bytes:
  """Stacks PNG panels vertically into one PNG."""
  ims = [Image.open(io.BytesIO(p)).convert('RGB') for p in pngs]
  w = max(i.width for i in ims)
  out = Image.new('RGB', (w, sum(i.height for i in ims)), 'white')
  y = 0
  for i in ims:
    out.paste(i, (0, y))
    y += i.height
  buf = io.BytesIO()
  out.save(buf, format='PNG')
  return buf.getvalue()


def _tag_names(config) -> dict[int, str]:
  return inference.tag_names(config)


def is_demo(config) -> bool:
  """The demo generator writes `defect_masks/` into its AVA root; real AVA has none."""
  ava_dir = config.data.get('ava_dir', '')
  return bool(ava_dir) and (Path(ava_dir) / 'defect_masks').is_dir()


def _write_csv(path: Path, res, pred, test_int, hw, boxes) -> None:
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(CSV_FIELDS)
  n = res['true_mean_score'].shape[0]
  box = lambda k, i: ' '.join(str(int(v)) for v in boxes[k][i]) if k in boxes else ''  # noqa
  for i in range(n):
    w.writerow([int(res['true_image_id'][i]), f'{res["true_mean_score"][i]:.4f}',
                int(res['true_label'][i]), int(pred['label_pred'][i]),
                f'{pred["mean_score"][i]:.4f}' if 'mean_score' in pred else '',
                f'{pred["p_high"][i]:.4f}' if 'p_high' in pred else '',
                f'{test_int["per_image"][i]:.5f}', f'{test_int["global"][i]:.5f}',
                int(hw[i, 0]), int(hw[i, 1]), box('box_aesthetic', i), box('box_attribute', i),
                box('box_average', i)])
  _atomic_bytes(path, buf.getvalue().encode())


def model_section(workdir: Path, m: Mapping, figs: Mapping[str, Any], config) -> dict:
  """The report section of one evaluated model (see report/html.py)."""
  notes = [f'Test images: {m.get("num_test_images")}. CAM method for maps and the study: '
           f'{m.get("cam_method")}. Split-point threshold fitted on '
           f'{m.get("split_point_fit")}.']
  return dict(name=Path(workdir).name or str(workdir), arch=str(config.model.arch),
              step=m.get('step'), workdir=str(workdir), metrics=dict(m), figures=dict(figs),
              notes=notes)


def dataset_section(config) -> dict | None:
  """Figures 1-2 and stats.json written by dataset.prepare (None if absent)."""
  from aesthetics_jax.data import stats as data_stats  # pylint: disable=import-outside-toplevel
  if not config.data.get('data_dir'):
    return None
  return data_stats.report_section(dataset.dataset_dir(config.data.data_dir, config.data.subset))


def _load_masks(ava_dir: str, image_ids: Sequence[int], size: int) -> np.ndarray | None:
  """Demo defect masks `A/defect_masks/<id>.png` resized (nearest) to S² → bool [N,S,S];
  None when the AVA root has no masks (real AVA). A missing file counts as 'no defect'."""
  d = Path(ava_dir) / 'defect_masks' if ava_dir else None
  if d is None or not d.is_dir():
    return None
  out = np.zeros((len(image_ids), size, size), bool)
  for i, image_id in enumerate(image_ids):
    p = d / f'{int(image_id)}.png'
    if p.is_file():
      with Image.open(p) as im:
        out[i] = np.asarray(im.convert('L').resize((size, size), Image.NEAREST)) > 127
  return out


def make_faithfulness_step(model, arch: str, steps: int):
  """`step(method, variables, random_head_params, x [B,S,S,3], masks [B,S,S]) -> arrays [B,..]`:
  * deletion / insertion of the AESTHETIC target's map, scored by that target (raw curves);
  * pointing game and mask mass of the LOW target's map (negative aesthetic score: what makes
    the image worse), because the defect masks mark what made the image bad — the aesthetic
    target's positive gradients point at what makes it good;
  * the aesthetic maps of the trained and of the re-initialised head (randomisation check).
  Jitted in three parts so that the costly compilations are shared by all methods: the
  encoder (once), the maps (head vjp; per method, small — ScoreCAM includes the model) and
  the perturbation curves (B·(K+1) forward passes; once).
  """
  both = cam.targets_for(arch, ('aesthetic', 'low'))
  aes = cam.targets_for(arch, ('aesthetic',))

  @jax.jit
  def features(variables, x):
    return model.apply(variables, x, method='features')

  @functools.partial(jax.jit, static_argnames=('method',))
  def maps_fn(variables, random_head, feats, x, method):
    head_fn = lambda a: model.apply(variables, a, method='head')  # noqa: E731
    kw = (dict(model_fn=lambda im: model.apply(variables, im), images=x)
          if method == 'scorecam' else {})
    maps2 = cam.compute(method, head_fn, feats, both, **kw)                   # [B,2,h,w]
    rvars = dict(variables, params=dict(variables['params'], head=random_head))
    rhead_fn = lambda a: model.apply(rvars, a, method='head')  # noqa: E731
    rkw = (dict(model_fn=lambda im: model.apply(rvars, im), images=x)
           if method == 'scorecam' else {})
    rmaps = cam.compute(method, rhead_fn, feats, aes, **rkw)[:, 0]
    return maps2[:, 0], maps2[:, 1], rmaps

  @jax.jit
  def perturb(variables, x, maps):
    score_fn = lambda im: aes(model.apply(variables, im))[:, 0]  # noqa: E731
    dele = faithfulness.deletion(score_fn, x, maps, steps)
    ins = faithfulness.insertion(score_fn, x, maps, steps)
    return {'deletion_auc': dele['auc'], 'insertion_auc': ins['auc'],
            'deletion_raw': dele['curve'], 'insertion_raw': ins['curve']}

  def step(method, variables, random_head, x, masks):
    feats = features(variables, x)
    maps, low, rmaps = maps_fn(variables, random_head, feats, x, method=method)
    out = dict(perturb(variables, x, maps))
    pg = faithfulness.pointing_game(low, masks)
    mm = faithfulness.mask_mass(low, masks)
    out.update({'hit': pg['hit'], 'centre_hit': pg['centre_hit'], 'valid': pg['valid'],
                'mass': mm['mass'], 'area': mm['area'], 'maps': maps, 'low_maps': low,
                'random_maps': rmaps})
    return out

  return step


def pointing_cells(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Pointing game at the map's own resolution: hit [B] if the centre of the argmax CELL of
  maps [B,h,w] lies in masks [B,H,W]; a map with no positive value points nowhere (miss).

  Upsampling a coarse map (2×2 at 64 px) before the argmax puts the maximum in an image corner
  (edge clamping, raster-order ties), which defect masks rarely cover; the cell centre is the
  point the map actually designates.
  """
  maps = np.asarray(maps, np.float64)
  masks = np.asarray(masks) > 0
  b, h, w = maps.shape
  H, W = masks.shape[1:]
  idx = maps.reshape(b, -1).argmax(1)
  y = np.minimum(((idx // w + 0.5) * H / h).astype(int), H - 1)
  x = np.minimum(((idx % w + 0.5) * W / w).astype(int), W - 1)
  return masks[np.arange(b), y, x] & (maps.reshape(b, -1).max(1) > 0)


def _curve_auc(raw: np.ndarray, mode: str) -> tuple[float, np.ndarray]:
  """AUC of the normalised MEAN curve `[B,K+1] -> (auc, curve [K+1])`.

  Per-image normalisation `(s - s_empty) / (s_full - s_empty)` explodes when an image's full
  and baseline scores nearly coincide; averaging the raw curves first is stable.
  """
  c = np.nanmean(np.asarray(raw, np.float64), 0)
  full, empty = (c[0], c[-1]) if mode == 'deletion' else (c[-1], c[0])
  den = full - empty
  if not np.isfinite(den) or abs(den) < 1e-12:
    return float('nan'), c * np.nan
  norm = (c - empty) / den
  return float(np.asarray(faithfulness.trapezoid_auc(norm))), norm


def _faithfulness(model, variables, config, test, mesh) -> dict:
  """Deletion/insertion AUC, pointing game, mask mass and randomisation check per CAM method,
  on the first `config.eval.faithfulness_images` test images (aesthetic target, raw maps).

  Pointing game and mask mass use the demo's defect masks, on defective images only (an empty
  mask is skipped), beside the centre-point and uniform-map (= mask area) baselines.
  """
  arch, size = str(config.model.arch), int(config.input.image_size)
  n = min(int(config.eval.get('faithfulness_images', 64)), len(test))
  max_test = int(config.data.get('max_test_images', 0) or 0)
  if max_test:
    n = min(n, max_test)
  methods = [m for m in config.eval.get('cam_methods', ('gradcam',))]
  steps = int(config.eval.get('faithfulness_steps', 16))
  if n <= 0 or not methods:
    return {}
  bs = int(config.eval.get('batch_size', 0) or config.batch_size)
  ndev = mesh.devices.size
  bs = max(ndev, (min(bs, n) + ndev - 1) // ndev * ndev)
  ids = [int(test[i]['image_id']) for i in range(n)]
  masks = _load_masks(str(config.data.get('ava_dir', '') or ''), ids, size)
  have_masks = masks is not None
  if masks is None:
    masks = np.zeros((n, size, size), bool)
  norm = str(config.input.get('normalize', 'none'))
  random_head = faithfulness.randomized_params(variables['params']['head'],
                                               jax.random.PRNGKey(int(config.seed) + 1))
  sharding = parallel.data_sharding(mesh)
  # Preprocessed once for all methods (n images at S², a few MB at most).
  images = np.stack([preprocess.preprocess_eval_np(test[i]['image'], size)
                     for i in range(n)])
  # ScoreCAM re-runs the whole model once per feature channel (x2 for the randomised head):
  # it gets fewer images so that it costs about as much as the other methods together.
  score_n = min(n, int(config.eval.get('faithfulness_scorecam_images', 16)))
  acc: dict[str, dict[str, list]] = {m: {} for m in methods}
  seconds, counts = {}, {}
  fn = make_faithfulness_step(model, arch, steps)
  for method in tqdm(methods, desc='faithfulness', leave=False):
    t = time.time()
    m_n = score_n if method == 'scorecam' else n
    counts[method] = m_n
    # ScoreCAM's few images in a batch of their own (a padded full batch would multiply its
    # per-channel forward passes); the other methods share one batch shape.
    m_bs = max(ndev, (m_n + ndev - 1) // ndev * ndev) if method == 'scorecam' else bs
    for start in range(0, m_n, m_bs):
      rows = list(range(start, min(m_n, start + m_bs)))
      x, mk = images[rows], masks[rows]
      pad = m_bs - len(rows)
      if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
        mk = np.concatenate([mk, np.repeat(mk[:1], pad, 0)])
      xj = preprocess.to_model_input(jax.device_put(x, sharding), norm)
      out = jax.device_get(fn(method, variables, random_head, xj, jax.device_put(mk, sharding)))
      for k, v in out.items():
        acc[method].setdefault(k, []).append(np.asarray(v)[:len(rows)])
    seconds[method] = round(time.time() - t, 1)
  per_method, curves_del, curves_ins = {}, {}, {}
  centre = area = None
  num_defective = 0
  for method in methods:
    a = {k: np.concatenate(v) for k, v in acc[method].items()}
    rnd = faithfulness.randomization_check(a['maps'], a['random_maps'])
    valid = a['valid'] & have_masks
    # Cell-centre pointing game (see pointing_cells); faithfulness.pointing_game's
    # upsampled-argmax variant is kept as pointing_game_upsampled.
    pointing = {'hit': pointing_cells(a['low_maps'], masks[:counts[method]]),
                'centre_hit': a['centre_hit'], 'valid': valid}
    mass = {'mass': np.where(valid, a['mass'], np.nan), 'area': np.where(valid, a['area'],
                                                                          np.nan)}
    s = faithfulness.summarize(a['deletion_auc'], a['insertion_auc'],
                               pointing if have_masks else None, mass if have_masks else None,
                               rnd)
    s['deletion_auc_per_image_mean'] = s['deletion_auc']
    s['insertion_auc_per_image_mean'] = s['insertion_auc']
    s['deletion_auc'], curves_del[method] = _curve_auc(a['deletion_raw'], 'deletion')
    # Image score minus blurred-baseline score (mean): the normaliser of both curves; when it
    # is small relative to the curve's swings the normalised AUCs leave [0, 1].
    dr = np.nanmean(np.asarray(a['deletion_raw'], np.float64), 0)
    s['baseline_gap'] = float(dr[0] - dr[-1])
    s['insertion_auc'], curves_ins[method] = _curve_auc(a['insertion_raw'], 'insertion')
    if have_masks:
      hit_aes = pointing_cells(a['maps'], masks[:counts[method]])
      s['pointing_game_aesthetic_target'] = float(hit_aes[valid].mean()) \
          if valid.any() else float('nan')
      s['pointing_game_upsampled'] = float(a['hit'][valid].mean()) if valid.any() \
          else float('nan')
      s['flat_low_maps'] = int((a['low_maps'].reshape(len(valid), -1).max(1) <= 0).sum())
    centre = s.pop('pointing_game_centre', centre)
    area = s.pop('mask_area', area)
    s['num_images'], s['num_defective'], s['seconds'] = counts[method], int(valid.sum()), \
        seconds[method]
    per_method[method] = s
    num_defective = max(num_defective, int(valid.sum()))
  out = {'faithfulness': per_method, 'faithfulness_num_images': n,
         'faithfulness_num_defective': num_defective, 'faithfulness_steps': steps,
         'pointing_game_centre_baseline': centre if have_masks else float('nan'),
         'mask_mass_area_baseline': area if have_masks else float('nan'),
         'faithfulness_masks': 'demo defect masks' if have_masks else 'none (real AVA)'}
  for method, vals in per_method.items():  # flat copies for grep / dashboards
    for k, v in vals.items():
      if k not in ('num_images', 'num_defective', 'seconds', 'flat_low_maps', 'baseline_gap'):
        out[f'{k}_{method}'] = v
  out['_faithfulness_figures'] = {
      'faithfulness_deletion': figures.curves_figure(
          curves_del, 'Deletion (normalised target score; lower area = more faithful)',
          'normalised score'),
      'faithfulness_insertion': figures.curves_figure(
          curves_ins, 'Insertion (normalised target score; higher area = more faithful)',
          'normalised score')}
  return out

