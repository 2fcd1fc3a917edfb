"""Benchmark sections: one module per `--what=<name>` of `launch/benchmark.py`.

Each section module has
  run(opts: Options) -> dict      JSON-able results (progress printed as it goes)
  summary(result) -> list[Row]    its headline figures for the closing table
and needs no flags: the launcher builds `Options` from its flags (with the --quick values
applied), tests build it directly.

Sections: `model` (forward images/s), `cam` (Grad-CAM), `study` (the whole per-image
study), `recipe` (the paper's frozen-encoder training), `input` (decode workers, pipeline
vs model, vs grain), `scaling` (streamed evaluation, time and peak RSS vs images).
"""
from __future__ import annotations

import dataclasses

from aesthetics_jax import cpu_backend
from aesthetics_jax.configs.default import ARCHS

# How google's grain is run beside our loader (`grain_ref`): threads (ReadOptions) or worker
# processes (mp_prefetch).
GRAIN_MODES = ('threads', 'processes')


@dataclasses.dataclass(frozen=True)
class Options:
  """What the sections read. Defaults are the launcher's flag defaults."""
  # Timing (every section).
  repeats: int = 3                 # timed runs per measurement (median reported)
  warmup: int = 1                  # untimed runs before timing
  quick: bool = False              # the QUICK values below are in effect (noisier figures)
  reference: str = 'none'          # 'torch': time the PyTorch equivalents too; 'none'
  threads: int = 0                 # torch intra-op threads; 0 = one per CPU
  torch_formulations: str = 'all'  # bench.formulations set: 'all' | 'fast'
  torch_compile_timeout: float = 900.0  # seconds per torch.compile before 'failed: ...'
  chunk: int = -1                  # images per micro-batch; -1 = parallel.default_chunk()
  workers: int = 0                 # decode workers; 0 = one per CPU
  image_size: int = 224            # crop side (train) / resize side (eval)
  resize_size: int = 256           # train resize side (then random crop)
  # --what=input
  data_dir: str | None = None      # prepared TFDS data_dir; synthetic JPEGs if None
  subset: str = 'style'
  num_images: int = 192
  batch_size: int = 64             # global batch of the end-to-end pipeline run
  processes: bool = True           # also time a process pool (vs threads)
  input_vs_model: bool = True      # also time the model fed by the pipeline
  fed_rounds: int = 15             # rounds of that comparison (or repeats, if more)
  fed_cache_rows: int = 128        # rows a feature-cache build encodes per round of that
  fed_cache_views: tuple[int, ...] = (4, 1)  # train views K of those builds
  fed_batch_size: int = 32         # global batch of the fed comparisons and of those builds
  fed_batches: int = 10            # batches a timed block of the fed comparison runs (10:
                                   # long against the 3 a pipeline holds ready, run untimed)
  grain: bool = True               # also time google's grain doing the same (if installed)
  grain_workers: tuple[int, ...] = (1, 2, 0)  # worker counts of that comparison; 0 = all
  grain_modes: tuple[str, ...] = GRAIN_MODES  # grain's ReadOptions / mp_prefetch
  # --what=model
  model_batch_size: int = 32
  model_archs: tuple[str, ...] = ARCHS
  model_dtypes: tuple[str, ...] = ('float32', 'bfloat16')
  model_depthwise: tuple[str, ...] = ('shift', 'conv')
  profile: bool = True             # per-op times of each encoder's float32 forwards
  # Rounds of ours head to head with each of torch's two fastest formulations of the screening
  # (`timing.confirm`; the ratio is against the faster); 0 = the screening's ratio is the headline.
  confirm_repeats: int = 10
  placement: bool = True          # CPUs' round-trip latency before each head-to-head call
  # --what=cam, study
  cam_batch_size: int = 32
  cam_warmup: int = 10             # pytorch-grad-cam's first calls are 2-6x slower
  study_images: int = 64
  peak_memory: bool = True         # peak RSS in fresh child processes
  # --what=recipe
  # 512 / 128: at 64 / 32 the fixed costs of a cache build (the first batch's decode, which
  # nothing overlaps, thread start-up) were half of it and the per-view figure doubled.
  recipe_images: int = 512
  recipe_test_images: int = 128
  recipe_epochs: float = 50.0
  recipe_views: int = 4
  torch_epochs: int = 1            # epochs of the PyTorch loop actually run (after one warm-up)
  extrapolate_train: int = 8900
  extrapolate_test: int = 2203
  # --what=scaling
  scaling_sizes: tuple[int, ...] = (500, 1000, 2000, 4000)
  scaling_trace_images: int = 16000  # the traced child (judged); 0 = none
  malloc_arena_max: str = '2'      # for the child processes; '' = glibc's default

  def __post_init__(self):
    if self.reference not in ('torch', 'none'):
      raise ValueError(f"Options.reference={self.reference!r}: use 'torch' or 'none'")
    if self.torch_formulations not in ('all', 'fast'):
      raise ValueError(f'Options.torch_formulations={self.torch_formulations!r}: use '
                       "'all' or 'fast'")

  @property
  def torch(self) -> bool:
    return self.reference == 'torch'

  def chunk_size(self) -> int:
    from aesthetics_jax import parallel  # pylint: disable=import-outside-toplevel
    return parallel.default_chunk() if self.chunk < 0 else self.chunk

  def all_workers(self) -> int:
    return self.workers or cpu_backend.host_cpu_count()

  def torch_threads(self) -> int:
    return self.threads or cpu_backend.host_cpu_count()


# --quick: a few minutes in all. The launcher applies these to flags not given explicitly.
QUICK = dict(repeats=2, cam_warmup=3, cam_batch_size=16, study_images=32, recipe_images=32,
             recipe_test_images=32, torch_epochs=1, scaling_sizes=(64, 128, 256, 512),
             scaling_trace_images=1024,
             model_batch_size=8, grain_workers=(2,), torch_formulations='fast', confirm_repeats=3,
             fed_rounds=5, fed_cache_rows=64)


@dataclasses.dataclass(frozen=True)
class Row:
  """One figure of the closing summary table, against its target."""
  name: str
  value: float | None
  detail: str = ''
  target: float | None = None      # None: the launcher's target for `name`, if any
  better: str = 'higher'           # 'higher' | 'lower'
