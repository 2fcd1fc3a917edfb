#!/usr/bin/env bash
# Benchmark suite on one GPU (e.g. the H200 the `device` tool lends), float32 and bfloat16.
# PREPARED, NOT YET RUN (no GPU was lent to the session that wrote it).
#
#   bash launch/gpu_suite.sh            # writes JSON + logs under ${OUT:-/tmp/gpu_bench}
#
# Needs a CUDA jaxlib in the active environment (pip install "jax[cuda12]"); torch is not
# needed (the PyTorch references are CPU figures, measured by the CPU suite). Bounded: each
# step has its own timeout, about 8 minutes in all on an H200, so a 15-minute device lease
# leaves room for one rerun. Targets: MobileNetV2 inference >= 20,000 img/s at 224 px in
# bfloat16; the input pipeline's ceiling (decode + resize + crop images/s with all cores) is
# printed beside it, since the model must never wait for it.
set -u
OUT="${OUT:-/tmp/gpu_bench}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

if ! "$PY" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)'; then
  echo "gpu_suite.sh: JAX sees no GPU (backend $("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null)); install a CUDA jaxlib: pip install \"jax[cuda12]\"" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1

run() {  # run NAME TIMEOUT ARGS...: one benchmark invocation, log + JSON, never fatal
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/suite.log"
  timeout "$limit" "$PY" -m launch.benchmark --reference=none --json="$OUT/$name.json" "$@" \
    2>&1 | grep -v -e '^W[0-9]' -e 'Warning' | tee "$OUT/$name.log" >> "$OUT/suite.log"
  echo "   exit ${PIPESTATUS[0]}" | tee -a "$OUT/suite.log"
}

# 1. Forward throughput, float32 and bfloat16, depthwise conv (default on GPU) and shift,
#    at two batch sizes (large batches are what fills an H200).
for B in 256 1024; do
  run "model_b$B" 240 --what=model --model_archs=mobilenet_v2,vgg16 \
    --model_dtypes=float32,bfloat16 --model_depthwise=conv,shift --model_batch_size=$B \
    --repeats=5 --warmup=2
done
# 2. Grad-CAM (one target, all 10 buckets) and the whole study, large batches.
run cam 150 --what=cam,study --cam_batch_size=256 --study_images=2048 --cam_warmup=3 \
  --repeats=5 --peak_memory=false
# 3. Input pipeline ceiling with every core (threads vs processes), and the model fed by it.
run input 150 --what=input --num_images=1024 --batch_size=256 --repeats=3
# 4. Streamed evaluation cost growth (time flat per image, memory flat).
run scaling 150 --what=scaling --scaling_sizes=2000,8000

# One line: the bfloat16 MobileNetV2 figure beside the input pipeline's ceiling.
"$PY" - "$OUT" <<'PYEOF' | tee -a "$OUT/suite.log"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
best = {}
for f in sorted(out.glob('model_b*.json')):
  runs = json.loads(f.read_text())['results']['model']['runs']
  for name, r in runs.items():
    if name.startswith('jax_mobilenet_v2_'):
      best[name + f' ({f.stem})'] = r['items_per_s']['median']
if not best:
  sys.exit('no model results')
name, ips = max(((k, v) for k, v in best.items() if 'bfloat16' in k), key=lambda kv: kv[1])
ceiling = None
inp = out / 'input.json'
if inp.exists():
  runs = json.loads(inp.read_text())['results']['input']['runs']
  ceiling = max(r['items_per_s']['median'] for k, r in runs.items()
                if k.startswith(('train_', 'eval_')) and ('threads' in k or 'processes' in k)
                and '1000px' not in k)
print(f'MobileNetV2 bfloat16 224 px: {ips:,.0f} img/s ({name}); target >= 20,000: '
      f'{"met" if ips >= 20000 else "NOT met"}')
if ceiling:
  print(f'input pipeline ceiling (decode+resize, all cores): {ceiling:,.0f} img/s -> the model '
        f'needs {ips / ceiling:.1f}x that: feed it pre-decoded / cached features, or more hosts')
PYEOF
echo "results in $OUT"
