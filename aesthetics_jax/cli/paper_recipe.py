"""The stages of `aesthetics-paper-run` (cli/paper_run.py): importable without its flags.

Command modules define absl flags on import, so tests and other jobs import this module, not
the command's.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
import shutil
import sys
import time
from typing import Callable
import zipfile

from aesthetics_jax.cli import common
from aesthetics_jax.cli import stages
from aesthetics_jax.configs.default import ARCHS
from aesthetics_jax.train.stop import StopRequest

CONFIGS = {'mobilenet_v2': 'mobilenet_v2_emd', 'vgg16': 'vgg16_binary'}
RUN_JSON, RUN_MD = 'paper_run.json', 'paper_run.md'
# --smoke: kept train / test images, their long side, calibration images of the weights.
SMOKE_DATA = {'num_train': 24, 'num_test': 12, 'long_side': (56, 64)}
SMOKE_CALIBRATION = {'num_images': 4, 'image_size': 32}
FULL_CALIBRATION = {'num_images': 16, 'image_size': 224}
WEIGHT_PATTERNS = ('{arch}*.pth', '{arch}*.pt', '{arch}*.safetensors')
# torchvision's IMAGENET1K_V1 files, the paper's (README): taken before any other match, as
# torch.hub's cache folder often holds mobilenet_v2's V2 file (7ebf99e0) beside it.
PAPER_WEIGHTS = {'mobilenet_v2': 'mobilenet_v2-b0353104.pth', 'vgg16': 'vgg16-397923af.pth'}


class PaperRunError(ValueError):
  """One-line problem with the run's inputs (e.g. --weights without an arch's file)."""


class PaperRunUsageError(PaperRunError):
  """A flag or setting that cannot work, found before any stage (the command exits 2)."""


def _log(msg: str) -> None:
  print(f'[paper_run {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def paper_config(arch: str, smoke: bool, views: int | None):
  """The packaged paper config of `arch` (`:smoke` for tests), K = `views` if given."""
  import importlib  # pylint: disable=import-outside-toplevel
  mod = importlib.import_module(f'aesthetics_jax.configs.{CONFIGS[arch]}')
  c = mod.get_config('smoke' if smoke else None)
  if views is not None:
    c.cache.num_train_views = int(views)
  return c


def paper_configs(archs: list[str], smoke: bool, views: int | None, vgg16_views: int
                  ) -> dict:
  """Each arch's `paper_config`, K = --views (MobileNetV2) / --vgg16_views (VGG16)."""
  return {a: paper_config(a, smoke, views if a == 'mobilenet_v2' else vgg16_views)
          for a in archs}


def check_views(w: Path, ava_dir: str | None, smoke: bool, configs: dict) -> None:
  """A --views / --vgg16_views whose feature cache the disk under `w` cannot hold, before any
  stage: it failed only in the train stage (exit 1), after the data stage (minutes at the
  paper's size). A lower bound, to refuse only what cannot work: the synthetic data's training
  rows (whatever the validation split holds out); one row with --ava_dir, whose kept count
  prepare learns."""
  from aesthetics_jax import models  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import paper_size  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import feature_cache  # pylint: disable=import-outside-toplevel
  where = common.nearest_existing(w)
  free = shutil.disk_usage(where).free
  for arch, c in configs.items():
    if not (bool(c.model.freeze_encoder) and bool(c.cache.enabled)):
      continue
    rows = 1
    if not ava_dir:
      kept = SMOKE_DATA['num_train'] if smoke else paper_size.PAPER_KEPT['train']
      limit = int(c.data.max_train_images)
      kept = min(kept, limit) if limit > 0 else kept
      # The split holds out at most round(fraction * n_c) rows per class (2 classes).
      rows = max(1, math.floor(kept * (1 - float(c.data.validation_fraction))) - 1)
    lay = feature_cache.layout(models.create_model(c.model), c, rows, 0)
    if lay.on_disk and lay.total_bytes > free:
      flag = '--views' if arch == 'mobilenet_v2' else '--vgg16_views'
      k = int(c.cache.num_train_views)
      raise PaperRunUsageError(
          f'{flag}={k}: the {arch} feature cache needs at least {lay.total_bytes / 2**30:.1f} '
          f'GiB on disk ({k} views x {rows} training row{"s" if rows > 1 else ""} x '
          f'{lay.bytes_per_view} bytes) and {where} has {free / 2**30:.1f} GiB free; pass a '
          'smaller value (the paper configs use 4 and 1) or free space')


