"""AVA metadata parsing on crafted rows: records, targets, subsets, one-line errors."""
from pathlib import Path

import numpy as np
import pytest

from aesthetics_jax.data import ava


def _row(idx, image_id, votes, t1=0, t2=0, ch=7):
  return ' '.join(map(str, [idx, image_id, *votes, t1, t2, ch]))


V_HIGH = [0, 0, 0, 1, 2, 10, 20, 10, 5, 2]   # mean > 5
V_LOW = [5, 10, 20, 30, 10, 5, 2, 1, 0, 0]   # mean < 5
V_FIVE = [0, 0, 0, 0, 10, 0, 0, 0, 0, 0]     # mean == 5 → low


def _write_root(root: Path, rows, train_ids, test_ids, tags=None):
  root.mkdir(parents=True, exist_ok=True)
  (root / 'AVA.txt').write_text('\n'.join(rows) + '\n')
  if tags is not None:
    (root / 'tags.txt').write_text(''.join(f'{k} {v}\n' for k, v in tags.items()))
  (root / 'challenges.txt').write_text('7 Shadows_and Light\n12 Free Study\n')
  lists = root / 'style_image_lists'
  lists.mkdir(exist_ok=True)
  (lists / 'train.jpgl').write_text(''.join(f'{i}\n' for i in train_ids))
  (lists / 'test.jpgl').write_text(''.join(f'{i}\n' for i in test_ids))
  return root


def test_read_ava_txt_records(tmp_path):
  p = tmp_path / 'AVA.txt'
  p.write_text('\n'.join([_row(1, 101, V_HIGH, 15, 0), _row(2, 102, V_LOW, 0, 21, 12), '',
                          _row(3, 103, V_FIVE, 4, 4)]) + '\n')
  recs = ava.read_ava_txt(p)
  assert [r.image_id for r in recs] == [101, 102, 103]
  a, b, c = recs
  assert a.tags == (15,) and b.tags == (21,) and c.tags == (4,)
  assert b.challenge_id == 12 and a.padded_tags == (15, 0)
  assert a.votes.dtype == np.int64 and a.votes.shape == (10,) and not a.votes.flags.writeable
  assert a.num_votes == sum(V_HIGH)
  s = np.arange(1, 11)
  want_mean = np.dot(V_HIGH, s) / sum(V_HIGH)
  want_std = np.sqrt(np.dot(V_HIGH, (s - want_mean) ** 2) / sum(V_HIGH))
  np.testing.assert_allclose(a.mean_score, want_mean, rtol=1e-12)
  np.testing.assert_allclose(a.std_score, want_std, rtol=1e-12)
  np.testing.assert_allclose(a.distribution, np.array(V_HIGH) / sum(V_HIGH), rtol=1e-6)
  assert (a.label, b.label, c.label) == (1, 0, 0)
  assert a == ava.read_ava_txt(p)[0] and a != b
  assert ava.AvaImage(1, V_HIGH, (0, 9, 9), 0).tags == (9,)
  p.write_text('\ufeff' + _row(1, 101, V_HIGH, 15, 0) + '\r\n')  # BOM + CRLF
  assert ava.read_ava_txt(p)[0].tags == (15,)


