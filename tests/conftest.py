"""Fixtures shared by several test modules (computed once per session), and the suite's
compilation cache."""
import os
import shutil
import signal
import tempfile

import pytest

import browser as browser_lib
from aesthetics_jax import cpu_backend  # os and sys only: JAX is not started here

_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
# XLA:CPU code generation for the tests: LLVM at -O0 and the classic (non-MLIR) fusion
# emitters. The suite's tiny models spend far longer compiling than running; measured on the
# 2-core EPYC (fresh processes, tiny MobileNetV2 / VGG16 value_and_grad at 32 px): compile
# 13.9 -> 6.9 s and 3.1 -> 0.8 s, while their steps took 70 -> 65 ms and 19 -> 25 ms; the
# whole suite 15.5 -> 10.5 min. The maths is the same HLO; only the machine code differs.
# Also MobileNetV2's depthwise convs as one grouped conv ('conv') where the CPU default is nine
# shifted slices ('shift', models/depthwise.py): tiny test models trace and compile about twice
# as fast (value_and_grad of the 0.25-width model at 32 px, 15 -> 8 s); test_models.py and
# test_pretrained.py check 'shift' against 'conv' and torchvision explicitly.
# AESTHETICS_JAX_TEST_XLA_DEFAULTS=0 runs the suite with XLA's own code generation and the
# CPU's own depthwise choice; a flag you set in XLA_FLAGS, or a choice in
# AESTHETICS_JAX_DEPTHWISE_AUTO, wins.
_FAST_COMPILE_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false')
_DEPTHWISE_ENV, _TEST_DEPTHWISE = 'AESTHETICS_JAX_DEPTHWISE_AUTO', 'conv'
_FAST_COMPILE_OPT_OUT = 'AESTHETICS_JAX_TEST_XLA_DEFAULTS'


def pytest_configure(config):
  """One JAX persistent compilation cache for the whole run: both pytest-xdist workers and
  every subprocess a test starts (they inherit the environment) compile the same small models
  again and again; on 2 cores the cache took five training/checkpoint test files from 249 to
  188 s. Empty at the start of each run, removed at its end (`pytest_unconfigure`), so nothing
  carries over between runs; a JAX_COMPILATION_CACHE_DIR you set is used and left alone.
  Also the test compile flags (`_fast_compile_flags`), inherited the same way."""
  _ctrl_c_delivered()
  if hasattr(config, 'workerinput'):
    return  # an xdist worker: inherits the controller's environment
  _fast_compile_flags()
  _malloc_tunable()
  if os.environ.get(_CACHE_ENV):
    return  # the user's own cache
  config._jax_cache_dir = tempfile.mkdtemp(prefix='aesthetics-jax-tests-jax-cache-')
  os.environ[_CACHE_ENV] = config._jax_cache_dir
  # Cache every compilation, not only those over JAX's default 1 s.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


def _ctrl_c_delivered() -> None:
  """Python's Ctrl-C handler where the suite was started with SIGINT ignored (a shell's
  `cmd &` without job control, nohup): an ignored SIGINT stays ignored in every process
  started from it, and the tests of Ctrl-C handling then failed (nothing raised, no
  'caught'). A handler, unlike SIG_IGN, is reset to the default at exec, so the subprocesses
  the tests start get Python's own handler too."""
  if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _malloc_tunable() -> None:
  """Sets the commands' malloc tunable (`cpu_backend.reexec_with_malloc_tunable`) for every
  process the tests start, as a user's shell may: each command otherwise re-executes itself
  once to set it, importing its modules twice (a usage error: 0.49 -> 0.23 s; the suite starts
  ~200 commands). test_cpu_backend checks the re-exec itself in processes without it."""
  if (cpu_backend.env_off(cpu_backend.OPT_OUT)  # the user's opt-out: no tunable, no re-exec
      or (cpu_backend.glibc_version() or (0, 0)) < (2, 35)):
    return
  tunables = cpu_backend.tunables_with_malloc(os.environ.get('GLIBC_TUNABLES', ''))
  if tunables is not None:
    os.environ['GLIBC_TUNABLES'] = tunables


def _fast_compile_flags() -> None:
  """Appends `_FAST_COMPILE_FLAGS` to XLA_FLAGS and sets the depthwise choice (inherited by
  the workers and every subprocess a test starts) unless opted out or already set."""
  if not cpu_backend.env_off(_FAST_COMPILE_OPT_OUT):
    os.environ['XLA_FLAGS'] = cpu_backend.append_missing(os.environ.get('XLA_FLAGS', ''),
                                                         _FAST_COMPILE_FLAGS)
    os.environ.setdefault(_DEPTHWISE_ENV, _TEST_DEPTHWISE)


# The slowest test files, slowest first (seconds of one file's tests and fixtures on the 2-core
# EPYC, `--durations`, 2026-12-02). Two workers take whole files (`--dist loadfile`); started
# first, these leave the short files to fill the end instead of one long file keeping one
# worker busy while the other idles. Files not named keep their place after them.
_SLOW_FIRST = ('test_control',            # ~95 s: trains 150 steps, three evaluations
               'test_benchmark',          # ~86
               'test_multidevice_train',  # ~74: two pairs of 2-process runs
               'test_cam',                # ~66
               'test_demo',               # ~57: the demo's two processes
               'test_predict', 'test_train', 'test_feature_cache', 'test_checkpoints',
               'test_evaluate', 'test_models')


def pytest_collection_modifyitems(session, config, items):
  """Runs `_SLOW_FIRST`'s files first, in that order (stable for the rest)."""
  del session, config
  rank = {name: i for i, name in enumerate(_SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def pytest_unconfigure(config):
  path = getattr(config, '_jax_cache_dir', None)
  if path:
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(_CACHE_ENV) == path:
      del os.environ[_CACHE_ENV]


@pytest.fixture(scope='session')
def browser():
  """Headless Chromium for the page checks (`tests/browser.py`); skips, saying why, without
  a Chromium binary (`.ci/run` installs one where it can)."""
  binary = browser_lib.find_chromium()
  if binary is None:
    reason = ('no Chromium/Chrome binary found (tried $CHROMIUM, ' +
              ', '.join(browser_lib.NAMES) + '): the report and explorer are NOT checked in '
              'a browser; install chromium (apt-get install chromium) to run the browser checks')
    print('\n' + reason)
    pytest.skip(reason)
  with browser_lib.Browser.start(binary) as b:
    yield b