# ----------------------------------------------------------------------------------------
# Stages: each returns (status 'ran' | 'reused' | 'given', images processed or None, info).

def stage_data(w: Path, ava_dir: str | None, smoke: bool, seed: int, workers: int):
  if ava_dir:
    return 'given', None, {'ava_dir': str(ava_dir)}
  from aesthetics_jax.data import paper_size  # pylint: disable=import-outside-toplevel
  kw = SMOKE_DATA if smoke else {}
  try:
    s = paper_size.generate(w / 'ava', seed=seed, workers=1 if smoke else workers,
                            progress=not smoke, **kw)
  except ValueError as e:
    if cause := stages.storage_cause(e):
      raise cause from None
    raise
  _log(paper_size.format_summary(s).replace('\n', '\n    '))
  images = sum(s['num_listed'].values()) - s['num_missing']
  info = {k: s[k] for k in ('num_listed', 'num_train', 'num_test', 'num_untagged',
                            'num_missing', 'num_corrupt', 'mean_jpeg_kb', 'image_mb')}
  return ('reused' if s['reused'] else 'ran'), (None if s['reused'] else images), info


def _given_weights(folder: Path, arch: str) -> Path:
  """`arch`'s file in --weights (a converted <arch>.npz first); PaperRunUsageError if none."""
  if not folder.is_dir():
    raise PaperRunUsageError(f'--weights={folder}: not a folder; pass the folder holding the '
                        'torchvision .pth files (or converted <arch>.npz)')
  converted = folder / f'{arch}.npz'
  if converted.is_file():
    return converted
  found = sorted(p for pat in WEIGHT_PATTERNS for p in folder.glob(pat.format(arch=arch)))
  if not found:
    raise PaperRunUsageError(f'--weights={folder}: no {arch} weights (expected {arch}*.pth, .pt, '
                        f'.safetensors or {arch}.npz there); add them or drop --archs={arch}')
  paper = folder / PAPER_WEIGHTS[arch]
  if paper in found:
    return paper
  if len(found) > 1:  # the first by name was taken, silently
    names = ', '.join(p.name for p in found[:4]) + (' ...' if len(found) > 4 else '')
    raise PaperRunUsageError(f'--weights={folder}: several {arch} weights ({names}) and not '
                             f"the paper's {PAPER_WEIGHTS[arch]}; keep one {arch} file there, "
                             f'or add the paper\'s')
  return found[0]


def _zip_members(path: Path) -> int | None:
  """How many files the zip archive `path` (.npz, torch's .pth) lists; None when it cannot be
  read: damaged since the run wrote it (a truncated file has no zip directory). Such a file
  was reused, and training failed with 'convert it again' / 'download or export it again',
  which a paper run's own files do not need: the weights stage writes them again."""
  try:
    with zipfile.ZipFile(path) as z:
      return len(z.namelist())
  except (OSError, zipfile.BadZipFile, ValueError):
    return None


def _is_converted(npz: Path, source: Path) -> bool:
  side = Path(f'{npz}.json')  # written after the .npz: its presence means complete
  try:
    meta = json.loads(side.read_text())
    members = _zip_members(npz)
    return (meta.get('source') == source.name and members is not None
            and meta.get('num_arrays', members) == members)
  except (OSError, ValueError, AttributeError):
    return False


