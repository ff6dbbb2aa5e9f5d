"""train.py then eval.py on NIfTI data sets of each BraTS layout and on the 2D seed images,
as a user runs them: `--config.data.root=...`."""

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from helpers import ROOT, assert_one_line_error, run
from jaxseg.metrics import overlap_metrics
from nifti_fixtures import make_dataset, snapshot

SEED_2D = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'seed_2d')
TINY = ['--config.model.features=(4, 8)', '--config.train.num_steps=2',
        '--config.train.batch_size=2', '--config.train.warmup_steps=1',
        '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2',
        '--config.train.log_every_steps=1']

LAYOUT_VALUES = {'brats2021': (0, 1, 2, 4), 'brats-gli': (0, 1, 2, 3), 'decathlon': (0, 1, 2, 3)}
LAYOUT_RUNS = {
    # 3D LSTM-U-Net on patches, with augmentation, in-process data loading.
    'brats2021': ['--config=configs/lstm_unet.py:3d', '--config.data.image_size=(16, 16, 16)',
                  '--config.model.num_iterations=2', '--config.eval.batch_size=2',
                  '--config.augment.enabled=True', '--config.data.preprocess_workers=0'],
    # 2D U-Net on axial slices of the volumes.
    'brats-gli': ['--config=configs/unet.py', '--config.data.image_size=(16, 16)',
                  '--config.eval.batch_size=16', '--config.data.preprocess_workers=0'],
    # 2D LSTM-U-Net, preprocessing and loading in worker processes.
    'decathlon': ['--config=configs/lstm_unet.py', '--config.data.image_size=(16, 16)',
                  '--config.model.num_iterations=2', '--config.eval.batch_size=16',
                  '--config.data.preprocess_workers=2', '--config.data.num_workers=2'],
}


@pytest.mark.parametrize('layout', sorted(LAYOUT_RUNS))
def test_train_then_eval_on_each_layout(tmp_path, layout):
  data = tmp_path / 'data'
  *_, unlabelled = make_dataset(str(data), layout, num_cases=4, num_unlabelled=1)
  before = snapshot(str(data))
  workdir = tmp_path / 'run'
  common = [f'--config.data.root={data}', f'--config.data.cache_dir={tmp_path / "cache"}']
  code, out, err = run('train.py', *LAYOUT_RUNS[layout], *TINY, *common, f'--workdir={workdir}')
  assert code == 0, err
  assert 'Final validation' in out
  with open(workdir / 'splits.json') as f:
    split = json.load(f)
  assert (len(split['train']), len(split['val'])) == (3, 1)  # 4 labelled cases, 30% validate

  code, out, err = run('eval.py', f'--workdir={workdir}', '--all_iterations')
  assert code == 0, err
  assert 'val Dice' in out
  with open(workdir / 'metrics.json') as f:
    metrics = json.load(f)
  assert metrics['num_cases'] == 1 and set(metrics['per_region']) == {'WT', 'TC', 'ET'}
  check_predictions(data, workdir, layout, split['val'])
  assert sorted(os.listdir(workdir / 'figures')) == sorted(
      [f'{split["val"][0]}.png', 'dice_per_iteration.png'])

  # Every case of a directory, the unlabelled one included; its own output directory.
  code, out, err = run('eval.py', f'--workdir={workdir}', f'--data_root={data}',
                       '--num_figures=0')
  assert code == 0, err
  predicted = sorted(os.listdir(workdir / 'eval_data' / 'predictions'))
  assert predicted == sorted(f'{c}.nii.gz' for c in split['train'] + split['val'] + [unlabelled])
  with open(workdir / 'eval_data' / 'metrics.json') as f:
    assert json.load(f)['num_cases'] == 4
  assert snapshot(str(data)) == before  # nothing written into the data directory


