"""Headless Chromium driven over the DevTools protocol on a pipe (no extra Python package).

Chromium's `--remote-debugging-pipe` reads protocol messages (JSON, NUL-terminated) on fd 3
and writes them on fd 4 (what Playwright and Puppeteer use); a short `sh -c 'exec ...'` puts
our pipe ends on those fds. No port, no websocket client, no browser download: the tests only
need a `chromium` (or Chrome) binary on PATH, or its path in `$CHROMIUM`.

    with Browser.start() as b:
      page = b.new_page(width=800)
      page.goto(Path('report.html'))
      page.eval('document.title'); page.errors(); page.screenshot()
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')


def find_chromium() -> str | None:
  """`$CHROMIUM`, else the first of `NAMES` on PATH (None when there is none)."""
  env = os.environ.get('CHROMIUM')
  if env:
    return env if Path(env).is_file() else shutil.which(env)
  return next((p for p in map(shutil.which, NAMES) if p), None)


class ProtocolError(RuntimeError):
  pass


def _move_high(fd: int) -> int:
  high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
  os.close(fd)
  return high


class Browser:
  """One headless Chromium process and its protocol pipe."""

  def __init__(self, binary: str, timeout: float = 30.0):
    self.timeout = timeout
    self._profile = tempfile.mkdtemp(prefix='aj-chromium-')
    to_child_r, self._to_child = os.pipe()
    self._from_child, from_child_w = os.pipe()
    # The child's ends move above fd 9 first, so that putting them on 3 and 4 cannot
    # overwrite one that already sits there.
    to_child_r, from_child_w = _move_high(to_child_r), _move_high(from_child_w)
    args = [binary, '--headless', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe',
            f'--user-data-dir={self._profile}', '--no-first-run', '--no-default-browser-check',
            '--disable-extensions', '--disable-dev-shm-usage', '--hide-scrollbars',
            '--mute-audio', 'about:blank']
    log = os.open(Path(self._profile) / 'stderr.log', os.O_WRONLY | os.O_CREAT, 0o600)
    try:
      # posix_spawn's dup2 actions set the child's fds without a shell or a preexec_fn (which
      # is unsafe in a process with threads, as JAX's is).
      self.pid = os.posix_spawnp(binary, args, dict(os.environ), file_actions=[
          (os.POSIX_SPAWN_DUP2, to_child_r, 3), (os.POSIX_SPAWN_DUP2, from_child_w, 4),
          (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
          (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
          (os.POSIX_SPAWN_DUP2, log, 2)])
    finally:
      for fd in (to_child_r, from_child_w, log):
        os.close(fd)
    self._exit: int | None = None
    self._buf = b''
    self._next_id = 0
    self.events: list[dict] = []
    try:
      self.version = self.call('Browser.getVersion')['product']
    except Exception:
      self.close()
      raise

  @classmethod
  def start(cls, binary: str | None = None) -> 'Browser':
    binary = binary or find_chromium()
    if not binary:
      raise FileNotFoundError('no chromium binary on PATH (tried ' + ', '.join(NAMES) +
                              '); install one or set $CHROMIUM')
    return cls(binary)

  def __enter__(self) -> 'Browser':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def stderr_tail(self, n: int = 2000) -> str:
    p = Path(self._profile) / 'stderr.log'
    return p.read_text(errors='replace')[-n:] if p.is_file() else ''

  # -- protocol ---------------------------------------------------------------------------
  def _read_message(self, deadline: float) -> dict:
    while b'\0' not in self._buf:
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError('no answer from chromium within the timeout')
      ready, _, _ = select.select([self._from_child], [], [], left)
      if not ready:
        continue
      chunk = os.read(self._from_child, 1 << 20)
      if not chunk:
        raise ProtocolError('chromium closed the protocol pipe; its stderr:\n' +
                            self.stderr_tail())
      self._buf += chunk
    msg, self._buf = self._buf.split(b'\0', 1)
    return json.loads(msg)

  def call(self, method: str, params: dict | None = None, session: str | None = None,
           timeout: float | None = None) -> dict:
    """Sends one command and returns its result; events that arrive meanwhile are kept."""
    self._next_id += 1
    msg: dict[str, Any] = {'id': self._next_id, 'method': method, 'params': params or {}}
    if session:
      msg['sessionId'] = session
    os.write(self._to_child, json.dumps(msg).encode() + b'\0')
    deadline = time.monotonic() + (timeout or self.timeout)
    while True:
      reply = self._read_message(deadline)
      if reply.get('id') == self._next_id:
        if 'error' in reply:
          raise ProtocolError(f'{method}: {reply["error"]}')
        return reply.get('result', {})
      if 'method' in reply:
        self.events.append(reply)

  def wait_event(self, method: str, session: str | None = None, timeout: float | None = None,
                 since: int = 0) -> dict:
    """The first event `method` (of `session`) at index >= `since` in `events`."""
    deadline = time.monotonic() + (timeout or self.timeout)
    while True:
      for e in self.events[since:]:
        if e['method'] == method and (session is None or e.get('sessionId') == session):
          return e
      msg = self._read_message(deadline)
      if 'method' in msg:
        self.events.append(msg)

  def new_page(self, width: int = 800, height: int = 900) -> 'Page':
    target = self.call('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = self.call('Target.attachToTarget', {'targetId': target,
                                                  'flatten': True})['sessionId']
    page = Page(self, session)
    for domain in ('Page', 'Runtime', 'Log'):
      page.call(f'{domain}.enable')
    page.call('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height,
                                                     'deviceScaleFactor': 1, 'mobile': False})
    return page

  def alive(self) -> bool:
    if self._exit is None:
      pid, status = os.waitpid(self.pid, os.WNOHANG)
      if pid:
        self._exit = os.waitstatus_to_exitcode(status)
    return self._exit is None

  def _wait(self, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while self.alive():
      if time.monotonic() > deadline:
        return False
      time.sleep(0.05)
    return True

  def close(self) -> None:
    try:
      if self.alive():
        try:
          self.call('Browser.close', timeout=5)
        except Exception:  # pylint: disable=broad-except
          pass
        if not self._wait(10):
          os.kill(self.pid, signal.SIGKILL)
          self._wait(10)
    finally:
      for fd in (self._to_child, self._from_child):
        try:
          os.close(fd)
        except OSError:
          pass
      shutil.rmtree(self._profile, ignore_errors=True)


class Page:
  """One tab (a flattened target session)."""

  def __init__(self, browser: Browser, session: str):
    self.browser, self.session = browser, session
    self._mark = len(browser.events)

  def call(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
    return self.browser.call(method, params, self.session, timeout)

  def goto(self, path_or_url: str | Path, timeout: float | None = None) -> None:
    url = Path(path_or_url).resolve().as_uri() if isinstance(path_or_url, Path) else path_or_url
    self._mark = len(self.browser.events)
    res = self.call('Page.navigate', {'url': url})
    if res.get('errorText'):
      raise ProtocolError(f'{url}: {res["errorText"]}')
    self.browser.wait_event('Page.loadEventFired', self.session, timeout, since=self._mark)

  def eval(self, expression: str, timeout: float | None = None) -> Any:
    """Value of a JS expression (awaited if it is a promise)."""
    res = self.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True,
                                         'awaitPromise': True}, timeout)
    if 'exceptionDetails' in res:
      d = res['exceptionDetails']
      raise ProtocolError(f'JS error: {d.get("exception", {}).get("description") or d}')
    return res['result'].get('value')

  def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
    """Polls a JS expression until it is truthy; returns its value. An evaluation cut short
    by a navigation in progress (after a click on a link: 'Inspected target navigated or
    closed', once in a fresh-clone CI run) is polled again."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        v = self.eval(expression)
      except ProtocolError as e:
        if 'navigated or closed' not in str(e) or time.monotonic() > deadline:
          raise
        v = None
      if v:
        return v
      if time.monotonic() > deadline:
        raise TimeoutError(f'still falsy after {timeout}s: {expression}')
      time.sleep(0.1)

  def click(self, selector: str) -> None:
    """A real mouse click at the centre of the first element matching `selector`."""
    rect = self.eval(f'(() => {{ const e = document.querySelector({json.dumps(selector)});'
                     ' if (!e) return null; e.scrollIntoView({block: "center"});'
                     ' const r = e.getBoundingClientRect();'
                     ' return [r.x + r.width / 2, r.y + r.height / 2]; })()')
    if rect is None:
      raise ProtocolError(f'click: nothing matches {selector!r}')
    x, y = rect
    for kind in ('mouseMoved', 'mousePressed', 'mouseReleased'):
      self.call('Input.dispatchMouseEvent', {'type': kind, 'x': x, 'y': y, 'button': 'left',
                                             'clickCount': 1})

  def errors(self) -> list[str]:
    """Console errors, uncaught exceptions and failed loads since the last `goto`."""
    out = []
    for e in self.browser.events[self._mark:]:
      if e.get('sessionId') != self.session:
        continue
      p = e['params']
      if e['method'] == 'Runtime.exceptionThrown':
        d = p['exceptionDetails']
        out.append('exception: ' + (d.get('exception', {}).get('description') or d['text']))
      elif e['method'] == 'Runtime.consoleAPICalled' and p['type'] in ('error', 'assert'):
        out.append('console.error: ' + ' '.join(str(a.get('value', a.get('description')))
                                                 for a in p['args']))
      elif e['method'] == 'Log.entryAdded' and p['entry']['level'] == 'error':
        out.append(f'log: {p["entry"]["text"]} {p["entry"].get("url", "")}'.strip())
    return out

  def drain(self) -> None:
    """Reads events already sent (a cheap command round-trip)."""
    self.eval('0')

  def screenshot(self, full_page: bool = False) -> bytes:
    params: dict[str, Any] = {'format': 'png'}
    if full_page:
      w, h = self.eval('[document.documentElement.scrollWidth, '
                       'document.documentElement.scrollHeight]')
      params.update(captureBeyondViewport=True,
                    clip={'x': 0, 'y': 0, 'width': w, 'height': h, 'scale': 1})
    return base64.b64decode(self.call('Page.captureScreenshot', params)['data'])


# --- Checks of a loaded page (used by test_browser.py and test_evaluate.py) ------------------

WIDTH = 800

# All images loaded (lazy ones forced), then the broken ones listed.
BROKEN_IMAGES = """(async () => {
  const imgs = [...document.images];
  for (const i of imgs) i.loading = 'eager';
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.filter(i => !i.complete || i.naturalWidth === 0)
             .map(i => i.getAttribute('src').slice(0, 80));
})()"""
OVERFLOW = ('[document.documentElement.scrollWidth, document.documentElement.clientWidth]')
# Map canvases of the open image and how many of them have coloured pixels.
PAINTED_MAPS = """(() => {
  const cs = [...document.querySelectorAll('#detail-body canvas.map')];
  const painted = cs.filter(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
    return false;
  });
  return [cs.length, painted.length];
})()"""


def check_page(page, what):
  assert page.eval(BROKEN_IMAGES) == [], f'{what}: broken images'
  scroll, client = page.eval(OVERFLOW)
  assert scroll <= client, f'{what}: {scroll} px wide in a {client} px window'
  page.drain()
  assert page.errors() == [], f'{what}: console errors'


def open_first_image(page, expected_maps):
  page.click('.card')
  done = page.wait_for('(b => b.dataset.ready ? ["ready", b.dataset.ready] :'
                       ' b.dataset.error ? ["error", b.dataset.error] : null)'
                       '(document.getElementById("detail-body"))')
  assert done[0] == 'ready', f'the maps did not load: {done[1]}'
  total, painted = page.eval(PAINTED_MAPS)
  assert total == painted == expected_maps, (total, painted, expected_maps)
  return int(done[1])
