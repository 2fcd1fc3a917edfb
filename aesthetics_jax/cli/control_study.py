"""The localisation control's stages (`aesthetics-control`, cli/control.py, holds the flags):
data, one model per seed, its maps scored against the cause's masks, its untrained start's,
and the negative control; control.json and control.md. Flag-free, so tests and notebooks
import it beside other commands' modules.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aesthetics_jax import io as io_lib
from aesthetics_jax.cli import stages
from aesthetics_jax.configs import control as control_config
from aesthetics_jax.train.stop import StopRequest

SMOKE_SIZES = (24, 12)
# What a control run has to show, per method: the pointing game on the patch masks (a hit is
# the map's highest cell inside the patch) and the box IoU, with the negative control's.
_SCORES = ('pointing_game', 'box_iou', 'mask_mass')
# Eval keys taken from this command's config, not from the one saved at training time: a
# rerun with other methods or layers re-scores the trained models.
_EVAL_KEYS = ('cam_methods', 'cam_layers', 'box_threshold', 'faithfulness_images', 'explorer',
              'bootstrap_samples', 'split_point_fit_images', 'num_example_images')


# 2: the controls come from the evaluation's own localisation pass (the negative control
# pairs images within an evaluation batch); rows scored before are redone.
SCORING_VERSION = 2


# What a seed's model depends on besides its seed, step count and data (checked apart): a rerun
# with another value found the earlier run's models finished (or resumed them) and reported
# them under the new config. Workers, logging and checkpoint cadence do not change the model.
_TRAINING_KEYS = ('batch_size', 'num_epochs', 'model', 'input', 'loss', 'optim', 'cache.enabled',
                  'cache.num_train_views', 'cache.dtype', 'data.subset', 'data.max_train_images',
                  'data.validation_fraction')
_NOT_TRAINING = ('input.num_workers', 'input.prefetch', 'input.resized_cache_mb')
_PREFIXES = tuple(k + '.' for k in _TRAINING_KEYS)


def _training_settings(config: dict) -> dict:
  """{dotted key: value} of `config` (a dict) under _TRAINING_KEYS, JSON-normalised."""
  flat = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      key = f'{prefix}{k}'
      if isinstance(v, dict):
        walk(v, key + '.')
      elif (key in _TRAINING_KEYS or key.startswith(_PREFIXES)) and key not in _NOT_TRAINING:
        flat[key] = v
  walk(config, '')
  return json.loads(json.dumps(io_lib.json_safe(flat)))


def trained_with_other_settings(seed_dir: Path, config) -> list[str]:
  """'key=old (seed) vs new (config)' for each training setting in which the model under
  `seed_dir` (its config.json) differs from `config`; [] when nothing was trained there."""
  path = seed_dir / 'config.json'
  if not path.is_file():
    return []
  try:
    saved = _training_settings(json.loads(path.read_text()))
  except (OSError, ValueError, AttributeError):
    return []  # unreadable: the trainer names it and rewrites it
  now = _training_settings(config.to_dict())
  return [f'{k}={saved.get(k)!r} (seed) vs {now.get(k)!r} (config)'
          for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


class ControlError(Exception):
  """A control run that cannot go on (one line)."""


class ControlUsageError(ControlError):
  """A workdir this run's flags cannot continue (other data, steps or settings), found before
  any stage: exit 2 as for the paper run's other flags; it was exit 1."""
  before_work = True


