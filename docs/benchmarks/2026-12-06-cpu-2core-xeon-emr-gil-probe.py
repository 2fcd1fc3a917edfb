"""GIL probe (2026-12-06, run by hand; py-spy is not a dependency: `pip install py-spy`).

Loops the input pipeline's per-image work (train: decode with draft, resize 256, random 224
crop; eval: decode, resize 224) in one thread. Sampled twice, in separate runs:

  python probe.py train 12 & sleep 2; py-spy record -p $! -d 8 -r 200 -f raw -o all.txt
  python probe.py train 12 & sleep 2; py-spy record -p $! -d 8 -r 200 --gil -f raw -o gil.txt

The samples with the GIL held over the samples with the thread active give the share of
each image's time that no other decode thread can overlap (see the log beside this file).
"""
import sys, time, threading
import numpy as np
from aesthetics_jax.bench import synthetic
from aesthetics_jax.data import preprocess
what, secs = sys.argv[1], float(sys.argv[2])
datas = synthetic.synthetic_jpegs(64)
def work():
  t0 = time.perf_counter(); n = 0
  while time.perf_counter() - t0 < secs:
    d = datas[n % len(datas)]
    if what == 'train':
      c, _ = preprocess.train_crop_np(d, 256, 224, np.random.default_rng(n), True)
      np.ascontiguousarray(c)
    else:
      preprocess.preprocess_eval_np(d, 224)
    n += 1
  print(what, n / secs, 'img/s', flush=True)
time.sleep(1.0)
t = threading.Thread(target=work); t.start(); t.join()
