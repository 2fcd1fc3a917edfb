"""Stage helpers shared by the multi-stage jobs (aesthetics-demo, aesthetics-paper-run).

No flags are defined here: command modules define flags on import, so one job cannot import
another's module.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

# --smoke evaluation: one CAM method, few images and bootstrap samples, so a job takes seconds.
# 8 faithfulness images = one smoke eval batch: localization runs the encoder on the same batch
# shape and reuses its compilation (`forward.features_until_fn`).
SMOKE_EVAL = {'eval.cam_methods': ('gradcam',), 'eval.faithfulness_images': 8,
              'eval.bootstrap_samples': 50, 'eval.faithfulness_steps': 4,
              'eval.num_example_images': 2}


def storage_cause(e: BaseException) -> OSError | None:
  """The OSError (a full or failing disk: common.STORAGE_ERRNOS) behind a data generator's
  error, whose line names make_demo_data's --out_dir ('choose a writable --out_dir with ~2.5
  GB free'), a flag these jobs do not take; raised instead, `common.storage_line` names the
  file and the fix. None for other errors."""
  from aesthetics_jax.cli import common  # pylint: disable=import-outside-toplevel
  cause = e.__context__
  return cause if common.storage_line(cause, '') else None


def prepare_own(ava_dir: Path, data_dir: Path):
  """`dataset.prepare` of a job's own W/tfds. A dataset there that cannot be used (a truncated
  shard, data made again since) said 'remove that folder and rerun aesthetics-prepare-data, or
  choose another --data_dir', a command and a flag these jobs do not have."""
  from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
  try:
    return dataset.prepare(ava_dir, data_dir, 'style')
  except dataset.DataDirError as e:
    where = str(dataset.dataset_dir(data_dir, 'style'))
    cause = str(e).removeprefix(where).removeprefix(': ').split('; ')[0]
    raise dataset.DataDirError(f'{where}: the prepared dataset cannot be used ({cause}); '
                               f'delete {data_dir} and rerun the same command to prepare it '
                               'again') from None


def latest_step(workdir: Path) -> int | None:
  """The newest checkpoint step of a training workdir (None without checkpoints)."""
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  if not (Path(workdir) / 'checkpoints').is_dir():
    return None
  ck = checkpoints.Checkpointer(workdir, read_only=True, enable_async=False)
  try:
    return ck.latest_step()
  finally:
    ck.close()


def intact_latest_step(workdir: Path) -> int | None:
  """`latest_step` if that checkpoint's weights verify (files.json's sizes and checksums),
  else None: a damaged final checkpoint counted as finished training, and the evaluation
  stage then stopped, exit 2, naming evaluate's --step, which these jobs do not take. The
  trainer sets a damaged step aside and redoes it from the newest intact one."""
  from aesthetics_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
  if not (Path(workdir) / 'checkpoints').is_dir():
    return None
  ck = checkpoints.Checkpointer(workdir, read_only=True, enable_async=False)
  try:
    latest = ck.latest_step()
    if latest is not None:
      ck.verify_files(latest, ('variables', 'meta'))
      ck.restore_meta(latest)
    return latest
  except checkpoints.CorruptCheckpointError:
    return None
  finally:
    ck.close()


def finished(workdir: Path, total_steps: int) -> bool:
  latest = intact_latest_step(workdir)
  return latest is not None and latest >= total_steps


def own_data(mdir: Path, data_dir: Path, ava_dir: Path) -> dict:
  """Evaluation overrides that point a model of this job's workdir at the job's own data
  (`data_dir`, and the region masks of `ava_dir`) when the workdir was moved or copied since
  training: config.json keeps absolute paths, so a moved control or demo failed in evaluate
  ('... if it moved, pass --config.data.data_dir=DIR', which these commands do not take), and
  a copy was scored against the original's data and masks. {} when nothing moved, so the
  evaluations of a job that stayed put record no overrides of these."""
  from aesthetics_jax.train import restore  # pylint: disable=import-outside-toplevel
  try:
    saved = restore.load_config(mdir)
  except (OSError, ValueError):  # evaluate says what is wrong with it
    return {}
  if os.path.abspath(str(saved.data.data_dir)) == os.path.abspath(data_dir):  # as saved
    return {}
  out = {'data.data_dir': str(data_dir)}
  if (Path(ava_dir) / 'defect_masks').is_dir() and not str(saved.eval.masks_dir):
    out['eval.masks_dir'] = str(Path(ava_dir) / 'defect_masks')
  return out


def eval_current(workdir: Path, overrides: dict | None = None) -> dict | None:
  """metrics.json if the evaluation already finished, with these `overrides` (a rerun with
  other `--eval_set` values used to keep the stale metrics), for the checkpoint evaluation
  takes (`restore.selected_step`: the best one, not the newest, evaluated again on every
  rerun)."""
  workdir = Path(workdir)
  mpath = workdir / 'eval' / 'metrics.json'
  if not (mpath.is_file() and (workdir / 'eval' / 'report.html').is_file()):
    return None
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  if (workdir / 'eval' / eval_run.INCOMPLETE).exists():  # killed while its files landed
    return None
  try:
    m = json.loads(mpath.read_text())
  except (OSError, ValueError):  # torn or edited: evaluate again
    return None
  from aesthetics_jax.evaluation import overrides as overrides_lib  # pylint: disable=C0415
  from aesthetics_jax.train import restore  # pylint: disable=C0415
  if not (workdir / 'checkpoints').is_dir():
    return None
  current = (m.get('step') == restore.selected_step(workdir)
             and m.get('overrides') == overrides_lib.record(overrides))
  return m if current else None


def write_combined_report(w: Path, archs: Sequence[str], config, *, demo: bool,
                          title: str) -> Path:
  """`w/report.html` with the evaluated models `w/<arch>` (one section each) and the
  dataset statistics of `config.data`."""
  from aesthetics_jax.evaluation import run as eval_run  # pylint: disable=C0415
  from aesthetics_jax.report import html as report_html  # pylint: disable=C0415
  from aesthetics_jax.train import restore  # pylint: disable=C0415
  sections = []
  for arch in archs:
    mdir = w / arch
    m = json.loads((mdir / 'eval' / 'metrics.json').read_text())
    figs = {p.stem: p for p in sorted((mdir / 'eval' / 'figures').glob('*.png'))}
    section = eval_run.model_section(mdir, m, figs, restore.load_config(mdir))
    sections.append(section)
  odd = (KeyError, TypeError, ValueError, AttributeError, IndexError)
  try:
    return report_html.write_report(w / 'report.html', sections,
                                    eval_run.dataset_section(config), demo=demo, title=title)
  except odd:
    # A metrics.json that parses but is not what evaluate writes (edited, another version's):
    # the model whose section fails, rendered alone, names the file and the fix.
    for arch, section in zip(archs, sections):
      try:
        report_html.render([section])
      except odd as e:
        mdir = w / arch
        raise ValueError(f'{mdir / "eval" / "metrics.json"}: not as aesthetics-evaluate '
                         f'writes it ({type(e).__name__}: {e}); delete {mdir / "eval"} and '
                         'rerun to evaluate again') from None
    raise