def _fake_is_current(pth: Path, want: dict) -> bool:
  try:
    info = json.loads(Path(f'{pth}.json').read_text())
  except (OSError, ValueError):
    return False
  if not isinstance(info, dict):  # edited or damaged (a list): made again, as _is_converted's
    return False
  # _zip_members: None for a missing or damaged file as well
  return all(info.get(k) == v for k, v in want.items()) and _zip_members(pth) is not None


def _stand_in(w: Path, arch: str, config, smoke: bool, seed: int) -> tuple[Path, dict]:
  """(path, recorded settings) of `arch`'s stand-in .pth in the run's weights folder."""
  from aesthetics_jax.cli import fake_weights  # pylint: disable=import-outside-toplevel
  m = config.model
  calib = SMOKE_CALIBRATION if smoke else FULL_CALIBRATION
  want = {'arch': arch, 'width_mult': float(m.width_mult), 'seed': seed,
          'fc_dim': int(m.fc_dim) if arch == 'vgg16' else None,
          'calibration_images': calib['num_images'], 'image_size': calib['image_size']}
  return w / 'weights' / 'torch' / fake_weights.file_name(arch), want


def check_inputs(ava_dir: str | None, weights: str | None, archs: list[str],
                 smoke: bool = False) -> None:
  """The inputs the flags name, before any stage: an --ava_dir without AVA.txt or a --weights
  folder without an arch's file used to fail after the data stage (exit 1), and so did a
  weights file that is damaged, another model's or of another width (read here: seconds)."""
  from aesthetics_jax.data import ava  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  if ava_dir:
    try:
      dataset.check_ava_root(ava_dir)
    except ava.AvaError as e:
      raise PaperRunUsageError(str(e)) from None
  if weights:
    for arch in archs:
      source = _given_weights(Path(weights), arch)
      try:
        _, meta = pretrained.read_weights(source, arch)
      except pretrained.PretrainedError as e:
        raise PaperRunUsageError(f'--weights={weights}: {e}') from None
      want = float(paper_config(arch, smoke, None).model.width_mult)
      if meta.get('width_mult') is not None and abs(meta['width_mult'] - want) > 1e-6:
        raise PaperRunUsageError(
            f'--weights={weights}: {source.name} holds width {meta["width_mult"]} {arch} '
            f'weights; the {"smoke " if smoke else ""}config trains width {want}: pass '
            'weights of that width')


def check_stand_in_torch(w: Path, weights: str | None, archs: list[str], smoke: bool,
                         seed: int) -> None:
  """Without --weights the stand-in weights are written as torchvision .pth files, which
  needs torch: PaperRunError before the data stage (it used to fail after it), unless this
  workdir holds them already."""
  from aesthetics_jax.models import fake_imagenet  # pylint: disable=import-outside-toplevel
  if weights or all(_fake_is_current(*_stand_in(w, a, paper_config(a, smoke, None), smoke,
                                                seed)) for a in archs):
    return
  try:
    fake_imagenet._torch()  # pylint: disable=protected-access
  except fake_imagenet.FakeWeightsError:
    raise PaperRunUsageError(
        "without --weights the run writes stand-in weights as torchvision .pth files, which "
        "needs torch: pip install -e '.[torch]' (or pass --weights=DIR holding your "
        'torchvision files or converted <arch>.npz)') from None


