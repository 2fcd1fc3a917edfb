"""aesthetics_jax.io: JSON that stays valid."""
import errno
import json
import os
import signal
import stat
import threading

import numpy as np
import pytest

from aesthetics_jax import io as io_lib


def test_json_safe_turns_non_finite_into_null():
  v = io_lib.json_safe({'lcc': float('nan'), 'x': np.float32(0.5), 'ci': [np.inf, -np.inf, 1],
                        'n': np.int64(3), 's': 'ok'})
  assert json.dumps(v, allow_nan=False) == (
      '{"lcc": null, "x": 0.5, "ci": [null, null, 1], "n": 3, "s": "ok"}')


def test_atomic_write_through_links_pipes_and_long_names(tmp_path):
  """A link is written through (replacing the link left its target stale), a FIFO or device
  is written to (it cannot be renamed over), and a long but valid name gets a temporary name
  within the 255-byte limit."""
  target = tmp_path / 'real.jsonl'
  target.write_text('old\n')
  link = tmp_path / 'link.jsonl'
  link.symlink_to(target)
  io_lib.atomic_write_text(link, 'new\n')
  assert link.is_symlink() and target.read_text() == 'new\n'

  fifo = tmp_path / 'fifo'
  os.mkfifo(fifo)
  got = []
  reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
  reader.start()
  io_lib.atomic_write_text(fifo, 'through the pipe\n')
  reader.join(timeout=10)
  assert got == ['through the pipe\n'] and stat.S_ISFIFO(fifo.stat().st_mode)

  long_name = tmp_path / ('x' * 250 + '.png')
  io_lib.atomic_write_bytes(long_name, b'png')
  assert long_name.read_bytes() == b'png'
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ['real.jsonl', 'link.jsonl', 'fifo', long_name.name])  # no temporary file left


def test_atomic_writes_get_the_umask_mode_and_stream(tmp_path):
  """Converted weights were written through mkstemp: mode 0600, unreadable for the other
  users of a shared weights folder. Every atomic write now gives what open() gives."""
  from aesthetics_jax.models import pretrained
  old = os.umask(0o022)
  try:
    io_lib.atomic_write_stream(tmp_path / 'a.npz', lambda f: np.savez(f, x=np.arange(3)))
    io_lib.atomic_write_bytes(tmp_path / 'b.bin', b'x')
    pretrained.save_flat({'params/w': np.ones(2, np.float32)}, tmp_path / 'w.npz', {})
  finally:
    os.umask(old)
  for name in ('a.npz', 'b.bin', 'w.npz', 'w.npz.json'):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
  assert np.load(tmp_path / 'a.npz')['x'].tolist() == [0, 1, 2]
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.npz', 'b.bin', 'w.npz',
                                                        'w.npz.json']  # no temporary left


def test_a_failed_write_names_the_file_asked_for(tmp_path, monkeypatch):
  """A full disk's OSError named no file, and a refused temporary file named the hidden
  sibling ('.report.html.<pid>.<hex>.tmp'): every command's one-line error now names the
  destination, and no temporary file is left."""
  import builtins
  real_open = builtins.open

  def full(file, mode='r', *a, **k):
    if str(file).endswith('.tmp'):
      real_open(file, 'wb').close()  # the sibling exists, as on a real full disk
      return real_open('/dev/full', mode, *a, **k)
    return real_open(file, mode, *a, **k)

  dest = tmp_path / 'report.html'
  monkeypatch.setattr(io_lib, 'open', full, raising=False)
  with pytest.raises(OSError) as e:
    io_lib.atomic_write_text(dest, 'x' * 100_000)
  assert e.value.errno == errno.ENOSPC and e.value.filename == str(dest)
  assert str(dest) in str(e.value) and list(tmp_path.iterdir()) == []

  def refused(file, mode='r', *a, **k):
    raise PermissionError(errno.EACCES, 'Permission denied', str(file))
  monkeypatch.setattr(io_lib, 'open', refused, raising=False)
  with pytest.raises(PermissionError) as e:
    io_lib.atomic_write_bytes(dest, b'x')
  assert e.value.filename == str(dest) and '.tmp' not in str(e.value)


def test_staged_commit_lands_whole_when_interrupted(tmp_path):
  """Ctrl-C between two of a commit's renames acts once they have all run: raised in the
  middle, it left the first file new and the second old (an evaluation's `eval/` half new)."""
  a, b = tmp_path / 'a.json', tmp_path / 'b.json'
  a.write_text('old')
  b.write_text('old')
  # Another thread alive (as JAX's, a prefetcher's): the kernel may hand it the signal, and
  # blocking it in this thread alone (pthread_sigmask, the first fix) failed in CI.
  done = threading.Event()
  threading.Thread(target=done.wait, daemon=True).start()
  staged = io_lib.Staged()
  staged.write_text(a, 'new')
  staged.add(lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C in the middle
  staged.write_text(b, 'new')
  try:
    with pytest.raises(KeyboardInterrupt):
      staged.commit()
  finally:
    done.set()
  assert (a.read_text(), b.read_text()) == ('new', 'new')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.json', 'b.json']


def test_atomic_write_through_a_dangling_link_makes_its_folder(tmp_path):
  """A link to a file in a missing folder (`convert-weights --out=link.npz`) failed with a raw
  '[Errno 2] No such file or directory' (exit 1), where a plain path's folders are made."""
  link = tmp_path / 'link.npz'
  link.symlink_to(tmp_path / 'nowhere' / 'x.npz')
  io_lib.atomic_write_text(link, 'new\n')
  assert link.is_symlink() and (tmp_path / 'nowhere' / 'x.npz').read_text() == 'new\n'


def test_dead_temps_in_a_folder_are_removed_and_live_ones_kept(tmp_path):
  """kill -9 during evaluate or predict left `.<name>.<pid>.<id>.tmp` files that the rerun,
  which replaced their targets, kept for good."""
  import subprocess  # pylint: disable=import-outside-toplevel
  gone = subprocess.Popen(['true'])
  gone.wait()
  dead = tmp_path / f'.0000_a_crop.jpg.{gone.pid}.3fb17495.tmp'
  live = tmp_path / f'.0001_b_crop.jpg.{os.getpid()}.3fb17495.tmp'
  mine = tmp_path / '.hidden_user_file.tmp'  # not a temporary name of ours
  for f in (dead, live, mine):
    f.write_bytes(b'x')
  io_lib.remove_dead_temps_in(tmp_path)
  assert not dead.exists() and live.exists() and mine.exists()
  io_lib.remove_dead_temps_in(tmp_path / 'missing')  # no folder: nothing to do
