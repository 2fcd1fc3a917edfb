"""Each one-target Grad-CAM call (our settings) followed by a fixed single-thread numpy matmul
block: do slow calls coincide with a slower CPU?"""
import os, time, json
import numpy as np
from aesthetics_jax.bench import workloads
run = workloads.cam_setup(batch=32, size=224, targets='one')
run(); run()
a = np.random.default_rng(0).random((384, 384), np.float32)
def ref():
  t = time.perf_counter()
  for _ in range(40): a @ a
  return time.perf_counter() - t
ref(); ref()
rows = []
t_end = time.time() + float(os.environ.get('SECS', '120'))
while time.time() < t_end:
  t = time.perf_counter(); run(); w = time.perf_counter() - t
  rows.append((w, ref()))
r = np.array(rows)
slow = r[:, 0] > 1.5 * r[:, 0].min()
print('calls', len(r), 'slow', slow.sum())
print('step s  fast %.3f slow %.3f' % (r[~slow, 0].mean(), r[slow, 0].mean()))
print('ref  ms fast %.2f slow %.2f' % (1e3 * r[~slow, 1].mean(), 1e3 * r[slow, 1].mean()))
print('corr(step, ref) %.2f' % np.corrcoef(r[:, 0], r[:, 1])[0, 1])
json.dump(rows, open(os.environ.get('OUT', 'slow-calls.json'), 'w'))
