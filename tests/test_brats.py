"""BraTS NIfTI layouts: reading, canonical labels, the preprocessing cache, bad input."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from helpers import assert_mentions
from jaxseg.data import brats, cache, load_splits
from nifti_fixtures import (SHAPE, SPACING, affine, case_arrays, make_dataset, save,
                            snapshot)


@pytest.fixture
def cache_dir(tmp_path):
  return str(tmp_path / 'cache')


def prepare(root, cache_dir, skip=False):
  """(layout, usable cases) of `root`."""
  return cache.prepare(str(root), cache_dir, num_workers=0, skip_bad_cases=skip)[:2]


@pytest.mark.parametrize('layout', ['brats2021', 'brats-gli', 'decathlon'])
def test_every_layout_reads_the_same_channels_and_regions(tmp_path, cache_dir, layout):
  root = tmp_path / layout
  ids = make_dataset(str(root), layout, num_cases=2, num_unlabelled=1)
  assert brats.detect_layout(str(root)) == layout
  found, cases = prepare(root, cache_dir)
  assert found.name == layout
  assert [c.case_id for c in cases] == ids
  assert [c.labelled for c in cases] == [True, True, False]
  raw, labels = case_arrays(0)
  crop = _crop(cases[0].meta)
  # Canonical labels whatever the layout's own values; cropped to the brain.
  np.testing.assert_array_equal(cases[0].array('labels'), labels[crop])
  image = cases[0].array('image')
  assert image.shape == (*labels[crop].shape, 4)
  brain = np.abs(raw[crop]).sum(-1) > 0
  # Channels t1, t1ce, t2, flair: z-scores of the raw channels, whatever the file order.
  for c in range(4):
    values = raw[crop][..., c][brain]
    np.testing.assert_allclose(image[..., c][brain], (values - values.mean()) / values.std(),
                               atol=1e-4)
  assert not image[~brain].any()
  meta = cases[0].meta
  assert meta['original_shape'] == list(SHAPE)
  np.testing.assert_allclose(meta['spacing'], SPACING)
  np.testing.assert_allclose(meta['affine'], affine())
  # Predictions map back to the layout's label values.
  canonical = np.array(sorted(set(found.to_canonical.values())), np.uint8)
  assert set(found.from_canonical(canonical).tolist()) == set(found.label_values)


def test_plain_nii_files(tmp_path, cache_dir):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats2021', num_cases=2)
  folder = root / 'BraTS2021_00001'
  for path in sorted(folder.iterdir()):
    nib.save(nib.load(str(path)), str(path).removesuffix('.gz'))
    path.unlink()
  _, cases = prepare(root, cache_dir)
  assert [c.case_id for c in cases] == ['BraTS2021_00000', 'BraTS2021_00001']
  assert cases[1].meta['seg'].endswith('BraTS2021_00001_seg.nii')
  np.testing.assert_array_equal(cases[1].array('labels'),
                                case_arrays(1)[1][_crop(cases[1].meta)])


def _crop(meta):
  return tuple(slice(a, b) for a, b in zip(meta['crop_start'], meta['crop_stop']))


def test_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path, cache_dir):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-gli', num_cases=2)
  before = snapshot(str(root))
  _, first = prepare(root, cache_dir)
  _, again = prepare(root, cache_dir)
  assert [c.directory for c in again] == [c.directory for c in first]
  assert snapshot(str(root)) == before  # nothing written into the source directory
  seg = root / 'BraTS-GLI-00001-000' / 'BraTS-GLI-00001-000-seg.nii.gz'
  labels = np.zeros(SHAPE, np.uint8)
  labels[5:9, 5:9, 5:9] = 2
  save(labels, str(seg), dtype=np.uint8)
  _, changed = prepare(root, cache_dir)
  assert changed[0].directory == first[0].directory
  assert changed[1].directory != first[1].directory
  assert set(np.unique(changed[1].array('labels'))) == {0, 2}


def test_an_interrupted_entry_is_not_trusted(tmp_path, cache_dir, monkeypatch):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats2021', num_cases=2)

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(cache, 'foreground_voxels', interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare(root, cache_dir)
  monkeypatch.undo()
  entries = os.path.join(cache_dir, 'cases')
  assert not [n for n in os.listdir(entries) if not n.startswith('.')]  # no entry appeared
  _, cases = prepare(root, cache_dir)
  assert all(c.labelled and c.array('foreground').shape[1] == 4 for c in cases)


def test_foreground_voxels_cover_every_label():
  labels = np.zeros((10, 10, 10), np.uint8)
  labels[1, 2, 3] = 3
  labels[4:6, 4:6, 4:6] = 2
  rows = cache.foreground_voxels(labels, seed=0)
  assert sorted(set(rows[:, 0])) == [2, 3]
  assert (labels[tuple(rows[:, 1:].T)] == rows[:, 0]).all()
  assert len(rows) == 9


def test_splits_hold_only_labelled_cases_and_follow_folds(tmp_path, cache_dir, tiny_unet_config):
  root = tmp_path / 'data'
  ids = make_dataset(str(root), 'brats-gli', num_cases=5, num_unlabelled=1)
  config = tiny_unet_config.data
  config.root, config.cache_dir, config.preprocess_workers = str(root), cache_dir, 0
  config.num_folds = 5
  seen = []
  for fold in range(5):
    config.fold = fold
    data = load_splits(config)
    assert len(data['val']) == 1 and len(data['train']) == 4
    assert not set(data['val'].case_ids) & set(data['train'].case_ids)
    seen += data['val'].case_ids
  assert sorted(seen) == ids[:5]  # every labelled case validated exactly once
  np.testing.assert_allclose(data['train'].spacings[0], SPACING, rtol=1e-6)


# --- Bad input: one line naming the file and the problem. ---

def _bad_dataset(tmp_path, layout='brats2021'):
  root = tmp_path / 'bad'
  make_dataset(str(root), layout, num_cases=3)
  return root


def _case_file(root, name):
  case = 'BraTS2021_00001'
  return root / case / f'{case}_{name}.nii.gz'


def test_missing_modality(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  os.remove(_case_file(root, 't1ce'))
  with pytest.raises(brats.DataError) as error:
    prepare(root, cache_dir)
  assert_mentions(str(error.value), 'BraTS2021_00001', 'missing t1ce',
                  'BraTS2021_00001_t1ce.nii.gz')


def test_shape_mismatch(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  save(np.ones((8, 8, 8)), str(_case_file(root, 't2')))
  with pytest.raises(brats.DataError) as error:
    prepare(root, cache_dir)
  assert_mentions(str(error.value), '_t2.nii.gz', '(8, 8, 8)', '(24, 20, 16)',
                  'BraTS2021_00001_t1.nii.gz')


def test_affine_mismatch(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  _, labels = case_arrays(1)
  save(labels, str(_case_file(root, 'seg')), matrix=affine((2.0, 1.0, 1.0)), dtype=np.uint8)
  with pytest.raises(brats.DataError) as error:
    prepare(root, cache_dir)
  assert_mentions(str(error.value), '_seg.nii.gz', 'affine', 'BraTS2021_00001_t1.nii.gz')


def test_labels_outside_the_layout(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  _, labels = case_arrays(1)  # canonical 3 is not a BraTS 2021 label
  save(labels, str(_case_file(root, 'seg')), dtype=np.uint8)
  with pytest.raises(brats.DataError) as error:
    prepare(root, cache_dir)
  assert_mentions(str(error.value), '_seg.nii.gz', 'label value(s) 3', 'brats2021',
                  '[0, 1, 2, 4]')


def test_non_finite_voxels(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  raw, _ = case_arrays(1)
  flair = raw[..., 3].copy()
  flair[3, 3, 3], flair[4, 4, 4] = np.nan, np.inf
  save(flair, str(_case_file(root, 'flair')))
  with pytest.raises(brats.DataError, match=r'_flair.nii.gz: 2 NaN or infinite voxel'):
    prepare(root, cache_dir)


def test_truncated_nifti(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  path = _case_file(root, 't1')
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(brats.DataError, match=r'_t1.nii.gz: unreadable'):
    prepare(root, cache_dir)


def test_corrupt_nifti(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path)
  _case_file(root, 't2').write_bytes(gzip.compress(b'this is not a NIfTI header' * 20))
  with pytest.raises(brats.DataError, match=r'_t2.nii.gz: unreadable NIfTI'):
    prepare(root, cache_dir)


def test_empty_and_unknown_directories(tmp_path, cache_dir):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(brats.DataError, match=r'empty: .*is empty|/empty is empty'):
    prepare(tmp_path / 'empty', cache_dir)
  (tmp_path / 'other' / 'x').mkdir(parents=True)
  (tmp_path / 'other' / 'notes.txt').write_text('hello')
  with pytest.raises(brats.DataError, match=r'other: no known layout'):
    prepare(tmp_path / 'other', cache_dir)
  with pytest.raises(brats.DataError, match=r'missing: .*not a directory|missing is not a dir'):
    prepare(tmp_path / 'missing', cache_dir)


def test_decathlon_with_unknown_label_names(tmp_path, cache_dir):
  root = _bad_dataset(tmp_path, 'decathlon')
  (root / 'dataset.json').write_text(
      '{"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},'
      ' "labels": {"0": "background", "1": "liver"}}')
  with pytest.raises(brats.DataError, match=r"dataset.json: label 1 'liver' is not a BraTS"):
    prepare(root, cache_dir)


def test_skip_bad_cases_lists_and_skips_them(tmp_path, cache_dir, capsys):
  root = _bad_dataset(tmp_path)
  os.remove(_case_file(root, 'flair'))
  other = root / 'BraTS2021_00002' / 'BraTS2021_00002_t1.nii.gz'
  other.write_bytes(b'garbage')
  with pytest.raises(brats.DataError) as error:
    prepare(root, cache_dir)
  # The hint fits both programs: eval.py has no --config flags.
  assert_mentions(str(error.value), 'missing flair', '--config.data.skip_bad_cases=True',
                  'eval.py --skip_bad_cases')
  _, cases = prepare(root, cache_dir, skip=True)
  assert [c.case_id for c in cases] == ['BraTS2021_00000']
  err = capsys.readouterr().err
  assert 'skipping bad case' in err and 'missing flair' in err and '00002_t1.nii.gz' in err


def test_cache_inside_the_data_is_refused(tmp_path):
  root = _bad_dataset(tmp_path)
  with pytest.raises(brats.DataError, match='inside data.root'):
    prepare(root, str(root / 'cache'))
