"""The explorer and report in a real browser (headless Chromium over the DevTools pipe), on
synthetic explorers and reports; evaluate()'s own report and explorer are checked the same
way in test_evaluate.py.

Fails on console errors, broken images, horizontal overflow at 800 px, and an explorer click
that does not show the maps. Skipped (with the reason printed) only when no Chromium binary
is installed; `.ci/run` installs one where it can.
"""
import json
import pathlib

import pytest

from browser import OVERFLOW, WIDTH, check_page, open_first_image
import explorer_fixture


def test_explorer_filters_limited_methods_and_vgg(browser, tmp_path):
  """Synthetic explorers (no model): odd tag names, a method computed for one image only,
  pages, filters, and VGG16's single target."""
  path = explorer_fixture.write(tmp_path / 'mnv2', n=7, limited={'scorecam': 1}, chunk_size=3,
                                demo=True)
  page = browser.new_page(WIDTH)
  page.goto(path)
  check_page(page, 'synthetic explorer')
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
  open_first_image(page, 13)
  assert 'first 1 test image(s)' in page.eval('document.getElementById("detail-body").innerText')
  check_page(page, 'synthetic explorer detail')

  path = explorer_fixture.write(tmp_path / 'vgg', arch='vgg16', n=3,
                                methods=('gradcam', 'eigencam'))
  page = browser.new_page(WIDTH)
  page.goto(path)
  assert page.eval('document.getElementById("tag-filter").hidden') is True
  assert page.eval('document.getElementById("region-filter").hidden') is True  # no masks
  open_first_image(page, 4)  # 2 methods x (aesthetic, low)
  check_page(page, 'VGG16 explorer detail')


MAGENTA_PIXELS = """(sel => [...document.querySelectorAll(sel)].map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 80 && d[i + 2] > 200) n++;
  return n;
}))"""


def test_explorer_outlines_regions_and_marks_low_peaks(browser, tmp_path):
  """With region masks: the region filter, the outline on the image and on each low map,
  and the peak's verdict in the low map's caption."""
  path = explorer_fixture.write(tmp_path / 'r', n=7, methods=('gradcam',), regions=True)
  page = browser.new_page(WIDTH)
  page.goto(path)
  check_page(page, 'explorer with regions')
  cards = 'document.querySelectorAll(".card").length'
  assert page.eval('document.getElementById("region-method").textContent') == 'gradcam'
  for value, n in (('region', 4), ('in', 1), ('out', 2), ('flat', 1), ('', 7)):
    page.eval('(() => { const q = document.getElementById("regionq");'
              f' q.value = {json.dumps(value)}; q.dispatchEvent(new Event("input")); }})()')
    assert page.eval(cards) == n, value
  page.eval('(() => { const q = document.getElementById("regionq"); q.value = "in";'
            ' q.dispatchEvent(new Event("input")); })()')
  assert open_first_image(page, 13) == 0
  assert page.eval('document.getElementById("region-legend").hidden') is False
  # The outline is drawn on the image and on the low map, not on the other maps.
  assert all(n > 20 for n in page.eval(MAGENTA_PIXELS + '("#detail-body canvas.region")'))
  low = page.eval(MAGENTA_PIXELS + '(\'#detail-body canvas.map[data-target="low"]\')')
  aes = page.eval(MAGENTA_PIXELS + '(\'#detail-body canvas.map[data-target="aesthetic"]\')')
  assert low[0] > 20 and aes == [0]
  caps = page.eval('[...document.querySelectorAll("#detail-body figcaption")]'
                   '.map(e => e.textContent).join(" | ")')
  assert 'image and its region' in caps and 'peak inside the region' in caps
  check_page(page, 'explorer detail with a region')
  page.eval('(() => { document.getElementById("close").click();'
            ' const q = document.getElementById("regionq"); q.value = "out";'
            ' q.dispatchEvent(new Event("input")); })()')
  assert open_first_image(page, 13) in (2, 6)
  assert 'peak outside the region' in page.eval(
      'document.getElementById("detail-body").innerText')
  # A low map that points nowhere: said so, no ring drawn; Tab stays in the dialog.
  page.eval('(() => { document.getElementById("close").click();'
            ' const q = document.getElementById("regionq"); q.value = "flat";'
            ' q.dispatchEvent(new Event("input")); })()')
  assert open_first_image(page, 13) == 4
  assert 'points nowhere: a miss' in page.eval('document.getElementById("detail-body").innerText')
  page.eval('document.getElementById("sort").focus()')  # behind the dialog
  page.eval('document.dispatchEvent(new KeyboardEvent("keydown", {key: "Tab"}))')
  assert page.eval('document.getElementById("detail").contains(document.activeElement)')


