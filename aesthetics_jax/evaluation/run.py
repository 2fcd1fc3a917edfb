"""Evaluation job: restore a checkpoint → run the evaluators → write the results.

`evaluate(workdir, step=None)`:
  1. restores the checkpoint and streams the test split ONCE (`streaming.collect`: one jitted
     forward per batch — features once → head → predictions and raw CAMs — and a few numbers
     per image back on the host);
  2. runs the evaluators on it (`evaluators/`): `metrics`, `intensity` (Table 1; streams the
     first `config.eval.split_point_fit_images` TRAINING images for the split point),
     `faithfulness` (first `config.eval.faithfulness_images` test images per CAM method),
     `localization` (every test image with a region mask), `figures` and `explorer` (every
     method's maps of every test image, `config.eval.explorer`);
  3. writes `W/eval/metrics.json`, `W/eval/per_image.csv`, `W/eval/figures/*.png`,
     `W/eval/explorer/` and `W/eval/report.html` (all landing together, `io.Staged`: a full
     disk leaves the earlier evaluation whole) and returns the metrics
     dict. Non-finite model outputs stop it first (`EvaluationError`: nothing is written).
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from aesthetics_jax import io as io_lib
from aesthetics_jax import cpu_backend, environment, models, parallel
from aesthetics_jax.data import dataset
from aesthetics_jax.data import pipeline
from aesthetics_jax.data import decoder
from aesthetics_jax.data import stats as data_stats
from aesthetics_jax.evaluation import ground_truth
from aesthetics_jax.evaluation import evaluators
from aesthetics_jax.evaluation import forward as forward_lib
from aesthetics_jax.evaluation import predictor
from aesthetics_jax.evaluation import records
from aesthetics_jax.evaluation import overrides as overrides_lib
from aesthetics_jax.evaluation import streaming
from aesthetics_jax.explain import cam
from aesthetics_jax.explain import choices
from aesthetics_jax.explain import crop
from aesthetics_jax.report import html as report_html
from aesthetics_jax.train import checkpoint_errors
from aesthetics_jax.train import restore
from aesthetics_jax.train import resume_checks
from aesthetics_jax.train import config_checks
from aesthetics_jax.train import workdir as workdir_lib

EVAL_DIR = 'eval'
EXPLORER_DIR = 'explorer'  # eval/explorer/index.html (+ thumbs/, maps/)
# In eval/ while an evaluation's files replace the earlier one's (`Staged` renames): left by a
# process killed in between, it says the folder may mix two evaluations.
INCOMPLETE = 'INCOMPLETE.txt'
INCOMPLETE_TEXT = ('An evaluation was stopped while its files replaced the earlier ones: this '
                   'folder may mix two evaluations. Rerun aesthetics-evaluate.\n')


class EvaluationError(ValueError):
  """One-line user error of the evaluation job (aesthetics-evaluate prints it, exit 1)."""


CSV_FIELDS = ('image_id', 'true_mean', 'label', 'pred', 'pred_mean', 'p_high',
              'intensity_per_image', 'intensity_global', 'orig_height', 'orig_width',
              'map', 'box_aesthetic', 'box_attribute', 'box_average', 'map_entropy')


def evaluate(workdir: str | os.PathLike, step: int | None = None, *,
             demo: bool | None = None, write_html: bool = True,
             overrides: Mapping[str, Any] | None = None) -> dict:
  """Evaluates the checkpoint of `workdir` (the one training selected, or `step`); returns the
  metrics dict.

  demo: show the demo-data banner in the report and the explorer (default: detected from the
    AVA root, which the demo generator marks with `defect_masks/`).
  write_html: write `report.html` and, with `config.eval.explorer`, `explorer/`.
  overrides: dotted config keys to change for this evaluation only, e.g.
    `{'eval.faithfulness_images': 8, 'eval.cam_methods': ('gradcam',)}`.
  """
  t0 = time.time()
  workdir = io_lib.path(workdir)  # gs://bucket/run stays a URL
  model, variables, config, step = restore.restore_for_inference(workdir, step)
  if (trainer := workdir_lib.training_now(workdir)) is not None:
    # Not an error (a look at a run in progress), but the metrics are of step `step`.
    logging.warning('%s is being trained now (pid %s on %s, since %s): this evaluates its '
                    'checkpoint %d, not the finished run', workdir, trainer.get('pid'),
                    trainer.get('host'), trainer.get('started'), step)
  # Results are written at the end: a read-only workdir fails now, not after minutes of work.
  workdir_lib.check_writable(workdir / EVAL_DIR, 'evaluation folder')
  if io_lib.is_local(workdir) and (workdir / EVAL_DIR / 'figures').is_dir():
    # Written in place (eval/ itself was checked): a read-only one failed after all the work.
    workdir_lib.check_writable(workdir / EVAL_DIR / 'figures', 'evaluation figures folder')
  # Two evaluations of one workdir at once would leave W/eval with files of both; the second
  # is refused (WorkdirBusyError, exit 2), naming the first's pid.
  with workdir_lib.claim(workdir / EVAL_DIR, holder='aesthetics-evaluate'):
    for folder in (workdir / EVAL_DIR, workdir / EVAL_DIR / 'figures'):  # a killed one's
      io_lib.remove_dead_temps_in(folder)
    return _evaluate(workdir, model, variables, config, step, t0=t0, demo=demo,
                     write_html=write_html, overrides=overrides)


def _evaluate(workdir, model, variables, config, step: int, *, t0: float, demo: bool | None,
              write_html: bool, overrides: Mapping[str, Any] | None) -> dict:
  try:
    overrides_lib.apply(config, overrides, allowed=('eval.', 'data.'))
  except overrides_lib.OverrideError as e:
    raise EvalConfigError(str(e)) from None
  arch, size = str(config.model.arch), int(config.input.image_size)
  ec = config.eval
  check_eval_config(config)
  # The checks accept 'gradcam++' for 'gradcampp'; the CAM code takes only the latter (the
  # test pass stopped on --config.eval.cam_method=gradcam++, exit 1, after the checks).
  ec.cam_method = cam.canonical_method(str(ec.cam_method))
  ec.cam_methods = tuple(dict.fromkeys(cam.canonical_method(str(n)) for n in ec.cam_methods))
  if not str(config.data.data_dir):  # the 'no prepared dataset' line named '--data_dir= '
    raise EvalConfigError('config.data.data_dir is empty; pass --config.data.data_dir=<the '
                          'prepared TFDS dir the model was trained on>, or leave it out')
  try:
    sources = dataset.load_sources(config.data.data_dir, config.data.subset)
  except FileNotFoundError as e:  # most often a dataset moved since training
    missing = FileNotFoundError(f'{e}; or, if it moved, pass its new folder: '
                                '--config.data.data_dir=DIR')
    missing.before_work = True  # a usage error (exit 2), as train's: it was exit 1
    raise missing from None
  _check_same_data(workdir, config)
  # The bootstraps resample the test images and the split-point fit images.
  n_test, max_test = len(sources['test']), int(config.data.max_test_images)
  largest = max(min(n_test, max_test or n_test),  # images of the largest pass
                min(len(sources['train']), int(ec.split_point_fit_images)))
  problem = config_checks.bootstrap_problem(config, largest)
  if problem:
    raise EvalConfigError(problem)
  try:
    masks = ground_truth.masks_dir(config)
  except FileNotFoundError as e:  # a --masks_dir that is not a folder
    raise EvalConfigError(str(e)) from None
  _check_masks_match(config, masks, sources['test'])
  mesh, cam_mesh = eval_meshes(ec)
  # Evaluation picks its own devices (one per CPU core here): a batch they cannot split, e.g.
  # an odd training batch size, used to stop the run. Padding rows are masked, so rounding
  # up changes no number.
  # No larger than the largest pass: every batch is padded to the batch size, and
  # --config.eval.batch_size=20000 evaluated 8 test images in 3.5 GB and 4.5x the time.
  asked = min(int(ec.batch_size or config.batch_size), max(1, largest))
  ec.batch_size = parallel.capped_batch_size(asked, largest, mesh.size)
  if ec.batch_size != asked:
    logging.info('eval batch size %d rounded up to %d, a multiple of the %d devices', asked,
                 ec.batch_size, mesh.size)
  # Replicated over the mesh so the jitted calls see one device set with the sharded batches.
  host_variables = jax.device_get(variables)
  variables = parallel.replicate(host_variables, mesh)
  batches = functools.partial(pipeline.eval_batches, config=config, mesh=mesh)
  # The passes over every CAM method (faithfulness, localisation, explorer) on `cam_mesh`.
  split = cam_mesh.size != mesh.size
  cam_variables = parallel.replicate(host_variables, cam_mesh) if split else variables
  cam_batches = (functools.partial(pipeline.eval_batches, config=config, mesh=cam_mesh)
                 if split else batches)
  del host_variables
  batch_size = int(ec.batch_size or config.batch_size)
  normalize = str(config.input.normalize)
  bootstrap, seed = int(ec.bootstrap_samples), int(config.seed)
  max_test = int(config.data.max_test_images)

  layers = models.resolve_layers(model, tuple(ec.cam_layers))
  # A 1x1 CAM grid (the encoder's output at 32 px) left every map empty, the study's numbers
  # null, and no line said why (predict says it). The key, not a flag: evaluate takes it as
  # --config.eval.cam_layers, paper_run as --eval_set.
  note = forward_lib.one_cell_note(
      model, variables, layers, size, flag='config.eval.cam_layers=(\'{}\',)',
      consequence='the maps are all empty: no boxes, and the CAM study has nothing to measure')
  if note:
    logging.warning('evaluate: %s', note)
  forward = forward_lib.make_forward(model, arch, str(ec.cam_method), None, layers=layers,
                                     num_shards=mesh.size)
  summarize = streaming.make_summarize(size, float(ec.box_threshold), arch, mesh)
  test = streaming.collect(forward, summarize, variables, batches, sources['test'], max_test,
                           desc='eval test')
  _check_finite(test, step, workdir)

  m: dict[str, Any] = {'step': step, 'eval_devices': int(mesh.size),
                       'eval_cam_methods_devices': int(cam_mesh.size),
                       'overrides': overrides_lib.record(overrides),
                       'arch': arch, 'cam_method': str(ec.cam_method),
                       'box_threshold': float(ec.box_threshold), 'cam_layers': list(layers),
                       'cam_map_size': list(forward_lib.map_size(model, variables, layers,
                                                                 size)),
                       # What the numbers were computed on (environment.py says why).
                       'environment': environment.describe(),
                       'training_environments': _training_environments(workdir)}
  if note:  # in the report too: a terminal warning alone left its numbers looking meaningful
    m['cam_layer_note'] = note
  m.update(evaluators.metrics.run(test, emd_r=float(config.loss.emd_r),
                                  bootstrap_samples=bootstrap, seed=seed))
  # The boxes of per_image.csv (and predict), taken once: the box statistics count them too.
  image_boxes = _image_boxes(test, sources['test'], float(ec.box_threshold))
  m.update(evaluators.boxes.run(test, image_boxes))
  untrained, untrained_note = _untrained_variables(model, config, mesh, masks, workdir)
  m.update(evaluators.intensity.run(
      forward, summarize, variables, batches, sources['train'], test,
      fit_images=int(ec.split_point_fit_images), bootstrap_samples=bootstrap,
      seed=seed, band=tuple(config.input.weight_band),
      untrained_variables=untrained if ec.intensity_untrained else None,
      test_source=sources['test'], max_test=max_test))
  if len(layers) > 1 and 'global_normalisation' in m:
    m['global_normalisation']['note'] = report_html.FUSED_LAYERS_NOTE
  if ec.intensity_untrained and untrained is None:
    m['intensity_untrained_note'] = untrained_note or 'skipped'
  cam_untrained = untrained
  if split and untrained is not None:
    cam_untrained = parallel.replicate(jax.device_get(untrained), cam_mesh)
  m.update(evaluators.faithfulness.run(
      model, cam_variables, sources['test'], cam_mesh, arch=arch, image_size=size,
      normalize=normalize,
      methods=tuple(ec.cam_methods),
      num_images=min(int(ec.faithfulness_images), max_test or len(sources['test'])),
      steps=int(ec.faithfulness_steps),
      scorecam_images=int(ec.faithfulness_scorecam_images), batch_size=batch_size, seed=seed,
      layers=layers))
  m.update(evaluators.localization.run(
      model, cam_variables, sources['test'], cam_mesh, arch=arch, image_size=size,
      normalize=normalize,
      methods=tuple(ec.cam_methods),
      num_images=min(int(ec.localization_images) or len(sources['test']),
                     max_test or len(sources['test'])),
      scorecam_images=int(ec.faithfulness_scorecam_images), batch_size=batch_size,
      masks_dir=masks, layers=layers,
      box_threshold=float(ec.box_threshold), bootstrap_samples=bootstrap, seed=seed,
      untrained_variables=cam_untrained if ec.localization_controls else None,
      untrained_note=untrained_note, shuffled_masks=bool(ec.localization_controls)))
  scale = global_scale(m)
  figs = evaluators.figures.run(
      forward, variables, sources['test'], test, m, mesh, arch=arch, image_size=size,
      normalize=normalize, threshold=float(ec.box_threshold), batch_size=batch_size,
      num_examples=int(ec.num_example_images), tag_names=ground_truth.tag_names(config),
      image_boxes=image_boxes)

  out_dir = workdir / EVAL_DIR
  demo = is_demo(config) if demo is None else demo
  # Every output is written beside its target first and all land together at the end: a disk
  # that filled at the figures left a new explorer and CSV beside the old metrics and report.
  with io_lib.Staged() as staged:
    if write_html and ec.explorer:  # HTML too: callers that want none get none
      m.update(evaluators.explorer.run(
          model, cam_variables, sources['test'], test, cam_batches, cam_mesh,
          out_dir / EXPLORER_DIR,
          arch=arch, methods=evaluators.explorer.method_order(str(ec.cam_method),
                                                              tuple(ec.cam_methods)),
          layers=layers, threshold=float(ec.box_threshold),
          tag_names=ground_truth.tag_names(config),
          scorecam_images=int(ec.explorer_scorecam_images),
          map_size=int(ec.explorer_map_size),
          thumb_size=int(ec.explorer_thumb_size), demo=demo, global_scale=scale,
          masks_dir=masks, image_size=size,
          title=explorer_title(workdir, arch, step),
          notes=[f'CAM layers: {", ".join(layers)}; box threshold {float(ec.box_threshold)}.'],
          staged=staged))
    _write_csv(out_dir / 'per_image.csv', test, image_boxes, scale, staged)
    write_figures(out_dir / 'figures', figs, staged)
    m['eval_seconds'] = round(time.time() - t0, 1)
    m = io_lib.json_safe(m)
    staged.write_text(out_dir / 'metrics.json',
                      json.dumps(m, indent=2, default=_json_default) + '\n')
    if not write_html:
      # An earlier evaluation's report would stay beside these metrics, showing its numbers
      # (the control's rescoring): it goes when they land.
      staged.add(functools.partial(_remove, out_dir / 'report.html',
                                   'it showed an earlier evaluation than the metrics beside it'))
    if write_html:
      section = model_section(workdir, m, figs, config, landing=True)
      report_html.write_report(out_dir / 'report.html', [section], dataset_section(config),
                               demo=demo, title=f'aesthetics-jax: {section["name"]} evaluation',
                               staged=staged)
    # The files land by one rename each: kill -9 between two left eval/ mixing two evaluations
    # without a word. The marker says so until the last rename is done.
    io_lib.atomic_write_text(out_dir / INCOMPLETE, INCOMPLETE_TEXT)
    staged.add(functools.partial(_remove, out_dir / INCOMPLETE))
  return m


def explorer_title(workdir: Path, arch: str, step: int) -> str:
  """The explorer's title: the workdir's name isolated (a name is anything; one holding a
  lone U+202E reversed '(arch, step N)' after it)."""
  return (f'aesthetics-jax explorer: {report_html.isolated(workdir.name or workdir)} '
          f'({arch}, step {step})')


# 'step' first: which checkpoint these are of (the one training selected, unless --step).
SUMMARY_KEYS = ('step', 'num_test_images', 'binary_accuracy', 'majority_rate', 'lcc_mean',
                'srcc_mean', 'emd', 'attribute_top1', 'cam_intensity_pearson_all',
                'cam_intensity_pearson_extreme', 'split_point_accuracy',
                'pointing_game_centre_baseline')


def eval_meshes(ec) -> tuple[Mesh, Mesh]:
  """(mesh of the test pass, intensity study and figures, mesh of the passes over every CAM
  method: faithfulness, localisation, explorer): every device, but one for the passes whose
  methods include EigenCAM when there are several CPU devices (`eval.cam_methods` for the
  second; `eval.cam_method` for both, as it is among the methods). EigenCAM's
  pytorch-grad-cam sign is a numpy SVD in a `pure_callback` inside the jitted passes, and
  across CPU devices that callback deadlocks (`aesthetics-demo` with
  `--xla_force_host_platform_device_count=2`: XLA aborted in its all-reduce after 40 s, in the
  faithfulness pass; `eval.cam_method=eigencam` in the test pass; on 2 cores the callback's
  thread waits for its argument while the other of XLA's 2 pool threads waits in the
  all-reduce). The streamed pass's boxes need no callback there (`streaming.make_summarize`).
  A count the user set in XLA_FLAGS gets a warning; the commands' own one device per core
  (`cpu_backend`) an info line."""
  mesh = parallel.make_mesh()
  method = choices.canonical_method(str(ec.cam_method))
  methods = {method, *(choices.canonical_method(str(n)) for n in ec.cam_methods)}
  one = forward_lib.callback_safe_mesh(mesh, methods)
  if one.size == mesh.size:
    return mesh, mesh
  main = one if method in forward_lib.HOST_CALLBACK_METHODS else mesh
  log = logging.info if cpu_backend.devices_added() else logging.warning
  passes, key = (('every evaluation pass runs', 'eval.cam_method') if main is one
                 else ('the CAM-method passes run', 'eval.cam_methods'))
  log('%s on 1 of the %d CPU devices: EigenCAM (%s) runs a host callback that deadlocks '
      'across CPU devices', passes, mesh.size, key)
  return main, one


def eval_mesh(ec) -> Mesh:
  """The mesh of the passes over every CAM method (`eval_meshes`)."""
  return eval_meshes(ec)[1]


class EvalConfigError(ValueError):
  """An evaluation setting that cannot work, found before any image is read (one line)."""


def check_eval_config(config) -> None:
  """The `eval.*` values, before minutes of work: a bad one used to surface after the test
  pass (a misspelled CAM method) or never (a box threshold of 1.5 boxed the whole frame)."""
  ec = config.eval
  try:
    predictor.check_box_threshold(ec.box_threshold)
    for name in (str(ec.cam_method), *map(str, ec.cam_methods)):
      cam.canonical_method(name)
  except ValueError as e:
    raise EvalConfigError(str(e).splitlines()[0]) from None
  found = config_checks.problems(config, 'eval.')  # the trainer's rules for these keys
  if found:
    raise EvalConfigError(found[0])
  # A bad layer used to stop the run after the data loaded, as a failure (exit 1).
  problem = config_checks.cam_layers_problem(config, models.create_model(config.model))
  if problem:
    raise EvalConfigError(problem)


def _check_same_data(workdir, config) -> None:
  """Evaluating on a dataset prepared from another AVA root than the model's training data
  (`dataset.IDENTITY_FILE`, recorded by the trainer) can test on training images."""
  path = workdir / dataset.IDENTITY_FILE
  try:  # damaged: the check cannot be made (it used to be skipped without a word)
    recorded = checkpoint_errors.read_json_object(
        path, checkpoint_errors.WorkdirError, 'it records the data the model was trained on: '
        'restore it from a copy, or delete it to evaluate unchecked') if path.exists() else {}
  except checkpoint_errors.WorkdirError as e:
    raise EvalConfigError(str(e)) from None
  why = dataset.identity_mismatch(
      recorded, dataset.identity(config.data.data_dir, str(config.data.subset)))
  if why:
    raise EvalConfigError(f'{why}; evaluate on that dataset (or a copy of it): '
                          '--config.data.data_dir=DIR')


def _check_masks_match(config, masks_dir: str, test_source) -> None:
  """A user's `--masks_dir` must name masks by the test images' ids: one that matches none
  used to give null localisation metrics and exit 0."""
  if not masks_dir or not config.eval.masks_dir:
    return
  n = int(config.eval.localization_images) or len(test_source)
  n = min(n, int(config.data.max_test_images) or len(test_source), len(test_source))
  ids = [int(test_source[i]['image_id']) for i in range(n)]
  if ids and not evaluators.localization.matching_masks(masks_dir, ids):
    pngs = sorted(p.name for p in Path(masks_dir).glob('*.png'))
    held = (f'it holds {len(pngs)} .png files (e.g. {pngs[0]})' if pngs
            else 'it holds no .png file')
    raise EvalConfigError(
        f'--masks_dir={masks_dir}: no mask for any of the {n} test images: {held}; name each '
        f'mask <image_id>.png after its test image (e.g. {ids[0]}.png)')


def summary(m: Mapping[str, Any]) -> dict:
  """The line `aesthetics-evaluate` prints: `SUMMARY_KEYS` (with the untrained model's
  intensity correlation beside the trained one's), then (with region masks) the evaluation's
  own CAM method's pointing game beside its controls (untrained model, another image's
  region)."""
  method = m.get('cam_method', '')
  keys = SUMMARY_KEYS + tuple(f'{k}_{method}' for k in (
      'pointing_game', 'pointing_game_untrained', 'pointing_game_shuffled_masks'))
  out = {k: m[k] for k in keys if k in m}
  u = m.get('intensity_untrained') or {}
  if 'cam_intensity_pearson_all_per_image' in u:
    out['cam_intensity_pearson_all_untrained'] = u['cam_intensity_pearson_all_per_image']
  return out


def _check_finite(test: streaming.SplitSummary, step: int, workdir: Path) -> None:
  """Non-finite outputs would turn every metric and the report into NaN: refuse instead."""
  # An empty map's entropy is NaN by definition; a NaN map shows in the other fields too.
  bad = records.non_finite_rows(test.pred, {k: v for k, v in test.maps.items()
                                              if k != 'entropy'})
  if bad.any():
    raise EvaluationError(
        f'{int(bad.sum())} of {bad.size} test images gave non-finite model outputs (NaN/inf) '
        f'with checkpoint {step} of {workdir}; nothing was written: the checkpoint holds '
        'non-finite weights or training diverged; pass another --step or retrain')


def _untrained_variables(model, config, mesh, masks_dir: str, workdir):
  """(variables training started from, replicated over `mesh`, or None; a note on why not)
  for the controls: the intensity study's (`config.eval.intensity_untrained`) and, with region
  masks, the localisation's (`config.eval.localization_controls`). An `init_weights` file that
  is no longer there, or holds other weights than training started from (its recorded
  SHA-256), skips them with a note instead of failing the evaluation."""
  ec = config.eval
  if not (ec.intensity_untrained or (masks_dir and ec.localization_controls)):
    return None, ''
  try:
    changed = resume_checks.changed_weights(workdir, str(config.model.init_weights),
                                            str(config.model.arch))
  except checkpoint_errors.CheckpointError as e:  # a damaged record: it cannot vouch
    changed = str(e)
  if changed:  # the control of another encoder than the one trained
    return None, f'skipped: {changed}'
  try:
    start = models.starting_variables(model, config)
  except (OSError, ValueError) as e:  # PretrainedError is a ValueError
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return None, f'skipped: the starting weights could not be rebuilt ({first})'
  return parallel.replicate(start, mesh), ''


def _json_default(o):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(type(o))


def _image_size(record) -> tuple[int, int]:
  """(H, W) of a record's original image as displayed (EXIF orientation), from its header."""
  return decoder.image_size(record['image'], what=f'image_id {int(record["image_id"])}')


