#!/usr/bin/env bash
# Benchmark suite on one GPU (e.g. the H200 the `device` tool lends), float32 and bfloat16,
# against PyTorch on the same GPU.
#
#   bash launch/gpu_suite.sh            # JSON + logs under ${OUT:-/tmp/gpu_bench}
#   GPU_SUITE_DRY_RUN=1 bash launch/gpu_suite.sh   # the same steps on CPU, tiny sizes
#
# Needs a CUDA jaxlib (pip install "jax[cuda12]" or the cuda13 plugin) and, for the PyTorch
# reference, torch + torchvision with CUDA and grad-cam (without them the JAX figures alone).
# A machine whose image has JAX, flax, optax, orbax, torch and torchvision but not the rest
# (the `device` tool's H200, 2026-12-04: Python 3.12) gets the missing pure-Python packages and
# array_record as wheels downloaded on another machine: `pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl
# ml_collections tensorflow-datasets array_record tensorboardX ttach dm-tree immutabledict
# termcolor toml simple-parsing docstring_parser tensorflow-metadata googleapis-common-protos`
# plus `pip wheel --no-deps -w .whl grad-cam promise` (source-only there), then on the GPU
# machine `pip install --no-index --no-deps --target /tmp/site .whl/*.whl` and
# `PYTHONPATH=/tmp/site:$PWD PYTHON=python3 bash launch/gpu_suite.sh`.
# Bounded: each step has its own timeout, under 11 minutes in all; GPU_SUITE_STEPS picks steps
# (default all, in this order: "model cam input model_large"), so a 15-minute device lease runs
# it as two calls of under 10 minutes, the second while the machine is still warm:
#   GPU_SUITE_STEPS="model cam" bash launch/gpu_suite.sh; then
#   GPU_SUITE_STEPS="input model_large" OUT=... bash launch/gpu_suite.sh  (another $OUT)
# Step times on the H200 (2026-12-04, run AU; machine start ~30 s): model 89 s, cam 79 s
# without the PyTorch reference, model at batch 1024 130+ s for both encoders (cut;
# MobileNetV2 alone ~120 s), input 140+ s with 15 fed rounds (cut). What each step measures:
#   model_b256, model_b1024  forward images/s, ours float32 / bfloat16 vs torch's best of NCHW /
#                            channels_last x float32 (TF32, cuDNN autotuned) / bf16 autocast;
#                            VGG16 at batch 256 only (1024 gave the same ratio: 1.75 vs 1.73x)
#   cam                      Grad-CAM one target and all 10 buckets, and the whole study, vs
#                            pytorch-grad-cam on the same GPU (its maps come back as numpy)
#   input                    decode + resize + crop images/s with every core (threads vs
#                            processes), and the model fed by the training input pipeline
# Target: MobileNetV2 inference >= 20,000 img/s at 224 px in bfloat16; the input pipeline's
# ceiling is printed beside it, since the model must never wait for it.
set -u -o pipefail  # the summary failing (no model results) fails the script
OUT="${OUT:-/tmp/gpu_bench}"
mkdir -p "$OUT"
: > "$OUT/suite.log"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
# JAX and torch share the GPU in one process: JAX's default 75% preallocation would leave
# torch too little for VGG16 at batch 1024.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
export PYTHONUNBUFFERED=1

if [ -n "${GPU_SUITE_DRY_RUN:-}" ]; then  # check the script itself on a CPU machine
  BATCHES="4 8"; CAM_B=4; STUDY=8; INPUT_N=32; INPUT_B=8
  SIZE=(--image_size=64 --resize_size=72); REPEATS=(--repeats=1 --warmup=1)
elif ! "$PY" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)'; then
  echo "gpu_suite.sh: JAX sees no GPU (backend $("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null)); install a CUDA jaxlib: pip install \"jax[cuda12]\"" >&2
  exit 1
else
  BATCHES="256 1024"; CAM_B=256; STUDY=2048; INPUT_N=512; INPUT_B=256
  SIZE=(); REPEATS=(--repeats=5 --warmup=2)
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  > "$OUT/gpu.txt" 2>&1
REF=none
if "$PY" -c 'import sys; from aesthetics_jax.bench import torch_ref; sys.exit(torch_ref.unavailable() is not None)'; then
  REF=torch
fi
"$PY" - <<'PYEOF' 2>&1 | tee "$OUT/versions.txt"
import importlib, jax
print('devices', jax.devices())
for m in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'torch', 'torchvision'):
  try:
    print(m, importlib.import_module(m).__version__)
  except Exception as e:  # pylint: disable=broad-except
    print(m, 'unavailable:', type(e).__name__, e)
PYEOF
echo "PyTorch reference: $REF" | tee -a "$OUT/suite.log"

run() {  # run NAME TIMEOUT ARGS...: one benchmark invocation, log + JSON, never fatal
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date +%T))" | tee -a "$OUT/suite.log"
  timeout "$limit" "$PY" -m launch.benchmark --json="$OUT/$name.json" "${SIZE[@]}" "$@" \
    2>&1 | grep -v -e '^W[0-9]' -e 'Warning' | tee "$OUT/$name.log" >> "$OUT/suite.log"
  echo "   exit ${PIPESTATUS[0]}" | tee -a "$OUT/suite.log"
}