def test_the_checks_catch_a_broken_page(browser, tmp_path):
  """The checks above would fail on what they look for: a missing thumbnail (broken image and
  a console error), a page wider than the window, and maps that cannot load."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  (path.parent / 'thumbs' / '0.jpg').unlink()
  (path.parent / 'maps' / '0.js').unlink()
  page = browser.new_page(WIDTH)
  page.goto(path)
  with pytest.raises(AssertionError, match='broken images'):
    check_page(page, 'broken')
  page.eval('document.body.append(Object.assign(document.createElement("div"),'
            ' {style: "width: 1200px; height: 5px"}))')
  scroll, client = page.eval(OVERFLOW)
  assert scroll > client
  page.drain()
  assert any('0.jpg' in e for e in page.errors())
  with pytest.raises(AssertionError, match='maps did not load'):
    open_first_image(page, 13)


DETAIL_STATE = ('(b => b.dataset.ready ? ["ready", b.dataset.ready] : b.dataset.error ?'
                ' ["error", b.innerText] : null)(document.getElementById("detail-body"))')


@pytest.mark.parametrize('chunk, says', [
    ('explorerChunk(0,{"0":{"maps":', 'maps/0.js is damaged'),  # truncated mid-write
    ('', 'maps/0.js is damaged'),
    ('explorerChunk(0,{});', 'maps/0.js has no maps for image row')])
def test_a_damaged_chunk_is_said_in_the_page(browser, tmp_path, chunk, says):
  """A maps file that loads but is cut short, empty or another run's: the dialog says so
  (it showed 'loading maps…' for ever, or a bare TypeError)."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  (path.parent / 'maps' / '0.js').write_text(chunk)
  page = browser.new_page(WIDTH)
  page.goto(path)
  page.click('.card')
  state, text = page.wait_for(DETAIL_STATE, timeout=8)
  assert state == 'error' and says in text, text


def test_tags_named_like_object_properties_are_counted(browser, tmp_path):
  """Tag names are data: 'constructor' was counted as "function Object() {...}1" and
  '__proto__' left out of the tag filter."""
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  ims = explorer_fixture.images(3, 'mobilenet_v2', ['gradcam'])
  for im, tag in zip(ims, ('constructor', '__proto__', 'constructor')):
    im.tag = tag
  path = explorer.write_explorer(tmp_path / 'x', ims, arch='mobilenet_v2', methods=['gradcam'],
                                 targets=explorer_fixture.MNV2_TARGETS)
  page = browser.new_page(WIDTH)
  page.goto(path)
  options = page.eval('[...document.getElementById("tag").options].map(o => o.text)')
  assert options == ['any', '__proto__ (1)', 'constructor (2)'], options
  check_page(page, 'odd tag names')


def test_long_unbroken_title_and_tag_names_fit_the_window(browser, tmp_path):
  """A workdir or tag name with no space to break at: the title wraps and the tag filter stays
  narrow (the page was 43,000 px wide in an 800 px window)."""
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  long = 'run_' + 'x' * 3000
  ims = explorer_fixture.images(2, 'mobilenet_v2', ['gradcam'])
  ims[0].tag = ims[1].tag = 'tag_' + 'y' * 3000
  path = explorer.write_explorer(tmp_path / 'x', ims, arch='mobilenet_v2', methods=['gradcam'],
                                 targets=explorer_fixture.MNV2_TARGETS,
                                 title=f'aesthetics-jax explorer: {long}', notes=[long])
  page = browser.new_page(WIDTH)
  page.goto(path)
  check_page(page, 'long names')
  open_first_image(page, 13)
  check_page(page, 'long names, detail')


def test_report_with_long_unbroken_names_fits_the_window(browser, tmp_path):
  """A model (workdir) name or title with no space to break at: headings and the model links
  wrap (the report was several thousand px wide in an 800 px window)."""
  from aesthetics_jax.report import html as report_html  # pylint: disable=C0415
  long = 'run_' + 'x' * 400
  path = pathlib.Path(report_html.write_report(
      tmp_path / 'report.html', [dict(name=long, arch='vgg16', workdir=long, metrics={})],
      title=long))
  page = browser.new_page(WIDTH)
  page.goto(path)
  check_page(page, 'report with long names')


