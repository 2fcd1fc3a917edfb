import time, sys, numpy as np, jax
from aesthetics_jax import parallel
from aesthetics_jax.bench import workloads
model, variables = workloads.build('mobilenet_v2', image_size=224)
step = workloads.make_cam_step(model, workloads.bucket_target(0), parallel.default_chunk(), 224)
x = jax.device_put(np.random.default_rng(0).random((32, 224, 224, 3), np.float32))
variables = jax.device_put(variables)
for _ in range(3): np.asarray(step(variables, x))
ts = []; t_end = time.time() + float(sys.argv[1])
r0 = __import__('resource').getrusage(0)
while time.time() < t_end:
  t = time.perf_counter(); np.asarray(step(variables, x)); ts.append(time.perf_counter() - t)
r1 = __import__('resource').getrusage(0)
rates = 32 / np.array(ts)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(f'calls {len(ts)} median {np.median(rates):.1f} img/s p10 {np.percentile(rates,10):.1f} p90 {np.percentile(rates,90):.1f} slow(<140) {np.mean(rates<140):.2f} sys/call {(r1.ru_stime-r0.ru_stime)/len(ts):.3f} s user/call {(r1.ru_utime-r0.ru_utime)/len(ts):.3f} HWM {int(hwm)//1024} MB')