STEPS=" ${GPU_SUITE_STEPS:-model cam input model_large} "
step() { [[ "$STEPS" == *" $1 "* ]]; }
FIRST=${BATCHES%% *}; LAST=${BATCHES##* }
# 1. Forward throughput at batch 256, both encoders.
step model && run "model_b$FIRST" 130 --what=model --reference=$REF --torch_formulations=fast \
  --model_archs=mobilenet_v2,vgg16 --model_dtypes=float32,bfloat16 --model_depthwise=conv \
  --model_batch_size=$FIRST --profile=false "${REPEATS[@]}"
# 2. Grad-CAM (one target, all 10 buckets) and the whole study, large batches, against
#    pytorch-grad-cam with its model and inputs on the same GPU (`torch_ref.device()`).
step cam && run cam 180 --what=cam,study --reference=$REF --torch_formulations=fast \
  --cam_batch_size=$CAM_B --study_images=$STUDY --cam_warmup=2 --peak_memory=false \
  "${REPEATS[@]}"
# 3. Input pipeline ceiling with every core (threads vs processes), and the model fed by it
#    (5 rounds: each fed round decodes every image, ~0.1 of the model's rate on a GPU).
step input && run input 150 --what=input --reference=none --num_images=$INPUT_N \
  --batch_size=$INPUT_B --grain=false --repeats=2 --warmup=1 --fed_rounds=5 \
  --fed_cache_rows=$INPUT_B
# 4. The larger batch, MobileNetV2 only (the GPU target's model), last: cut first if slow.
step model_large && run "model_b$LAST" 170 --what=model --reference=$REF \
  --torch_formulations=fast --model_archs=mobilenet_v2 --model_dtypes=float32,bfloat16 \
  --model_depthwise=conv --model_batch_size=$LAST --profile=false "${REPEATS[@]}"
# 5. Not in the default list (ask for it: GPU_SUITE_STEPS="paper"): the paper-scale run on
#    this machine, synthetic AVA-sized data (14,009 JPEGs, ~2 GB, rendered by every core) and
#    stand-in weights, both recipes (MobileNetV2 K=4, VGG16 K=1), evaluation and report: the
#    recipe's real wall time per stage (W/paper_run.md, copied to $OUT). On 2 CPU cores it took
#    12.2 min for MobileNetV2 and 139 min for VGG16; the workdir stays out of $OUT (its size).
if step paper; then
  echo "== paper ($(date +%T))" | tee -a "$OUT/suite.log"
  PAPER_W="${PAPER_WORKDIR:-/tmp/paper_run}"
  timeout "${PAPER_TIMEOUT:-560}" "$PY" -m launch.paper_run --workdir="$PAPER_W" \
    ${GPU_SUITE_DRY_RUN:+--smoke} 2>&1 | grep -v -e '^W[0-9]' -e 'Warning' \
    | tail -60 > "$OUT/paper.log"
  echo "   exit ${PIPESTATUS[0]}" | tee -a "$OUT/suite.log"
  cp "$PAPER_W/paper_run.md" "$PAPER_W/paper_run.json" "$OUT/" 2>/dev/null
  cat "$OUT/paper.log" >> "$OUT/suite.log"
fi

# One line: the bfloat16 MobileNetV2 figure beside the input pipeline's ceiling.
"$PY" - "$OUT" "$STEPS" "${GPU_SUITE_DRY_RUN:+64}" <<'PYEOF' | tee -a "$OUT/suite.log"
import json, pathlib, sys
out, steps = pathlib.Path(sys.argv[1]), sys.argv[2].split()
size = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else '224'  # the dry run's is 64
cam_json = out / 'cam.json'
if cam_json.exists():  # Grad-CAM and the study against the faster of pytorch-grad-cam and
  res = json.loads(cam_json.read_text())['results']  # hand-written torch, same device
  for sec, key in (('cam', 'ratio_one_target'), ('cam', 'ratio_10_buckets'), ('study', 'ratio')):
    if key in res.get(sec, {}):
      each = res[sec].get(key + '_by_reference', {})
      print(f'ours / best torch ({sec} {key}, torch on '
            f'{res[sec].get("torch_device") or res[sec].get("torch", {}).get("device")}): '
            f'{res[sec][key]:.2f}x'
            + ''.join(f'; vs {k} {v:.2f}x' for k, v in each.items()))
best, ratios = {}, []
for f in sorted(out.glob('model_b*.json')):
  res = json.loads(f.read_text())['results']['model']
  for name, r in res['runs'].items():
    if name.startswith('jax_mobilenet_v2_') and 'items_per_s' in r:
      best[name + f' ({f.stem})'] = r['items_per_s']['median']
  for k, v in res.items():
    if k.endswith('ratio_vs_best_torch'):
      ratios.append(f'{f.stem} {k[:-len("_ratio_vs_best_torch")]}: {v:.2f}x')
if not best:
  sys.exit('no model results' if {'model', 'model_large'} & set(steps) else 0)
bf = [(k, v) for k, v in best.items() if 'bfloat16' in k]
name, ips = max(bf or best.items(), key=lambda kv: kv[1])
ceiling = None
inp = out / 'input.json'
if inp.exists():
  runs = json.loads(inp.read_text())['results']['input']['runs']
  rates = [r['items_per_s']['median'] for k, r in runs.items()
           if k.startswith(('train_', 'eval_')) and ('threads' in k or 'processes' in k)
           and '1000px' not in k and 'items_per_s' in r]
  ceiling = max(rates) if rates else None
print(f'MobileNetV2 bfloat16 {size} px: {ips:,.0f} img/s ({name}); target >= 20,000 at '
      f'224 px: {"met" if ips >= 20000 and size == "224" else "NOT met"}')
for r in ratios:
  print('ours / best torch on the same device:', r)
if ceiling:
  print(f'input pipeline ceiling (decode+resize, all cores): {ceiling:,.0f} img/s -> the model '
        f'needs {ips / ceiling:.1f}x that: feed it pre-decoded / cached features, or more hosts')
PYEOF
echo "results in $OUT"