def stage_weights(w: Path, weights: str | None, archs: list[str], configs: dict, smoke: bool,
                  seed: int) -> tuple[str, int | None, dict]:
  from aesthetics_jax.cli import fake_weights  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  out, statuses, info = w / 'weights', [], {}
  for arch in archs:
    m = configs[arch].model
    if weights:
      source = _given_weights(Path(weights), arch)
      if source.suffix == '.npz' and source.name == f'{arch}.npz':
        info[arch] = str(source)
        statuses.append('given')
        continue
    else:
      calib = SMOKE_CALIBRATION if smoke else FULL_CALIBRATION
      source, want = _stand_in(w, arch, configs[arch], smoke, seed)
      if not _fake_is_current(source, want):
        _log(f'weights: stand-in {arch} .pth (width {m.width_mult}, calibrated on '
             f'{calib["num_images"]} images at {calib["image_size"]} px)')
        fake_weights.make_weights(out / 'torch', arch, width_mult=float(m.width_mult),
                                  fc_dim=int(m.fc_dim), seed=seed, **calib)
        Path(out / f'{arch}.npz.json').unlink(missing_ok=True)  # convert the new file
    npz = out / f'{arch}.npz'
    if _is_converted(npz, source):
      statuses.append('reused')
    else:
      _log(f'weights: converting {source}')
      pretrained.convert_file(source, npz, arch)
      statuses.append('ran')
    info[arch] = str(npz)
  status = 'ran' if 'ran' in statuses else ('reused' if 'reused' in statuses else 'given')
  return status, None, info


def stage_prepare(ava_dir: Path, data_dir: Path):
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  res = stages.prepare_own(ava_dir, data_dir)
  # The paper configs' 256-px training images, decoded and resized once (training crops them).
  for size, (path, what) in dataset.prepare_resized(data_dir, 'style', [256]).items():
    _log(f'train images resized to {size}: {path} ({what})')
  listed = sum(res.kept.values()) + sum(res.skipped.values())
  _log(f'dataset: {"reused" if res.reused else "prepared"} {res.kept} (skipped {res.skipped}, '
       f'listed in {res.skipped_csv})')
  return ('reused' if res.reused else 'ran'), (None if res.reused else listed), {
      'kept': res.kept, 'skipped': res.skipped}


def stage_train(config, mdir: Path, earlier: dict | None,
                stop: StopRequest | None = None):
  """`stop`: a `train.stop.StopRequest` (SIGTERM's), which checkpoints the step in flight."""
  from aesthetics_jax.train import config_checks  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import errors  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.train import trainer  # pylint: disable=import-outside-toplevel
  done_step = (earlier or {}).get('info', {}).get('step')
  if done_step is not None and stages.intact_latest_step(mdir) == done_step:
    # Finished earlier (the final checkpoint is there): the trainer would rebuild the
    # feature cache only to evaluate once more.
    return 'reused', None, earlier['info']
  start = stages.latest_step(mdir) or 0  # an interrupted run resumes from its last checkpoint
  try:
    m = trainer.train_and_evaluate(config, str(mdir), stop)
  except config_checks.ConfigError as e:
    # Found once prepare counted the rows (check_views, before any stage, counts one with
    # --ava_dir): a stage failed after others ran (exit 1, not 2), and the key the line named
    # is this command's flag.
    flag = '--vgg16_views' if config.model.arch == 'vgg16' else '--views'
    raise errors.TrainingError(
        str(e).replace('config.cache.num_train_views', flag)) from None
  info = {'step': int(m['step']), 'resumed_from_step': start,
          'batch_size': int(config.batch_size),
          'num_train_views': int(config.cache.num_train_views),
          'binary_accuracy': m.get('binary_accuracy')}
  return 'ran', (int(m['step']) - start) * int(config.batch_size), info


def parse_eval_set(items: list[str]) -> dict:
  """['eval.faithfulness_images=16', ...] → {'eval.faithfulness_images': 16}; values are Python
  literals (a bare word stays a string); one-line ValueError otherwise."""
  import ast  # pylint: disable=import-outside-toplevel
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or not key.startswith('eval.'):
      raise PaperRunError(f'--eval_set={item}: use KEY=VALUE with an eval.* key, e.g. '
                          '--eval_set=eval.faithfulness_images=16')
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def check_eval_overrides(archs: list[str], smoke: bool, overrides: dict | None) -> None:
  """The `--eval_set` values against each arch's config, as evaluate will check them: a
  misspelled key or bad value used to surface only after data, weights and training."""
  from aesthetics_jax.evaluation import overrides as overrides_lib  # pylint: disable=C0415
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  for arch in archs:
    trial = paper_config(arch, smoke, None)
    try:
      overrides_lib.apply(trial, {**(stages.SMOKE_EVAL if smoke else {}), **(overrides or {})},
                          what='--eval_set')
    except overrides_lib.OverrideError as e:  # names the flag already
      raise PaperRunUsageError(str(e)) from None
    try:
      eval_run.check_eval_config(trial)
    except eval_run.EvalConfigError as e:
      raise PaperRunUsageError(f'--eval_set ({arch}): {e}') from None


