r"""Fault drill: runs the real commands on damaged inputs and classifies every outcome.

  python -m launch.fault_drill --workdir=/tmp/drill [--heavy]

Checkout-only (imports tests/ fixtures). Builds tiny data (tests/tiny_ava.py), initialised
checkpoints (tests/checkpoint_fixture.py, `demo:mobilenet_v2,smoke` at 32 px) and test images
(tests/image_fixture.py) under --workdir, then runs each fault of the catalogue as a subprocess
of the real command (`python -m launch.predict|evaluate|train|prepare_data`, cwd = repo root)
and labels it:
  one-line   non-zero exit, no 'Traceback' on stderr, the last non-empty stderr line (or the
             JSON `error` of a per-image failure) names the cause;
  traceback  any 'Traceback' on stderr;
  wrong      exit 0 where a failure was due, a result that is wrong (NaN in the JSON, a damaged
             checkpoint accepted, EXIF-rotated score/box differing), or an expected success
             that failed;
  ok         a case that should succeed and did.
Prints the table and totals, writes <workdir>/fault_drill.json; exit 1 on any traceback or
wrong result. --heavy adds a 10000x10000 PNG predicted with overlays, crops and --aspect=4:3
(one and eight copies; peak RSS of the child from os.wait4) and kill -9 during training then a
resuming rerun.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / 'tests')):
  if _p not in sys.path:
    sys.path.insert(0, _p)

CONFIG = 'demo:mobilenet_v2,smoke'
OUTCOMES = ('one-line', 'traceback', 'wrong', 'ok')


@dataclasses.dataclass
class Case:
  name: str
  args: list[str]                      # after `python -m`
  expect: str = 'fail'                 # 'fail' (one-line error) or 'ok'
  check: Callable[[Result], str | None] | None = None  # returns why the result is wrong
  setup: Callable[[], None] | None = None
  heavy: bool = False


@dataclasses.dataclass
class Result:
  fault: str
  command: str
  outcome: str
  exit_code: int
  peak_rss_mb: float
  stderr_line: str
  note: str = ''
  stdout: str = dataclasses.field(default='', repr=False)
  stderr: str = dataclasses.field(default='', repr=False)


def last_line(text: str) -> str:
  lines = [l for l in text.splitlines() if l.strip()]
  return lines[-1].strip() if lines else ''


def classify(expect: str, rc: int, stdout: str, stderr: str, wrong: str | None = None) -> str:
  """The outcome label (see the module doc)."""
  if 'Traceback' in stderr:
    return 'traceback'
  if wrong:
    return 'wrong'
  if 'NaN' in stdout or 'Infinity' in stdout:
    return 'wrong'
  if expect == 'ok':
    return 'ok' if rc == 0 else 'wrong'
  if rc == 0:
    return 'wrong'
  msg = last_line(stderr) or _json_error(stdout)
  return 'one-line' if msg else 'wrong'


def _json_error(stdout: str) -> str:
  for line in stdout.splitlines():
    try:
      d = json.loads(line)
    except ValueError:
      continue
    if isinstance(d, dict) and d.get('error'):
      return str(d['error'])
  return ''


def _json_lines(stdout: str) -> list[dict]:
  out = []
  for line in stdout.splitlines():
    try:
      d = json.loads(line)
    except ValueError:
      continue
    if isinstance(d, dict):
      out.append(d)
  return out


def spawn(args: list[str], env=None) -> subprocess.Popen:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  return subprocess.Popen([sys.executable, '-m', *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)


def wait_rss(p: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str, float]:
  """(exit code, stdout, stderr, peak RSS MB) of the child, reaped with os.wait4."""
  import threading  # pylint: disable=import-outside-toplevel
  bufs = {}
  readers = [threading.Thread(target=lambda k=k, f=f: bufs.__setitem__(k, f.read()))
             for k, f in (('out', p.stdout), ('err', p.stderr))]
  for t in readers:
    t.start()
  deadline = time.time() + timeout
  while True:
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid:
      break
    if time.time() > deadline:
      os.killpg(p.pid, signal.SIGKILL)
    time.sleep(0.05)
  for t in readers:
    t.join()
  rc = os.waitstatus_to_exitcode(status)
  p.returncode = rc
  return rc, bufs.get('out', ''), bufs.get('err', ''), ru.ru_maxrss / 1024.0


def run_case(c: Case) -> Result:
  if c.setup:
    c.setup()
  cmd = 'python -m ' + ' '.join(c.args)
  rc, out, err, rss = wait_rss(spawn(c.args))
  res = Result(c.name, cmd, '', rc, round(rss, 1), last_line(err) or _json_error(out),
               stdout=out, stderr=err)
  wrong = None
  if 'Traceback' not in err and c.check is not None:
    wrong = c.check(res)
  res.note = wrong or ''
  if not wrong and ('NaN' in out or 'Infinity' in out):
    res.note = 'non-finite in stdout: ' + next(
        l for l in out.splitlines() if 'NaN' in l or 'Infinity' in l)[:300]
  res.outcome = classify(c.expect, rc, out, err, wrong)
  return res


# ---------------------------------------------------------------------------------------------
# Building the material.


def _png(path: Path, shape=(96, 128)) -> Path:
  import image_fixture  # pylint: disable=import-outside-toplevel
  path.write_bytes(image_fixture.encode(image_fixture.smooth_photo(*shape), 'PNG'))
  return path


class Material:
  """Everything the catalogue needs, under `root`."""

  def __init__(self, root: Path, checkpoints: bool = True):
    import checkpoint_fixture  # pylint: disable=import-outside-toplevel
    import image_fixture  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    self.root = root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img = self.img = root / 'img'
    img.mkdir(exist_ok=True)
    self.good = _png(img / 'good.png')
    jpg = image_fixture.encode(image_fixture.smooth_photo(), 'JPEG')
    (img / 'upright.jpg').write_bytes(jpg)
    (img / 'rotated.jpg').write_bytes(
        image_fixture.encode(image_fixture.smooth_photo(), 'JPEG', orientation=6))
    (img / 'corrupt.jpg').write_bytes(jpg[:200] + bytes(range(256)) * 8 + jpg[-200:])
    png = self.good.read_bytes()
    (img / 'truncated.png').write_bytes(png[:len(png) // 2])
    (img / 'notes.jpg').write_text('this is not an image\n')
    Image.new('RGB', (1, 1), (9, 9, 9)).save(img / 'one_px.png')
    (img / 'bomb.png').write_bytes(image_fixture.huge_header_png(12000, 12000))
    (img / 'folder').mkdir(exist_ok=True)
    self.ckpt_base = root / 'ckpt_base'
    self.wd = root / 'wd'  # intact: predict / evaluate read it
    if not checkpoints:  # the cases that fail before any checkpoint is read
      self.wd.mkdir(exist_ok=True)
      return
    if not (self.ckpt_base / 'checkpoints').exists():
      config = checkpoint_fixture.smoke_config('mobilenet_v2')
      checkpoint_fixture.write_init_checkpoint(self.ckpt_base, config, step=1)
      checkpoint_fixture.write_init_checkpoint(self.ckpt_base, config, step=2)
    if not self.wd.exists():
      shutil.copytree(self.ckpt_base, self.wd)

  # -- lazily built (the AVA / training cases only)
  def data_dir(self) -> Path:
    from tiny_ava import write_tiny_ava  # pylint: disable=import-outside-toplevel
    d = self.root / 'tfds'
    if not d.exists():
      from aesthetics_jax.data import dataset  # pylint: disable=import-outside-toplevel
      dataset.prepare(write_tiny_ava(self.root / 'ava', num_train=16, num_test=8, size=40),
                      d, 'style')
    return d

  def damaged(self, name: str, damage: Callable[[Path], object]) -> Path:
    """A copy of the intact workdir with `damage(checkpoints/2)` applied."""
    wd = self.root / f'wd_{name}'
    if wd.exists():
      shutil.rmtree(wd)
    shutil.copytree(self.ckpt_base, wd)
    cfg = json.loads((wd / 'config.json').read_text())
    cfg['data']['data_dir'] = str(self.root / 'tfds')
    (wd / 'config.json').write_text(json.dumps(cfg))
    damage(wd / 'checkpoints' / '2')
    return wd

  def ava(self, name: str, edit: Callable[[Path], None]) -> Path:
    from tiny_ava import write_tiny_ava  # pylint: disable=import-outside-toplevel
    d = write_tiny_ava(self.root / f'ava_{name}', num_train=8, num_test=8, size=40)
    edit(d)
    return d


def _data_file(step_dir: Path) -> Path:
  return max((p for p in (step_dir / 'variables').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def _flip(p: Path):
  b = bytearray(p.read_bytes())
  for i in range(len(b) // 3, min(len(b) // 3 + 4096, len(b))):
    b[i] ^= 0xFF
  p.write_bytes(bytes(b))


def _ava_edit(field: int, value: str, line: int = 0):
  def edit(d: Path):
    lines = (d / 'AVA.txt').read_text().splitlines()
    cols = lines[line].split()
    cols[field] = value
    lines[line] = ' '.join(cols)
    (d / 'AVA.txt').write_text('\n'.join(lines) + '\n')
  return edit


def _per_image_error(res: Result) -> str | None:
  """Predict on one bad image: exit 1 and a JSON `error`, no score."""
  rows = _json_lines(res.stdout)
  if res.exit_code == 0 or not rows or 'error' not in rows[0] or 'mean_score' in rows[0]:
    return f'expected a per-image error, got exit {res.exit_code}: {res.stdout[:200]!r}'
  return None


def _exif_same(res: Result) -> str | None:
  rows = _json_lines(res.stdout)
  if len(rows) != 2 or any('error' in r for r in rows):
    return f'expected 2 scored rows: {res.stdout[:300]!r}'
  a, b = rows
  if abs(a['mean_score'] - b['mean_score']) > 0.01:
    return f'scores differ: {a["mean_score"]} vs {b["mean_score"]}'
  if a.get('box') != b.get('box'):
    return f'boxes differ: {a.get("box")} vs {b.get("box")}'
  return None


def _finite_json(res: Result) -> str | None:
  for r in _json_lines(res.stdout):
    for k in ('mean_score', 'score_std', 'p_high'):
      if k in r and not (isinstance(r[k], (int, float)) and math.isfinite(r[k])):
        return f'{k}={r[k]!r}'
  return None


def catalogue(m: Material, heavy: bool = False, only: set[str] | None = None) -> list[Case]:
  """The faults (names unique). `only` restricts to those names (built lazily)."""
  wd, img = str(m.wd), m.img
  pred = ['launch.predict', f'--workdir={wd}']
  cases: list[Case] = []

  def add(name, *a, **kw):
    if only is None or name in only:
      cases.append(Case(name, *a, **kw))

  # -- images (predict)
  for name, f in (('corrupt JPEG', 'corrupt.jpg'), ('truncated PNG', 'truncated.png'),
                  ('non-image file', 'notes.jpg'), ('1x1 image', 'one_px.png'),
                  ('decompression bomb 12000x12000 PNG', 'bomb.png'),
                  ('missing file', 'nope.jpg'), ('folder input (empty)', 'folder')):
    add(name, [*pred, str(img / f)], check=_per_image_error)
  add('EXIF-rotated vs upright', [*pred, str(img / 'upright.jpg'), str(img / 'rotated.jpg')],
      expect='ok', check=_exif_same)
  add('folder input (images)', [*pred, str(img)], expect='fail', check=None)
  add('bad --cam_method', [*pred, '--cam_method=gradkam', str(m.good)])
  add('bad --config argument (train)', ['launch.train', '--config=demo:resnet9,smoke',
                                        f'--workdir={m.root / "t_badcfg"}'])
  add('misspelled override (train)', ['launch.train', f'--config={CONFIG}',
                                      f'--workdir={m.root / "t_typo"}',
                                      '--config.optim.lerning_rate=0.1'])
  if only is None or 'missing starting weights (train)' in only:
    fresh = m.root / 't_noweights'
    add('missing starting weights (train)', [
        'launch.train', f'--config={CONFIG}', f'--workdir={fresh}',
        f'--config.data.data_dir={m.data_dir()}',
        f'--config.model.init_weights={m.root / "no_such_weights.npz"}'],
        check=lambda r: None if r.exit_code == 2 and not fresh.exists() else
        f'exit {r.exit_code}, workdir made: {fresh.exists()} (want 2, none)')
  add('misspelled override (evaluate)', ['launch.evaluate', f'--workdir={wd}',
                                         '--config.eval.cam_methodz=x'])
  add('unwritable --output', [*pred, '--output=/proc/fault_drill/out.jsonl', str(m.good)])
  good_bytes = m.good.read_bytes()
  add('--output naming a photo (space form)', [*pred, '--output', str(m.good),
                                                str(img / 'upright.jpg')],
      check=lambda r: None if m.good.read_bytes() == good_bytes else 'the photo was overwritten')
  add('bad flag type (--step=abc)', [*pred, '--step=abc', str(m.good)])
  if only is None or '** through two links back up' in only:
    loop = m.root / 'loop' / 'sub'
    loop.mkdir(parents=True, exist_ok=True)
    shutil.copy(m.good, loop / 'a.png')
    for name in ('up', 'up2'):
      if not (loop / name).is_symlink():
        (loop / name).symlink_to('..')
    add('** through two links back up', [*pred, f'{m.root / "loop"}/**/*.png'], expect='ok',
        check=lambda r: None if len(_json_lines(r.stdout)) == 1 else
        f'{len(_json_lines(r.stdout))} lines for one image')
  add('extreme crop aspect (--aspect=inf:1)', [*pred, '--aspect=inf:1', str(m.good)])
  add('evaluate on another data.subset', ['launch.evaluate', f'--workdir={wd}',
                                          '--config.data.subset=all'])
  if only is None or 'evaluate while another holds W/eval' in only:
    busy = m.root / 'wd_busy'
    lock = busy / 'eval' / '.lock'

    def setup_busy():
      if not busy.exists():
        shutil.copytree(m.ckpt_base, busy)
      lock.parent.mkdir(exist_ok=True)
      # pid 1 is alive on every host; without proc_start the holder counts as alive.
      lock.write_text(json.dumps({'pid': 1, 'host': socket.gethostname(),
                                  'started': 'fault drill'}))
    add('evaluate while another holds W/eval', ['launch.evaluate', f'--workdir={busy}'],
        setup=setup_busy, check=lambda r: None if lock.is_file() and not (
            busy / 'eval' / 'metrics.json').exists() else 'the lock was taken or files written')
  add('unknown best_metric (train)', ['launch.train', f'--config={CONFIG}',
                                      f'--workdir={m.root / "t_best"}',
                                      '--config.best_metric=bogus'])
  # -- checkpoints
  if only is None or any(n.startswith('ckpt') for n in only):
    def dmg(name, fn):
      return str(m.damaged(name, fn))
    m.data_dir()
    flip = dmg('flip', lambda s: _flip(_data_file(s)))
    add('ckpt bit-flipped data file (evaluate)', ['launch.evaluate', f'--workdir={flip}'])
    add('ckpt bit-flipped data file (predict)', ['launch.predict', f'--workdir={flip}',
                                                 str(m.good)])
    trunc = dmg('trunc', lambda s: os.truncate(_data_file(s), _data_file(s).stat().st_size // 2))
    add('ckpt truncated data file (predict)', ['launch.predict', f'--workdir={trunc}',
                                               str(m.good)])
    man = dmg('manifest', lambda s: os.unlink(s / 'variables' / 'manifest.ocdbt'))
    add('ckpt deleted manifest (evaluate)', ['launch.evaluate', f'--workdir={man}'])
    garb = dmg('garbage', lambda s: (s.parents[1] / 'config.json').write_text('{\n'))
    add('ckpt garbage config.json (predict)', ['launch.predict', f'--workdir={garb}',
                                               str(m.good)])
  # -- workdirs
  if only is None or 'file-shaped workdir' in only or 'read-only workdir' in only:
    f = m.root / 'a_file'
    f.write_text('x')
    add('file-shaped workdir', ['launch.train', f'--config={CONFIG}', f'--workdir={f}',
                                f'--config.data.data_dir={m.data_dir()}'])
    add('read-only workdir', ['launch.train', f'--config={CONFIG}',
                              '--workdir=/proc/fault_drill_wd',
                              f'--config.data.data_dir={m.data_dir()}'])
  # -- AVA metadata (prepare_data)
  for name, field, value in (('AVA.txt vote 3e9', 2, '3000000000'),
                             ('AVA.txt 30-digit vote', 3, '9' * 30),
                             ('AVA.txt 20-digit image id', 1, '9' * 20),
                             ('AVA.txt challenge id 4e9', 14, '4000000000')):
    if only is None or name in only:
      d = m.ava(name.split()[1] + str(field), _ava_edit(field, value))
      add(name, ['launch.prepare_data', f'--ava_dir={d}', f'--data_dir={d}_tfds'])
  if only is None or any(n.startswith('tag name') for n in only):
    def tag(d: Path):
      weird = '$\\foo{1$'
      (d / 'tags.txt').write_text(''.join(
          f'{t} {weird if t in (1, 2, 3) else "Tag" + str(t)}\n' for t in range(1, 67)))
    d = m.ava('tag', tag)
    add('tag name $\\foo{1$ (prepare_data)', ['launch.prepare_data', f'--ava_dir={d}',
                                               f'--data_dir={d}_tfds'], expect='ok')
    ev = m.root / 'wd_tag'
    def setup_ev():
      if ev.exists():
        shutil.rmtree(ev)
      shutil.copytree(m.ckpt_base, ev)
    add('tag name $\\foo{1$ (evaluate figures)', [
        'launch.evaluate', f'--workdir={ev}', f'--config.data.data_dir={d}_tfds',
        "--config.eval.cam_methods=('gradcam',)"], expect='ok', setup=setup_ev,
        check=lambda r: None if list((ev / 'eval' / 'figures').glob('*.png'))
        else 'no figures written')
  if heavy:
    import image_fixture  # pylint: disable=import-outside-toplevel
    big = img / 'huge'
    big.mkdir(exist_ok=True)
    image_fixture.big_png(big / 'h0.png', 10000, 10000)
    eight = img / 'huge8'
    eight.mkdir(exist_ok=True)
    for i in range(8):
      if not (eight / f'h{i}.png').exists():
        os.link(big / 'h0.png', eight / f'h{i}.png')
    for name, src in (('10000x10000 PNG, overlay+crop 4:3 (x1)', big),
                      ('10000x10000 PNG, overlay+crop 4:3 (x8)', eight)):
      o = m.root / ('out_' + src.name)
      add(name, [*pred, f'--overlay_dir={o}/ov', f'--crop_dir={o}/crop', '--aspect=4:3',
                 str(src)], expect='ok', check=_finite_json, heavy=True)
  return cases


def two_trainers(m: Material) -> list[Result]:
  """One trainer in the background; a second on the same workdir must refuse in one line."""
  w = m.root / 't_two'
  shutil.rmtree(w, ignore_errors=True)
  args = ['launch.train', f'--config={CONFIG}', f'--workdir={w}',
          f'--config.data.data_dir={m.data_dir()}']
  first = spawn(args)
  deadline = time.time() + 300
  while not (w / '.lock').exists() and time.time() < deadline and first.poll() is None:
    time.sleep(0.2)
  second = run_case(Case('two trainers on one workdir (second)', args))
  rc, out, err, rss = wait_rss(first)
  ok = rc == 0 and (w / 'checkpoints' / '2').exists()
  note = None if ok else 'no checkpoint at step 2'
  bad = [l for l in out.splitlines() if 'NaN' in l or 'Infinity' in l]
  r1 = Result('two trainers on one workdir (first, smoke train)', 'python -m ' + ' '.join(args),
              classify('ok', rc, out, err, note), rc, round(rss, 1), last_line(err),
              note=note or (f'non-finite in stdout: {bad[0][:300]}' if bad else ''))
  # The trained workdir: its only checkpoint bit-flipped, a rerun with more steps must refuse.
  fb = m.root / 't_fallback'
  shutil.rmtree(fb, ignore_errors=True)
  shutil.copytree(w, fb)
  steps = sorted(int(p.name) for p in (fb / 'checkpoints').iterdir() if p.name.isdigit())
  _flip(_data_file(fb / 'checkpoints' / str(steps[-1])))
  r2 = run_case(Case(f'ckpt bit-flipped data file (train; steps kept: {steps})', [
      'launch.train', f'--config={CONFIG}', f'--workdir={fb}',
      f'--config.data.data_dir={m.data_dir()}', '--config.num_train_steps=3'],
      expect='fail' if len(steps) == 1 else 'ok',
      check=None if len(steps) == 1 else lambda r: None if (fb / 'checkpoints' / '3').exists()
      else 'no checkpoint at step 3 after falling back'))
  return [second, r1, r2]


def kill_and_resume(m: Material) -> list[Result]:
  w = m.root / 't_kill'
  shutil.rmtree(w, ignore_errors=True)
  args = ['launch.train', f'--config={CONFIG}', f'--workdir={w}',
          f'--config.data.data_dir={m.data_dir()}', '--config.num_train_steps=6']
  p = spawn(args)
  deadline = time.time() + 400
  while not (w / 'checkpoints' / '2').exists() and time.time() < deadline and p.poll() is None:
    time.sleep(0.2)
  os.killpg(p.pid, signal.SIGKILL)
  wait_rss(p)
  res = run_case(Case('kill -9 during training, rerun resumes', args, expect='ok',
                      check=lambda r: None if (w / 'checkpoints' / '6').exists()
                      else 'last step 6 not reached'))
  return [res]


COLUMNS = ('fault', 'command', 'outcome', 'exit_code', 'peak_rss_mb', 'stderr_line')


def totals(results: list[Result]) -> dict:
  return {'tried': len(results),
          'one_line': sum(r.outcome == 'one-line' for r in results),
          'traceback': sum(r.outcome == 'traceback' for r in results),
          'wrong': sum(r.outcome == 'wrong' for r in results),
          'ok': sum(r.outcome == 'ok' for r in results),
          'peak_rss_mb_max': max((r.peak_rss_mb for r in results), default=0.0)}


def print_table(results: list[Result]) -> None:
  head = ('fault', 'command', 'outcome', 'exit', 'RSS MB', 'stderr (message line)')
  print(' | '.join(head))
  for r in results:
    cmd = r.command.replace(str(ROOT), '.')
    cmd = cmd if len(cmd) <= 70 else cmd[:67] + '...'
    msg = r.stderr_line if len(r.stderr_line) <= 160 else r.stderr_line[:157] + '...'
    if r.note:
      msg += f'  [{r.note}]'
    print(f'{r.fault} | {cmd} | {r.outcome} | {r.exit_code} | {r.peak_rss_mb:.0f} | {msg}')


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from aesthetics_jax import io  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    print(f'fault_drill: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  root = Path(flags.FLAGS.workdir)
  heavy = flags.FLAGS.heavy
  m = Material(root)
  cases = catalogue(m, heavy=heavy)
  light = [c for c in cases if not c.heavy]
  with ThreadPoolExecutor(2) as ex:
    results = list(ex.map(run_case, light))
  results += two_trainers(m)
  results += [run_case(c) for c in cases if c.heavy]
  if heavy:
    results += kill_and_resume(m)
  print_table(results)
  t = totals(results)
  print(f"tried {t['tried']}, handled in one line {t['one_line']}, tracebacks "
        f"{t['traceback']}, wrong results {t['wrong']}, ok {t['ok']}, peak RSS max "
        f"{t['peak_rss_mb_max']:.0f} MB")
  io.atomic_write_json(root / 'fault_drill.json', {
      'rows': [{k: getattr(r, k) for k in COLUMNS} | {'note': r.note} for r in results],
      'totals': t, 'heavy': bool(heavy)})
  return 1 if t['traceback'] or t['wrong'] else 0


def run_cli():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string('workdir', None, 'Scratch folder for the drill material and results.')
  flags.DEFINE_bool('heavy', False, 'Also the 10000x10000 PNG and kill -9 / resume cases.')
  flags.mark_flags_as_required(['workdir'])
  from aesthetics_jax.cli import common  # pylint: disable=import-outside-toplevel
  # common's parser: --help exits 0 (absl's exits 1) and a bad flag is one line.
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=common.parse_flags)


if __name__ == '__main__':
  run_cli()
