"""The benchmark suite behind `launch/benchmark.py` (the top layer: may import any package).

sections/     one module per --what=<name>: `run(Options) -> dict`, `summary(result) -> rows`
machine.py    what ran it: CPU model, clock, SIMD flags, cores, load, threads, versions, env
timing.py     timed repeats (median, min-max); interleaved runs, first call (compile) apart
memory.py     peak resident memory of a workload, measured in a fresh child process
agreement.py  how far two results are apart (CAM maps, bfloat16 vs float32 outputs)
profile.py    per-op times of a jitted call from a jax.profiler trace
workloads.py  the JAX side: benchmarked models, jitted CAM / study steps, the frozen-encoder
              recipe, streamed evaluation
torch_ref.py  the PyTorch references (torchvision, pytorch-grad-cam); torch imported lazily
grain_ref.py  google's grain doing our input pipeline's work (identical batches); grain
              imported lazily
synthetic.py  AVA-like JPEGs generated in memory
"""
