"""Optimiser, learning-rate schedule and the trainable subset of the parameters.

VGG16 (binary) trains with SGD + momentum, MobileNetV2 (EMD) with Adam(W); both with an
optional global-norm clip and warmup. With a frozen encoder only `params['head']` is handed
to the optimiser, so its state never holds (or updates) encoder moments.
"""
from __future__ import annotations

import math

import ml_collections
import optax

from aesthetics_jax.train import config_checks
from aesthetics_jax.train.errors import TrainingError


def total_train_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
  """`config.num_train_steps` if set, else `num_epochs` over `num_train` images (a
  ConfigError if that is more than a run can count)."""
  if int(config.num_train_steps) > 0:
    return int(config.num_train_steps)
  total = max(1, math.ceil(float(config.num_epochs) * num_train / int(config.batch_size)))
  config_checks.check_steps(config, num_train, total)
  return total


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """'constant' (optional linear warmup) or 'cosine' (warmup, then decay to 0 at the end)."""
  o = config.optim
  lr, warmup = float(o.lr), int(o.warmup_steps)
  if o.schedule == 'constant':
    if warmup <= 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.constant_schedule(lr)], [warmup])
  if o.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 0),
                                              max(total_steps, warmup + 1))
  raise TrainingError(f"config.optim.schedule={o.schedule!r}; use 'constant' or 'cosine'")


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """SGD+momentum (VGG16 recipe) or Adam(W) (MobileNetV2), with optional clip / decay."""
  o = config.optim
  sched = make_schedule(config, total_steps)
  parts = []
  if float(o.grad_clip) > 0:
    parts.append(optax.clip_by_global_norm(float(o.grad_clip)))
  if o.name == 'sgd':
    if float(o.weight_decay) > 0:
      parts.append(optax.add_decayed_weights(float(o.weight_decay)))
    parts.append(optax.sgd(sched, momentum=float(o.momentum) or None))
  elif o.name == 'adam':
    # Decoupled decay (AdamW); weight_decay 0 is plain Adam.
    parts.append(optax.adamw(sched, weight_decay=float(o.weight_decay)))
  else:
    raise TrainingError(f"config.optim.name={o.name!r}; use 'adam' or 'sgd'")
  return optax.chain(*parts)


def trainable(params: dict, freeze_encoder: bool) -> dict:
  """The parameters the optimiser sees: `{'head': ...}` with a frozen encoder, else all."""
  return {'head': params['head']} if freeze_encoder else params


def merge_trainable(params: dict, new: dict, freeze_encoder: bool) -> dict:
  """`params` with the trainable subset replaced by `new` (inverse of `trainable`)."""
  return {**params, **new} if freeze_encoder else new
