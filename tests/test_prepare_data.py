"""`python -m launch.prepare_data`: summary output, reuse, and one-line errors (subprocess)."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image
import pytest

from aesthetics_jax.data import dataset

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'launch.prepare_data', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def _jpeg(color):
  buf = io.BytesIO()
  Image.new('RGB', (40, 36), color).save(buf, 'JPEG')
  return buf.getvalue()


def _write_ava(root: Path, ava_rows: list[str]) -> Path:
  (root / 'images').mkdir(parents=True)
  (root / 'style_image_lists').mkdir()
  (root / 'AVA.txt').write_text(''.join(r + '\n' for r in ava_rows))
  (root / 'tags.txt').write_text('1 Abstract\n2 Nature\n')
  (root / 'challenges.txt').write_text('7 Test\n')
  (root / 'style_image_lists' / 'train.jpgl').write_text('11\n12\n13\n')
  (root / 'style_image_lists' / 'test.jpgl').write_text('21\n')
  for i, c in ((11, (200, 10, 10)), (12, (10, 200, 10)), (21, (10, 10, 200))):
    (root / 'images' / f'{i}.jpg').write_bytes(_jpeg(c))
  return root


GOOD_ROWS = [
    '1 11 0 1 2 3 4 3 2 1 0 0 1 0 7',
    '2 12 0 0 1 2 3 4 5 3 1 0 2 1 7',
    '3 13 0 0 1 2 3 4 5 3 1 0 2 0 7',   # listed, tagged, but images/13.jpg is missing
    '4 21 1 2 3 4 3 2 1 0 0 0 2 0 7',
]


def test_prepare_prints_counts_then_reuses(tmp_path):
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  first = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}', '--subset=style')
  assert first.returncode == 0, first.stderr
  skipped_csv = data_dir / 'ava' / 'style' / '1.0.0' / 'skipped.csv'
  assert 'train: kept 2, skipped 1' in first.stdout
  assert 'test: kept 1, skipped 0' in first.stdout
  assert f'skipped.csv: {skipped_csv}' in first.stdout
  assert skipped_csv.read_text() == 'split,image_id,reason\ntrain,13,missing\n'
  for name in ('mean_score_hist.png', 'tag_counts.png'):
    assert str(skipped_csv.parent / 'figures' / name) in first.stdout
    assert (skipped_csv.parent / 'figures' / name).stat().st_size > 1000
  assert 'Reused' not in first.stdout
  # TFDS's "Downloading and preparing dataset Unknown size" (AVA is never downloaded) and its
  # "done" line no longer mix into the command's output.
  assert 'Downloading' not in first.stdout and 'Subsequent calls' not in first.stdout

  second = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}', '--subset=style')
  assert second.returncode == 0, second.stderr
  assert 'Reused prepared dataset' in second.stdout and 'no rebuild' in second.stdout
  assert 'train: kept 2, skipped 1' in second.stdout
  assert 'Validating' not in second.stderr  # nothing was re-validated

  # Another root (a copy with one AVA.txt row less) must not be served this root's dataset.
  other = shutil.copytree(ava_dir, tmp_path / 'other')
  rows = (other / 'AVA.txt').read_text().splitlines(keepends=True)
  (other / 'AVA.txt').write_text(''.join(rows[:-1]))
  third = _run(f'--ava_dir={other}', f'--data_dir={data_dir}', '--subset=style')
  assert third.returncode == 2 and third.stdout == ''
  assert third.stderr.strip().splitlines() == [
      f'prepare_data: {skipped_csv.parent}: prepared from --ava_dir={ava_dir}, whose AVA.txt, '
      f'tags.txt or style lists differ from those of --ava_dir={other}; use a fresh '
      f'--data_dir, or delete {skipped_csv.parent} to rebuild it'], third.stderr
  # A trainer pointed at the other root and this data_dir: the same refusal, before any work.
  train = subprocess.run(
      [sys.executable, '-m', 'launch.train', '--config=demo:vgg16,smoke',
       f'--workdir={tmp_path / "w"}', f'--config.data.ava_dir={other}',
       f'--config.data.data_dir={data_dir}'], cwd=REPO, capture_output=True, text=True,
      timeout=120)
  assert train.returncode == 2 and 'Traceback' not in train.stderr, train.stderr
  assert train.stderr.strip().splitlines()[-1].startswith(
      f'train: {skipped_csv.parent}: prepared from --config.data.ava_dir={ava_dir}, whose '
      'AVA.txt'), train.stderr
  assert not (tmp_path / 'w').exists()


def test_malformed_row_is_one_line_and_exit_1(tmp_path):
  rows = list(GOOD_ROWS)
  rows[1] = '2 12 0 0 1 two 3 4 5 3 1 0 2 1 7'
  ava_dir = _write_ava(tmp_path / 'ava', rows)
  res = _run(f'--ava_dir={ava_dir}', f'--data_dir={tmp_path / "tfds"}')
  assert res.returncode == 1
  assert 'Traceback' not in res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1, res.stderr
  assert f'{ava_dir / "AVA.txt"}:2' in lines[0] and "'two'" in lines[0]
  assert not (tmp_path / 'tfds' / 'ava' / 'style' / '1.0.0').exists()


def test_missing_ava_dir_is_one_line_and_exit_2(tmp_path):
  """A bad flag, found before any work (it was exit 1, as a failed run)."""
  res = _run(f'--ava_dir={tmp_path / "nowhere"}', f'--data_dir={tmp_path / "tfds"}')
  assert res.returncode == 2 and not (tmp_path / 'tfds').exists()
  assert 'Traceback' not in res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and str(tmp_path / 'nowhere') in lines[0], res.stderr


def test_unwritable_data_dir_is_one_line_before_any_image_is_validated(tmp_path):
  """Exit 2 at once (a file stands where --data_dir must be created): on AVA, validating every
  image first would take minutes before the same failure."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  (tmp_path / 'file').write_text('x')
  res = _run(f'--ava_dir={ava_dir}', f'--data_dir={tmp_path / "file" / "tfds"}')
  assert res.returncode == 2 and res.stdout == ''
  lines = res.stderr.strip().splitlines()
  assert lines == [f'prepare_data: --data_dir={tmp_path / "file" / "tfds"} cannot be created: '
                   f'{tmp_path / "file"} is a file; pass a folder you can write to'], res.stderr


