"""launch.benchmark --what=input end to end (the input pipeline's tests are in test_preprocess,
test_sampling and test_pipeline)."""


def test_benchmark_script_writes_json(tmp_path):
  """launch.benchmark --what=input end to end at toy sizes (checks the report, not speed)."""
  import json
  import subprocess
  import sys
  from pathlib import Path
  out = tmp_path / 'bench.json'
  r = subprocess.run(
      [sys.executable, '-m', 'launch.benchmark', '--what=input', f'--json={out}',
       '--num_images=8', '--repeats=2', '--warmup=0', '--processes=false',
       '--resize_size=40', '--image_size=32', '--batch_size=4', '--workers=2'],
      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  doc = json.loads(out.read_text())
  assert doc['machine']['versions']['jax'] and doc['machine']['cpu_count'] >= 1
  res = doc['results']['input']
  for name in ('train_1_thread', 'train_2_threads', 'eval_1_thread',
               'train_full_decode_1_thread', 'train_batches_pipeline'):
    ips = res['runs'][name]['items_per_s']
    assert 0 < ips['min'] <= ips['median'] <= ips['max'], name
  r = subprocess.run([sys.executable, '-m', 'launch.benchmark', '--what=nope'],
                     cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and 'nope' in r.stderr
