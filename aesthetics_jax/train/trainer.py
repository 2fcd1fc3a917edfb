"""Training loop: `train_and_evaluate(config, workdir) -> final eval metrics`.

Data parallel the way JAX now recommends (what `pmap` users want): `jax.jit` over a one-axis
`jax.make_mesh` mesh ('data'); batches arrive sharded along it, the train state is
replicated (`NamedSharding(mesh, P())`); XLA inserts the gradient all-reduce. The same code
runs on 1 device, N local devices and N processes (`jax.distributed.initialize`).

Frozen encoder (paper): only `params['head']` is differentiated and updated; the encoder runs
in inference mode (BatchNorm statistics fixed). With `config.cache.enabled` its features are
computed once (feature_cache.py; memory-mapped from <workdir>/cache/ when over
config.cache.ram_budget_gb) and the heads train over the cache, on the devices up to
config.cache.device_budget_gb, where the steps up to the next log / evaluation / checkpoint run
in one call (`make_train_segment`); otherwise (fine-tuning,
from-scratch demo models, or the frozen online mode) every step runs the whole model
("online"). With a frozen encoder the cost of either is printed at start.

Model selection (data/validation.py): `config.data.validation_fraction` of the training rows
are held out (per class, seeded); the periodic evaluations (`validation/*` scalars) and the kept
best checkpoint (`config.best_metric`) use them, and the test split is evaluated ONCE at the
end with the selected checkpoint (`test/*` scalars; the returned metrics, labelled with
`eval_split`, `checkpoint_step` and `selected_by`). With fraction 0 the periodic evaluations
and the selection use the test split, and the logs and the result say so.

Workdir: config.json, validation_ids.json (the held-out image ids), checkpoints/ (orbax),
metrics.jsonl, tensorboard/ (scalars, config text, Grad-CAM overlays of
`config.log_cam_images` test images at each evaluation, hparams), environment.json (the
machine, vector ISA and library versions of every start and resume: environment.py).
Rerunning resumes from the latest intact checkpoint (a damaged newer one is moved to
`corrupt_checkpoints/`, checkpoints.py); the data stream is deterministic in (seed, step), and
the logs drop what the interrupted run wrote after that checkpoint (writers.py). The workdir is
checked and locked first (workdir.py): one trainer per workdir. A failed checkpoint save (disk
full, read-only storage) stops training at the next step (or device segment) with a one-line
CheckpointSaveError.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from jax.sharding import Mesh

from aesthetics_jax import io, memory_fit, models, parallel
from aesthetics_jax.data import pipeline as ip
from aesthetics_jax.models import outputs as outputs_lib
from aesthetics_jax.train import cache_store
from aesthetics_jax.train import cam_preview
from aesthetics_jax.train import checkpoints as ckpt_lib
from aesthetics_jax.train import config_checks
from aesthetics_jax.train import feature_cache
from aesthetics_jax.data import resized_store
from aesthetics_jax.train import losses
from aesthetics_jax.train import metrics as metrics_lib
from aesthetics_jax.train import optim
from aesthetics_jax.train import resume_checks
from aesthetics_jax.train.stop import StopRequest, Terminated
from aesthetics_jax.train import workdir as workdir_lib
from aesthetics_jax.train import writers
from aesthetics_jax.train.errors import TrainingError


# The finished run's record (moved to resume_checks; tests and users read trainer.RESULT_FILE).
RESULT_FILE = resume_checks.RESULT_FILE


@flax.struct.dataclass
class TrainState:
  """Replicated training state. `opt_state` covers only the trainable params."""
  step: jax.Array
  params: Any        # {'encoder': ..., 'head': ...}
  batch_stats: Any   # {'encoder': ...}
  opt_state: Any

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


# ------------------------------------------------------------------------------------------
# Steps.
# ------------------------------------------------------------------------------------------


def make_train_step(model, config, tx: optax.GradientTransformation, mode: str
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Un-jitted train step `(state, batch, base_rng) -> (state, scalar metrics)`.

  mode: 'online' (batch has `image [B,S,S,3]`) or 'features' (batch has cached
  `features`: `model.cache_features` of A, [B,C] or [B,P,P,C], or A itself [B,h,w,C];
  requires a frozen encoder). rng = fold_in(base_rng, step).
  """
  arch = config.model.arch
  frozen = bool(config.model.freeze_encoder)
  emd_r, tag_w = float(config.loss.emd_r), float(config.loss.tag_weight)
  if mode == 'features' and not frozen:
    raise TrainingError('the feature cache needs config.model.freeze_encoder=True; '
                        'set --config.cache.enabled=False to fine-tune the encoder')

  def step_fn(state: TrainState, batch: dict, base_rng: jax.Array, measure=True):
    """One update. `measure` (bool scalar): also compute the two global norms below."""
    rng = jax.random.fold_in(base_rng, state.step)
    rngs = {'dropout': rng}

    if frozen:
      if mode == 'features':
        feats = batch['features']
      else:  # encoder in inference mode, outside the differentiated function
        feats = model.apply(state.variables, batch['image'], train=False, method='features')
      feats = jax.lax.stop_gradient(feats)

      def loss_fn(tp):
        params = optim.merge_trainable(state.params, tp, True)
        out = model.apply({'params': params, 'batch_stats': state.batch_stats}, feats,
                          train=True, method='head', rngs=rngs)
        loss, parts = losses.model_loss(out, batch, arch, emd_r, tag_w)
        return loss, (parts, state.batch_stats)
    else:
      def loss_fn(tp):
        out, new_vars = model.apply({'params': tp, 'batch_stats': state.batch_stats},
                                    batch['image'], train=True, rngs=rngs,
                                    mutable=['batch_stats'])
        loss, parts = losses.model_loss(out, batch, arch, emd_r, tag_w)
        return loss, (parts, new_vars.get('batch_stats', state.batch_stats))

    tp = optim.trainable(state.params, frozen)
    (loss, (parts, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(tp)
    updates, opt_state = tx.update(grads, state.opt_state, tp)
    tp = optax.apply_updates(tp, updates)
    new_state = state.replace(step=state.step + 1,
                              params=optim.merge_trainable(state.params, tp, frozen),
                              batch_stats=new_bs, opt_state=opt_state)
    # The norms read every trainable weight twice more (VGG16's 411 MB fc6: ~19% of a cached
    # step on CPU), so they run only on the steps whose metrics the trainer reads; the loss,
    # checked every step, catches non-finite weights one step later anyway.
    def norms():
      return (jnp.isfinite(optax.global_norm(tp)).astype(jnp.float32),
              optax.global_norm(grads).astype(jnp.float32))
    finite, grad_norm = jax.lax.cond(
        measure, norms, lambda: (jnp.ones((), jnp.float32), jnp.full((), jnp.nan, jnp.float32)))
    out = {'loss': loss, 'grad_norm': grad_norm, 'params_finite': finite, **parts}
    return new_state, out

  return step_fn


def make_train_segment(step_fn, mesh: Mesh):
  """jit: `(state, device_rows, rows [S,B], views [S,B], base_rng, measure_last)` →
  (state, metrics with a leading [S] axis): S steps of `step_fn` ('features' mode) in one call,
  each batch gathered on the device from the cache's `device_rows` (`feature_cache`). Equal to
  S calls with `FeatureCache.train_batch`; a MobileNetV2 head step costs ~0.8 ms this way
  against ~2.7 ms dispatched one at a time from host batches (2-core CPU, measured).
  Only the last step computes the weight norms, when `measure_last`.
  """
  data, repl = parallel.data_sharding(mesh), parallel.replicated(mesh)

  def segment(state, device_rows, rows, views, base_rng, measure_last):
    last = rows.shape[0] - 1

    def body(state, xs):
      i, r, v = xs
      # Each device's rows of the global batch, as `train_batch` shards them.
      batch = jax.lax.with_sharding_constraint(
          feature_cache.gather_batch(device_rows, r, v), data)
      return step_fn(state, batch, base_rng, jnp.logical_and(measure_last, i == last))
    return jax.lax.scan(body, state, (jnp.arange(rows.shape[0]), rows, views))
  return jax.jit(segment, donate_argnums=(0,), out_shardings=(repl, repl))


def run_segment(train_segment, state: TrainState, cache: feature_cache.FeatureCache,
                device_rows: dict, start: int, end: int, batch_size: int, base_rng, measure,
                mesh: Mesh) -> tuple[TrainState, dict]:
  """Steps start .. end-1 over the cache on the devices: `train_segment` (from
  `make_train_segment`) fed that span's rows and views."""
  rows, views = parallel.replicate(cache.segment_indices(start, end - start, batch_size), mesh)
  return train_segment(state, device_rows, rows, views, base_rng, measure)


def make_eval_step(model, arch: str, mode: str):
  """Un-jitted `(variables, batch) -> predictions` (see predict_outputs)."""
  def eval_fn(variables, batch):
    if mode == 'features':
      out = model.apply(variables, batch['features'], train=False, method='head')
    else:
      out = model.apply(variables, batch['image'], train=False)
    return outputs_lib.predict_outputs(out, arch)
  return eval_fn


_TRUE_KEYS = ('label', 'mean_score', 'distribution', 'tags', 'mask', 'image_id')


def evaluate(eval_step, variables, batches, config) -> tuple[dict, dict, dict]:
  """Runs `eval_step` over batches; returns (metrics, predictions, targets) on host."""
  preds, trues = [], []
  with ip.closing(batches) as it:
    for batch in it:
      p = eval_step(variables, batch)
      preds.append({k: parallel.to_host(v) for k, v in p.items()})
      trues.append({k: parallel.to_host(batch[k]) for k in _TRUE_KEYS})
  pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]}
  true = {k: np.concatenate([t[k] for t in trues]) for k in trues[0]}
  keep = true['mask'] > 0
  pred = {k: v[keep] for k, v in pred.items()}
  true = {k: v[keep] for k, v in true.items()}
  return metrics_lib.compute(pred, true, float(config.loss.emd_r)), pred, true


