"""Data flows one way: no package imports a package above it (read from the source files).

Layers, lowest first (a module may import its own package and any lower layer):
  configs, io, environment, moved, parallel, cpu_backend, compile_cache, memory_fit
  →  data, models
  →  explain, report  →  train  →  evaluation  →  bench, api  →  cli
`data` and `models` do not know each other; `explain` (maps, boxes, faithfulness) and
`report` (figures, HTML) know nothing of training; inference lives in `evaluation`, so
predicting never imports the trainer. `api` (the notebook interface) sits on evaluation;
`cli` (the installed commands) on everything.
"""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / 'aesthetics_jax'

LAYER = {'configs': 0, 'io': 0, 'environment': 0, 'moved': 0, 'parallel': 0,
         'cpu_backend': 0, 'compile_cache': 0, 'memory_fit': 0, 'data': 1, 'models': 1,
         'explain': 2, 'report': 2, 'train': 3, 'evaluation': 4, 'bench': 5, 'api': 5, 'cli': 6}
# Same-layer pairs that must not import each other either.
FORBIDDEN_SIDEWAYS = {('data', 'models'), ('models', 'data'), ('explain', 'report'),
                      ('report', 'explain')}


def _unit(module: str) -> str | None:
  """'aesthetics_jax.train.trainer' → 'train'; None for the package root itself."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[0] == 'aesthetics_jax' else None


def _literal_module(node: ast.expr) -> str | None:
  """The module a dynamic import names: a string, or an f-string's constant prefix
  (`f'aesthetics_jax.bench.sections.{name}'` -> 'aesthetics_jax.bench.sections.')."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return node.value
  if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
    return str(node.values[0].value)
  return None


