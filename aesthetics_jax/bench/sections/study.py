"""--what=study: the whole per-image study on `study_images` test images — aesthetic map,
10 bucket maps, top attribute map, boxes (aesthetic, attribute, average) and mean intensity;
ours in one jitted pass per batch vs pytorch-grad-cam looped over the same 12 targets.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from aesthetics_jax import models
from aesthetics_jax.bench import agreement, timing, torch_ref, workloads
from aesthetics_jax.bench.sections import Options, Row
from aesthetics_jax.explain import cam

THRESHOLD = 0.2  # box threshold on the normalised maps


def run(opts: Options) -> dict[str, Any]:
  if opts.torch:
    torch_ref.set_threads(opts.torch_threads())
  b, s, chunk = opts.cam_batch_size, opts.image_size, opts.chunk_size()
  n = max(b, opts.study_images // b * b)
  x_np = workloads.photos(n, s, seed=2)
  xs = [jax.device_put(x_np[i:i + b]) for i in range(0, n, b)]
  model = models.create_model(workloads.model_config('mobilenet_v2'))
  tm = torch_ref.mobilenet_v2(76, seed=0, channels_last=True) if opts.torch else None
  variables = torch_ref.variables(model, 'mobilenet_v2', s, tm)
  step = workloads.make_study_step(model, 'mobilenet_v2', s, THRESHOLD, chunk)

  def ours():
    return [jax.device_get(step(variables, xi)) for xi in xs]
  fns = {'jax_study': ours}
  if opts.torch:
    cobj = torch_ref.gradcam(tm)
    txs = [torch_ref.to_nchw(x_np[i:i + b], True) for i in range(0, n, b)]
    fns['pytorch_grad_cam_study_looped'] = lambda: [
        torch_ref.study_batch(tm, cobj, t, THRESHOLD) for t in txs]
  runs = timing.interleaved(fns, items=n, repeats=max(1, opts.repeats - 1), warmup=1)
  timing.print_runs(runs)
  res: dict[str, Any] = {'num_images': n, 'batch_size': b, 'image_size': s, 'chunk': chunk,
                         'targets': list(cam.target_names('mobilenet_v2',
                                                          workloads.STUDY_TARGETS)),
                         'runs': runs}
  if opts.torch:
    res['ratio'] = timing.ratio(runs['jax_study'], runs['pytorch_grad_cam_study_looped'])
    # Agreement of the aesthetic (mean-score) map and of the boxes.
    aes_step = workloads.make_cam_step(
        model, cam.targets_for('mobilenet_v2', ('aesthetic', 'top_tag')), chunk, s)
    ours_maps = np.asarray(aes_step(variables, xs[0]))
    theirs = torch_ref.study_batch(tm, cobj, txs[0], THRESHOLD)
    res['aesthetic_maps_agree'] = agreement.maps(theirs['aesthetic'], ours_maps[:, 0])
    got = jax.device_get(step(variables, xs[0]))[1]
    res['box_aesthetic_equal_fraction'] = float(np.mean(np.all(
        np.asarray(got['box_aesthetic']) == theirs['box_aesthetic'], axis=1)))
    print(f"  aesthetic maps vs pytorch-grad-cam: {res['aesthetic_maps_agree']}; aesthetic "
          f"boxes equal for {res['box_aesthetic_equal_fraction']:.0%} of images", flush=True)
    cobj.__exit__(None, None, None)
  return res


def summary(result: dict[str, Any]) -> list[Row]:
  if 'ratio' not in result:
    return []
  return [Row('study_vs_looped_pytorch_grad_cam', result['ratio'],
              f'{result["num_images"]} images, 12 maps + boxes each')]
