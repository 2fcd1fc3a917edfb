"""The explorer's controls driven as a user does (headless Chromium, `tests/browser.py`): each
test is one defect the interaction audit found on the demo's explorers."""
import json

from browser import WIDTH, check_page
import explorer_fixture

INFO = 'document.querySelector(".pageinfo").textContent'


def _set(page, id_, value):
  """Sets a control as a user's input would (an 'input' event that bubbles)."""
  page.eval(f'(() => {{ const t = document.getElementById({json.dumps(id_)});'
            f' if (t.type === "checkbox") t.checked = {json.dumps(value)};'
            f' else t.value = {json.dumps(value)};'
            ' t.dispatchEvent(new Event("input", {bubbles: true})); })()')


def test_reset_clears_every_filter_and_the_sort(browser, tmp_path):
  """The reset button did nothing (a TypeError in the console): the form's own reset() was
  shadowed by the button's id."""
  path = explorer_fixture.write(tmp_path / 'x', n=7, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.goto(path)
  for id_, value in (('sort', 'pred'), ('dir', '1'), ('min-true', '4'), ('idq', '100'),
                     ('wrong', True), ('pagesize', '24')):
    _set(page, id_, value)
  assert page.eval(INFO).endswith('3 of 7 images')
  page.click('#reset')
  assert page.eval(INFO) == 'page 1 / 1 · 7 of 7 images'
  assert page.eval('[sort.value, dir.value, pagesize.value, idq.value, wrong.checked,'
                   ' document.getElementById("min-true").value]') == [
                       'true', '-1', '60', '', False, '']
  check_page(page, 'explorer after reset')


# Text under WCAG's 4.5:1 contrast in the element (its colour on the nearest opaque background).
LOW_CONTRAST = """(root => {
  const lum = c => c.match(/[\\d.]+/g).slice(0, 3).map(v => v / 255)
      .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
      .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const bg = e => {
    for (; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor, a = c.match(/[\\d.]+/g);
      if (a.length < 4 || Number(a[3]) > 0.5) return c;
    }
    return 'rgb(255, 255, 255)';
  };
  return [...root.querySelectorAll('*')].filter(e => e.childNodes.length &&
      [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())).map(e => {
    const [a, b] = [lum(getComputedStyle(e).color), lum(bg(e))];
    return [e.textContent.trim(), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  }).filter(([, r]) => r < 4.5);
})"""


def test_the_detail_legend_is_readable(browser, tmp_path):
  """The legend's keys were under 4.5:1: 'attribute / top tag' cyan on white 3.1:1,
  'aesthetic' white on grey and 'green' grey on green 4.5:1 just under."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',), regions=True)
  page = browser.new_page(WIDTH)
  page.goto(path)
  page.click('.card')
  assert page.eval(LOW_CONTRAST + '(document.querySelector("#detail .legend"))') == []


def _key(page, key):
  """A real key press (Enter also types its '\\r', which is what activates a button)."""
  code = {'Enter': 13, 'Tab': 9, 'Escape': 27, 'ArrowLeft': 37, 'ArrowRight': 39}[key]
  down = {'type': 'keyDown' if key == 'Enter' else 'rawKeyDown', 'key': key, 'code': key,
          'windowsVirtualKeyCode': code}
  if key == 'Enter':
    down['text'] = '\r'
  page.call('Input.dispatchKeyEvent', down)
  page.call('Input.dispatchKeyEvent', dict(down, type='keyUp', text=''))


def test_the_detail_arrows_step_by_keyboard_and_stop_at_the_ends(browser, tmp_path):
  """Enter on the dialog's → button stepped once and moved the focus to 'close', so the next
  Enter shut the dialog; ← and → did nothing, silently, at the first and last image."""
  path = explorer_fixture.write(tmp_path / 'x', n=3, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.goto(path)
  page.eval('document.querySelector(".card").focus()')
  _key(page, 'Enter')  # opens the first image (by true score, descending: row 2)
  assert page.eval('[location.hash, document.activeElement.id, dprev.disabled, dnext.disabled]'
                   ) == ['#image=2', 'close', True, False]
  page.eval('dnext.focus()')
  _key(page, 'Enter')
  _key(page, 'Enter')
  assert page.eval('[location.hash, document.activeElement.id, dprev.disabled, dnext.disabled]'
                   ) == ['#image=0', 'close', False, True]  # at the end: focus back on close
  assert page.eval('document.getElementById("detail").hidden') is False


OPEN = 'new URLSearchParams(location.hash.slice(1)).get("image")'  # the open image's row


def test_closing_the_detail_shows_the_image_on_its_page(browser, tmp_path):
  """Stepping with ← past the first card of page 2, then Escape: the grid stayed on page 2
  and the focus fell to the document (the image's card was not on the page)."""
  path = explorer_fixture.write(tmp_path / 'x', n=30, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.goto(path)
  _set(page, 'pagesize', '24')
  page.click('.next')
  page.click('.card')
  first_of_page2 = page.eval(OPEN)
  _key(page, 'ArrowLeft')
  last_of_page1 = page.eval(OPEN)
  assert last_of_page1 != first_of_page2
  _key(page, 'Escape')
  assert page.eval(INFO).startswith('page 1 / 2')
  assert page.eval('document.activeElement.dataset.row') == last_of_page1


def test_the_bottom_pager_shows_the_new_page_from_its_top(browser, tmp_path):
  """'next' under the grid turned the page but left the view at the bottom: the new page's
  first cards were out of sight, above."""
  path = explorer_fixture.write(tmp_path / 'x', n=72, methods=('gradcam',))  # 3 full pages
  page = browser.new_page(WIDTH, 600)
  page.goto(path)
  _set(page, 'pagesize', '24')
  page.click('nav.pager:last-of-type .next')
  assert page.eval(INFO).startswith('page 2 / 3')
  assert page.eval('(r => r.top >= 0 && r.top < innerHeight)'
                   '(document.querySelector(".card").getBoundingClientRect())')
  # A keyboard user's next Enter turns the page again, from a button in sight.
  assert page.eval('document.activeElement === document.querySelector(".pager .next")')


# Left edges of two words of an element's first text node, as laid out.
WORD_LEFTS = """((sel, a, b) => {
  const t = document.querySelector(sel).firstChild, s = t.textContent, r = document.createRange();
  return [a, b].map(w => {
    const i = s.lastIndexOf(w);
    r.setStart(t, i); r.setEnd(t, i + w.length);
    return r.getBoundingClientRect().left;
  });
})"""


def test_a_right_to_left_override_in_a_tag_stays_in_it(browser, tmp_path):
  """A tag name or note holding a lone U+202E reversed the text after it: the detail's
  ' · test row 2' read '2 wor tset · ', the notes' words after it right to left."""
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  ims = explorer_fixture.images(3, 'mobilenet_v2', ['gradcam'])
  ims[2].tag = 'a\u202eevil'
  path = explorer.write_explorer(tmp_path / 'x', ims, arch='mobilenet_v2', methods=['gradcam'],
                                 targets=explorer_fixture.MNV2_TARGETS,
                                 notes=['\u202eleft', 'right after'])
  page = browser.new_page(WIDTH)
  page.goto(path)
  page.click('.card')  # row 2, the highest true score
  test, row = page.eval(WORD_LEFTS + '("#detail-info", "test", "row")')
  assert test < row, (test, row)
  right, after = page.eval(WORD_LEFTS + '("#notes", "right", "after")')
  assert right < after, (right, after)
  assert explorer.read_index(path)['rows'][2][6].startswith('a\u202eevil')  # kept, closed


def test_a_right_to_left_override_in_the_workdir_name_stays_in_it(browser, tmp_path):
  """A workdir named with a lone U+202E reversed the explorer's title after the name:
  '(mobilenet_v2, step 7)' read ')7 pets ,2v_tenelibom('."""
  from aesthetics_jax.evaluation import run  # pylint: disable=import-outside-toplevel
  title = run.explorer_title(tmp_path / 'a\u202eevil', 'mobilenet_v2', 7)
  path = explorer_fixture.write(tmp_path / 'x', n=2, methods=('gradcam',), title=title)
  page = browser.new_page(WIDTH)
  page.goto(path)
  arch, step = page.eval(WORD_LEFTS + '("h1", "mobilenet_v2", "step")')
  assert arch < step, (arch, step)


def test_the_vgg16_legend_names_only_its_own_box(browser, tmp_path):
  """VGG16's detail legend named the average (red) and attribute (cyan) boxes and the crop as
  'the average box', though it draws the aesthetic box only and crops to it."""
  path = explorer_fixture.write(tmp_path / 'x', arch='vgg16', n=2, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.goto(path)
  page.click('.card')
  legend = page.eval('document.querySelector("#detail .legend").innerText')
  assert 'aesthetic (white); crop = the aesthetic box.' in legend, legend
  assert 'average' not in legend and 'attribute' not in legend, legend


def test_the_detail_says_when_a_box_is_the_full_frame(browser, tmp_path):
  """A box that is the whole image drew its outline along the panel's edge, unmarked (the PNG
  overlays' legends said '(full frame)'); the crop then looked like a crop."""
  from aesthetics_jax.report import explorer  # pylint: disable=import-outside-toplevel
  ims = explorer_fixture.images(2, 'mobilenet_v2', ['gradcam'])
  ims[0].boxes['gradcam'].update(aesthetic=[0.0, 0.0, 1.0, 1.0], average=[0.0, 0.0, 1.0, 1.0])
  path = explorer.write_explorer(tmp_path / 'x', ims, arch='mobilenet_v2', methods=['gradcam'],
                                 targets=explorer_fixture.MNV2_TARGETS, method_images={})
  page = browser.new_page(WIDTH)
  page.goto(path)
  captions = ('[...document.querySelectorAll("#detail-body figcaption")]'
              '.map(c => c.textContent)')
  page.click('.card[data-row="0"]')
  page.wait_for('document.getElementById("detail-body").dataset.ready === "0"')
  got = page.eval(captions)
  assert any(c.endswith(' · aesthetic and average boxes = full frame') for c in got), got
  assert 'crop = full frame (nothing cut)' in got, got
  assert not any('attribute box' in c for c in got), got
  page.click('#dprev')  # the grid's order is by true score, row 1 first
  page.wait_for('document.getElementById("detail-body").dataset.ready === "1"')
  got = page.eval(captions)
  assert not any('full frame' in c for c in got) and 'crop' in got, got
  check_page(page, 'explorer detail with a full-frame box')


def test_a_card_without_the_first_methods_map_does_not_claim_a_miss(browser, tmp_path):
  """With scorecam first (computed for the first N images only), the grid read 'scorecam low
  peak outside' on every later image with a region, while its 'outside' filter kept none."""
  path = explorer_fixture.write(tmp_path / 'x', n=7, methods=('scorecam',), regions=True,
                                limited={'scorecam': 3})
  page = browser.new_page(WIDTH)
  page.goto(path)
  flags = page.eval('Object.fromEntries([...document.querySelectorAll(".card")].map(c => '
                    '[c.dataset.row, (c.querySelector(".region-flag") || {}).textContent]))')
  assert flags == {'0': 'scorecam low peak inside', '2': 'scorecam low peak outside',
                   '4': 'scorecam low peak not computed',
                   '6': 'scorecam low peak not computed'}, flags


def test_a_reload_keeps_the_view(browser, tmp_path):
  """A reload (or a link copied from the address bar) kept the open image only: the sort,
  filters and page went back to their defaults, and ← / → then stepped through another order
  than the one the image was opened from."""
  path = explorer_fixture.write(tmp_path / 'x', n=30, methods=('gradcam',))
  page = browser.new_page(WIDTH)
  page.goto(path)
  for id_, value in (('sort', 'pred'), ('dir', '1'), ('min-true', '3.5'), ('pagesize', '24')):
    _set(page, id_, value)
  page.click('.next')
  view = page.eval(INFO)
  assert view == 'page 2 / 2 · 29 of 30 images'
  page.click('.card:nth-child(3)')
  before = page.eval(OPEN)
  _key(page, 'ArrowLeft')
  step = page.eval(OPEN)
  mark = len(browser.events)
  page.call('Page.reload')
  browser.wait_event('Page.loadEventFired', page.session, since=mark)
  assert page.eval(INFO) == view
  assert page.eval('[sort.value, dir.value, pagesize.value,'
                   ' document.getElementById("min-true").value]') == ['pred', '1', '24', '3.5']
  assert page.eval('document.getElementById("detail").hidden') is False
  assert page.eval(OPEN) == step
  _key(page, 'ArrowRight')
  assert page.eval(OPEN) == before  # the same order as before the reload
  _key(page, 'Escape')
  assert page.eval(OPEN) is None and 'pagesize=24' in page.eval('location.hash')
  page.click('#reset')
  assert page.eval('location.hash') == ''