def test_full_disk_is_one_line_exit_1_and_leaves_no_partial_dataset(tmp_path):
  """TFDS's writer failing with ENOSPC (simulated: no real full disk in tests)."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  code = ('from tensorflow_datasets.core import writer\n'
          'def full(self):\n'
          '  raise RuntimeError("write() failed: No space left on device")\n'
          'writer.Writer.finalize = full\n'
          'from aesthetics_jax.cli import prepare_data\n'
          'prepare_data.run_cli()\n')
  res = subprocess.run([sys.executable, '-c', code, f'--ava_dir={ava_dir}',
                        f'--data_dir={data_dir}'], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 1 and 'Traceback' not in res.stderr, res.stderr
  assert res.stderr.strip().splitlines()[-1] == (
      f'prepare_data: --data_dir={data_dir}: No space left on device while writing the '
      'dataset; free space there or choose another --data_dir'), res.stderr
  assert list((data_dir / 'ava' / 'style').iterdir()) == []  # no 1.0.0, no incomplete.*


def test_a_file_where_a_folder_goes_and_a_damaged_rerun_are_one_line(tmp_path):
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  (data_dir / 'ava').mkdir(parents=True)
  (data_dir / 'ava' / 'style').write_text('')  # a file where TFDS makes ava/style/
  res = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}', '--resized_sizes=')
  assert res.returncode == 1 and 'Traceback' not in res.stderr
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith(f'prepare_data: {data_dir / "ava" / "style"}: a file stands where')
  assert 'choose another --data_dir' in last  # errno's text alone was the whole message

  (data_dir / 'ava' / 'style').unlink()
  assert _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}',
              '--resized_sizes=').returncode == 0
  skipped_csv = data_dir / 'ava' / 'style' / '1.0.0' / 'skipped.csv'
  skipped_csv.write_text('split,image\ntrain,13\n')  # edited by hand: a KeyError traceback
  res = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}', '--resized_sizes=')
  assert res.returncode == 1 and 'Traceback' not in res.stderr
  last = res.stderr.strip().splitlines()[-1]
  assert 'damaged' in last and 'rerun aesthetics-prepare-data' in last


def test_bad_worker_count_and_store_bound_are_usage_errors(tmp_path):
  """--num_workers=-3 was exit 1 with ThreadPoolExecutor's 'max_workers must be greater than
  0' (after reading the metadata); --resized_max_gb=nan or -1 were taken (nan: no bound)."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  bound = 'use a positive number of GiB, e.g. 16 (--resized_sizes= for no stores)'
  for flag, fix in (('--num_workers=-3', 'use 0 (one thread per CPU core) or a positive '
                     'number of threads'),
                    ('--resized_max_gb=nan', bound), ('--resized_max_gb=-1', bound)):
    res = _run(f'--ava_dir={ava_dir}', f'--data_dir={tmp_path / "tfds"}', flag)
    assert res.returncode == 2 and res.stdout == '', (flag, res.stderr)
    assert res.stderr.splitlines() == [f'prepare_data: {flag}: {fix}'], res.stderr
    assert not (tmp_path / 'tfds').exists()


# Ctrl-C at a given stage of a prepare: the patched step sends this process SIGINT.
_INTERRUPT = '''
import os, signal, sys
from aesthetics_jax.data import dataset, resize, selection
stage, sig = sys.argv.pop(1), getattr(signal, sys.argv.pop(1))
real = {'validate': selection.check_image_file, 'write': dataset.upright_bytes,
        'resized': resize.resize_train_np}[stage]
def interrupted(*args, **kwargs):
  os.kill(os.getpid(), sig)
  return real(*args, **kwargs)
module = {'validate': selection, 'write': dataset, 'resized': resize}[stage]
setattr(module, real.__name__, interrupted)
from aesthetics_jax.cli import prepare_data
prepare_data.run_cli()
'''