# ------------------------------------------------------------------------------------------
# State creation, placement, restore.
# ------------------------------------------------------------------------------------------


def split_scalars(split: str, eval_metrics: Mapping[str, float]) -> dict[str, float]:
  """`evaluate`'s metrics as the '<split>/...' scalars of metrics.jsonl and TensorBoard. The
  image count is named for its split: the validation rows said 'validation/num_test_images'
  (the metrics' own key is the test's, as metrics.json and result.json keep it)."""
  return {f'{split}/' + (f'num_{split}_images' if k == 'num_test_images' else k): v
          for k, v in eval_metrics.items()}


def create_state(model, config, tx, mesh: Mesh, variables: dict) -> TrainState:
  variables = parallel.replicate(variables, mesh)
  frozen = bool(config.model.freeze_encoder)
  opt_state = jax.jit(tx.init, out_shardings=parallel.replicated(mesh))(
      optim.trainable(variables['params'], frozen))
  step = parallel.replicate(np.zeros((), np.int32), mesh)
  return TrainState(step=step, params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=opt_state)


def _starting_variables(model, config) -> dict:
  """`models.starting_variables` (init, then `config.model.init_weights`), with a loud warning
  for a frozen encoder that no weights file fills."""
  path = str(config.model.init_weights)
  if path:
    logging.info('Loading encoder weights from %s', path)
  elif bool(config.model.freeze_encoder):
    msg = ('!' * 88 + '\n!!! WARNING: model.freeze_encoder=True but model.init_weights is '
           'empty: the FROZEN backbone is RANDOM.\n!!! Heads will train on random features. '
           'Pass --config.model.init_weights=<converted ImageNet weights>\n'
           '!!! (aesthetics-convert-weights), or train from scratch with '
           '--config.model.freeze_encoder=False.\n' + '!' * 88)
    # On stderr, once: it was also on stdout (a terminal showed it twice, and it went into
    # aesthetics-train's JSON result line's stream, `| jq` choking on it).
    if jax.process_index() == 0:
      print(msg, file=sys.stderr, flush=True)
  return models.starting_variables(model, config)