def stage_evaluate(mdir: Path, smoke: bool, overrides: dict | None = None):
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=import-outside-toplevel
  wanted = {**(stages.SMOKE_EVAL if smoke else {}), **(overrides or {}),
            # a moved or copied run: its own W/tfds
            **stages.own_data(mdir, mdir.parent / 'tfds', mdir.parent / 'ava')}
  m = stages.eval_current(mdir, wanted)
  status = 'reused'
  if m is None:
    m = eval_run.evaluate(mdir, overrides=wanted or None)
    status = 'ran'
  keys = ('step', 'num_test_images', 'binary_accuracy', 'majority_rate', 'lcc_mean',
          'srcc_mean', 'eval_seconds')
  info = {k: m[k] for k in keys if k in m}
  return status, (m.get('num_test_images') if status == 'ran' else None), info


def stage_report(w: Path, archs: list[str], configs: dict) -> tuple[str, None, dict]:
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  cfg = configs[archs[0]]
  out = stages.write_combined_report(
      w, archs, cfg, demo=eval_run.is_demo(cfg),
      title="aesthetics-jax at the paper's scale: " + ' and '.join(archs))
  return 'ran', None, {'report': str(out)}


# ----------------------------------------------------------------------------------------
# Bookkeeping: per-stage measurements, kept across resumed runs.

def _load_records(w: Path) -> dict[str, dict]:
  try:
    return {r['stage']: r for r in json.loads((w / RUN_JSON).read_text())['stages']}
  except (OSError, ValueError, KeyError, TypeError):
    return {}


# A stage's record when an attempt stopped in it (Ctrl-C, SIGTERM, a failure); the next
# attempt adds its time.
STOPPED = 'stopped'


def format_table(records: list[dict]) -> str:
  """Markdown table of the stage records."""
  rows = ['| stage | status | wall time | images | images/s | peak RSS (process) | '
          'peak RSS (children) | disk |', '|---|---|---|---|---|---|---|---|']
  fmt = lambda v, f: '—' if v is None else format(v, f)  # noqa: E731
  for r in records:
    status = r['status'] + (' (measured in an earlier run)' if r.get('resumed') else
                            ' (an earlier run; not run this time)' if r.get('not_this_run')
                            else '')
    earlier = r.get('earlier_attempts_s') or 0.0
    if earlier:
      status += f' (resumed; {_duration(earlier)} in stopped attempts before)'
    rows.append(f"| {r['stage']} | {status} | {_duration(r.get('seconds', 0.0) + earlier)} | "
                f"{fmt(r.get('images'), ',d')} | {fmt(r.get('images_per_s'), '.1f')} | "
                f"{fmt(r.get('peak_rss_mb'), ',.0f')} MB | {fmt(r.get('peak_children_mb'), ',.0f')}"
                f" MB | {fmt(r.get('disk_mb'), ',.1f')} MB |")
  return '\n'.join(rows)


def _duration(s: float) -> str:
  return f'{s:.1f} s' if s < 120 else f'{s / 60:.1f} min'