def _log(msg: str) -> None:
  print(f'[control {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def make_data(w: Path, num_train: int, num_test: int, decoys: bool = True) -> Path:
  """W/ava (reused when complete) and the prepared W/tfds; returns W/tfds."""
  from aesthetics_jax.data import control  # pylint: disable=import-outside-toplevel
  ava_dir, stamp = w / 'ava', w / 'ava' / 'control.json'
  want = {'num_train': num_train, 'num_test': num_test, 'size': control_config.SIZE,
          'patch': control_config.PATCH, 'decoys': bool(decoys), 'version': control.VERSION}
  try:
    made = json.loads(stamp.read_text()) if stamp.is_file() else None
  except (OSError, ValueError) as e:  # was 'control: Expecting value: line 1 column 1 ...'
    made = f'{stamp}: cannot be read ({type(e).__name__}: {e})'
  if made != want:
    if any(w.glob('seed_*')):  # models trained on other images: scoring them would mislead
      if isinstance(made, str):
        raise ControlUsageError(f'{made}; it says which control data the models in {w} '
                                'were trained on: restore it, or use a fresh --workdir')
      raise ControlUsageError(f'{w} holds models trained on other control data than '
                              f'{want} ({stamp}); use a fresh --workdir')
    if not stamp.is_file():
      # Only data this command generated (stamped) is ever deleted: W/ava or W/tfds without
      # the stamp are someone's dataset (a paper run's workdir, the current folder).
      for old in (ava_dir, w / 'tfds'):
        if old.exists():
          raise ControlUsageError(f'{old} exists and is not control data (no {stamp}); '
                                  'pass a fresh --workdir, or delete it')
    for old in (ava_dir, w / 'tfds'):  # other images (and their masks, which the negative
      if old.exists():                 # control would otherwise hand out)
        shutil.rmtree(old)
    # Stamped as this command's before the first image: a run stopped in between (a full
    # disk, Ctrl-C) left W/ava unstamped, and the rerun refused it as someone else's data.
    ava_dir.mkdir(parents=True)
    io_lib.atomic_write_text(stamp, json.dumps({'incomplete': want}))
    control.generate(ava_dir, num_train=num_train, num_test=num_test,
                     size=control_config.SIZE, patch=control_config.PATCH, decoys=decoys)
    io_lib.atomic_write_text(stamp, json.dumps(want))
    _log(f'data: generated {ava_dir} ({num_train} train + {num_test} test)')
  else:
    _log(f'data: reused {ava_dir}')
  stages.prepare_own(ava_dir, w / 'tfds')
  return w / 'tfds'


def _num(x) -> float:
  """A score, NaN where metrics.json has null (undefined: e.g. the mask mass of a map with no
  positive value)."""
  return float('nan') if x is None else float(x)


def _nan_for_null(obj):
  """control.json read back: null scores are NaN again (json_safe wrote them as null)."""
  if isinstance(obj, dict):
    return {k: _nan_for_null(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_nan_for_null(v) for v in obj]
  return float('nan') if obj is None else obj


def _lo(xs) -> float:
  xs = [x for x in xs if x == x]  # NaN-free
  return min(xs) if xs else float('nan')


def _hi(xs) -> float:
  xs = [x for x in xs if x == x]
  return max(xs) if xs else float('nan')


def _scores(metrics: dict, suffix: str = '') -> dict:
  """{method: {pointing_game, box_iou, mask_mass}} of an evaluation's localisation (with
  `suffix`: of one of its controls, e.g. '_untrained'); NaN where undefined."""
  return {m: {k: _num(v[k + suffix]) for k in _SCORES}
          for m, v in metrics['localization'].items()}


def run_seed(w: Path, data_dir: Path, config, seed: int,
             stop: StopRequest | None = None) -> dict:
  """Trains (or resumes) seed `seed`'s model and scores its maps with the real masks and the
  shuffled ones, and the maps of its untrained start with the real masks; returns the seed's
  row of control.json. stop: SIGTERM's `train.stop.StopRequest` (checkpoints the step in
  flight)."""
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  from aesthetics_jax.train import trainer  # pylint: disable=C0415
  c = config.copy_and_resolve_references()
  c.seed = seed
  c.data.data_dir, c.data.ava_dir = str(data_dir), ''
  wd = w / f'seed_{seed}'
  total = int(c.num_train_steps)
  if stages.finished(wd, total):
    _log(f'seed {seed}: training already finished (step {total})')
  else:
    _log(f'seed {seed}: training ({total} steps)')
    trainer.train_and_evaluate(c, str(wd), stop)
  if stop is not None:  # held during the final test: stop before the scoring
    stop.check()
  over = {f'eval.{k}': c.eval[k] for k in _EVAL_KEYS}
  over.update(stages.own_data(wd, data_dir, w / 'ava'))  # a moved or copied control
  # One evaluation scores the trained maps, the maps of the model before training (maps that
  # point without having learned anything show that the patch is merely conspicuous, not that
  # the maps follow what a model uses) and the negative control (another image's patch).
  m = eval_run.evaluate(wd, write_html=False,
                        overrides={**over, 'eval.localization_controls': True})
  if not str(m['localization_controls'].get('untrained', '')).startswith('the maps'):
    raise ControlError(f'{wd}: no untrained maps ({m["localization_controls"]})')
  row = {'seed': seed, 'step': m['step'], 'binary_accuracy': m['binary_accuracy'],
         'num_defective': m['localization_num_defective'],
         'centre_pointing_game': m['pointing_game_centre_baseline'],
         'area_mask_mass': m['mask_mass_area_baseline'],
         'cam_map_size': 'x'.join(map(str, m['cam_map_size'])),
         'methods': _scores(m), 'negative': _scores(m, '_shuffled_masks'),
         'untrained': _scores(m, '_untrained')}
  best = max(row['methods'].items(),
             key=lambda kv: kv[1]['pointing_game'] if kv[1]['pointing_game'] == kv[1][
                 'pointing_game'] else -1.0)
  _log(f'seed {seed}: accuracy {row["binary_accuracy"]:.3f}, pointing game '
       + ', '.join(f'{m} {v["pointing_game"]:.2f}' for m, v in row['methods'].items())
       + f' (best {best[0]}; centre {row["centre_pointing_game"]:.2f})')
  return row


def summarize(rows: Sequence[dict], hit: float = 0.9) -> dict:
  """Per method over the seeds: worst and median pointing game, worst box IoU, the seeds whose
  pointing game reaches `hit`, the worst margin over the same seed's untrained model, and the
  negative control's highest pointing game."""
  out = {}
  for m in rows[0]['methods']:
    pg = [r['methods'][m]['pointing_game'] for r in rows]
    finite = [p for p in pg if p == p]
    # NaN (undefined on a seed) is left out of each extreme; all-NaN gives NaN.
    out[m] = {'worst_pointing_game': _lo(pg),
              'median_pointing_game': float(np.median(finite)) if finite else float('nan'),
              'worst_box_iou': _lo(r['methods'][m]['box_iou'] for r in rows),
              'seeds_pointing': [r['seed'] for r, p in zip(rows, pg) if p >= hit],
              'highest_untrained_pointing_game': _hi(r['untrained'][m]['pointing_game']
                                                     for r in rows),
              'worst_margin_over_untrained': _lo(
                  p - r['untrained'][m]['pointing_game'] for r, p in zip(rows, pg)),
              'negative_max_pointing_game': _hi(r['negative'][m]['pointing_game']
                                                for r in rows)}
  return out


def table(result: dict) -> str:
  """control.md: two rows per seed (the trained model: pointing game / box IoU per method;
  its untrained start: pointing game), then the summary over seeds."""
  rows, summary = result['seeds'], result['summary']
  methods = list(summary)
  lines = [f'Low-target maps at {", ".join(result["cam_layers"])} ({result["cam_map_size"]}), '
           f'{result["num_train_steps"]} steps, decoys {"on" if result["decoys"] else "off"}; '
           f'pointing game / box IoU (box threshold {result["box_threshold"]:g}) on the '
           f'{rows[0]["num_defective"]} test images with the '
           f'cause patch; centre point {rows[0]["centre_pointing_game"]:.2f}. Negative control: '
           "the trained model's maps scored against another image's patch.", '',
           '| seed | model | accuracy | ' + ' | '.join(methods) + ' | negative control |',
           '|' + '---|' * (len(methods) + 4)]
  for r in rows:
    cells = [f'{r["methods"][m]["pointing_game"]:.2f} / {r["methods"][m]["box_iou"]:.2f}'
             for m in methods]
    neg = _hi(v['pointing_game'] for v in r['negative'].values())
    lines.append(f'| {r["seed"]} | trained | {r["binary_accuracy"]:.3f} | ' +
                 ' | '.join(cells) + f' | {neg:.2f} |')
    lines.append(f'| {r["seed"]} | untrained | | ' +
                 ' | '.join(f'{r["untrained"][m]["pointing_game"]:.2f}' for m in methods) +
                 ' | |')
  add = lambda name, fmt: lines.append(  # noqa: E731
      f'| {name} | | | ' + ' | '.join(fmt(summary[m]) for m in methods) + ' | |')
  add('worst seed, trained', lambda s: f'{s["worst_pointing_game"]:.2f} / {s["worst_box_iou"]:.2f}')
  add('worst margin over untrained', lambda s: f'{s["worst_margin_over_untrained"]:+.2f}')
  add('seeds >= 0.9', lambda s: f'{len(s["seeds_pointing"])} of {len(rows)}')
  return '\n'.join(lines) + '\n'


def run_control(workdir, config, seeds: Sequence[int], num_train: int = 256,
                num_test: int = 64, decoys: bool = True,
                stop: StopRequest | None = None) -> dict:
  """The whole control (see the module docstring); returns control.json's content.

  A seed already in W/control.json with the same steps, methods, layers and box threshold is
  not redone.
  stop: SIGTERM's `train.stop.StopRequest` (`common.stop_on_sigterm`): training checkpoints
  the step in flight, and the control stops there or between stages.
  """
  from aesthetics_jax.train import workdir as workdir_lib  # pylint: disable=C0415
  if not seeds or len(set(seeds)) != len(seeds):
    raise ControlError(f'seeds {list(seeds)}: pass one or more distinct seeds')
  w = Path(workdir).absolute()
  # A second control on W at once would rebuild the data under the first; it is refused.
  with workdir_lib.claim(w, holder='aesthetics-control'):
    return _run_control(w, config, seeds, num_train, num_test, decoys, stop)


def _run_control(w: Path, config, seeds: Sequence[int], num_train: int, num_test: int,
                 decoys: bool, stop: StopRequest | None = None) -> dict:
  from aesthetics_jax.data import control  # pylint: disable=import-outside-toplevel
  check = stop.check if stop is not None else lambda: None  # between stages
  total = int(config.num_train_steps)
  for s in seeds:
    # A seed trained further by an earlier run counted as finished: its maps were scored and
    # the table said `total` steps (a rerun with a smaller --config.num_train_steps).
    latest = stages.latest_step(w / f'seed_{s}')
    if latest is not None and latest > total > 0:  # 0: num_epochs decides
      raise ControlUsageError(
          f'{w / f"seed_{s}"} holds a model trained for {latest} steps, more than '
          f'config.num_train_steps={total}: its maps would be reported as {total} steps\'; '
          f'pass --config.num_train_steps={latest}, or a fresh --workdir')
    diff = trained_with_other_settings(w / f'seed_{s}', config)
    if diff:
      raise ControlUsageError(
          f'{w / f"seed_{s}"} holds a model trained with {"; ".join(diff[:3])}'
          f'{" ..." if len(diff) > 3 else ""}: its maps would be reported as this config\'s; '
          'pass the same --config values, or a fresh --workdir')
  data_dir = make_data(w, num_train, num_test, decoys)
  out_json = w / 'control.json'
  key = {'num_train_steps': int(config.num_train_steps),
         'cam_methods': list(config.eval.cam_methods), 'cam_layers': list(config.eval.cam_layers),
         # The box IoUs' threshold: a rerun with another one printed the old IoUs as its own.
         'box_threshold': float(config.eval.box_threshold),
         'num_train': num_train, 'num_test': num_test, 'decoys': bool(decoys),
         'data_version': control.VERSION, 'scoring_version': SCORING_VERSION}
  done = {}
  try:
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    if all(old.get(k) == v for k, v in key.items()):
      done = {r['seed']: _nan_for_null(r) for r in old['seeds']}
  except (OSError, ValueError, AttributeError, KeyError, TypeError):
    # Emptied or edited: one line without the file's name (a traceback for a list); the
    # seeds are scored again from their trained models, and the file rewritten.
    done = {}
  rows = []
  for s in seeds:
    check()
    if s in done:
      _log(f'seed {s}: already scored ({out_json})')
      rows.append(done[s])
    else:
      rows.append(run_seed(w, data_dir, config, s, stop))
    result = {**key, 'seeds': rows}
    io_lib.atomic_write_text(out_json, json.dumps(io_lib.json_safe(result), indent=1))  # kept
  result = {**key, 'cam_map_size': rows[0]['cam_map_size'], 'seeds': rows,
            'summary': summarize(rows)}
  io_lib.atomic_write_text(out_json, json.dumps(io_lib.json_safe(result), indent=1))
  io_lib.atomic_write_text(w / 'control.md', table(result))
  check()
  return result