def global_scale(m: Mapping[str, Any]) -> tuple[float, float] | None:
  """The intensity study's global-normalisation (min, max) (fitted on training maps), so every
  output of the evaluation uses the scale its split-point threshold was fitted in."""
  g = m.get('global_normalisation') or {}
  return (float(g['min']), float(g['max'])) if 'min' in g and 'max' in g else None


def _image_boxes(test: streaming.SplitSummary, source, threshold: float
                 ) -> list[tuple[tuple[int, int], dict]]:
  """Per test image ((H, W) as displayed, its `crop.image_boxes` boxes in image pixels)."""
  out = []
  for i in range(test.num_images):
    hw = _image_size(source[i])
    attribute = test.maps['cam_attribute'][i] if 'cam_attribute' in test.maps else None
    out.append((hw, crop.image_boxes(test.maps['cam_aesthetic'][i], attribute, hw,
                                     threshold)['boxes']))
  return out


def _write_csv(path: Path, test: streaming.SplitSummary,
               image_boxes: list[tuple[tuple[int, int], dict]],
               scale: tuple[float, float] | None = None,
               staged: io_lib.Staged | None = None) -> None:
  """per_image.csv: one row per test image (`CSV_FIELDS`); boxes "y0 x0 y1 x1" in original
  image pixels, taken as predict, the API and the explorer take them (`crop.image_boxes`: the
  map in the image's aspect; they were boxed on the model's S×S grid here, up to 163 px from
  predict's on the demo); `intensity_global` in the `scale` (lo, hi) of `global_scale`."""
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(CSV_FIELDS)
  pred, true = test.pred, test.true
  ints = streaming.intensities(test, scale)
  fmt = lambda d, k, i, f: format(d[k][i], f) if k in d else ''  # noqa: E731
  for i in range(test.num_images):
    hw, got = image_boxes[i]
    empty = bool(test.maps['empty_aesthetic'][i])
    # An empty map has no box (crop.without_empty): the CSV says 'empty' rather than printing
    # the whole frame, and an empty attribute map is left out of the average.
    boxes = [' '.join(str(int(v)) for v in got[k]) if k in got else ''
             for k in ('aesthetic', 'attribute', 'average')]
    w.writerow([int(true['image_id'][i]), f'{true["mean_score"][i]:.4f}', int(true['label'][i]),
                int(pred['label_pred'][i]), fmt(pred, 'mean_score', i, '.4f'),
                fmt(pred, 'p_high', i, '.4f'), f'{ints["per_image"][i]:.5f}',
                f'{ints["global"][i]:.5f}', hw[0], hw[1], 'empty' if empty else 'ok', *boxes,
                _entropy_cell(test.maps, i)])
  if staged is not None:
    staged.write_text(path, buf.getvalue())
  else:
    io_lib.atomic_write_text(path, buf.getvalue())


