"""Train/validation splits by case and their record in the workdir."""

import ml_collections
import pytest

from jaxseg import workdir
from jaxseg.data import splits
from jaxseg.errors import ConfigError, DataError, WorkdirError

IDS = [f'case{i:02d}' for i in range(10)]


def _config(**overrides):
  config = ml_collections.ConfigDict({'seed': 0, 'val_fraction': 0.3, 'num_folds': 0, 'fold': 0})
  config.update(overrides)
  return config


def test_fraction_split_is_deterministic_disjoint_and_order_free():
  split = splits.compute_split(IDS, _config())
  assert (len(split['train']), len(split['val'])) == (7, 3)
  assert not set(split['train']) & set(split['val'])
  assert splits.compute_split(list(reversed(IDS)), _config()) == split
  assert splits.compute_split(IDS, _config(seed=1)) != split


def test_k_folds_partition_the_cases():
  folds = [splits.compute_split(IDS, _config(num_folds=3, fold=f)) for f in range(3)]
  validated = [case for split in folds for case in split['val']]
  assert sorted(validated) == IDS  # each case validated in exactly one fold
  assert sorted(len(split['val']) for split in folds) == [3, 3, 4]
  for split in folds:
    assert sorted(split['train'] + split['val']) == IDS


@pytest.mark.parametrize('overrides, message', [
    ({'num_folds': 11}, 'data.num_folds=11'),
    ({'num_folds': 5, 'fold': 5}, r'data.fold=5: must be in 0..4'),
    ({'val_fraction': 1.0}, 'data.val_fraction must be between 0 and 1'),
])
def test_bad_split_settings(overrides, message):
  with pytest.raises(ConfigError, match=message):
    splits.compute_split(IDS, _config(**overrides))


def test_too_few_cases_and_a_missing_recorded_case_are_data_errors():
  with pytest.raises(DataError, match=r'data.root: 1 labelled case\(s\) are too few'):
    splits.compute_split(IDS[:1], _config())
  recorded = splits.compute_split(IDS, _config())
  with pytest.raises(DataError, match=f'case {recorded["val"][0]} of the recorded split'):
    splits.choose_split([c for c in IDS if c != recorded['val'][0]], _config(), recorded)


def test_record_refuses_a_different_split(tmp_path):
  split = splits.compute_split(IDS, _config())
  workdir.record_splits(str(tmp_path), split)
  workdir.record_splits(str(tmp_path), split)  # the same split again: fine
  assert workdir.read_splits(str(tmp_path)) == split
  with pytest.raises(WorkdirError, match='(train|val) cases differ'):
    workdir.record_splits(str(tmp_path), splits.compute_split(IDS, _config(num_folds=5, fold=1)))