# ------------------------------------------------------------------------------------------
# The loop.
# ------------------------------------------------------------------------------------------


def _config_markdown(config: ml_collections.ConfigDict) -> str:
  """The config as an indented (preformatted) Markdown block for TensorBoard's text tab."""
  text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
  return '\n'.join('    ' + line for line in text.splitlines())


def _fetch(pending: list[tuple[range, dict]]) -> list[tuple[int, dict]]:
  """(step, scalar metrics) per step of `pending`: (steps, metrics [len(steps)] or scalars)."""
  host = jax.device_get([m for _, m in pending])
  out = []
  for (steps, _), m in zip(pending, host):
    for j, s in enumerate(steps):
      out.append((s, {k: float(np.reshape(v, -1)[j] if np.ndim(v) else v)
                      for k, v in m.items()}))
  return out


def _window_to_json(window: list[tuple[int, dict]]) -> list:
  """The per-step train metrics not yet in a train/* row, for a checkpoint's meta (JSON has no
  NaN: non-finite values as text, as metrics.jsonl writes them)."""
  return [[s, {k: v if math.isfinite(v) else str(v) for k, v in m.items()}] for s, m in window]


def _saved_window(ckpt: ckpt_lib.Checkpointer, start: int) -> list[tuple[int, dict]]:
  """The per-step metrics checkpoint `start` holds for the next train/* row (none before
  they were saved): a resume logs the row the uninterrupted run logs."""
  if start == 0:
    return []
  saved = ckpt.restore_meta(start).get('log_window') or []
  return [(int(s), {k: float(v) for k, v in m.items()}) for s, m in saved]