def _entropy_cell(maps: Mapping[str, np.ndarray], i: int) -> str:
  """`map_entropy` of row i (`cam.map_entropy`), blank for an empty map."""
  v = float(maps['entropy'][i]) if 'entropy' in maps else float('nan')
  return f'{v:.4f}' if np.isfinite(v) else ''


def is_demo(config) -> bool:
  """The demo generator writes `defect_masks/` into its AVA root; real AVA has none."""
  return bool(ground_truth.masks_dir(config)) and not config.eval.masks_dir


def _training_environments(workdir) -> list[dict]:
  """The distinct machines (summary line, first step trained there) of W/environment.json's
  training runs, in order; [] for workdirs trained before it was written."""
  out: list[dict] = []
  for rec in environment.read_runs(workdir):
    if rec.get('command') == 'train':
      line = environment.summary(rec)
      if not out or out[-1]['summary'] != line:
        out.append({'summary': line, 'from_step': rec.get('step'),
                    'backend': rec.get('backend'), 'vector_isa': rec.get('vector_isa')})
  return out


def environment_note(m: Mapping) -> str | None:
  """The report's line on where the model was trained and evaluated (None without records)."""
  ev = m.get('environment')
  trained = m.get('training_environments') or []
  if not ev and not trained:
    return None
  parts = []
  if trained:
    later = [f'from step {t.get("from_step")} on {t["summary"]}' for t in trained[1:]]
    parts.append('Trained on ' + '; then '.join([trained[0]['summary']] + later) + '.')
  else:
    parts.append('Trained on: not recorded (a workdir from before environment.json).')
  if ev:
    line = environment.summary(ev)
    same = len(trained) == 1 and trained[0]['summary'] == line
    parts.append('Evaluated on the same.' if same else f'Evaluated on {line}.')
  on_cpu = [t for t in trained if t.get('backend') == 'cpu']
  if len({t.get('vector_isa') for t in on_cpu}) > 1:
    parts.append('Training ran on different vector instruction sets: not the run one machine '
                 'would have trained.')
  if on_cpu or (ev or {}).get('backend') == 'cpu':
    parts.append('On CPUs, XLA\'s vector code (AVX2 or AVX-512) changes the last bits of every '
                 'sum, and training can turn that into another model: compare figures from '
                 'machines with the same instruction set.')
  return ' '.join(parts)