def test_a_missing_thumbnail_is_said_on_its_card(browser, tmp_path):
  """The page copied without its thumbs/ (or one file lost): the card says which file, where
  it showed an empty box."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  (path.parent / 'thumbs' / '1.jpg').unlink()
  page = browser.new_page(WIDTH)
  page.goto(path)
  text = page.wait_for('document.querySelector(\'.card[data-row="1"] .missing\')?.textContent',
                       timeout=8)
  assert text == 'thumbs/1.jpg could not be loaded'


def test_a_right_to_left_override_in_a_name_stays_in_it(browser, tmp_path):
  """A model name holding an unterminated U+202E (right-to-left override) reversed what came
  after it: the later nav links came out right to left, and the rest of its heading."""
  from aesthetics_jax.report import html as report_html  # pylint: disable=C0415
  secs = [dict(name=n, arch='vgg16', step=1, metrics={}) for n in ('a\u202eevil', 'bee', 'cat')]
  path = pathlib.Path(report_html.write_report(tmp_path / 'report.html', secs))
  page = browser.new_page(WIDTH)
  page.goto(path)
  check_page(page, 'report with an RTL override in a name')
  lefts = page.eval("Array.from(document.querySelectorAll('nav a'))"
                    ".map(a => a.getBoundingClientRect().left)")
  assert lefts == sorted(lefts), lefts  # every link left to right, in order
  # The heading's text after the name reads left to right: '(vgg16)' right of the name.
  x = page.eval("""(() => {
    const h = document.getElementById('model-a\\u202eevil'), r = document.createRange();
    const text = h.lastChild;  // ' (vgg16), checkpoint step 1'
    r.setStart(text, 2); r.setEnd(text, 7);
    return [h.querySelector('bdi').getBoundingClientRect().right, r.getBoundingClientRect().left];
  })()""")
  assert x[0] <= x[1] + 1, x


@pytest.mark.parametrize('data', ['{"rows": [[1, 2', '{}', ''])
def test_damaged_page_data_is_said_in_the_page(browser, tmp_path, data):
  """index.html's own data cut short or edited: the page was blank, with an uncaught error."""
  import re  # pylint: disable=import-outside-toplevel
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  text = path.read_text()
  start = text.index('<script id="explorer-data" type="application/json">')
  end = text.index('</script>', start)
  head = re.match(r'<script[^>]*>', text[start:]).group(0)
  path.write_text(text[:start] + head + data + text[end:])
  page = browser.new_page(WIDTH)
  page.goto(path)
  said = page.eval('document.getElementById("grid").textContent')
  assert "This page's own data is damaged" in said and 'aesthetics-evaluate' in said, said
  assert page.errors() == []


def test_the_explorer_says_it_needs_javascript(browser, tmp_path):
  """With JavaScript off the page was empty controls and no word why."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.call('Emulation.setScriptExecutionDisabled', {'value': True})
  page.goto(path)
  assert 'drawn by JavaScript, which is off' in page.eval('document.body.innerText')
  page.call('Emulation.setScriptExecutionDisabled', {'value': False})
  page.goto(path)
  assert 'drawn by JavaScript' not in page.eval('document.body.innerText')


@pytest.mark.parametrize('width', [360, 1600])
def test_pages_fit_a_phone_and_a_wide_window(browser, tmp_path, width):
  """At a phone's 360 px the explorer's range filters stayed on one line, and the page
  scrolled sideways (583 px wide); at 1600 px nothing is stretched past the window."""
  from aesthetics_jax.report import html as report_html  # pylint: disable=C0415
  path = explorer_fixture.write(tmp_path / 'x', n=7, regions=True)
  page = browser.new_page(width)
  page.goto(path)
  check_page(page, f'explorer at {width} px')
  open_first_image(page, 26)
  check_page(page, f'explorer detail at {width} px')
  report = pathlib.Path(report_html.write_report(
      tmp_path / 'report.html', [dict(name='m', arch='mobilenet_v2', step=1, metrics={},
                                      explorer=str(path))]))
  page = browser.new_page(width)
  page.goto(report)
  check_page(page, f'report at {width} px')


def test_a_workdir_named_in_another_encoding_gets_its_pages(browser, tmp_path):
  """A folder name that is not UTF-8 (b'run\\xff', from a Latin-1 system) reaches Python as
  lone surrogates: with such a --masks_dir (its path is in the report), the report's write
  failed (UnicodeEncodeError) after the whole evaluation. The name shows U+FFFD, and the
  explorer's link opens the folder's own file."""
  import os  # pylint: disable=import-outside-toplevel
  from aesthetics_jax.report import html as report_html  # pylint: disable=C0415
  wd = pathlib.Path(os.fsdecode(os.fsencode(tmp_path) + b'/run\xff'))
  path = explorer_fixture.write(wd / 'explorer', n=2, methods=('gradcam',),
                                title=f'explorer: {wd.name}', notes=[wd.name])
  report = pathlib.Path(report_html.write_report(
      wd / 'report.html', [dict(name=wd.name, arch='vgg16', step=1, workdir=str(wd), metrics={},
                                explorer=str(path))], title=f'{wd.name} evaluation'))
  page = browser.new_page(WIDTH)
  page.goto(report)
  check_page(page, 'report in a folder named in another encoding')
  assert page.eval('document.title') == 'run\ufffd evaluation'
  page.click('.explorer-link a')
  page.wait_for('document.readyState === "complete" && document.querySelectorAll(".card").length')
  assert page.eval('document.title') == 'explorer: run\ufffd'
  check_page(page, 'explorer in a folder named in another encoding')
