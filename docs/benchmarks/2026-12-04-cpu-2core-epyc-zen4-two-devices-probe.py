"""Probe (not part of the benchmark suite): inference workloads on one device vs all devices
(SPMD over the batch), alternating blocks
in one process. XLA_FLAGS=--xla_force_host_platform_device_count=2."""
import time, os, sys
import numpy as np
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
from aesthetics_jax import parallel
from aesthetics_jax.bench import workloads
from aesthetics_jax.explain import cam
orig = parallel.features_fn
NS = [1]
parallel.features_fn = lambda m, c=None, num_shards=1: orig(m, c, NS[0])
mesh = parallel.make_mesh(); d0 = jax.devices()[0]; nd = len(jax.devices())
which = sys.argv[1:] or ['mnv2', 'vgg', 'cam10', 'study']
xs = np.random.default_rng(0).random((32, 224, 224, 3), np.float32)
runs = {}
for w in which:
  arch = 'vgg16' if w == 'vgg' else 'mobilenet_v2'
  model, variables = workloads.build(arch, image_size=224)
  for ns in (1, nd):
    NS[0] = ns
    c = parallel.default_chunk()
    if w in ('mnv2', 'vgg'):
      f = workloads.forward_fn(model, c)
    elif w == 'cam10':
      f = workloads.make_cam_step(model, cam.targets_for('mobilenet_v2', 'bucket'), c, 224)
    else:
      f = workloads.make_study_step(model, 'mobilenet_v2', 224, chunk=c)
    if ns == 1:
      args = (jax.device_put(variables, d0), jax.device_put(xs, d0))
    else:
      args = (jax.device_put(variables, NamedSharding(mesh, P())),
              jax.device_put(xs, NamedSharding(mesh, P('data'))))
    g = lambda f=f, args=args: jax.tree.map(np.asarray, f(*args))
    g(); g()
    runs[(w, ns)] = g
  a, b = runs[(w, 1)](), runs[(w, nd)]()
  print(w, 'max diff', max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))), flush=True)
rounds = int(os.environ.get('ROUNDS', '5'))
for w in which:
  res = {1: [], nd: []}
  reps = 1 if w == 'vgg' else 4
  for rnd in range(rounds):
    for ns in (1, nd):
      t0 = time.perf_counter()
      for _ in range(reps): runs[(w, ns)]()
      res[ns].append(reps * 32 / (time.perf_counter() - t0))
  r = [b / a for a, b in zip(res[1], res[nd])]
  print('%-6s one device %.1f img/s, %d devices %.1f img/s, ratio per round %s median %.2f' % (
    w, np.median(res[1]), nd, np.median(res[nd]), ' '.join('%.2f' % x for x in r), np.median(r)), flush=True)
