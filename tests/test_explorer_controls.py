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