class _Run:
  """Runs stages, measuring each (bench.stage_monitor), and rewrites the run's files."""

  def __init__(self, w: Path, flags_used: dict, stop: StopRequest | None = None):
    self.w = w
    self.stop = stop  # SIGTERM's StopRequest: checked between stages
    self.flags = flags_used
    self.earlier = _load_records(w)
    self.records: list[dict] = []
    self.t0 = time.time()

  def stage(self, name: str, disk_paths: list[Path],
            fn: Callable[[], tuple[str, int | None, dict]]) -> dict:
    from aesthetics_jax.bench import stage_monitor  # pylint: disable=import-outside-toplevel
    if self.stop is not None:  # a request held back by the trainer, or lost in a callback
      self.stop.check()
    _log(f'stage {len(self.records) + 1}: {name}')
    old = self.earlier.get(name)
    if old:
      old = {k: v for k, v in old.items() if k != 'not_this_run'}
    # Attempts stopped before this one (Ctrl-C, SIGTERM, a failure): their time is the
    # stage's too (a resumed train stage showed the resumed part's time only).
    before = (old.get('seconds', 0.0) + old.get('earlier_attempts_s', 0.0)
              if old and old.get('status') == STOPPED else 0.0)
    mon = stage_monitor.StageMonitor()
    try:
      with mon:
        status, images, info = fn()
    except BaseException:
      self.records.append({'stage': name, 'status': STOPPED, **mon.result(), 'images': None,
                           'images_per_s': None, 'disk_mb': stage_monitor.disk_mb(disk_paths),
                           'info': {}, 'earlier_attempts_s': round(before, 1)})
      self.write()
      raise
    rec = {'stage': name, 'status': status, **mon.result(), 'images': images,
           'images_per_s': None, 'disk_mb': stage_monitor.disk_mb(disk_paths), 'info': info}
    if images:
      rec['images_per_s'] = round(images / max(rec['seconds'], 1e-9), 1)
    took = _duration(rec['seconds'])
    if before:
      rec['earlier_attempts_s'] = round(before, 1)
      took += f' (and {_duration(before)} in stopped attempts before)'
    if status == 'reused' and old and old.get('status') == 'ran':
      rec = {**old, 'resumed': True}  # the whole row as measured when the work was done
      # The line said 'weights: reused in 4.8 s', the earlier run's time, for a 0.0 s check.
      took += f' (the work took {_duration(rec["seconds"])} in an earlier run)'
    self.records.append(rec)
    _log(f'{name}: {status} in {took}')
    self.write()
    if self.stop is not None:
      self.stop.check()
    return rec

  def rows(self) -> list[dict]:
    """This run's stage records, and the earlier runs' of stages it did not run (a run with
    fewer --archs dropped the other model's rows, and a later rerun then called that finished
    model 'ran in 0.2 s')."""
    mine = {r['stage']: r for r in self.records}
    rows = [mine.pop(name, {**old, 'not_this_run': True}) for name, old in self.earlier.items()]
    return rows + list(mine.values())

  def write(self) -> None:
    from aesthetics_jax.bench import stage_monitor  # pylint: disable=import-outside-toplevel
    from aesthetics_jax.io import atomic_write_json, atomic_write_text  # pylint: disable=C0415
    rows = self.rows()
    total = {'seconds_this_run': round(time.time() - self.t0, 1),
             'seconds_all_stages': round(sum(r.get('seconds', 0.0)
                                             + r.get('earlier_attempts_s', 0.0) for r in rows), 1),
             'peak_total_mb': max((r.get('peak_total_mb', 0.0) for r in rows), default=0.0),
             'disk_mb': stage_monitor.disk_mb([self.w])}
    atomic_write_json(self.w / RUN_JSON, {'flags': self.flags, 'stages': rows,
                                          'total': total}, indent=1)
    atomic_write_text(self.w / RUN_MD, self.markdown(total) + '\n')

  def markdown(self, total: dict) -> str:
    return (f"# aesthetics-paper-run: {self.w}\n\n{format_table(self.rows())}\n\n"
            f"All stages: {_duration(total['seconds_all_stages'])} (this run "
            f"{_duration(total['seconds_this_run'])}); peak RSS (process + children) "
            f"{total['peak_total_mb']:,.0f} MB; workdir {total['disk_mb']:,.1f} MB.")


