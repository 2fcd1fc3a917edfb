"""The explorer in a real browser (headless Chromium over the DevTools pipe), on synthetic
explorers; evaluate()'s own report and explorer are checked the same way in test_evaluate.py.

Fails on console errors, broken images, horizontal overflow at 800 px, and an explorer click
that does not show the maps. Skipped (with the reason printed) only when no Chromium binary
is installed; `.ci/run` installs one where it can.
"""
import json

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
  open_first_image(page, 12)
  assert 'first 1 test image(s)' in page.eval('document.getElementById("detail-body").innerText')
  check_page(page, 'synthetic explorer detail')

  path = explorer_fixture.write(tmp_path / 'vgg', arch='vgg16', n=3,
                                methods=('gradcam', 'eigencam'))
  page = browser.new_page(WIDTH)
  page.goto(path)
  assert page.eval('document.getElementById("tag-filter").hidden') is True
  open_first_image(page, 2)
  check_page(page, 'VGG16 explorer detail')


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
    open_first_image(page, 12)
