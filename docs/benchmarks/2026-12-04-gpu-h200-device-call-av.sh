# The second device call (machine still warm after call AU, 373 s of the lease left): the parts
# that call AU's suite cut at its step timeouts (VGG16 at batch 1024; the input section's
# model-fed-by-the-pipeline part). The input run was cut again, at 140 s, after its fed line
# and before its JSON: its log is all there is.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
timeout 140 python3 -m launch.benchmark --json=$OUT/model_b1024_vgg16.json --what=model --reference=torch --torch_formulations=fast --model_archs=vgg16 --model_dtypes=float32,bfloat16 --model_batch_size=1024 --profile=false --repeats=5 --warmup=2 2>&1 | grep -v -e '^W[0-9]' -e Warning | tee $OUT/model_b1024_vgg16.log | tail -20
timeout 140 python3 -m launch.benchmark --json=$OUT/input.json --what=input --reference=none --num_images=512 --batch_size=256 --grain=false --repeats=2 --warmup=1 2>&1 | grep -v -e '^W[0-9]' -e Warning | tee $OUT/input.log | tail -30