def _identity(flags_used: dict) -> dict:
  """What of a run's flags shapes its results (data, weights, trained models): `views` as
  the config's K when not given, paths absolute, the seed only when it makes something."""
  ava_dir, weights, smoke = flags_used.get('ava_dir'), flags_used.get('weights'), \
      bool(flags_used.get('smoke'))
  views = flags_used.get('views')
  if views is None:
    views = int(paper_config('mobilenet_v2', smoke, None).cache.num_train_views)
  return {'smoke': smoke, 'ava_dir': ava_dir and str(Path(ava_dir).absolute()),
          'weights': weights and str(Path(weights).absolute()),
          'seed': None if ava_dir and weights else flags_used.get('seed'), 'views': views,
          'vgg16_views': flags_used.get('vgg16_views')}


def _flag_text(name: str, value) -> str:
  if name == 'smoke':
    return '--smoke' if value else 'no --smoke'
  return f'no --{name}' if value is None else f'--{name}={value}'


def check_workdir(w: Path, flags_used: dict) -> None:
  """PaperRunUsageError for a workdir this run must not continue: one whose earlier run had
  other flags (its finished stages, trained on other data, weights or views, were reused under
  the new flags), or another command's (an aesthetics-demo workdir's W/ava was overwritten)."""
  try:
    recorded = json.loads((w / RUN_JSON).read_text())['flags']
    if not isinstance(recorded, dict):
      raise TypeError(f"'flags' is a {type(recorded).__name__}, not an object")
  except FileNotFoundError:
    recorded = None
  except (OSError, ValueError, KeyError, TypeError) as e:
    # Taken as 'nothing to compare with', other flags reused the finished stages (a model
    # trained with --vgg16_views=1 recorded as 2), or remade the data under the others.
    raise PaperRunUsageError(
        f'{w / RUN_JSON}: cannot be read ({type(e).__name__}: {common.first_line(e)}), and it '
        'records the flags this workdir was run with, which a rerun must repeat; restore it, '
        'or pass a new --workdir') from None
  if recorded is None:
    if not flags_used.get('ava_dir') and (w / 'ava').exists():
      raise PaperRunUsageError(
          f'--workdir={w} holds ava/ but no {RUN_JSON}: another command\'s workdir '
          '(aesthetics-demo?) whose data this run would overwrite; pass a new --workdir')
    return
  was, now = _identity(recorded), _identity(flags_used)
  # K shapes a model only once it trains: a --vgg16_views whose cache did not fit (the train
  # stage's exit 1 after data, weights and prepare ran) locked the workdir to it.
  untrained = {'views': 'mobilenet_v2', 'vgg16_views': 'vgg16'}
  for k in now:
    if k in untrained and stages.latest_step(w / untrained[k]) is None:
      continue
    if was[k] != now[k]:
      raise PaperRunUsageError(
          f'--workdir={w} was run with {_flag_text(k, was[k])} ({RUN_JSON}), this run has '
          f'{_flag_text(k, now[k])}: its finished stages would be reused as if made with '
          'these flags; rerun with the same flags, or pass a new --workdir')
  if not flags_used.get('ava_dir'):
    _check_generator(w)


def _check_generator(w: Path) -> None:
  """PaperRunUsageError for a W/ava drawn by another generator (an upgrade that draws other
  images from the same flags) once a dataset or a model was made from it: the data stage
  remade W/ava and the finished prepare and train stages were reused on the old data."""
  from aesthetics_jax.data import demo as demo_data  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.data import paper_size  # pylint: disable=import-outside-toplevel
  old = (demo_data.read_manifest(w / 'ava') or {}).get('params')
  if not isinstance(old, dict) or not any((w / p).exists() for p in ('tfds', *ARCHS)):
    return
  drawn_by = {'generator_version': paper_size.GENERATOR_VERSION,
              'demo_generator_version': demo_data.GENERATOR_VERSION,
              'vivid_gain': paper_size.VIVID_GAIN}
  for key, value in drawn_by.items():
    if old.get(key) != value:
      was = 'none recorded' if old.get(key) is None else old[key]
      raise PaperRunUsageError(
          f'--workdir={w} holds data drawn with {key} {was} '
          f'({w / "ava" / demo_data.MANIFEST}), and this aesthetics-jax draws with {value}, '
          'other images from the same flags: its prepared dataset and models were made from '
          'that data; pass a new --workdir, or rerun with the aesthetics-jax that made it')