def _divergence_error(ckpt: ckpt_lib.Checkpointer, s: int, m: dict,
                      cache: feature_cache.FeatureCache | None = None,
                      batch_size: int = 0) -> TrainingError:
  """The error for a non-finite loss or update in step index `s` (0-based: the update from
  the weights after `s` updates, numbered s + 1 like metrics.jsonl and the checkpoints).

  A checkpoint `s` holds the weights whose loss was non-finite: a resume from it would
  diverge at its first step whatever the learning rate, so it is moved to
  `DIVERGED_DIR` and the rerun resumes from the checkpoint before. Unless the step's inputs
  were not finite (`cache`: the feature cache fed it): then the cache is named and every
  checkpoint kept (a damaged cache file moved one healthy checkpoint away per rerun).
  """
  loss_bad = not math.isfinite(m['loss'])
  what = (f'non-finite loss ({m["loss"]})' if loss_bad
          else 'non-finite parameters after the update')
  if cache is not None and not cache.step_features_finite(s, batch_size):
    where = (f'the cache under {cache.directory} is damaged: delete that folder and rerun to '
             'build it again' if cache.directory is not None else
             'the encoder gave them: check the starting weights (--config.model.init_weights)')
    return TrainingError(f'{what} at step {s + 1}: the cached features that step trained on '
                         f'are not finite; {where} (the checkpoints are kept)')
  moved = ''
  try:
    ckpt.wait()  # checkpoint s may still be being written
  except ckpt_lib.CheckpointError as e:
    logging.error('%s', e)
  if loss_bad and s in ckpt.all_steps():
    try:
      dest = ckpt.set_aside([s], ckpt_lib.DIVERGED_DIR)
      moved = f' (checkpoint {s} gave it; moved to {dest / str(s)})'
    except OSError as e:
      moved = (f' (checkpoint {s} gave it; moving it away failed: {e}; delete '
               f'{ckpt.step_dir(s)} before rerunning)')
  good = [k for k in ckpt.all_steps() if k < s or (k == s and not loss_bad)]
  where = (f'{ckpt.step_dir(max(good))}, where a rerun resumes' if good
           else 'none (a rerun starts from the beginning)')
  return TrainingError(f'{what} at step {s + 1}{moved}; last good checkpoint: {where}; '
                       'lower --config.optim.lr or set --config.optim.grad_clip')


