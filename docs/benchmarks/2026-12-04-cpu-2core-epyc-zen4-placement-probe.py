"""Grad-CAM speed against where the VM put its two vCPUs (2026-12-04, 2-core EPYC Zen 4 VM).

Before each call of our Grad-CAM step (MobileNetV2, batch 32, 224 px, one target, chunks of
`chunk` images per device), a C cache-line ping-pong between CPU 0 and CPU 1 (the .c file
beside this one) gives the core-to-core round trip: ~50 ns when the vCPUs share an L3, 320-1,500
ns when the hypervisor has put them on different dies or sockets ('far', > 150 ns). The batch
is sharded over all CPU devices (`parallel.make_mesh`, `features_fn(num_shards=...)`), so
  XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" \
    python ...-placement-probe.py 60          # one device (the default): both cores, every op
  XLA_FLAGS="... --xla_force_host_platform_device_count=2" python ...-placement-probe.py 60
                                             # one device per core: 16 images each, no handoffs
(GLIBC_TUNABLES=glibc.malloc.hugetlb=1, PYTHONPATH=the checkout). Prints near / far medians.
"""
import ctypes, functools, os, subprocess, sys, tempfile, time
import numpy as np, jax
from aesthetics_jax import cpu_backend, parallel
from aesthetics_jax.bench import workloads
from aesthetics_jax.explain import cam

src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   '2026-12-04-cpu-2core-epyc-zen4-placement-probe.c')
lib = os.path.join(tempfile.gettempdir(), 'placement-probe.so')
subprocess.run(['cc', '-O2', '-shared', '-fPIC', '-pthread', '-o', lib, src], check=True)
L = ctypes.CDLL(lib)
L.c2c_ns.restype = ctypes.c_double
seconds, chunk = float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2
model, variables = workloads.build('mobilenet_v2', image_size=224)
n = jax.device_count()
feats = parallel.features_fn(model, chunk, num_shards=n)
target_fn = workloads.bucket_target(0)


@functools.partial(jax.jit, compiler_options=cpu_backend.encoder_options(model, 'cam'))
def step(variables, x):
  a = feats(variables, x)
  head_fn = lambda z: model.apply(variables, z, method='head')  # noqa: E731
  return cam.torch_like(cam.compute('gradcam', head_fn, a, target_fn), (224, 224))


mesh = parallel.make_mesh()
x = jax.device_put(np.random.default_rng(0).random((32, 224, 224, 3), np.float32),
                   jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
v = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
for _ in range(3):
  np.asarray(step(v, x))
rows = []
t_end = time.monotonic() + seconds
while time.monotonic() < t_end:
  ns = L.c2c_ns(2000)
  t0 = time.perf_counter()
  np.asarray(step(v, x))
  rows.append((ns, 32 / (time.perf_counter() - t0)))
a = np.array(rows)
far = a[:, 0] > 150
fm = f'{np.median(a[far, 1]):.1f}' if far.any() else 'n/a'
print(f'devices {n}, chunk {chunk}: {len(a)} calls, {far.sum()} far; img/s near median '
      f'{np.median(a[~far, 1]):.1f} (p10-p90 {np.percentile(a[~far, 1], 10):.0f}-'
      f'{np.percentile(a[~far, 1], 90):.0f}), far median {fm}; round trip ns near median '
      f'{np.median(a[~far, 0]):.0f}, far median {np.median(a[far, 0]) if far.any() else 0:.0f}',
      flush=True)
