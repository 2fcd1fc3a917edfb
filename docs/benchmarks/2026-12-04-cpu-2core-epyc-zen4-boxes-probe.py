"""Run: git show 8acbfef:aesthetics_jax/explain/crop.py > /tmp/probe/crop_old.py (the labelling before
this change), then from the checkout: PYTHONPATH=. GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python <this file>.
The CPU study step with the old and the new host box labelling, alternating calls."""
import sys, time
sys.path.insert(0, '/tmp/probe')
from aesthetics_jax import cpu_backend
cpu_backend.configure()
import numpy as np, jax
import crop_old
from aesthetics_jax import models, parallel
from aesthetics_jax.bench import workloads, torch_ref
from aesthetics_jax.explain import crop
new = crop.boxes_np
model = models.create_model(workloads.model_config('mobilenet_v2'))
step = workloads.make_study_step(model, 'mobilenet_v2', 224, 0.2, parallel.default_chunk())
v = torch_ref.variables(model, 'mobilenet_v2', 224)
x = jax.device_put(workloads.photos(32, 224, seed=2))
res = {}
for impl in ('old', 'new'):
  crop.boxes_np = crop_old.boxes_np if impl == 'old' else new
  res[impl] = jax.device_get(step(v, x))[1]
assert all(np.array_equal(res['old'][k], res['new'][k]) for k in ('box_aesthetic', 'box_attribute'))
ts = {'old': [], 'new': []}
for i in range(40):
  impl = ('old', 'new')[i % 2]
  crop.boxes_np = crop_old.boxes_np if impl == 'old' else new
  t = time.perf_counter(); jax.device_get(step(v, x)); ts[impl].append(time.perf_counter() - t)
for k, t in ts.items():
  print(k, 'median %.1f ms, img/s %.1f (min %.1f ms)' % (1e3 * np.median(t), 32 / np.median(t), 1e3 * min(t)))
# the labelling alone, on this step's maps size: two [32,224,224] calls
m = np.random.default_rng(0).random((32, 224, 224)).astype(np.float32) ** 8
for name, f in (('old', crop_old.boxes_np), ('new', new)):
  tt = []
  for _ in range(10):
    t = time.perf_counter(); f(m, 0.2); tt.append(time.perf_counter() - t)
  print(name, 'labelling one [32,224,224] batch: %.1f ms' % (1e3 * min(tt)))