def next_boundary(step: int, total: int, *every: int) -> int:
  """The first step count after `step` that is a multiple of one of `every`, or `total`."""
  return min([total] + [(step // e + 1) * e for e in every])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop: StopRequest | None = None) -> dict:
  """Trains per `config`, writing to `workdir`.

  Returns the final eval metrics plus 'step', 'num_devices', 'num_processes'. The workdir
  is checked and locked for the run (process 0: `workdir.claim`). `stop`: the handler of a
  signal that should stop training with a checkpoint (`StopRequest`; one process only).
  """
  config_checks.check(config)  # before the workdir is created
  with workdir_lib.claim(workdir, active=jax.process_index() == 0):
    return _train_and_evaluate(config, io.path(workdir), stop)  # gs:// stays a URL


def _restore_or_init(ckpt: ckpt_lib.Checkpointer, model, config, tx, mesh: Mesh,
                     initial: dict | None = None) -> tuple[TrainState, int]:
  """(state, start step): the newest intact checkpoint, else fresh (or pretrained) weights
  (`initial` when already loaded)."""
  if not ckpt.all_steps():
    return create_state(model, config, tx, mesh,
                        initial if initial is not None else _starting_variables(model, config)
                        ), 0
  variables = models.init_variables(model, config.seed, int(config.input.image_size))
  state = create_state(model, config, tx, mesh, variables)
  found = ckpt.restore_latest_intact(
      config.model, ckpt_lib.abstract_like(state.variables),
      ckpt_lib.abstract_like({'step': state.step, 'opt_state': state.opt_state}))
  if found is None:
    return create_state(model, config, tx, mesh, _starting_variables(model, config)), 0
  start, restored_vars, restored_opt = found
  logging.info('Resumed from %s at step %d', ckpt.directory, start)
  return TrainState(step=restored_opt['step'], params=restored_vars['params'],
                    batch_stats=restored_vars['batch_stats'],
                    opt_state=restored_opt['opt_state']), start


def _preemption_notice() -> Callable[[int], bool]:
  """`reached(step)`: in a multi-process job, whether SIGTERM (a scheduler's preemption) reached
  any of its processes, True at the same step in every process (JAX's preemption sync point),
  so that all save that step together. jax.distributed.initialize installs JAX's own SIGTERM
  notifier, which took the signal from Python: the job trained on until SIGKILL. One process:
  never (its SIGTERM is `StopRequest`'s)."""
  if jax.process_count() == 1:
    return lambda step: False
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  def reached(step: int) -> bool:
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
      return False
  return reached


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: io.epath.Path,
                        stop: StopRequest | None = None) -> dict:
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  is_main = jax.process_index() == 0
  resume_checks.check_workdir_model(workdir, config)

  mesh = parallel.train_mesh()
  sources = dataset.load_sources(config.data.data_dir, config.data.subset)
  # Training images prepared decoded and resized to this run's resize_size, if there are.
  sources['train'] = resized_store.attach(
      sources['train'], dataset.dataset_dir(config.data.data_dir, config.data.subset), 'train',
      int(config.input.resize_size))
  model = models.create_model(config.model)
  # A fresh run's starting weights, before anything is written: weights that do not fit the
  # model (full-width files with a smoke config) used to fail after validation_ids.json and
  # checkpoints/ were made.
  initial = (None if ckpt_lib.has_checkpoints(workdir)
             else _starting_variables(model, config))
  test_src = sources['test']
  # The data first: on another AVA root the validation ids differ too, and that check would
  # name the wrong fix (the seed / validation_fraction).
  # Their records are written below, once no check refuses the run: a cache that cannot fit
  # (exit 2) left dataset.json and validation_ids.json in a workdir it trained nothing in.
  deferred: list = []
  resume_checks.check_same_data(workdir, config, is_main, deferred)
  resume_checks.check_same_weights(workdir, config, is_main, deferred)
  split, train_src, train_meta, val_src, val_meta = resume_checks.carve_validation(
      sources['train'], config, workdir, deferred)
  n_train = len(train_meta)
  total = optim.total_train_steps(config, n_train)
  warmup = int(config.optim.warmup_steps)
  if warmup >= total:  # accepted silently: the rate never reached optim.lr
    logging.warning('config.optim.warmup_steps=%d is not below the run\'s %d steps: the '
                    'learning rate rises for the whole run and never reaches config.optim.lr=%g; '
                    'pass a smaller --config.optim.warmup_steps for a run of this length',
                    warmup, total, float(config.optim.lr))
  unselectable = config_checks.unselectable_evaluations(config, total)
  if unselectable:
    logging.warning('%s', unselectable)
  eval_split = 'validation' if split.enabled else 'test'

  tx = optim.make_optimizer(config, total)
  frozen = bool(config.model.freeze_encoder)
  use_cache = frozen and bool(config.cache.enabled)
  mode = 'features' if use_cache else 'online'
  max_test = int(config.data.max_test_images) or None
  n_test = len(test_src) if max_test is None else min(len(test_src), max_test)
  n_val = len(val_src) if split.enabled else 0
  if use_cache:  # a cache that cannot fit, before the checkpoints and the encoding
    room = cache_store.room_problem(
        feature_cache.layout(model, config, n_train, n_test, n_val),
        Path(workdir / 'cache') if io.is_local(workdir) else Path(tempfile.gettempdir()))
    if room:
      raise config_checks.ConfigError(room)
  resume_checks.write_deferred(deferred)

  ckpt = ckpt_lib.Checkpointer(workdir, keep=int(config.keep_checkpoints),
                               best_metric=str(config.best_metric))
  finished = resume_checks.finished_result(workdir, ckpt, total)
  if finished is not None:  # a rerun used to rebuild the cache, test and log the test again
    ckpt.close(raise_errors=False)
    print(f'{workdir}: already trained to step {total} and tested; returning its result '
          f'({RESULT_FILE}; delete it to test again)', flush=True)
    return finished
  try:
    state, start = _restore_or_init(ckpt, model, config, tx, mesh, initial)
    if start > total:
      # Fewer steps than the workdir holds (num_epochs, or a larger batch_size): nothing was
      # trained, and the later checkpoint was tested and reported as a run of `total` steps.
      raise ckpt_lib.CheckpointMismatchError(
          f'{workdir}: its checkpoints reach step {start} and this config trains {total} '
          f'steps (config.num_train_steps, or config.num_epochs x {n_train} training rows / '
          f'config.batch_size={int(config.batch_size)}); use a fresh --workdir, or at least '
          f'--config.num_train_steps={start} to resume')
  except BaseException:
    ckpt.close(raise_errors=False)
    raise
  if is_main:
    resume_checks.warn_schedule_change(workdir, config, n_train, total, start)
    io.atomic_write_json(ckpt_lib.config_path(workdir), resume_checks.saved_config(config),
                         indent=2, sort_keys=True)
    resume_checks.record_environment(workdir, start, mesh.size)

  repl = parallel.replicated(mesh)
  base_rng = parallel.replicate(np.asarray(jax.random.key_data(
      jax.random.PRNGKey(int(config.seed) + 1))), mesh)
  train_step = jax.jit(make_train_step(model, config, tx, mode), donate_argnums=(0,),
                       out_shardings=(repl, repl))
  eval_step = jax.jit(make_eval_step(model, config.model.arch, mode), out_shardings=repl)
  writer = writers.MetricWriter(workdir, active=is_main, resume_step=start)
  writer.write_text(start, 'config', _config_markdown(config))
  n_cams = int(config.log_cam_images)
  preview = (cam_preview.CamPreview(model, config, test_src, n_cams)
             if is_main and n_cams > 0 else None)

  eval_bs = parallel.capped_batch_size(int(config.eval.batch_size or config.batch_size),
                                       max(n_test, n_val), mesh.size)
  if frozen:  # the cost of the cache (or of the online mode) before paying it
    cost = (feature_cache.layout(model, config, n_train, n_test, n_val).describe(
        str(workdir / 'cache')) if use_cache
            else feature_cache.describe_online(config, total, n_test, n_val))
    logging.info('%s', cost)
    if is_main:
      print(cost, flush=True)
  device_rows = None
  if use_cache:
    t0 = time.time()
    cache = feature_cache.build(model, state.variables, train_src, test_src, config, mesh,
                                progress=is_main, train_meta=train_meta,
                                validation_source=val_src if split.enabled else None,
                                validation_meta=val_meta,
                                cache_dir=workdir / 'cache' if io.is_local(workdir) else None)
    logging.info('Feature cache %s in %.1fs: train %s, test %s',
                 f'reused from {cache.directory}' if cache.reused else 'built',
                 time.time() - t0, cache.train.shape, cache.test.shape)
    if cache.reused and is_main:  # the cost line above counted encoder passes none ran
      print(f'feature cache reused from {cache.directory}: no encoder passes', flush=True)
    next_batch = lambda s: cache.train_batch(s, int(config.batch_size))
    budget = float(config.cache.device_budget_gb)
    device_rows = cache.device_rows(budget)
    if device_rows is not None:  # steps run a segment per call (make_train_segment)
      train_segment = make_train_segment(make_train_step(model, config, tx, mode), mesh)
    how = ('held on the devices: the head steps between logs run in one call'
           if device_rows is not None else
           f'head steps fed from the host one at a time ({cache.host_fed_reason(budget)})')
    logging.info('Feature cache %s', how)
    if is_main:
      print(f'feature cache {how}', flush=True)
    test_batches = lambda: cache.test_batches(eval_bs)
    val_batches = lambda: cache.validation_batches(eval_bs)
  else:
    cache = None
    it = ip.train_batches(train_src, config, mesh, start_step=start, metadata=train_meta)
    next_batch = lambda s: next(it)
    counts = np.bincount(train_meta.label, minlength=2)
    test_batches = lambda: ip.eval_batches(test_src, config, mesh, eval_bs,
                                           max_examples=max_test, class_counts=counts)
    val_batches = lambda: ip.eval_batches(val_src, config, mesh, eval_bs, metadata=val_meta,
                                          class_counts=counts)
  # Periodic evaluations and the best checkpoint: validation (test only when it is off).
  eval_batches = val_batches if split.enabled else test_batches

  def check_eval_memory() -> None:
    """`memory_fit.check` of the evaluations' step, which first ran after eval_every_steps
    steps; its compilation is the one the first evaluation reuses."""
    with ip.closing(eval_batches()) as it:
      first = next(iter(it), None)
    if first is not None:
      memory_fit.check(eval_step, (state.variables, first), flag='config.eval.batch_size',
                       batch=eval_bs)

  log_every = max(1, int(config.log_every_steps))
  eval_every = max(1, int(config.eval_every_steps))
  ckpt_every = max(1, int(config.checkpoint_every_steps))
  schedule = optim.make_schedule(config, total)
  pending: list[tuple[int, dict]] = []
  # Every step's metrics since the last train/* row: a checkpoint between two rows fetches
  # its steps early (their row used to lose them) and saves them for a resume's row.
  window = _saved_window(ckpt, start)
  eval_metrics: dict = {}
  t_log, s_log = time.time(), start

  def check_finite() -> None:
    fetched = _fetch(pending)
    pending.clear()
    for s, m in fetched:
      if not math.isfinite(m['loss']) or m['params_finite'] < 1:
        raise _divergence_error(ckpt, s, m, cache, int(config.batch_size))
    window.extend(fetched)

  def save(done: int, metrics: dict | None = None) -> None:
    ckpt.save(done, state.variables, {'step': state.step, 'opt_state': state.opt_state},
              {'model': ckpt_lib.model_signature(config.model), 'step': done,
               'log_window': _window_to_json(window)},
              metrics=metrics)

  def stop_here(step: int) -> Terminated:
    """Saves `step` (the data and dropout streams depend on the step alone, so a resume
    from it trains what the uninterrupted run trains) and says where training stopped."""
    if pending:
      check_finite()
    if step not in ckpt.all_steps():
      if step == 0:
        return Terminated(None)  # nothing trained yet
      save(step)
    ckpt.wait()
    return Terminated(step, str(ckpt.step_dir(step)))

  preempted = _preemption_notice()
  bar = tqdm.tqdm(total=total, initial=start, desc='train', disable=not is_main,
                  dynamic_ncols=True)
  was_held = stop is not None and stop.held
  if stop is not None:
    stop.held = True
  try:
    step = start
    while step < total:
      if (stop is not None and stop.requested) or preempted(step):
        raise stop_here(step)
      ckpt.check_saves()  # a failed (async) save stops training before the next step or segment
      # One step per call, or with the cache on the device every step up to the next log,
      # evaluation or checkpoint in one call.
      done = (step + 1 if device_rows is None
              else next_boundary(step, total, log_every, eval_every, ckpt_every))
      log_now = done % log_every == 0 or done == total
      ckpt_now = done % ckpt_every == 0 or done == total
      # Weights are checked (norms) before every log line and every checkpoint.
      measure = np.bool_(log_now or ckpt_now)
      batch = next_batch(step) if device_rows is None else None
      if step == start:  # activations too large for the machine: one line, before any step
        if batch is not None:
          memory_fit.check(train_step, (state, batch, base_rng, measure),
                           flag='config.batch_size', batch=int(config.batch_size))
        check_eval_memory()
      if device_rows is None:
        state, m = train_step(state, batch, base_rng, measure)
      else:
        state, m = run_segment(train_segment, state, cache, device_rows, step, done,
                               int(config.batch_size), base_rng, measure, mesh)
      pending.append((range(step, done), m))
      bar.update(done - step)
      step = done
      if log_now:
        check_finite()
        now = time.time()
        row = {k: float(np.mean([f[k] for _, f in window])) for k in window[-1][1]}
        # The weight norms are of the logged step alone (README): a checkpoint step between
        # two rows is measured too, and was averaged in.
        row.update({k: window[-1][1][k] for k in ('grad_norm', 'params_finite')})
        window.clear()
        row['lr'] = float(schedule(done - 1))
        row['steps_per_sec'] = (done - s_log) / max(now - t_log, 1e-9)
        t_log, s_log = now, done
        writer.write_scalars(done, {f'train/{k}': v for k, v in row.items()})
        bar.set_postfix(loss=f'{row["loss"]:.4f}')
      eval_now = done % eval_every == 0 or done == total
      if eval_now:
        eval_metrics, _, _ = evaluate(eval_step, state.variables, eval_batches(), config)
        scalars = split_scalars(eval_split, eval_metrics)
        writer.write_scalars(done, scalars)
        if preview is not None:
          writer.write_images(done, preview(state.variables))
        logging.info('step %d eval %s', done, scalars)
      if ckpt_now:
        if pending:
          check_finite()
        save(done, eval_metrics if eval_now else None)
    ckpt.wait()  # the final save must have succeeded before this run reports success
    ckpt.prune()  # what a kill after the last save left beyond config.keep_checkpoints
    if stop is not None and stop.requested:  # during the last step: before the test, as ever
      raise stop_here(step)
    # Test once, with the checkpoint selected on the periodic evaluations (best, else last).
    chosen = ckpt.selected_step(total)
    variables = state.variables
    if chosen != total:
      variables, _ = ckpt.restore(chosen, ckpt_lib.abstract_like(state.variables))
    if eval_split == 'test' and chosen == total and eval_metrics:
      test_metrics = eval_metrics  # the evaluation at `total` just tested these weights
    else:
      test_metrics, _, _ = evaluate(eval_step, variables, test_batches(), config)
    # Without a validation split the periodic evaluations are the test/* rows, the selected
    # step's among them: its row again at `total` was a duplicate (or, for an earlier best
    # step, a second test/* value at `total`, not the last weights').
    if eval_split != 'test':
      writer.write_scalars(total, split_scalars('test', test_metrics))
    # One evaluation (at the last step: the demo's) selects nothing: result.json said
    # 'test/binary_accuracy', read as a checkpoint chosen on the test split.
    selected_by = ('last step (the only evaluation)' if eval_every >= total else
                   f'{eval_split}/{config.best_metric}' if str(config.best_metric)
                   else 'last step')
    logging.info('test metrics of checkpoint %d (selected by %s): %s', chosen, selected_by,
                 test_metrics)
    writer.write_hparams(writers.flat_hparams(config.to_dict()),
                         [f'test/{k}' for k in test_metrics])
  finally:
    bar.close()
    ckpt.close(raise_errors=False)  # success already waited above; errors are propagating
    writer.close()
    if stop is not None:  # a command's next stage (aesthetics-paper-run's) stops at once
      stop.held = was_held
  result = {**test_metrics, 'eval_split': 'test', 'checkpoint_step': chosen,
            'selected_by': selected_by, 'selection_split': eval_split,
            'num_validation_images': int(split.validation.size), 'step': total,
            'num_devices': int(mesh.size), 'num_processes': jax.process_count()}
  if is_main:
    io.atomic_write_json(workdir / RESULT_FILE, io.json_safe(result), indent=1)
  return result
