"""Fixtures shared by several test modules (computed once per session)."""
import pytest

import browser as browser_lib


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
