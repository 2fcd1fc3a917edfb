"""`launch/gpu_suite.sh` runs only where a GPU is lent, minutes at a time: a misspelt flag there
costs a whole lease. Every benchmark flag the suite passes must be one `aesthetics-benchmark`
defines, and each step named in `GPU_SUITE_STEPS`' default must exist. (The whole script runs
on CPU with `GPU_SUITE_DRY_RUN=1`: minutes, so not here.)"""
import importlib
import pathlib
import re

from absl import flags

importlib.import_module('aesthetics_jax.cli.benchmark')  # defines its absl flags
SUITE = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'gpu_suite.sh'


def _logical_lines(text: str) -> list[str]:
  return [ln for ln in text.replace('\\\n', ' ').splitlines() if not ln.lstrip().startswith('#')]


def test_every_benchmark_flag_of_the_suite_exists():
  lines = _logical_lines(SUITE.read_text())
  runs = [ln for ln in lines if re.match(r'\s*step \w+ && run ', ln)]
  arrays = [ln for ln in lines if re.search(r'\b(SIZE|REPEATS)=\(', ln)]
  assert len(runs) == 4 and arrays, 'the suite changed shape: update this test'
  names = {m for ln in runs + arrays for m in re.findall(r'--([a-z_]+)', ln)}
  defined = set(flags.FLAGS)
  assert names - {'json'} <= defined, sorted(names - defined)
  assert 'json' in defined


def test_default_steps_all_exist():
  text = SUITE.read_text()
  default = re.search(r'GPU_SUITE_STEPS:-([a-z_ ]+)\}', text).group(1).split()
  defined = set(re.findall(r'^(?:step|if step) (\w+)', text, re.M))
  assert default == ['model', 'cam', 'input', 'model_large'] and set(default) <= defined
  assert 'paper' in defined  # asked for by name only
