import time, sys, numpy as np, jax
from aesthetics_jax import parallel
from aesthetics_jax.bench import workloads, torch_models as tm
tm.set_threads(2)
model, variables = workloads.build('mobilenet_v2', image_size=224)
step = workloads.make_cam_step(model, workloads.bucket_target(0), parallel.default_chunk(), 224)
xn = np.random.default_rng(0).random((32, 224, 224, 3), np.float32)
x = jax.device_put(xn); variables = jax.device_put(variables)
tmodel = tm.mobilenet_v2(10, 0, True); c = tm.gradcam(tmodel); xt = tm.to_nchw(xn, True)
tl = [[tm.class_target(0)] * 32]
ours = lambda: np.asarray(step(variables, x))
theirs = lambda: tm.gradcam_maps(c, xt, tl, 8)
for _ in range(2): ours(); theirs()
mode = sys.argv[1]; res = {'after_torch': [], 'after_ours': [], 'after_sleep': []}
for r in range(int(sys.argv[2])):
  theirs(); t = time.perf_counter(); ours(); res['after_torch'].append(32 / (time.perf_counter() - t))
  ours(); t = time.perf_counter(); ours(); res['after_ours'].append(32 / (time.perf_counter() - t))
  theirs(); time.sleep(0.5); t = time.perf_counter(); ours(); res['after_sleep'].append(32 / (time.perf_counter() - t))
for k, v in res.items(): print(mode, k, 'median', round(float(np.median(v)), 1), [round(a) for a in v])