def write_figures(folder, figs: Mapping[str, bytes], staged: io_lib.Staged | None = None
                  ) -> None:
  """`folder/<key>.png` for each figure, and no other PNG: a figure an earlier evaluation drew
  and this one did not (faithfulness curves before --config.eval.faithfulness_images=0) stayed,
  and the demo's and paper_run's combined report, which embeds every PNG there, showed it
  beside metrics that no longer had its numbers. With `staged`, all of it when that lands."""
  if staged is None:
    with io_lib.Staged() as own:
      return write_figures(folder, figs, own)
  for key, png in figs.items():
    staged.write_bytes(folder / f'{key}.png', png)

  def remove_stale() -> None:
    for old in folder.glob('*.png'):
      if old.stem not in figs:
        old.unlink()
  staged.add(remove_stale)


def _remove(path, why: str = '') -> None:
  """Removes `path` if it is there, logging `why` when it was."""
  try:
    path.unlink()
  except FileNotFoundError:
    return
  if why:
    logging.info('removed %s: %s', path, why)


def model_section(workdir: Path, m: Mapping, figs: Mapping[str, Any], config,
                  landing: bool = False) -> dict:
  """The report section of one evaluated model (see report/html.py)."""
  layers = ', '.join(m.get('cam_layers') or ()) or 'the encoder output'
  hw = 'x'.join(str(v) for v in m.get('cam_map_size') or ())
  notes = [f'Test images: {m.get("num_test_images")}. CAM method for maps and the study: '
           f'{m.get("cam_method")} at {layers} ({hw} map for a '
           f'{config.input.image_size}x{config.input.image_size} input). Split-point threshold '
           f'fitted on {m.get("split_point_fit")}.',
           f'Boxes: {m.get("distinct_boxes")} distinct over {m.get("num_test_images")} test '
           f'images on the {config.input.image_size}x{config.input.image_size} model-input grid; '
           f'{m.get("full_frame_boxes")} of per_image.csv\'s (in each image\'s own pixels) the '
           f'full frame; '
           f'{m.get("empty_maps")} empty maps (no box).']
  env = environment_note(m)
  if env:
    notes.append(env)
  if m.get('cam_layer_note'):
    notes.insert(0, f'Warning: {m["cam_layer_note"]}; the CAM numbers below measure nothing.')
  explorer = io_lib.path(workdir) / EVAL_DIR / EXPLORER_DIR / 'index.html'
  # Linked only when these metrics' evaluation wrote it: an evaluation with the explorer off
  # linked an earlier one's (another checkpoint's maps) as 'all — test images'.
  # (`landing`: it is staged to land with this report, not in place yet.)
  explorer_written = m.get('explorer_images') is not None and (landing or explorer.is_file())
  return dict(name=io_lib.path(workdir).name or str(workdir), arch=str(config.model.arch),
              step=m.get('step'), workdir=str(workdir), metrics=dict(m), figures=dict(figs),
              notes=notes, explorer=str(explorer) if explorer_written else None)


def dataset_section(config) -> dict | None:
  """Figures 1-2 and stats.json written by dataset.prepare (None if absent)."""
  if not config.data.data_dir:
    return None
  return data_stats.report_section(dataset.dataset_dir(config.data.data_dir, config.data.subset))
