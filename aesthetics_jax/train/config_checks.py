"""A training config's values checked before any work: one line naming the key and the fix.

Without these, a bad value surfaced deep in a run as a traceback (`input.image_size=0`: a
negative slice in XLA; `loss.emd_r=0`: a ZeroDivisionError) or was silently taken
(`best_metric='bogus'`: every checkpoint scored -inf, so the "best" was arbitrary;
`num_train_steps=-1`: quietly the epoch count).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import ml_collections

from aesthetics_jax.configs import default
from aesthetics_jax.configs.default import ARCHS
from aesthetics_jax.train.errors import TrainingError

# Smallest side the decoder and both encoders take (the predict and evaluate paths refuse
# smaller images with the same bound).
MIN_IMAGE_SIZE = 32
# Largest: a side whose square is the decoder's pixel cap (data.decoder.MAX_PIXELS, 10**8;
# tests/test_config.py holds them equal), the largest image the pipeline decodes. Resizing
# to more only takes memory: resize_size=100000 (30 GB an image) was the OOM killer (exit
# 137) in the feature cache's build.
MAX_IMAGE_SIZE = 10_000

# Largest `config.seed`: JAX's PRNGKey takes an int64 and the run draws keys from seed + 1
# (training's dropout) and seed + 2 (the evaluation's random maps); a larger seed was an
# OverflowError traceback at the first training step, after the data was prepared.
MAX_SEED = 2 ** 63 - 3

# Most training steps a run may take: the step counters are int32 (the TrainState's step and
# optax's count; the schedule's warmup and decay lengths enter it as int32 too). More was
# taken silently (num_epochs=1e30: 1.75e30 steps, a run that never ends) or an OverflowError
# traceback (warmup_steps=10**11) after the data and the feature cache were prepared.
MAX_STEPS = 2 ** 31 - 1

# What `config.best_metric` may name: validation metrics where higher is better (the
# checkpoint manager keeps the highest).
BEST_METRICS = {'vgg16': ('binary_accuracy', 'lcc_mean', 'srcc_mean'),
                'mobilenet_v2': ('binary_accuracy', 'lcc_mean', 'srcc_mean', 'attribute_top1',
                                 'attribute_top5')}


class ConfigError(TrainingError):
  """A config value that cannot work; `str()` is one line naming `config.<key>`."""
  before_work = True  # a usage error (exit 2), also when the trainer finds it (`check_steps`)


def _num(v: Any) -> float | None:
  try:
    x = float(v)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def _int_at_least(lo: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
          f'an integer >= {lo}')


def _positive(v: Any) -> bool:
  x = _num(v)
  return x is not None and x > 0


def _non_negative(v: Any) -> bool:
  x = _num(v)
  return x is not None and x >= 0


def _step_count(v: Any) -> bool:  # the step counters are int32 (MAX_STEPS)
  return _int_at_least(0)[0](v) and v <= MAX_STEPS


_image_side = (lambda v: _int_at_least(MIN_IMAGE_SIZE)[0](v) and v <= MAX_IMAGE_SIZE,
               f'an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}')
_POSITIVE = (_positive, 'a finite number > 0')
_NON_NEGATIVE = (_non_negative, 'a finite number >= 0')
# Values the loss or the optimiser computes with in float32: past its largest finite value
# they became inf there (input.weight_factor=1e300: a NaN loss at the first step, blamed on
# the learning rate; optim.grad_clip=1e300: an overflow warning, then no clipping).
FLOAT32_MAX = 3.4028234663852886e38
_POSITIVE_F32 = (lambda v: _positive(v) and float(v) <= FLOAT32_MAX,
                 'a number > 0 and <= 3.4e38 (float32)')
_NON_NEGATIVE_F32 = (lambda v: _non_negative(v) and float(v) <= FLOAT32_MAX,
                     'a number >= 0 and <= 3.4e38 (float32)')
_FRACTION = (lambda v: _num(v) is not None and 0 <= _num(v) < 1, 'a number in [0, 1)')
_OPEN_UNIT = (lambda v: _num(v) is not None and 0 < _num(v) < 1, 'a number in (0, 1)')


def _exactly(want: int, why: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v == want,
          f'{want} ({why})')


# What every prepared dataset holds (data.ava.NUM_BUCKETS / NUM_TAGS, JAX-free copies that
# tests/test_config.py holds equal): another count built heads whose outputs the targets do
# not fit, a shape-mismatch traceback at the first step, after the data and the cache.
NUM_BUCKETS, NUM_TAGS = 10, 66


def _one_of(*values: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, str) and v in values,
          'one of ' + ', '.join(repr(v) for v in values))


# The enumerations, checked here without importing the modules that define them (those load
# JAX; tests/test_config.py holds each copy equal to its module's constant). An unknown value
# used to surface late and misnamed: data.subset='bogus' as "no prepared dataset".
ENUMERATIONS: dict[str, tuple[str, ...]] = {
    'data.subset': ('style', 'all'),                       # data.ava.SUBSETS
    'input.normalize': ('none', 'imagenet'),               # data.preprocess.NORMALIZE_MODES
    'input.weighting': ('none', 'class', 'score'),         # data.sampling.WEIGHT_SCHEMES
    'model.arch': ARCHS,
    'model.depthwise': ('auto', 'conv', 'shift'),          # models.depthwise.IMPLEMENTATIONS
    'model.conv3x3': ('auto', 'direct', 'winograd'),       # models.vgg.CONV3X3_IMPLEMENTATIONS
    'model.dtype': ('float32', 'bfloat16'),                # models._DTYPES
    'optim.name': ('adam', 'sgd'),                         # train.optim.make_optimizer
    'optim.schedule': ('constant', 'cosine'),              # train.optim.make_schedule
    'cache.dtype': ('auto', 'float32', 'float16', 'bfloat16'),  # train.cache_store.DTYPES
}

# Fewest resamples of a bootstrap interval (eval.bootstrap_samples, unless 0).
MIN_BOOTSTRAP_SAMPLES = 20

# key -> (predicate, what the value must be).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'seed': (lambda v: _int_at_least(0)[0](v) and v <= MAX_SEED,
             f'an integer from 0 to {MAX_SEED} (2**63 - 3)'),
    'batch_size': _int_at_least(1),
    'num_epochs': _POSITIVE,
    'num_train_steps': (_step_count, f'an integer from 0 to {MAX_STEPS} (0 = use num_epochs)'),
    'log_every_steps': _int_at_least(1),
    'eval_every_steps': _int_at_least(1),
    'checkpoint_every_steps': _int_at_least(1),
    'keep_checkpoints': _int_at_least(1),
    'log_cam_images': _int_at_least(0),
    'data.max_train_images': _int_at_least(0),
    'data.max_test_images': _int_at_least(0),
    'data.validation_fraction': _FRACTION,
    'input.image_size': _image_side,
    'input.resize_size': _image_side,
    'input.weight_factor': _POSITIVE_F32,
    'input.num_workers': _int_at_least(0),
    'input.prefetch': _int_at_least(0),
    'input.resized_cache_mb': _NON_NEGATIVE,
    'model.width_mult': _POSITIVE,
    'model.fc_dim': _int_at_least(1),
    'model.vgg_pool_size': _int_at_least(1),
    'model.num_buckets': _exactly(NUM_BUCKETS, "AVA's votes are a histogram of the scores 1-10"),
    'model.num_tags': _exactly(NUM_TAGS, "AVA's tags.txt lists 66 tags"),
    'model.dropout': _FRACTION,
    # Past 1e6 float32 cannot tell the EMD from its r -> inf limit (the largest CDF gap), and
    # past ~1e9 its power went wrong.
    'loss.emd_r': (lambda v: _positive(v) and float(v) <= 1e6, 'a number > 0 and <= 1e6'),
    'loss.tag_weight': _NON_NEGATIVE_F32,
    'optim.lr': _POSITIVE_F32,
    'optim.momentum': _FRACTION,
    'optim.weight_decay': _NON_NEGATIVE_F32,
    'optim.warmup_steps': (_step_count, f'an integer from 0 to {MAX_STEPS}'),
    'optim.grad_clip': _NON_NEGATIVE_F32,
    'cache.num_train_views': _int_at_least(1),
    'cache.ram_budget_gb': _NON_NEGATIVE,
    'cache.device_budget_gb': _NON_NEGATIVE,
    'eval.batch_size': _int_at_least(1),
    'eval.box_threshold': _OPEN_UNIT,
    # A 95% interval of 1 resample is one value: binary_accuracy 0.75 got the "CI" [0.5, 0.5].
    'eval.bootstrap_samples': (
        lambda v: _int_at_least(0)[0](v) and (v == 0 or v >= MIN_BOOTSTRAP_SAMPLES),
        f'0 (no intervals) or an integer >= {MIN_BOOTSTRAP_SAMPLES}: a 95% interval needs '
        'resamples beyond its 2.5% tails'),
    'eval.faithfulness_images': _int_at_least(0),
    # One step scores every method's curve [1, 0]: deletion and insertion AUC 0.5 for all.
    'eval.faithfulness_steps': (_int_at_least(2)[0],
                                'an integer >= 2: with 1 step every method\'s deletion and '
                                'insertion AUC is 0.5 whatever its map'),
    # ScoreCAM's images: a negative count was taken as 0 (ScoreCAM silently left out).
    'eval.faithfulness_scorecam_images': _int_at_least(0),
    'eval.explorer_scorecam_images': _int_at_least(0),
    'eval.localization_images': _int_at_least(0),
    'eval.split_point_fit_images': _int_at_least(0),
    'eval.num_example_images': _int_at_least(0),
    # Explorer thumbnails and stored maps, at most N px / cells a side: 0 was a
    # ZeroDivisionError, a negative size 'scale must be > 0', after every evaluation pass.
    'eval.explorer_thumb_size': _int_at_least(1),
    'eval.explorer_map_size': _int_at_least(1),
    **{key: _one_of(*values) for key, values in ENUMERATIONS.items()},
}


def check_steps(config: ml_collections.ConfigDict, num_train: int, total: int) -> None:
  """Raises ConfigError when `total`, the steps `config.num_epochs` makes of `num_train`
  training rows, is more than MAX_STEPS (the rows are known only once the data is read)."""
  if total <= MAX_STEPS:
    return
  epochs, batch = float(config.num_epochs), int(config.batch_size)
  raise ConfigError(
      f'config.num_epochs={epochs:g}: {epochs:g} epochs of {num_train} training rows in batches '
      f'of config.batch_size={batch} are {total:.3g} steps, more than the {MAX_STEPS} a run can '
      f'count; lower it to at most {MAX_STEPS * batch // max(num_train, 1)}')


def unselectable_evaluations(config: ml_collections.ConfigDict, total: int) -> str | None:
  """The warning for periodic evaluations `config.best_metric` cannot select (None: none).

  Only a checkpointed step can be selected (and tested), so an evaluation between two
  checkpoints is logged and never a candidate: the best logged one may not be the tested one.
  """
  e = max(1, int(config.eval_every_steps))  # as the trainer reads them
  c = max(1, int(config.checkpoint_every_steps))
  metric = str(config.best_metric)
  # The first evaluation, step e, is checkpointed exactly when all of them are (e % c == 0).
  if not metric or e % c == 0 or e >= total:
    return None
  return (f'config.eval_every_steps={e} with config.checkpoint_every_steps={c}: evaluations at '
          f'steps without a checkpoint (such as {e}) are logged but config.best_metric='
          f'{metric!r} cannot select them; set checkpoint_every_steps to a divisor of '
          f'eval_every_steps (e.g. {e}) to select among them all')


def _get(config: ml_collections.ConfigDict, key: str) -> tuple[bool, Any]:
  node = config
  for part in key.split('.'):
    if part not in node:
      return False, None
    node = node[part]
  return True, node


def value_problem(key: str, value: Any) -> str | None:
  """The one-line problem of `value` for dotted `key` under the single-key rules, or None
  (also for a key without a rule)."""
  rule = _RULES.get(key)
  if rule is None or rule[0](value):
    return None
  return f'config.{key}={value!r}: must be {rule[1]}'


def problems(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Every bad value of `config`, one line each (empty when it can train); with `prefix`
  (e.g. 'eval.', what evaluate may override), only the single-key rules under it."""
  out = []
  for key, (ok, want) in _RULES.items():
    if not key.startswith(prefix):
      continue
    present, value = _get(config, key)
    if present and not ok(value):
      out.append(value_problem(key, value))
  out += _batch_memory_problems(config, prefix)
  out += _faithfulness_steps_problems(config, prefix)
  if prefix:
    return out
  present, band = _get(config, 'input.weight_band')
  if present and not (len(band) == 2 and all(_num(b) is not None for b in band)
                      and band[0] < band[1]):
    out.append(f'config.input.weight_band={tuple(band)!r}: must be (low, high) with low < high')
  present, size = _get(config, 'input.image_size')
  _, resize = _get(config, 'input.resize_size')
  if present and isinstance(size, int) and isinstance(resize, int) and resize < size:
    out.append(f'config.input.resize_size={resize} is smaller than config.input.image_size='
               f'{size}: the random crop needs resize_size >= image_size')
  out += _cam_method_problems(config)
  _, arch = _get(config, 'model.arch')
  best = str(config.best_metric)
  if best and arch in BEST_METRICS and best not in BEST_METRICS[arch]:
    why = (' (lower is better; the best checkpoint is the one with the highest value)'
           if best in ('emd', 'loss') else '')
    out.append(f'config.best_metric={best!r}{why}: use one of {BEST_METRICS[arch]} for {arch}, '
               "or '' to keep the last checkpoint")
  return out