@pytest.mark.parametrize('stage', ['validate', 'write', 'resized'])
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_partial_output(tmp_path, stage):
  """It was a KeyboardInterrupt traceback (and the process killed by SIGINT)."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  res = subprocess.run([sys.executable, '-c', _INTERRUPT, stage, 'SIGINT', f'--ava_dir={ava_dir}',
                        f'--data_dir={data_dir}'], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 130 and 'Traceback' not in res.stderr, (res.returncode, res.stderr)
  d = data_dir / 'ava' / 'style' / '1.0.0'
  if stage == 'resized':
    assert res.stderr.strip().splitlines()[-1] == (
        'prepare_data: interrupted while storing the resized training images; the dataset at '
        f'{d} is kept: rerun the same command to store them (training decodes without them)')
    assert dataset.is_prepared(data_dir) and list((d.parent / 'resized').iterdir()) == []
  else:
    assert res.stderr.strip().splitlines()[-1] == (
        'prepare_data: interrupted; nothing of this run was kept: rerun the same command to '
        'start over')
    assert not (data_dir / 'ava' / 'style').exists() or [
        p.name for p in (data_dir / 'ava' / 'style').iterdir()] == []
  rerun = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}')
  assert rerun.returncode == 0 and 'train images resized to 256' in rerun.stdout, rerun.stderr


@pytest.mark.parametrize('stage', ['write', 'resized'])
def test_a_rerun_removes_what_a_killed_prepare_left(tmp_path, stage):
  """kill -9 leaves TFDS's incomplete.* folder or the store's .tmp file: no rerun removed
  them (up to the whole dataset's size each)."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  folder = data_dir / 'ava' / 'style'
  killed = subprocess.run([sys.executable, '-c', _INTERRUPT, stage, 'SIGKILL',
                           f'--ava_dir={ava_dir}', f'--data_dir={data_dir}'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert killed.returncode == -9, killed.stderr
  left = [*folder.glob('incomplete.*'), *folder.glob('resized/.*.tmp')]
  assert len(left) == 1, left
  rerun = _run(f'--ava_dir={ava_dir}', f'--data_dir={data_dir}')
  assert rerun.returncode == 0, rerun.stderr
  assert not left[0].exists()
  assert sorted(p.name for p in folder.iterdir()) == ['1.0.0', 'resized']


@pytest.mark.parametrize('name', ['tags.txt', 'style_image_lists/test.jpgl'])
def test_missing_metadata_file_is_exit_2_before_any_image_is_validated(tmp_path, name):
  """A root without tags.txt failed only after every image was validated (minutes on AVA),
  exit 1; one without a style list exited 1 though a missing input is a usage error."""
  ava_dir = _write_ava(tmp_path / 'ava', GOOD_ROWS)
  (ava_dir / name).unlink()
  res = _run(f'--ava_dir={ava_dir}', f'--data_dir={tmp_path / "tfds"}')
  assert res.returncode == 2 and res.stdout == '' and 'Validating' not in res.stderr
  assert res.stderr.strip().splitlines() == [
      f'prepare_data: {ava_dir / name}: not found; pass --ava_dir=<AVA root holding AVA.txt, '
      'tags.txt, style_image_lists/, images/>'], res.stderr
  # --subset=all reads no style list.
  if name.startswith('style'):
    res = _run(f'--ava_dir={ava_dir}', f'--data_dir={tmp_path / "tfds"}', '--subset=all',
               '--resized_sizes=')
    assert 'style_image_lists' not in res.stderr, res.stderr


def test_a_root_misplaced_or_named_in_another_case_names_the_fix(tmp_path):
  """'AVA.txt: not found; pass --ava_dir=<AVA root ...>' for a root one folder down (an
  archive's AVA_dataset/), --ava_dir naming AVA.txt itself, or tags.txt copied as Tags.txt
  where names ignore case: the user saw the file there and no reason."""
  root = _write_ava(tmp_path / 'dl' / 'AVA_dataset', GOOD_ROWS)
  (root / 'tags.txt').rename(root / 'Tags.txt')
  (root / 'style_image_lists').rename(root / 'Style_Image_Lists')
  for ava_dir, subset, fix in (
      (tmp_path / 'dl', 'style', f'it is one folder down: pass --ava_dir={root}'),
      (root / 'AVA.txt', 'style', f'{root / "AVA.txt"} is a file: pass the folder holding it, '
       f'--ava_dir={root}'),
      (root, 'all', 'found Tags.txt: names are case-sensitive here, rename it to tags.txt')):
    with pytest.raises(dataset.ava.AvaError) as e:
      dataset.check_ava_root(ava_dir, subset)
    assert str(e.value).endswith(f': not found; {fix}'), e.value
  (root / 'Tags.txt').rename(root / 'tags.txt')
  with pytest.raises(dataset.ava.AvaError, match='found Style_Image_Lists/train.jpgl: names are '
                     'case-sensitive here, rename it to style_image_lists/train.jpgl$'):
    dataset.check_ava_root(root, 'style')