def check_predictions(data, workdir, layout, case_ids):
  """NIfTI predictions: the geometry and label values of the seg files, and the Dice
  that eval.py reported when recomputed from the files."""
  with open(workdir / 'per_case_metrics.csv') as f:
    rows = list(csv.DictReader(f))
  last = max(int(r['iteration']) for r in rows)
  regions = {'brats2021': {'WT': (1, 2, 4), 'TC': (1, 4), 'ET': (4,)},
             'brats-gli': {'WT': (1, 2, 3), 'TC': (1, 3), 'ET': (3,)},
             'decathlon': {'WT': (1, 2, 3), 'TC': (2, 3), 'ET': (3,)}}[layout]
  total = 0.0
  for case in case_ids:
    seg_path = next(p for p in data.rglob('*.nii.gz') if p.name.startswith(case) and
                    ('seg' in p.name or p.parent.name == 'labelsTr'))
    seg = nib.load(seg_path)
    files = [(workdir / 'predictions' / f'{case}.nii.gz', last)]
    if last > 1:  # the LSTM-U-Net: earlier iterations too (--all_iterations)
      files.append((workdir / 'iterations' / f'{case}_iteration1.nii.gz', 1))
    for path, iteration in files:
      prediction = nib.load(path)
      assert prediction.shape == seg.shape
      np.testing.assert_allclose(prediction.affine, seg.affine)
      values = np.asarray(prediction.dataobj)
      assert set(np.unique(values)) <= set(LAYOUT_VALUES[layout])
      truth = np.asarray(seg.dataobj)
      for name, labels in regions.items():
        dice = overlap_metrics(np.isin(values, labels), np.isin(truth, labels))['dice']
        reported = next(float(r['dice']) for r in rows if r['case'] == case and
                        r['region'] == name and int(r['iteration']) == iteration)
        assert dice == pytest.approx(reported, abs=1e-12), (case, name, iteration)
        total += dice
  assert total > 0  # the check compared real overlaps, not empty masks


def test_unlabelled_directory_gets_predictions_only(tmp_path):
  data = tmp_path / 'data'
  make_dataset(str(data), 'brats-gli', num_cases=4)
  workdir = tmp_path / 'run'
  common = [f'--config.data.cache_dir={tmp_path / "cache"}']
  code, _, err = run('train.py', *LAYOUT_RUNS['brats-gli'], *TINY, *common,
                     f'--config.data.root={data}', f'--workdir={workdir}')
  assert code == 0, err
  unlabelled = tmp_path / 'unlabelled'
  ids = make_dataset(str(unlabelled), 'brats-gli', num_cases=0, num_unlabelled=2)
  code, out, err = run('eval.py', f'--workdir={workdir}', f'--data_root={unlabelled}')
  assert code == 0, err
  assert 'No case of' in out and 'wrote predictions only' in out
  output = workdir / 'eval_unlabelled'
  assert sorted(os.listdir(output / 'predictions')) == sorted(f'{c}.nii.gz' for c in ids)
  assert not (output / 'metrics.json').exists()
  assert len(os.listdir(output / 'figures')) == 2
  code, _, err = run('eval.py', f'--workdir={workdir}', f'--data_root={unlabelled}',
                     f'--output_dir={unlabelled / "out"}')
  assert_one_line_error(code, err, 'inside the data directory')


def test_bad_case_stops_training_before_any_step(tmp_path):
  data = tmp_path / 'data'
  make_dataset(str(data), 'brats-gli', num_cases=3)
  os.remove(data / 'BraTS-GLI-00002-000' / 'BraTS-GLI-00002-000-t2f.nii.gz')
  args = [*LAYOUT_RUNS['brats-gli'], *TINY, f'--config.data.root={data}',
          f'--config.data.cache_dir={tmp_path / "cache"}', f'--workdir={tmp_path / "run"}']
  code, _, err = run('train.py', *args)
  assert_one_line_error(code, err, 'BraTS-GLI-00002-000: missing flair image',
                        'skip_bad_cases')
  assert not (tmp_path / 'run' / 'checkpoints').exists()
  code, out, err = run('train.py', *args, '--config.data.skip_bad_cases=True')
  assert code == 0, err
  assert 'skipping bad case' in err and 'Final validation' in out


@pytest.mark.parametrize('config', ['configs/lstm_unet.py:brats3d', 'configs/unet.py:brats2d'])
def test_brats_variants_need_a_data_root(tmp_path, config):
  code, _, err = run('train.py', f'--config={config}', f'--workdir={tmp_path / "run"}')
  assert_one_line_error(code, err, 'data.root is not set')


def test_unknown_data_root_is_one_line(tmp_path):
  code, _, err = run('train.py', '--config=configs/unet.py', f'--config.data.root={tmp_path}/x',
                     f'--workdir={tmp_path / "run"}')
  assert_one_line_error(code, err, 'data.root', 'is not a directory')


@pytest.mark.skipif(not os.path.isdir(SEED_2D), reason='shared/data/seed_2d not beside the repo')
def test_seed_2d_train_then_eval_reports_the_four_metrics(tmp_path):
  workdir = tmp_path / 'run'
  code, out, err = run('train.py', '--config=configs/unet.py', f'--config.data.root={SEED_2D}',
                       '--config.data.image_size=(32, 32)', *TINY, f'--workdir={workdir}')
  assert code == 0, err
  assert '7 training and 3 validation cases' in out
  code, out, err = run('eval.py', f'--workdir={workdir}')
  assert code == 0, err
  header = next(line for line in out.splitlines() if line.strip().startswith('iteration'))
  assert header.split()[2:6] == ['dice', 'jaccard', 'recall', 'precision']