def test_votes_to_targets_matches_records():
  votes = np.array([V_HIGH, V_LOW, V_FIVE])
  t = ava.votes_to_targets(votes)
  recs = [ava.AvaImage(i, v, (), 0) for i, v in enumerate(votes)]
  assert t['distribution'].dtype == np.float32 and t['distribution'].shape == (3, 10)
  assert t['label'].dtype == np.int32
  np.testing.assert_allclose(t['distribution'].sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(t['mean_score'], [r.mean_score for r in recs], rtol=1e-6)
  np.testing.assert_allclose(t['std_score'], [r.std_score for r in recs], rtol=1e-5)
  np.testing.assert_array_equal(t['label'], [r.label for r in recs])
  with pytest.raises(ValueError):
    ava.votes_to_targets(np.zeros((1, 10)))


def test_tags_to_soft_labels():
  soft = ava.tags_to_soft_labels(np.array([[1, 66], [5, 0], [0, 0], [3, 3]]))
  assert soft.shape == (4, 66) and soft.dtype == np.float32
  np.testing.assert_allclose(soft[0, [0, 65]], [0.5, 0.5])
  assert soft[1, 4] == 1.0 and soft[1].sum() == 1.0
  assert not soft[2].any()
  assert soft[3, 2] == 1.0 and soft[3].sum() == 1.0
  with pytest.raises(ValueError):
    ava.tags_to_soft_labels(np.array([[67, 0]]))


@pytest.mark.parametrize('content', ['', '\n\n', '\ufeff'])
def test_empty_metadata_files_are_named(tmp_path, content):
  """An empty AVA.txt reached prepare's 'no usable train images (skipped: not_in_ava_txt
  1236); check the images and the style lists', which were fine; an empty tags.txt made
  AVA.txt's first tag 'out of range'. Each file is now named as empty."""
  root = _write_root(tmp_path / 'r', [_row(1, 101, V_HIGH, 15)], [101], [], {15: 'Floral'})
  (root / 'tags.txt').write_text(content)
  with pytest.raises(ava.AvaError) as e:
    ava.load_subset(root, 'style')
  assert str(e.value) == (f'{root / "tags.txt"}: no tags (an empty file); copy tags.txt from '
                          'the AVA release again')
  (root / 'tags.txt').write_text('15 Floral\n')
  (root / 'AVA.txt').write_text(content)
  with pytest.raises(ava.AvaError) as e:
    ava.load_subset(root, 'style')
  assert str(e.value) == (f'{root / "AVA.txt"}: no rows (an empty file); copy AVA.txt from '
                          'the AVA release again')


def test_a_name_that_is_not_utf8_is_kept_with_a_warning(tmp_path, caplog):
  """A Latin-1 'Publicité' became 'Publicit\ufffd' in the dataset's tag names, silently."""
  (tmp_path / 'tags.txt').write_bytes(b'1 Abstract\n3 Publicit\xe9\n4 Caf\xe9\n')
  with caplog.at_level('WARNING'):
    assert ava.read_tags(tmp_path / 'tags.txt')[3] == 'Publicit\ufffd'
  said = [r.getMessage() for r in caplog.records if 'UTF-8' in r.getMessage()]
  assert said == [f"{tmp_path / 'tags.txt'}:2: not UTF-8 text ('3 Publicit\ufffd'); its "
                  'undecodable bytes read as U+FFFD: save the file as UTF-8 to keep those names']


def test_name_files_and_lists(tmp_path):
  (tmp_path / 'tags.txt').write_text('1 Abstract\n7 Black and White\r\n\n66 Rural\n')
  assert ava.read_tags(tmp_path / 'tags.txt') == {1: 'Abstract', 7: 'Black and White',
                                                  66: 'Rural'}
  (tmp_path / 'c.txt').write_text('3 Shadows_and Light \n12 Free_Study\n')
  assert ava.read_challenges(tmp_path / 'c.txt') == {3: 'Shadows_and Light', 12: 'Free_Study'}
  (tmp_path / 'l.jpgl').write_text('5\n\n3\n5\n')
  assert ava.read_image_list(tmp_path / 'l.jpgl') == [5, 3, 5]
  (tmp_path / 'bad_tags.txt').write_text('1 Abstract\n67 Nope\n')
  with pytest.raises(ava.AvaError, match=r'bad_tags.txt:2: id 67 out of range'):
    ava.read_tags(tmp_path / 'bad_tags.txt')


def test_style_subset_filter(tmp_path):
  rows = [_row(1, 10, V_HIGH, 1, 0), _row(2, 11, V_LOW, 0, 0),  # 11: no tags
          _row(3, 12, V_LOW, 0, 2), _row(4, 13, V_HIGH, 3, 4), _row(5, 14, V_HIGH, 5)]
  root = _write_root(tmp_path / 'ava', rows, train_ids=[13, 10, 11, 999, 10],
                     test_ids=[12, 888], tags={k: f'T{k}' for k in range(1, 67)})
  sub = ava.load_subset(root, 'style')
  assert [im.image_id for im in sub['train']] == [13, 10]   # list order, deduplicated
  assert [im.image_id for im in sub['test']] == [12]
  dropped = ava.style_dropped(root)
  assert dropped['train'] == [(11, 'no tag'), (999, 'not in AVA.txt')]
  assert dropped['test'] == [(888, 'not in AVA.txt')]
  assert ava.image_path(root, 13) == root / 'images' / '13.jpg'


def test_style_id_in_both_lists_is_test_only(tmp_path):
  """The test list is the evaluation's ground truth: a train copy of a test id would leak."""
  rows = [_row(1, 10, V_HIGH, 1), _row(2, 12, V_LOW, 2), _row(3, 13, V_HIGH, 3),
          _row(4, 14, V_LOW, 0)]
  root = _write_root(tmp_path / 'ava', rows, train_ids=[10, 12, 13, 14], test_ids=[12, 14],
                     tags={k: f'T{k}' for k in range(1, 67)})
  sub = ava.load_subset(root, 'style')
  assert [im.image_id for im in sub['train']] == [10, 13]
  assert [im.image_id for im in sub['test']] == [12]
  dropped = ava.style_dropped(root)
  assert dropped['train'] == [(12, 'in test list'), (14, 'no tag')]
  assert dropped['test'] == [(14, 'no tag')]


def test_all_subset_split_is_deterministic_and_complete(tmp_path):
  ids = list(range(1000, 1400))
  rows = [_row(i, j, V_HIGH) for i, j in enumerate(ids, 1)]
  root = _write_root(tmp_path / 'ava', rows, [], [])
  sub = ava.load_subset(root, 'all')
  tr = [im.image_id for im in sub['train']]
  te = [im.image_id for im in sub['test']]
  assert sorted(tr + te) == ids and not set(tr) & set(te)
  assert 0.05 < len(te) / len(ids) < 0.2
  assert all(ava.is_all_test_id(i) for i in te) and not any(ava.is_all_test_id(i) for i in tr)
  # Row order does not change membership.
  (root / 'AVA.txt').write_text('\n'.join(reversed(rows)) + '\n')
  assert sorted(im.image_id for im in ava.load_subset(root, 'all')['test']) == sorted(te)


@pytest.mark.parametrize('bad_row, message', [
    ('1 100 1 2 3', r'AVA.txt:2: expected 15 integers, got 5 fields \(each row is'),
    (_row(2, 100, V_HIGH).replace(' 7', ' x7'), r"AVA.txt:2: non-integer field 'x7' \("),
    (_row(2, 100, [0] * 10), r'AVA.txt:2: image 100 has zero votes \(remove the row'),
    (_row(2, 100, [1, -2, 0, 0, 0, 0, 0, 0, 0, 3]),
     r'AVA.txt:2: negative vote count for score 2 \(-2\) \('),
    (_row(2, 100, V_HIGH, 0, 67), r'AVA.txt:2: tag 2 id 67 out of range \(ids must be 0'),
    (_row(2, 100, V_HIGH, -1, 0), r'AVA.txt:2: tag 1 id -1 out of range'),
    (_row(2, 1, V_HIGH), r'AVA.txt:2: duplicate image id 1 \(first on line 1\)'),
    # Beyond int32 (the dataset's storage): refused, never wrapped or overflowed.
    (_row(2, 100, [3_000_000_000] + [0] * 9),
     r'AVA.txt:2: vote counts sum to 3000000000 \(score 1: 3000000000\) \(the votes'),
    (_row(2, 100, [10**30] + [0] * 9), r'AVA.txt:2: vote counts sum to 1000000000000000000'),
    (_row(2, 10**20, V_HIGH), r'AVA.txt:2: image id 100000000000000000000 out of range'),
    (_row(2, 100, V_HIGH, ch=4_000_000_000), r'AVA.txt:2: challenge id 4000000000 out of range'),
    # int() took these as 10 and 5 votes without a word.
    (_row(2, 100, V_HIGH).replace(' 7', ' 1_7'), r"AVA.txt:2: non-integer field '1_7' \("),
    (_row(2, 100, V_HIGH).replace(' 7', ' \uff15'), r"AVA.txt:2: non-integer field '\uff15' \("),
    (_row(2, 100, V_HIGH).replace(' 7', ' --7'), r"AVA.txt:2: non-integer field '--7' \("),
    # All digits, but past int()'s 4300-digit limit: it was a StopIteration traceback.
    (_row(2, 100, V_HIGH).replace(' 7', ' ' + '9' * 5000 + '7'),
     r"AVA.txt:2: non-integer field '9{40}' \("),
])
def test_malformed_rows_raise_one_line(tmp_path, bad_row, message):
  p = tmp_path / 'AVA.txt'
  p.write_text(_row(1, 1, V_HIGH) + '\n' + bad_row + '\n')
  with pytest.raises(ava.AvaError, match=message) as e:
    ava.read_ava_txt(p)
  assert '\n' not in str(e.value) and str(e.value).startswith(str(p) + ':2: ')


def test_list_and_challenge_ids_beyond_int32_are_one_line(tmp_path):
  (tmp_path / 'train.jpgl').write_text('1\n' + str(2**31) + '\n')
  with pytest.raises(ava.AvaError, match=r'train.jpgl:2: image id 2147483648 out of range'):
    ava.read_image_list(tmp_path / 'train.jpgl')
  (tmp_path / 'challenges.txt').write_text('1 a\n99999999999 b\n')
  with pytest.raises(ava.AvaError, match=r'challenges.txt:2: id 99999999999 out of range'):
    ava.read_challenges(tmp_path / 'challenges.txt')


def test_tag_not_in_tags_txt(tmp_path):
  rows = [_row(1, 10, V_HIGH, 1, 0), _row(2, 11, V_HIGH, 9, 0)]
  root = _write_root(tmp_path / 'ava', rows, [10, 11], [], tags={1: 'Abstract', 2: 'Action'})
  with pytest.raises(ava.AvaError, match=r'AVA.txt:2: tag 1 id 9 out of range '
                     r'\(ids must be 0 \(none\) or listed in tags.txt\)'):
    ava.load_subset(root, 'style')


def test_missing_files_name_the_path(tmp_path):
  with pytest.raises(ava.AvaError, match='AVA root directory not found'):
    ava.load_subset(tmp_path / 'nowhere', 'style')
  root = tmp_path / 'ava'
  root.mkdir()
  with pytest.raises(ava.AvaError, match=str(root / 'AVA.txt')):
    ava.load_subset(root, 'all')
  (root / 'AVA.txt').write_text(_row(1, 10, V_HIGH, 1) + '\n')
  with pytest.raises(ava.AvaError, match=str(root / 'style_image_lists' / 'train.jpgl')):
    ava.load_subset(root, 'style')
  with pytest.raises(ava.AvaError, match='unknown subset'):
    ava.load_subset(root, 'bogus')
  (root / 'l.jpgl').write_text('12\nabc\n')
  with pytest.raises(ava.AvaError, match=r"l.jpgl:2: 'abc' is not an image id"):
    ava.read_image_list(root / 'l.jpgl')


def test_write_ava_txt_roundtrip(tmp_path):
  recs = [ava.AvaImage(5, V_HIGH, (3, 9), 2), ava.AvaImage(8, V_LOW, (), 4)]
  ava.write_ava_txt(tmp_path / 'AVA.txt', recs)
  assert ava.read_ava_txt(tmp_path / 'AVA.txt') == recs
  arr = ava.stack_images(recs)
  np.testing.assert_array_equal(arr['tags'], [[3, 9], [0, 0]])
  np.testing.assert_array_equal(arr['image_id'], [5, 8])
  assert arr['votes'].shape == (2, 10)


def test_known_bad_ids():
  assert ava.KNOWN_BAD_IDS == (440774, 179118, 371434, 277832, 230701, 729377)
  assert ava.NUM_TAGS == 66 and ava.NUM_BUCKETS == 10


def test_a_huge_field_is_quoted_short(tmp_path):
  """A 5000-digit id (past int()'s digit limit) was echoed whole: a 5 KB 'one line'."""
  huge = '9' * 5000
  (tmp_path / 'tags.txt').write_text(f'1 a\n{huge} b\n')
  (tmp_path / 'train.jpgl').write_text(f'1\n{huge}\n')
  for read, name in ((ava.read_tags, 'tags.txt'), (ava.read_image_list, 'train.jpgl')):
    with pytest.raises(ava.AvaError, match=rf"{name}:2: .*'9{{40}}'") as e:
      read(tmp_path / name)
    assert len(str(e.value)) < 300


def test_ids_in_lists_and_tags_are_ascii_digits(tmp_path):
  """int() took '1_2' as 12 and full-width digits as ASCII ones."""
  (tmp_path / 'train.jpgl').write_text('1\n1_2\n')
  (tmp_path / 'tags.txt').write_text('1 a\n\uff12 b\n')
  with pytest.raises(ava.AvaError, match=r"train.jpgl:2: '1_2' is not an image id"):
    ava.read_image_list(tmp_path / 'train.jpgl')
  with pytest.raises(ava.AvaError, match=r"tags.txt:2: id '\uff12' is not an integer"):
    ava.read_tags(tmp_path / 'tags.txt')


@pytest.mark.parametrize('sep', ['\f', '\v', '\x1c', '\x85', '\u2028', '\r'])
def test_rows_end_at_newlines_only(tmp_path, sep):
  """splitlines() also ended a row at a form feed, U+2028, a lone CR...: the bad row 3 below
  was reported as line 4, and a row holding one as two rows of the wrong field count."""
  p = tmp_path / 'AVA.txt'
  row2 = _row(2, 102, V_LOW).replace(' ', sep, 1)  # whitespace between fields, as a space
  p.write_text(_row(1, 101, V_HIGH) + '\r\n' + row2 + '\n' + _row(3, 103, V_HIGH)[:-2] + '\n',
               newline='')
  with pytest.raises(ava.AvaError) as e:
    ava.read_ava_txt(p)
  assert str(e.value).startswith(f'{p}:3: expected 15 integers, got 14 fields'), e.value
  p.write_text(_row(1, 101, V_HIGH) + '\r\n' + row2 + '\n', newline='')
  assert [r.image_id for r in ava.read_ava_txt(p)] == [101, 102]


@pytest.mark.parametrize('name,what,read', [
    ('AVA.txt', 'AVA.txt', ava.read_ava_txt), ('tags.txt', 'tags.txt', ava.read_tags),
    ('train.jpgl', 'image list', ava.read_image_list)])
def test_a_line_over_the_cap_is_one_line_before_it_is_read_whole(tmp_path, name, what, read):
  """Files were read whole: a 119 MB file of one line took 1.4 GB of memory, then failed on
  its field count. A line over MAX_LINE_CHARS (1 MiB) is refused as it is read (3 MB here)."""
  p = tmp_path / name
  first = _row(1, 101, V_HIGH) if name == 'AVA.txt' else '1'
  p.write_text(first + '\n' + '1 ' * (3 * 2**20 // 2) + '\n' + first + '\n')
  with pytest.raises(ava.AvaError) as e:
    read(p)
  assert str(e.value) == (f'{p}:2: line longer than 1,048,576 characters ({what} rows are '
                          'short lines of text: is this the right file?)')
  # The longest line allowed, with its CRLF, is read (and parsed).
  p.write_text('1' + ' ' * (ava.MAX_LINE_CHARS - 1) + '\r\n', newline='')
  if name == 'AVA.txt':
    with pytest.raises(ava.AvaError, match=r'AVA.txt:1: expected 15 integers, got 1 fields'):
      read(p)
  else:
    assert read(p) in ([1], {1: ''})


@pytest.mark.parametrize('encode, line, what', [
    (lambda t: t.encode('utf-16'), 1, 'saved as UTF-16 text (save it as UTF-8'),
    (lambda t: t.encode('utf-16-le'), 1, 'saved as UTF-16 text (save it as UTF-8'),
    (lambda t: t.encode('utf-16-be'), 1, 'saved as UTF-16 text (save it as UTF-8'),
    # A download that stopped in a preallocated file: its tail is zeros.
    (lambda t: t.encode() + b'\0' * 3_000_000, 3, 'NUL bytes at character 1 (the file is '
     'incomplete (a download or copy that stopped?) or not text: copy it again)'),
    (lambda t: t.encode()[:-3] + b'\0' * 3, 2, 'NUL bytes at character'),
])
@pytest.mark.parametrize('name, read', [('AVA.txt', ava.read_ava_txt),
                                        ('tags.txt', ava.read_tags),
                                        ('test.jpgl', ava.read_image_list)])
def test_utf16_and_zero_filled_files_are_named(tmp_path, encode, line, what, name, read):
  """Windows' 'Unicode' (UTF-16) text was "AVA.txt:1: non-integer field '\\ufffd\\ufffd1\\x00'",
  a zero-filled tail 'expected 15 integers, got 1 fields' or 'line longer than 1,048,576
  characters': neither said what was wrong with the file."""
  text = {'AVA.txt': _row(1, 10, V_HIGH) + '\n' + _row(2, 11, V_LOW) + '\n',
          'tags.txt': '1 Abstract\n2 Action\n', 'test.jpgl': '10\n11\n'}[name]
  (tmp_path / name).write_bytes(encode(text))
  with pytest.raises(ava.AvaError) as e:
    read(tmp_path / name)
  assert str(e.value).startswith(f'{tmp_path / name}:{line}: {what}'), e.value


@pytest.mark.parametrize('sep', [',', ', ', ';'])
def test_a_csv_export_of_ava_txt_names_its_separator(tmp_path, sep):
  """Its 15 numbers were 'expected 15 integers, got 1 fields', which read as a short row."""
  p = tmp_path / 'AVA.txt'
  p.write_text(_row(1, 10, V_HIGH).replace(' ', sep) + '\n')
  with pytest.raises(ava.AvaError) as e:
    ava.read_ava_txt(p)
  assert str(e.value) == (f"{p}:1: fields separated by '{sep.strip()}' (separate them by "
                          'spaces, as the AVA release does)')


def test_a_copy_cut_mid_row_says_so(tmp_path):
  """A partly copied AVA.txt was 'AVA.txt:3: expected 15 integers, got 5 fields (each row is
  ...)', as if that row were malformed; a short last row with a line end is still that."""
  p = tmp_path / 'AVA.txt'
  text = _row(1, 10, V_HIGH) + '\n' + _row(2, 11, V_LOW) + '\n' + _row(3, 12, V_HIGH)
  p.write_text(text[:-22])
  with pytest.raises(ava.AvaError) as e:
    ava.read_ava_txt(p)
  assert str(e.value) == (f'{p}:3: the file ends mid-row (5 of 15 fields, no line end) (an '
                          'incomplete download or copy? copy it again)')
  p.write_text(text[:-22] + '\r\n')
  with pytest.raises(ava.AvaError, match=r'AVA.txt:3: expected 15 integers, got 5 fields \('):
    ava.read_ava_txt(p)
  p.write_text(text)  # a last row without a line end is whole
  assert [r.image_id for r in ava.read_ava_txt(p)] == [10, 11, 12]