def _imports(path: pathlib.Path, package: str = '') -> list[tuple[int, str]]:
  """(line, imported module) for every import in the file, function-local ones included;
  relative imports resolved against `package` (the file's dotted package), and
  `importlib.import_module(...)` / `__import__(...)` calls naming a module literally."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # `from ..train import x` in aesthetics_jax/explain/y.py
        parts = package.split('.')
        up = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
        base = '.'.join(up + ([node.module] if node.module else []))
      if base == 'aesthetics_jax':  # `from aesthetics_jax import data, parallel`
        out += [(node.lineno, f'aesthetics_jax.{a.name}') for a in node.names]
      elif base:
        out.append((node.lineno, base))
    elif isinstance(node, ast.Call) and node.args and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == 'import_module') or
        (isinstance(node.func, ast.Name) and node.func.id in ('import_module', '__import__'))):
      mod = _literal_module(node.args[0])
      if mod:
        out.append((node.lineno, mod))
  return out


def _edges():
  for path in sorted(PKG.rglob('*.py')):
    rel = path.relative_to(PKG)
    src = rel.parts[0].removesuffix('.py') if rel.parts[0] != '__init__.py' else None
    if src is None:
      continue
    package = '.'.join(('aesthetics_jax', *rel.parts[:-1]))
    for line, mod in _imports(path, package):
      dst = _unit(mod)
      if dst is not None and dst != src:
        yield f'{rel}:{line}', src, dst


def test_every_package_has_a_layer():
  units = {p.name.removesuffix('.py') for p in PKG.iterdir()
           if (p.is_dir() and (p / '__init__.py').exists()) or
           (p.suffix == '.py' and p.name != '__init__.py')}
  assert units == set(LAYER), ('give new packages a layer in tests/test_layering.py: '
                               f'{units ^ set(LAYER)}')


def test_no_import_goes_up_or_sideways():
  bad = [f'{where}: {src} imports {dst}' for where, src, dst in _edges()
         if LAYER[dst] > LAYER[src] or (src, dst) in FORBIDDEN_SIDEWAYS]
  assert not bad, 'imports against the data flow:\n' + '\n'.join(bad)


def test_checker_sees_violations(tmp_path):
  """The checker itself can fail: a lower package importing a higher one is found."""
  f = tmp_path / 'x.py'
  f.write_text('def f():\n  from aesthetics_jax.train import trainer\n'
               'from aesthetics_jax import evaluation, io\n'
               'from ..report import html\nfrom . import cam\nfrom .. import bench\n'
               'import importlib\nimportlib.import_module("aesthetics_jax.cli.train")\n'
               'importlib.import_module(f"aesthetics_jax.api.{x}")\n')
  assert sorted(filter(None, (_unit(m) for _, m in _imports(f, 'aesthetics_jax.explain')))) == [
      'api', 'bench', 'cli', 'evaluation', 'explain', 'io', 'report', 'train']


@pytest.mark.parametrize('module', ['aesthetics_jax.evaluation.predictor', 'aesthetics_jax.api',
                                    'aesthetics_jax.explain.cam'])
def test_inference_and_explain_do_not_load_the_trainer(module):
  """Importing the predictor (predict), the API or CAMs loads no training code, transitively."""
  assert _loaded_by(module, 'aesthetics_jax.train.trainer') == []


def test_commands_start_without_scipy_stats():
  """scipy.stats takes ~0.55 s to import (of ~1.6 s for the trainer's imports): the trainer,
  evaluation and the predictor loaded it at start-up for a rank correlation or two; it is
  imported where those are computed."""
  assert _loaded_by('aesthetics_jax.train.trainer, aesthetics_jax.evaluation.run, '
                    'aesthetics_jax.evaluation.predictor', 'scipy.stats') == []


def test_the_predictor_starts_without_tfds_or_matplotlib():
  """tensorflow_datasets (0.17 s, for the tag names) and matplotlib (0.15 s, for the overlays'
  colour table) were imported at the predictor's start-up (`-X importtime`: 1.5 s, now 1.2): the
  tag names come from `data.layout`, the colour table on first use."""
  assert _loaded_by('aesthetics_jax.evaluation.predictor', 'tensorflow_datasets',
                    'matplotlib') == []


def _loaded_by(imports: str, *prefixes: str) -> list[str]:
  """The modules named one of `prefixes` or under it that importing `imports`
  (comma-separated) loads in a fresh interpreter."""
  import subprocess
  import sys
  code = (f'import sys, {imports}; p = {prefixes!r}; d = tuple(x + "." for x in p); '
          'print(sorted(m for m in sys.modules if m in p or m.startswith(d)))')
  r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                     cwd=PKG.parent)
  assert r.returncode == 0, r.stderr
  return ast.literal_eval(r.stdout.strip())


def test_the_decoder_and_the_dataset_load_no_jax():
  """The decoder (`data/decoder.py`), the TFDS dataset and `prepare_data` are host code:
  preparing AVA never pays for starting JAX (~2-3 s a process), and neither do the dataset's
  validation workers. The commands' flag checks (config values, CAM methods, crop aspects,
  checkpoint errors, the JSON records, the report's overlays) need none either."""
  assert _loaded_by(
      'aesthetics_jax.data.decoder, aesthetics_jax.data.dataset, aesthetics_jax.cli.prepare_data, '
      'aesthetics_jax.data.errors, aesthetics_jax.explain.choices, '
      'aesthetics_jax.train.config_checks, aesthetics_jax.train.checkpoint_errors, '
      'aesthetics_jax.evaluation.records, aesthetics_jax.evaluation.overrides, '
      'aesthetics_jax.report.overlays, aesthetics_jax.report.charts, aesthetics_jax.moved', 'jax'
  ) == []


def test_the_pytorch_grad_cam_memory_child_loads_no_jax():
  """The benchmark measures pytorch-grad-cam's peak RSS in a child that imports
  `bench.torch_models` through `bench.memory`: a pytorch-grad-cam user's process holds no JAX
  (loading it added ~150 MB to PyTorch's side of the ratio)."""
  assert _loaded_by('aesthetics_jax.bench.memory, aesthetics_jax.bench.torch_models, '
                    'aesthetics_jax.bench.synthetic', 'jax') == []


def test_the_placement_helper_loads_no_jax():
  """The benchmark's core-to-core latency helper runs beside timed work: a light process."""
  assert _loaded_by('aesthetics_jax.bench.placement', 'jax') == []


def test_moved_names_still_resolve_with_a_warning():
  from aesthetics_jax import cpu_backend, parallel
  from aesthetics_jax.data import decoder, preprocess
  with pytest.warns(DeprecationWarning, match='moved to aesthetics_jax.data.decoder.decode'):
    assert preprocess.decode is decoder.decode
  with pytest.warns(DeprecationWarning, match='cpu_backend.host_cpu_count'):
    assert parallel.host_cpu_count is cpu_backend.host_cpu_count
  from aesthetics_jax.report import charts, figures, overlays
  with pytest.warns(DeprecationWarning, match='moved to aesthetics_jax.report.overlays.fold'):
    assert figures.fold is overlays.fold
  with pytest.warns(DeprecationWarning, match='moved to aesthetics_jax.report.charts.curves_'):
    assert figures.curves_figure is charts.curves_figure
  with pytest.raises(AttributeError):
    preprocess.no_such_name  # noqa: B018
  with pytest.raises(AttributeError):
    figures.no_such_name  # noqa: B018
  from aesthetics_jax.train import checkpoints, orbax_logging, restore
  with pytest.warns(DeprecationWarning, match='moved to aesthetics_jax.train.restore.restore_'):
    assert checkpoints.restore_for_inference is restore.restore_for_inference
  with pytest.warns(DeprecationWarning, match='aesthetics_jax.train.orbax_logging.quiet_orbax'):
    assert checkpoints.quiet_orbax_errors is orbax_logging.quiet_orbax_errors
  assert checkpoints.CorruptCheckpointError  # what the Checkpointer raises, still importable
  with pytest.raises(AttributeError):
    checkpoints.no_such_name  # noqa: B018
  from aesthetics_jax.evaluation import forward, image_files, inference, predictor, records
  for name, module in (('make_forward', forward), ('load_image', image_files),
                       ('WORK_SIDE', image_files), ('to_json_line', records),
                       ('Predictor', predictor), ('check_box_threshold', predictor)):
    with pytest.warns(DeprecationWarning, match=f'moved to {module.__name__}.{name}'):
      assert getattr(inference, name) is getattr(module, name)
  with pytest.raises(AttributeError):
    inference.no_such_name  # noqa: B018
  from aesthetics_jax.data import dataset, selection
  with pytest.warns(DeprecationWarning, match='moved to aesthetics_jax.data.selection.MISSING'):
    assert dataset.MISSING == selection.MISSING
  assert dataset.select_images is selection.select_images  # what dataset itself calls
