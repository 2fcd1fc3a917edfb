"""Fixtures shared by several test modules (computed once per session), and the suite's
compilation cache."""
import os
import shutil
import tempfile

import pytest

import browser as browser_lib

_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config):
  """One JAX persistent compilation cache for the whole run: both pytest-xdist workers and
  every subprocess a test starts (they inherit the environment) compile the same small models
  again and again; on 2 cores the cache took five training/checkpoint test files from 249 to
  188 s. Empty at the start of each run, removed at its end (`pytest_unconfigure`), so nothing
  carries over between runs; a JAX_COMPILATION_CACHE_DIR you set is used and left alone."""
  if hasattr(config, 'workerinput') or os.environ.get(_CACHE_ENV):
    return  # an xdist worker (inherits the controller's), or the user's own cache
  config._jax_cache_dir = tempfile.mkdtemp(prefix='aesthetics-jax-tests-jax-cache-')
  os.environ[_CACHE_ENV] = config._jax_cache_dir
  # Cache every compilation, not only those over JAX's default 1 s.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


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