def _batch_memory_problems(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Batch sizes whose rows alone exceed this machine's RAM: every evaluation decodes
  eval.batch_size images at once (uint8), an online run batch_size crops, and the cached
  head's batch holds each row's targets (votes, distribution, tags) besides its features;
  and the input pipeline holds config.input.prefetch batches. --config.eval.batch_size=10**8
  hung the feature cache's build (aesthetics-evaluate: a MemoryError traceback);
  batch_size=10**8 was a RESOURCE_EXHAUSTED traceback."""
  from aesthetics_jax import cpu_backend  # pylint: disable=import-outside-toplevel
  ram = cpu_backend.physical_memory()
  present, size = _get(config, 'input.image_size')
  if not ram or not present or not _int_at_least(1)[0](size):
    return []
  cached = all(_get(config, k)[1] is True for k in ('model.freeze_encoder', 'cache.enabled'))
  out = []
  for key in ('batch_size', 'eval.batch_size'):
    present, value = _get(config, key)
    if not key.startswith(prefix) or not present or not _int_at_least(1)[0](value):
      continue
    rows, row_bytes = f'images of {size} px', size * size * 3
    if key == 'batch_size' and cached:
      rows, row_bytes = 'cached rows', 4 * (2 * NUM_BUCKETS + NUM_TAGS)
    if value * row_bytes > ram:  # the largest that fits: a user cannot guess it
      out.append(f'config.{key}={value}: a batch of {value} {rows} takes at least '
                 f'{value * row_bytes / 2**30:.1f} GiB and this machine has '
                 f'{ram / 2**30:.1f} GiB of RAM; lower it to at most {ram // row_bytes} '
                 '(the paper configs use 32)')
    # The input pipeline decodes config.input.prefetch batches ahead of the model, and holds
    # them: a pipeline faster than the model (crops of the resized-image cache) fills them all.
    ahead = _get(config, 'input.prefetch')[1]
    if (not out and not prefix and row_bytes == size * size * 3  # one line: the first
        and _int_at_least(1)[0](ahead) and ahead * value * row_bytes > ram):
      out.append(f'config.input.prefetch={ahead}: {ahead} batches of config.{key}={value} '
                 f'images of {size} px decoded ahead take at least '
                 f'{ahead * value * row_bytes / 2**30:.1f} GiB and this machine has '
                 f'{ram / 2**30:.1f} GiB of RAM; lower it to at most '
                 f'{ram // (value * row_bytes)} (the default is 2)')
  return out


def _faithfulness_steps_problems(config: ml_collections.ConfigDict, prefix: str) -> list[str]:
  """More deletion / insertion steps than an image has pixels repeat the same curve points:
  --config.eval.faithfulness_steps=10**11 was an OverflowError traceback after the test pass."""
  present, steps = _get(config, 'eval.faithfulness_steps')
  _, size = _get(config, 'input.image_size')
  if (not 'eval.faithfulness_steps'.startswith(prefix) or not present
      or not _int_at_least(1)[0](steps) or not _int_at_least(1)[0](size)
      or steps <= size * size):
    return []
  return [f'config.eval.faithfulness_steps={steps}: more steps than the {size * size} pixels '
          f'of a {size}-px image (config.input.image_size) repeat the same curve points; use at '
          f'most {size * size} (the default is 16)']


def _cam_method_problems(config: ml_collections.ConfigDict) -> list[str]:
  """The CAM method names the evaluation after training will use: a misspelled one used to
  pass training and fail only in `aesthetics-evaluate`."""
  from aesthetics_jax.explain import choices  # pylint: disable=import-outside-toplevel
  out = []
  for key in ('eval.cam_method', 'eval.cam_methods'):
    present, value = _get(config, key)
    if not present:
      continue
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
      out.append(f'config.{key}={value!r}: must be a tuple of CAM method names')
      continue
    for name in names:
      try:
        choices.canonical_method(name)
      except ValueError as e:
        out.append(f'config.{key}={value!r}: {e}')
        break
  return out


def device_problems(config: ml_collections.ConfigDict, num_devices: int) -> list[str]:
  """Batch sizes the `num_devices` of the training mesh cannot split evenly: they used to
  fail at the first step (`batch_size`) or at the first evaluation (`eval.batch_size`),
  after the data and the feature cache were prepared."""
  out = []
  for key in ('batch_size', 'eval.batch_size'):
    present, value = _get(config, key)
    if (present and isinstance(value, int) and not isinstance(value, bool) and value > 0
        and value % num_devices):
      fit = max(num_devices, value // num_devices * num_devices)
      out.append(f'config.{key}={value}: must be a multiple of the {num_devices} devices '
                 f'training runs on; set it to e.g. {fit}')
  return out


def bootstrap_problem(config: ml_collections.ConfigDict, num_images: int) -> str | None:
  """The one-line problem of `config.eval.bootstrap_samples` resamples of `num_images`
  images whose indices alone (int64, all drawn at once) exceed this machine's RAM, or None.
  --config.eval.bootstrap_samples=10**11 was 'out of memory ... lower --config.eval.batch_size'
  after the test pass."""
  from aesthetics_jax import cpu_backend  # pylint: disable=import-outside-toplevel
  ram, samples = cpu_backend.physical_memory(), int(config.eval.bootstrap_samples)
  need = 8 * samples * num_images
  if not ram or num_images < 1 or need <= ram:
    return None
  return (f'config.eval.bootstrap_samples={samples}: {samples} resamples of {num_images} '
          f'images take at least {need / 2**30:.3g} GiB and this machine has '
          f'{ram / 2**30:.1f} GiB of RAM; lower it to at most {ram // (8 * num_images)} (the '
          'default is 1000)')


def cam_layers_problem(config: ml_collections.ConfigDict, model) -> str | None:
  """The one-line problem of `config.eval.cam_layers` for `model` (not a module of its
  encoder), or None."""
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  layers = config.eval.cam_layers
  try:
    models.resolve_layers(model, layers)
  except ValueError as e:
    shown = tuple(layers) if isinstance(layers, list) else layers
    return f'config.eval.cam_layers={shown!r}: {str(e).splitlines()[0]}'
  return None


# The keys that size the model (their paper values: configs/default.py's `get_config`).
_SIZE_KEYS = {'vgg16': ('model.width_mult', 'model.fc_dim', 'model.vgg_pool_size'),
              'mobilenet_v2': ('model.width_mult',)}


def model_memory_problem(config: ml_collections.ConfigDict, model) -> str | None:
  """The one-line problem of a model whose float32 parameters alone exceed this machine's
  RAM, naming the size key furthest above the paper's value, or None. model.fc_dim=10**9 or
  width_mult=10000 were an out-of-memory line telling the user to lower the batch size."""
  import jax  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import cpu_backend  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  ram = cpu_backend.physical_memory()
  shapes = models.abstract_variables(model, int(config.input.image_size))['params']
  count = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
  if not ram or 4 * count <= ram:
    return None
  paper = default.get_config()
  key = max(_SIZE_KEYS[config.model.arch],
            key=lambda k: float(_get(config, k)[1]) / float(_get(paper, k)[1]))
  return (f'config.{key}={_get(config, key)[1]!r}: the model\'s {count:.3g} parameters take '
          f'at least {4 * count / 2**30:.3g} GiB (float32) and this machine has '
          f'{ram / 2**30:.1f} GiB of RAM; lower it (the paper uses {_get(paper, key)[1]!r})')


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad value of `problems` (no JAX needed)."""
  _raise_first(problems(config))


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad value (the model's enumerations too: arch, dtype,
  depthwise, conv3x3, which building the model checks: that imports JAX)."""
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
  found = problems(config)
  if not found:
    try:
      model = models.create_model(config.model)
    except ValueError as e:
      found = [str(e).splitlines()[0]]
    else:  # the evaluation after training computes its CAMs there
      found = [p for p in [cam_layers_problem(config, model),
                           model_memory_problem(config, model)] if p]
  if not found:
    found = device_problems(config, parallel.train_mesh().size)
  _raise_first(found)


def _raise_first(found: list[str]) -> None:
  """The first problem, naming the settings of the others: '(and 1 more)' read as another
  value to try after 'set it to e.g. 6'."""
  if found:
    rest = [re.match(r'config\.[\w.]+', f) for f in found[1:]]
    if rest and all(rest):
      more = f' (also {", ".join(dict.fromkeys(m.group(0) for m in rest))})'
    else:
      more = f' ({len(rest)} more problem{"s" if len(rest) > 1 else ""})' if rest else ''
    raise ConfigError(found[0] + more)
