#!/usr/bin/env bash
# One device call: wheels the image lacks, a preflight, then launch/gpu_suite.sh; results tarred.
set -u
T0=$(date +%s)
R=/tmp/gpu_bench; mkdir -p $R
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl > $R/pip.log 2>&1 || { tail $R/pip.log; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHON=python3
log wheels installed
nvidia-smi > $R/nvidia-smi.txt 2>&1; head -12 $R/nvidia-smi.txt
if ! timeout 40 env XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
    python3 -c 'import jax, jax.numpy as jnp; print(jax.__version__, jax.devices(), float(jnp.ones(3).sum()))'; then
  log 'XLA rejects the CPU flag here: AESTHETICS_JAX_CPU_DEFAULTS=0'; export AESTHETICS_JAX_CPU_DEFAULTS=0
fi
REF=none
python3 -c 'import sys; from aesthetics_jax.bench import torch_ref; u = torch_ref.unavailable(); print("torch reference:", u or "ok"); sys.exit(u is not None)' && REF=torch
log preflight
timeout ${PREFLIGHT_S:-60} python3 -m launch.benchmark --what=model --reference=$REF \
  --torch_formulations=fast --model_archs=mobilenet_v2 --model_dtypes=bfloat16 \
  --model_depthwise=conv --model_batch_size=64 --repeats=1 --warmup=1 --profile=false \
  --json=$R/preflight.json > $R/preflight.log 2>&1
rc=$?; log preflight rc=$rc; grep -v -e '^W[0-9]' $R/preflight.log | tail -25
if [ $rc -ne 0 ]; then tar czf $OUT/gpu_bench.tgz -C /tmp gpu_bench; exit 2; fi
timeout ${SUITE_S:-470} env OUT=$R bash launch/gpu_suite.sh ${SUITE_ARGS:-}
log suite rc=$?
cat $R/suite.log | grep -v -e '^W[0-9]' | tail -80
tar czf $OUT/gpu_bench.tgz -C /tmp gpu_bench; cp $R/suite.log $OUT/ 2>/dev/null
log done
