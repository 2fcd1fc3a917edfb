"""Benchmark building blocks for `launch/benchmark.py`.

timing.py     interleaved repeats (median, min-max), first-call (compile) time apart
memory.py     peak resident memory of a workload, measured in a fresh child process
workloads.py  the JAX side: models with torch-identical weights, jitted CAM / study steps,
              the frozen-encoder recipe, streamed evaluation
torch_ref.py  the PyTorch references (torchvision, pytorch-grad-cam); torch imported lazily
"""
