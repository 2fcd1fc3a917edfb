"""Probe: does the notebook interface's configure() take effect after `import jax` (before any
computation)? `python THIS plain` vs `python THIS api`, alternating; MobileNetV2 224-px forward."""
import sys, time, os
import jax
import numpy as np
if sys.argv[1] == 'api':
  import aesthetics_jax
  aesthetics_jax.load  # imports api -> cpu_backend.configure()
from aesthetics_jax import parallel
from aesthetics_jax.bench import workloads
model, variables = workloads.build('mobilenet_v2', image_size=224)
f = workloads.forward_fn(model, parallel.default_chunk())
x = jax.device_put(np.random.default_rng(0).random((32, 224, 224, 3), np.float32))
v = jax.device_put(variables)
jax.block_until_ready(f(v, x)); jax.block_until_ready(f(v, x))
r = []
for _ in range(4):
  t = time.perf_counter()
  for _ in range(4): out = f(v, x)
  jax.block_until_ready(out); r.append(128 / (time.perf_counter() - t))
print(sys.argv[1], os.environ.get('XLA_FLAGS'), 'img/s median %.1f' % np.median(r))