def run_paper(workdir: str | os.PathLike, *, ava_dir: str | None = None,
              weights: str | None = None, archs: tuple[str, ...] = ARCHS,
              views: int | None = None, vgg16_views: int = 1, smoke: bool = False,
              seed: int = 0, workers: int = 0, eval_overrides: dict | None = None,
              stop: StopRequest | None = None) -> Path:
  """Runs (or resumes) every stage; returns the path of the markdown table.

  eval_overrides: dotted config keys changed for the evaluations only. stop: SIGTERM's
  `train.stop.StopRequest` (`common.stop_on_sigterm`): training checkpoints the step in
  flight, and the run stops there or between two stages.
  """
  from aesthetics_jax.train import workdir as workdir_lib  # pylint: disable=C0415
  archs = list(archs)
  check_eval_overrides(archs, smoke, eval_overrides)
  w = Path(workdir).absolute()
  check_inputs(ava_dir, weights, archs, smoke)
  check_views(w, ava_dir, smoke, paper_configs(archs, smoke, views, vgg16_views))
  check_stand_in_torch(w, weights, archs, smoke, seed)
  # Two runs on one workdir would write the same data, weights and table at once; the second
  # is refused (exit 2), naming the first's pid. Each trainer also locks W/<arch>.
  with workdir_lib.claim(w, holder='aesthetics-paper-run'):
    return _run_stages(w, ava_dir=ava_dir, weights=weights, archs=archs, views=views,
                       vgg16_views=vgg16_views, smoke=smoke, seed=seed, workers=workers,
                       eval_overrides=eval_overrides, stop=stop)


def _run_stages(w: Path, *, ava_dir, weights, archs, views, vgg16_views, smoke, seed, workers,
                eval_overrides, stop: StopRequest | None = None) -> Path:
  data_dir = w / 'tfds'
  ava = Path(ava_dir) if ava_dir else w / 'ava'
  configs = paper_configs(archs, smoke, views, vgg16_views)
  run = _Run(w, {'ava_dir': ava_dir, 'weights': weights, 'archs': archs, 'views': views,
                 'vgg16_views': vgg16_views, 'smoke': smoke, 'seed': seed}, stop)
  check_workdir(w, run.flags)
  if not (w / RUN_JSON).exists():  # the flags, before a stage writes: what a rerun checks
    run.write()
  run.stage('data', [] if ava_dir else [ava],
            lambda: stage_data(w, ava_dir, smoke, seed, workers))
  wrec = run.stage('weights', [w / 'weights'],
                   lambda: stage_weights(w, weights, archs, configs, smoke, seed))
  run.stage('prepare', [data_dir], lambda: stage_prepare(ava, data_dir))
  for arch in archs:
    c = configs[arch]
    c.data.data_dir, c.data.ava_dir = str(data_dir), str(ava)
    c.model.init_weights = wrec['info'][arch]
    mdir = w / arch
    run.stage(f'train {arch}', [mdir], lambda c=c, mdir=mdir, arch=arch: stage_train(
        c, mdir, run.earlier.get(f'train {arch}'), stop))
  for arch in archs:
    run.stage(f'evaluate {arch}', [w / arch / 'eval'],
              lambda arch=arch: stage_evaluate(w / arch, smoke, eval_overrides))
  run.stage('report', [w / 'report.html'], lambda: stage_report(w, archs, configs))
  total = json.loads((w / RUN_JSON).read_text())['total']
  print(run.markdown(total))
  return w / RUN_MD
