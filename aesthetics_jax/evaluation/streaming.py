"""One streamed pass over a split: per-image predictions, truths and map summaries.

Per batch, ONE jitted forward (`forward.make_forward`: features once → head → predictions and
raw CAMs [B,T,h,w]) and ONE jitted `make_summarize` (maps → a few numbers and boxes per image)
run on the device; only those numbers come back to the host, so memory stays flat in the
number of images. What the evaluators need of the maps themselves is summed as it streams:
the per-image-normalised aesthetic map per true score bucket (`study.bucket_mean_maps`, paper
Figure 8) and, for MobileNetV2, the 10 bucket maps per group of true scores (`SCORE_GROUPS`).

Dataset-global normalisation needs no second pass: it is affine in the raw map, so the mean of
the globally normalised map is `(mean_raw - lo) / (hi - lo)` (`intensities`). One scale
`(lo, hi)` must serve every split compared: the intensity study fits it on the split-point fit
(training) maps and applies it to the test maps too.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from aesthetics_jax import memory_fit
from aesthetics_jax.data import pipeline
from aesthetics_jax.evaluation import study
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import crop

# Rows of the per-bucket figure: test images grouped by their true mean score, a partition
# of the scores: low < 4.5 <= mid <= 6.5 < high (the middle is the score-weighting band,
# inclusive, as in `sampling.sample_weights`). (label, lo, hi); `score_group` applies them.
SCORE_GROUPS = (('low (< 4.5)', -np.inf, 4.5), ('mid (4.5 to 6.5)', 4.5, 6.5),
                ('high (> 6.5)', 6.5, np.inf))
TRUE_FIELDS = ('mean_score', 'label', 'distribution', 'tags', 'image_id')

# `(variables, x [B,S,S,3]) -> (predict_outputs [B,...], raw maps [B,T,h,w])`.
ForwardFn = Callable[[Any, Any], tuple[Mapping[str, Any], Any]]
# `(source, max_examples) -> batches` (`pipeline.eval_batches` with the config and mesh bound).
BatchesFn = Callable[..., Iterator[Mapping[str, Any]]]


def make_summarize(size: int, threshold: float, arch: str, mesh: Mesh | None = None):
  """Raw maps [B,T,h,w] → per-image summaries (all over the S×S model input grid), jitted.

  The boxes label connected regions (`crop.boxes`): on an accelerator inside the jitted
  function, on the device; on CPU on the host (`crop.boxes_np`), on one device inside the jitted
  function (a `pure_callback`). With a `mesh` of several CPU devices the jitted part returns the
  two thresholded maps instead and the boxes are labelled after it, on the host, from the same
  numbers. A `pure_callback` inside a multi-device CPU computation did not finish
  (`aesthetics-evaluate` with `--xla_force_host_platform_device_count=2`): with its default
  sharding the maps went to device 0 and XLA aborted after 40 s in the all-reduce that sends
  the boxes back; run per device (`jax.shard_map`) both callbacks hung converting their
  arguments.

  Returns dict: `intensity [B]` (per-image-normalised aesthetic map, upsampled, mean),
  `raw_mean [B]` (raw aesthetic map upsampled, mean), `raw_min/raw_max [B]`,
  `box_aesthetic [B,4]`, `empty_aesthetic [B]` (`crop.empty_maps`: the map points nowhere and
  its box means nothing), `entropy [B]` (`cam.map_entropy`: 0 one cell, 1 uniform; NaN for an
  empty map), `aes_norm [B,h,w]` (per-image-normalised aesthetic map), `cam_aesthetic [B,h,w]`
  (the raw map, for per_image.csv's boxes: `crop.image_boxes`, as predict takes them), and for
  MobileNetV2 `box_attribute`, `box_average [B,4]`, `cam_attribute [B,h,w]` (raw), `bucket
  [B,10,h,w]` (per-image normalised bucket maps).
  """
  on_host = mesh is not None and mesh.size > 1 and not crop.label_on_device()
  boxes = (lambda m: m) if on_host else (lambda m: crop.boxes(m, threshold))

  def summarize(maps):
    aes = maps[:, 0]                                           # [B,h,w]
    up_raw = cam.upsample(aes[:, None], (size, size))[:, 0]    # [B,S,S]
    norm = cam.normalize(aes[:, None], 'per_image')            # [B,1,h,w]
    up = cam.upsample(norm, (size, size))[:, 0]
    out = {'intensity': up.mean((1, 2)), 'raw_mean': up_raw.mean((1, 2)), 'aes_norm': norm[:, 0],
           'raw_min': up_raw.min((1, 2)), 'raw_max': up_raw.max((1, 2)),
           'box_aesthetic': boxes(up), 'empty_aesthetic': crop.empty_maps(aes),
           'cam_aesthetic': aes,
           'entropy': jnp.where(crop.empty_maps(aes), jnp.nan, cam.map_entropy(aes))}
    if arch == 'mobilenet_v2':
      att = cam.upsample(cam.normalize(maps[:, 11:12], 'per_image'), (size, size))[:, 0]
      out['box_attribute'] = boxes(att)
      out['empty_attribute'] = crop.empty_maps(maps[:, 11])
      out['cam_attribute'] = maps[:, 11]
      if not on_host:
        out['box_average'] = crop.average_boxes(out['box_aesthetic'], out['box_attribute'])
      out['bucket'] = cam.normalize(maps[:, 1:11], 'per_image')
    return out

  device_part = jax.jit(summarize)
  if not on_host:
    return device_part

  def summarize_on_host(maps) -> dict[str, Any]:
    out = dict(device_part(maps))
    for k in ('box_aesthetic', 'box_attribute'):  # the maps [B,S,S] → their boxes [B,4]
      if k in out:
        out[k] = crop.boxes_np(np.asarray(out[k]), threshold)
    if 'box_attribute' in out:
      out['box_average'] = np.asarray(crop.average_boxes(out['box_aesthetic'],
                                                         out['box_attribute']))
    return out
  return summarize_on_host


@dataclasses.dataclass
class SplitSummary:
  """What one pass over a split keeps (padding rows dropped; N images, in source order).

  pred: `predict_outputs` fields `[N, ...]`.
  true: `TRUE_FIELDS` of the batches `[N, ...]`.
  maps: `make_summarize` fields but the normalised maps (`intensity`, `raw_*`, `box_*`, the
    raw `cam_*` maps) `[N, ...]`.
  score_maps: `study.bucket_mean_maps` sums of the aesthetic map per true score bucket,
    `(sum [10,h,w], count [10])` (None unless kept).
  bucket_maps: sums of the 10 bucket maps per `SCORE_GROUPS` row, `(sum [G,10,h,w],
    count [G])` (MobileNetV2, None unless kept).
  """
  pred: dict[str, np.ndarray]
  true: dict[str, np.ndarray]
  maps: dict[str, np.ndarray]
  score_maps: tuple[np.ndarray, np.ndarray] | None = None
  bucket_maps: tuple[np.ndarray, np.ndarray] | None = None

  @property
  def num_images(self) -> int:
    return int(self.true['mean_score'].shape[0])


def score_group(scores: np.ndarray) -> np.ndarray:
  """i64 [N]: the `SCORE_GROUPS` row of each mean score [N]; every finite score is in one.

  The middle group is closed at both ends (4.5 and 6.5 are "mid"): it is `lo <= s <= hi`,
  the outer ones `s < lo` and `s > hi`.
  """
  scores = np.asarray(scores, np.float64)
  _, mid_lo, mid_hi = SCORE_GROUPS[1]
  return (scores >= mid_lo).astype(np.int64) + (scores > mid_hi)


def _group_sums(maps: np.ndarray, scores: np.ndarray,
                sums: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
  """Adds bucket maps [b,10,h,w] into running sums per `SCORE_GROUPS` row (by true score)."""
  if sums is None:
    sums = (np.zeros((len(SCORE_GROUPS),) + maps.shape[1:], np.float64),
            np.zeros((len(SCORE_GROUPS),), np.int64))
  total, count = sums
  groups = score_group(scores)
  for g in range(len(SCORE_GROUPS)):
    sel = groups == g
    total[g] += maps[sel].sum(0)
    count[g] += int(sel.sum())
  return total, count


def collect(forward: ForwardFn, summarize, variables, batches: BatchesFn,
            source: Sequence, max_examples: int = 0, *, keep_maps: bool = True,
            desc: str = 'eval') -> SplitSummary:
  """Streams the first `max_examples` images of `source` (0 = all) through `forward` and
  `summarize`; with `keep_maps`, also sums the maps for the Figure 8 panels and keeps each
  image's raw `cam_*` maps (per_image.csv's boxes); without, passes that need neither (the
  split-point fit, the untrained control) hold per image only numbers, whatever the layer."""
  drop = {'bucket', 'aes_norm'} | (set() if keep_maps else {'cam_aesthetic', 'cam_attribute'})
  acc: dict[str, dict[str, list]] = {'pred': {}, 'true': {}, 'maps': {}}
  score_maps = bucket_maps = None
  n_total = min(len(source), int(max_examples)) if max_examples else len(source)
  with tqdm(total=n_total, desc=desc, unit='img', leave=False) as bar, pipeline.closing(
      batches(source, max_examples=max_examples or None)) as it:
    for i, batch in enumerate(it):
      if i == 0:  # activations too large for the machine: one line, before the first batch
        memory_fit.check(forward, (variables, batch['image']), flag='config.eval.batch_size',
                         batch=int(batch['image'].shape[0]))
      pred, maps = forward(variables, batch['image'])
      host = jax.device_get({'pred': pred, 'maps': summarize(maps),
                             'true': {k: batch[k] for k in TRUE_FIELDS}, 'mask': batch['mask']})
      keep = np.asarray(host['mask']) > 0
      summ = host['maps']
      for part in ('pred', 'true', 'maps'):
        for k, v in host[part].items():
          if k not in drop:
            acc[part].setdefault(k, []).append(np.asarray(v)[keep])
      if keep_maps:
        scores = np.asarray(host['true']['mean_score'])[keep]
        _, _, score_maps = study.bucket_mean_maps(np.asarray(summ['aes_norm'])[keep], scores,
                                                  sums=score_maps)
        if 'bucket' in summ:
          bucket_maps = _group_sums(np.asarray(summ['bucket'])[keep], scores, bucket_maps)
      bar.update(int(keep.sum()))
  parts = {part: {k: np.concatenate(v) for k, v in d.items()} for part, d in acc.items()}
  return SplitSummary(**parts, score_maps=score_maps, bucket_maps=bucket_maps)


def global_range(split: SplitSummary) -> tuple[float, float]:
  """(lo, hi): min and max of the split's raw aesthetic maps (upsampled to S²)."""
  return float(split.maps['raw_min'].min()), float(split.maps['raw_max'].max())


def intensities(split: SplitSummary,
                scale: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
  """Mean map intensity per image `{'per_image', 'global': [N]}`.

  'global' is `(raw_mean - lo) / (hi - lo)` with `scale = (lo, hi)` (default: the split's own
  `global_range`). Unclipped, so it stays exact (the normalisation is affine) when `scale`
  comes from another split whose maps this one's exceed: a threshold fitted in that scale then
  means the same raw intensity here.
  """
  lo, hi = global_range(split) if scale is None else (float(scale[0]), float(scale[1]))
  return {'per_image': split.maps['intensity'],
          'global': (split.maps['raw_mean'] - lo) / max(hi - lo, 1e-12)}


def mean_maps(sums: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
  """Running `(sum [K,...], count [K])` → mean maps `[K,...]` (zeros for an empty bucket)."""
  total, count = sums
  return total / np.maximum(count, 1).reshape((-1,) + (1,) * (total.ndim - 1))
