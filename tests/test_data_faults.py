"""Data directories that are not what they seem, and a damaged preprocessing cache:
mixed BraTS layouts, folders that are not case folders, cases left out of training
(each accounted for), 2D masks with values of no kind, damaged cache entries."""

import os
import shutil

import numpy as np
import pytest

from helpers import assert_mentions
from jaxseg import errors
from jaxseg.data import brats, cache, load_splits, splits
from nifti_fixtures import make_dataset, snapshot


def _config(config, root, cache_dir, skip=False):
  data = config.data
  data.root, data.cache_dir, data.preprocess_workers = str(root), str(cache_dir), 0
  data.skip_bad_cases = skip
  return data


def test_brats_data_error_is_the_user_error():
  assert brats.DataError is errors.DataError
  assert issubclass(brats.DataError, ValueError)


# --- A root of both BraTS layouts; folders that are not case folders. ---

def test_a_mix_of_brats_layouts_is_refused(tmp_path):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats2021', num_cases=2)
  make_dataset(str(root), 'brats-gli', num_cases=2)
  with pytest.raises(errors.DataError) as error:
    cache.prepare(str(root), str(tmp_path / 'cache'), 0, skip_bad_cases=True)
  assert_mentions(str(error.value), 'data.root', str(root), 'BraTS2021_00000',
                  'BraTS-GLI-00000-000')


def test_folders_not_named_as_cases_are_problems_hidden_and_empty_ones_ignored(
    tmp_path, capsys):
  root = tmp_path / 'data'
  ids = make_dataset(str(root), 'brats-gli', num_cases=2)
  copy = root / f'{ids[1]} (copy)'  # its files keep the original case's name
  shutil.copytree(root / ids[1], copy)
  shutil.copytree(root / ids[0], root / '.trash')  # hidden: not a case folder
  (root / 'notes').mkdir()
  (root / 'notes' / 'readme.txt').write_text('no NIfTI here')
  with pytest.raises(errors.DataError) as error:
    cache.prepare(str(root), str(tmp_path / 'cache'), 0, skip_bad_cases=False)
  assert_mentions(str(error.value), str(copy), 'not a brats-gli case folder')
  _, cases, skipped = cache.prepare(str(root), str(tmp_path / 'cache'), 0, skip_bad_cases=True)
  assert [c.case_id for c in cases] == ids
  assert [case_id for case_id, _ in skipped] == [copy.name]
  err = capsys.readouterr().err
  assert str(copy) in err and '.trash' not in err and 'notes' not in err


# --- Every case folder that does not train is accounted for. ---

def test_cases_left_out_of_training_are_accounted_for(tmp_path, tiny_unet_config, capsys):
  root = tmp_path / 'data'
  ids = make_dataset(str(root), 'brats2021', num_cases=5, num_unlabelled=1)
  os.remove(root / ids[1] / f'{ids[1]}_t2.nii.gz')
  config = _config(tiny_unet_config, root, tmp_path / 'cache')
  with pytest.raises(errors.DataError) as error:
    load_splits(config)
  assert_mentions(str(error.value), ids[1], 'missing t2', '--config.data.skip_bad_cases=True',
                  'eval.py --skip_bad_cases')
  config.skip_bad_cases = True
  capsys.readouterr()
  data = load_splits(config)
  out, err = capsys.readouterr()
  assert len(data['train']) + len(data['val']) == 4
  assert_mentions(out, '6 case(s)', '4 of 6 case(s)', f'without a segmentation ({ids[5]})',
                  f'bad, skipped ({ids[1]})')
  assert_mentions(err, ids[1], 'missing t2')


def test_labelled_cases_outside_a_recorded_split_are_accounted_for(
    tmp_path, tiny_unet_config, capsys):
  root = tmp_path / 'data'
  ids = make_dataset(str(root), 'brats-gli', num_cases=4)
  config = _config(tiny_unet_config, root, tmp_path / 'cache')
  config.val_fraction = 0.34
  recorded = splits.compute_split(ids[:3], config)  # the run began before ids[3] was added
  capsys.readouterr()
  data = load_splits(config, recorded=recorded)
  assert sorted(data['train'].case_ids + data['val'].case_ids) == ids[:3]
  assert_mentions(capsys.readouterr().out, '3 of 4 case(s)', 'splits.json', ids[3])


def test_nothing_is_printed_when_every_case_trains(tmp_path, tiny_unet_config, capsys):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-gli', num_cases=3)
  capsys.readouterr()
  load_splits(_config(tiny_unet_config, root, tmp_path / 'cache'))
  assert 'not trained on' not in capsys.readouterr().out


@pytest.mark.parametrize('key, value', [('modalities', ('t1', 'dwi')),
                                        ('preprocess_workers', -1)])
def test_bad_data_settings_are_config_errors(tmp_path, tiny_unet_config, key, value):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-gli', num_cases=2)
  config = _config(tiny_unet_config, root, tmp_path / 'cache')
  config[key] = value
  with pytest.raises(errors.ConfigError, match=f'data.{key}'):
    load_splits(config)


# --- A damaged cache entry is rebuilt: never trusted, never an error. ---

def _truncate(path):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])


DAMAGE = {
    'garbled meta.json': lambda d: open(os.path.join(d, 'meta.json'), 'w').write('{"case_id": '),
    'meta.json without keys': lambda d: open(os.path.join(d, 'meta.json'), 'w').write('[]'),
    'truncated image.npy': lambda d: _truncate(os.path.join(d, 'image.npy')),
    'empty labels.npy': lambda d: open(os.path.join(d, 'labels.npy'), 'w').close(),
    'deleted labels.npy': lambda d: os.remove(os.path.join(d, 'labels.npy')),
    'pickled foreground.npy': lambda d: np.save(os.path.join(d, 'foreground.npy'),
                                                np.array([{'x': 1}], dtype=object)),
}


@pytest.mark.parametrize('damage', list(DAMAGE))
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, damage, capsys):
  root, cache_dir = tmp_path / 'data', str(tmp_path / 'cache')
  make_dataset(str(root), 'brats2021', num_cases=2)
  _, first, _ = cache.prepare(str(root), cache_dir, 0, skip_bad_cases=False)
  expected = [np.array(first[1].array(name)) for name in ('image', 'labels', 'foreground')]
  before = snapshot(str(root))
  DAMAGE[damage](first[1].directory)
  assert cache.damage(first[1].directory, labelled=True)
  capsys.readouterr()
  _, again, _ = cache.prepare(str(root), cache_dir, 0, skip_bad_cases=False)
  assert [c.directory for c in again] == [c.directory for c in first]
  assert cache.damage(again[1].directory, labelled=True) is None
  assert again[1].labelled and again[1].meta['case_id'] == 'BraTS2021_00001'
  for name, array in zip(('image', 'labels', 'foreground'), expected):
    np.testing.assert_array_equal(again[1].array(name), array)
  assert_mentions(capsys.readouterr().err, 'rebuilding damaged cache entry',
                  first[1].directory)
  assert snapshot(str(root)) == before  # rebuilt in the cache, not beside the data
