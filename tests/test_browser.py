"""The report and the explorer in a real browser (headless Chromium over the DevTools pipe).

Fails on console errors, broken images, horizontal overflow at 800 px, and an explorer click
that does not show the maps. Skipped (with the reason printed) only when no Chromium binary
is installed; `.ci/run` installs one where it can.
"""
import json

import pytest

import browser as browser_lib
import explorer_fixture

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


@pytest.fixture(scope='module')
def browser():
  binary = browser_lib.find_chromium()
  if binary is None:
    reason = ('no Chromium/Chrome binary found (tried $CHROMIUM, ' +
              ', '.join(browser_lib.NAMES) + '): the report and explorer are NOT checked in '
              'a browser; install chromium (apt-get install chromium) to run tests/test_browser.py')
    print('\n' + reason)
    pytest.skip(reason)
  with browser_lib.Browser.start(binary) as b:
    yield b


def _check_page(page, what):
  assert page.eval(BROKEN_IMAGES) == [], f'{what}: broken images'
  scroll, client = page.eval(OVERFLOW)
  assert scroll <= client, f'{what}: {scroll} px wide in a {client} px window'
  page.drain()
  assert page.errors() == [], f'{what}: console errors'


def _open_first_image(page, expected_maps):
  page.click('.card')
  done = page.wait_for('(b => b.dataset.ready ? ["ready", b.dataset.ready] :'
                       ' b.dataset.error ? ["error", b.dataset.error] : null)'
                       '(document.getElementById("detail-body"))')
  assert done[0] == 'ready', f'the maps did not load: {done[1]}'
  total, painted = page.eval(PAINTED_MAPS)
  assert total == painted == expected_maps, (total, painted, expected_maps)
  return int(done[1])


def test_report_renders_cleanly(browser, evaluated):
  wd, _ = evaluated
  page = browser.new_page(WIDTH)
  page.goto(wd / 'eval' / 'report.html')
  assert page.eval('document.images.length') >= 8
  _check_page(page, 'report.html')
  href = page.eval('document.querySelector(".explorer-link a").getAttribute("href")')
  assert (wd / 'eval' / href).is_file()


def test_explorer_grid_and_maps(browser, evaluated):
  from aesthetics_jax.report import explorer
  wd, m = evaluated
  path = wd / 'eval' / 'explorer' / 'index.html'
  index = explorer.read_index(path)
  page = browser.new_page(WIDTH)
  page.goto(path)
  assert page.eval('document.querySelectorAll(".card").length') == m['num_test_images']
  _check_page(page, 'explorer grid')
  _open_first_image(page, len(index['methods']) * len(index['targets']))
  _check_page(page, 'explorer detail')
  # Sorting by true score, ascending, puts the lowest-rated image first.
  page.eval('(() => { const s = document.getElementById("sort"); s.value = "true";'
            ' document.getElementById("dir").value = "1";'
            ' s.dispatchEvent(new Event("input")); })()')
  first = page.eval('Number(document.querySelector(".card").dataset.row)')
  col = index['columns'].index('true')
  assert index['rows'][first][col] == min(r[col] for r in index['rows'])


def test_explorer_filters_limited_methods_and_vgg(browser, tmp_path):
  """Synthetic explorers (no model): odd tag names, a method computed for one image only,
  pages, filters, and VGG16's single target."""
  path = explorer_fixture.write(tmp_path / 'mnv2', n=7, limited={'scorecam': 1}, chunk_size=3,
                                demo=True)
  page = browser.new_page(WIDTH)
  page.goto(path)
  _check_page(page, 'synthetic explorer')
  assert page.eval('document.getElementById("banner").hidden') is False
  tags = page.eval('[...document.querySelectorAll(".card .meta")].map(e => e.textContent)'
                   '.join(" ")')
  assert explorer_fixture.ODD_TAGS[2] in tags  # shown as text, not markup
  page.eval('(() => { const t = document.getElementById("tag");'
            f' t.value = {json.dumps(explorer_fixture.ODD_TAGS[1])};'
            ' t.dispatchEvent(new Event("input")); })()')
  assert page.eval('document.querySelectorAll(".card").length') == 2  # rows 1 and 4
  page.eval('(() => { const t = document.getElementById("tag"); t.value = "";'
            ' t.dispatchEvent(new Event("input"));'
            ' const p = document.getElementById("pagesize"); p.value = "24";'
            ' const x = document.getElementById("min-true"); x.value = "4.5";'
            ' x.dispatchEvent(new Event("input", {bubbles: true})); })()')
  assert page.eval('document.querySelectorAll(".card").length') == 4  # true 4.5 .. 6.0
  # Row 6 (sorted first by true score, descending) has no ScoreCAM map: a note instead.
  _open_first_image(page, 12)
  assert 'first 1 test image(s)' in page.eval('document.getElementById("detail-body").innerText')
  _check_page(page, 'synthetic explorer detail')

  path = explorer_fixture.write(tmp_path / 'vgg', arch='vgg16', n=3,
                                methods=('gradcam', 'eigencam'))
  page = browser.new_page(WIDTH)
  page.goto(path)
  assert page.eval('document.getElementById("tag-filter").hidden') is True
  _open_first_image(page, 2)
  _check_page(page, 'VGG16 explorer detail')


def test_the_checks_catch_a_broken_page(browser, tmp_path):
  """The checks above would fail on what they look for: a missing thumbnail (broken image and
  a console error), a page wider than the window, and maps that cannot load."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  (path.parent / 'thumbs' / '0.jpg').unlink()
  (path.parent / 'maps' / '0.js').unlink()
  page = browser.new_page(WIDTH)
  page.goto(path)
  with pytest.raises(AssertionError, match='broken images'):
    _check_page(page, 'broken')
  page.eval('document.body.append(Object.assign(document.createElement("div"),'
            ' {style: "width: 1200px; height: 5px"}))')
  scroll, client = page.eval(OVERFLOW)
  assert scroll > client
  page.drain()
  assert any('0.jpg' in e for e in page.errors())
  with pytest.raises(AssertionError, match='maps did not load'):
    _open_first_image(page, 12)
