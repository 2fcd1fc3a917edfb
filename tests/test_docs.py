"""The README and docs/ hold together: every relative link reaches a file (and a heading, where
it names one), and every page under docs/ is reachable from the README."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]
# [text](target) outside code spans; images too. Targets with a scheme are not ours to check.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _prose(text: str) -> str:
  """The text without fenced code blocks or inline code, where brackets are not links."""
  text = re.sub(r'(?ms)^```.*?^```', '', text)
  return re.sub(r'`[^`\n]*`', '', text)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r'`', '', heading.strip().lower())
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(page: Path) -> set[str]:
  text = re.sub(r'(?ms)^```.*?^```', '', page.read_text())
  return {slug(m.group(1)) for m in re.finditer(r'(?m)^#{1,6} (.+)$', text)}


def links(page: Path) -> list[str]:
  return [t for t in LINK.findall(_prose(page.read_text())) if '://' not in t
          and not t.startswith('mailto:')]


def test_slug_follows_github():
  assert slug('Frozen encoder: the feature cache (K views) or online crops') == (
      'frozen-encoder-the-feature-cache-k-views-or-online-crops')
  assert slug('Predicting: `aesthetics-predict`') == 'predicting-aesthetics-predict'
  assert slug("Figure 8's \"diffuse at mid-range scores\", measured") == (
      'figure-8s-diffuse-at-mid-range-scores-measured')


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
  broken = []
  for target in links(page):
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(f'{target}: no such file')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      broken.append(f'{target}: no heading #{anchor} in {dest.relative_to(ROOT)}')
  assert not broken, f'{page.relative_to(ROOT)}: ' + '; '.join(broken)


def test_every_docs_page_is_linked_from_the_readme():
  linked = {(ROOT / t.partition('#')[0]).resolve() for t in links(ROOT / 'README.md')}
  orphans = [str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md')
             if p.resolve() not in linked]
  assert not orphans, f'docs pages no README link reaches: {orphans}'


def test_the_link_checker_finds_a_broken_link(tmp_path: Path):
  """The checks above could not pass by finding no links."""
  assert len(links(ROOT / 'README.md')) >= 10
  page = tmp_path / 'x.md'
  page.write_text('# Top\n\n[a](missing.md) [b](#top) [c](#nope) `[d](code.md)`\n')
  assert links(page) == ['missing.md', '#top', '#nope']
  assert anchors(page) == {'top'}
