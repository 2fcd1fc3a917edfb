"""The validation split carved out of training (data/validation.py)."""
import numpy as np
import pytest

from aesthetics_jax.data import validation


def test_split_is_deterministic_disjoint_and_has_both_classes():
  labels = np.array([1] * 30 + [0] * 7)
  a = validation.split_rows(labels, 0.1, seed=3)
  b = validation.split_rows(labels, 0.1, seed=3)
  np.testing.assert_array_equal(a.validation, b.validation)  # every process, every rerun
  np.testing.assert_array_equal(a.train, b.train)
  assert not set(a.train) & set(a.validation)
  assert sorted([*a.train, *a.validation]) == list(range(37))
  assert set(labels[a.validation]) == {0, 1} and set(labels[a.train]) == {0, 1}
  assert (labels[a.validation] == 1).sum() == 3 and (labels[a.validation] == 0).sum() == 1
  other = validation.split_rows(labels, 0.1, seed=4)
  assert not np.array_equal(a.validation, other.validation)  # the seed picks the rows


def test_split_off_and_bad_fraction():
  off = validation.split_rows(np.array([0, 1, 1]), 0.0, seed=0)
  assert not off.enabled and list(off.train) == [0, 1, 2]
  with pytest.raises(ValueError, match='validation_fraction'):
    validation.split_rows(np.array([0, 1]), 1.0, seed=0)


def test_rows_view_and_record():
  src = [{'image_id': 10 + i} for i in range(6)]
  view = validation.Rows(src, np.array([4, 1]))
  assert len(view) == 2 and view[0]['image_id'] == 14 and view[1]['image_id'] == 11
  assert [r['image_id'] for r in view.__getitems__([1, 0])] == [11, 14]
  split = validation.Split(train=np.array([0, 2, 3, 5]), validation=np.array([1, 4]))
  rec = validation.record(split, np.arange(10, 16), 0.3, 7)
  assert rec['image_ids'] == [11, 14] and rec['num_train'] == 4
  assert validation.mismatch(rec, dict(rec)) == ''
  assert 'seed' in validation.mismatch(rec, {**rec, 'seed': 8})
