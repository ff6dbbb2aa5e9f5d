"""The BraTS challenges' layouts, lesion-wise metrics (by the organisers' package),
probabilities, ensembles, postprocessing and the submission folder."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from jaxseg import challenge_metrics, ensemble, errors, eval_workdir, training
from jaxseg.data import brats, layouts, load_splits
from jaxseg.data.regions import Region, labels_from_regions, region_masks
from jaxseg.postprocess import parse_min_volumes, remove_small_components
from nifti_fixtures import make_dataset, snapshot


def evaluate(workdir, **options):
  """eval.py in-process: eval_workdir.evaluate_workdir with these options."""
  return eval_workdir.evaluate_workdir(workdir, eval_workdir.EvalOptions(**options))


needs_package = pytest.mark.skipif(not challenge_metrics.installed(),
                                   reason="brats-evaluation not installed (pip install -e '.[brats]')")


# --- Layouts: every sub-challenge of the BraTS 2023+ naming, with its labels. ---

@pytest.mark.parametrize('layout, extra_label, regions', [
    ('brats-gli', 4, ['WT', 'TC', 'ET', 'RC']),  # 2024-25 post-treatment glioma
    ('brats-gli', None, ['WT', 'TC', 'ET']),     # no resection cavity in the data: no RC
    ('brats-ssa', None, ['WT', 'TC', 'ET']),
    ('brats-goat', None, ['WT', 'TC', 'ET']),
    ('brats-men', None, ['WT', 'TC', 'ET']),
    ('brats-met', 4, ['WT', 'TC', 'ET', 'RC']),
    ('brats-ped', None, ['WT', 'TC', 'ET']),     # 2024-25 numbering; no cyst in the data
    ('brats2023', None, ['WT', 'TC', 'ET']),     # the naming with another prefix
])
def test_each_subchallenge_is_recognised_with_its_regions(tmp_path, layout, extra_label,
                                                          regions):
  root = tmp_path / 'data'
  make_dataset(str(root), layout, num_cases=3, extra_label=extra_label)
  assert brats.detect_layout(str(root)) == layout
  config = _data_config(root, tmp_path)
  data = load_splits(config)
  table = layouts.LAYOUTS[layout]
  assert [r.name for r in data['train'].regions] == regions
  assert data['train'].layout == table
  # The regions contain the labels the layout's challenge config groups them by.
  by_name = {r.name: set(r.labels) for r in table.regions}
  if table.family == 'paediatric':
    assert by_name['WT'] == {1, 2, 3, 4} and by_name['TC'] == {1, 2, 3} and by_name['ET'] == {1}
  else:
    assert by_name['WT'] == {1, 2, 3} and by_name['TC'] == {1, 3} and by_name['ET'] == {3}
  # Stored labels are the layout's own values, paediatric ones included.
  case = data['train']
  values = set(np.unique(np.concatenate([np.unique(np.asarray(l)) for l in case.labels])).tolist())
  expected = {0, 1, 2, 3} | ({extra_label} if extra_label else set())
  if layout == 'brats-ped':
    expected = {0, 1, 2, 4}
  assert values == expected


def test_label_4_outside_glioma_layouts_that_allow_it_is_refused(tmp_path):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-men', num_cases=2, extra_label=4)
  with pytest.raises(errors.DataError) as error:
    load_splits(_data_config(root, tmp_path))
  assert 'label value(s) 4' in str(error.value) and 'brats-men' in str(error.value)


def test_two_subchallenges_in_one_root_are_refused(tmp_path):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-gli', num_cases=1)
  make_dataset(str(root), 'brats-ped', num_cases=1)
  with pytest.raises(errors.DataError) as error:
    brats.detect_layout(str(root))
  assert all(s in str(error.value) for s in ('brats-gli', 'brats-ped', 'BraTS-PED-00000-000'))


def test_a_model_refuses_data_of_another_region_set(tmp_path):
  root = tmp_path / 'data'
  make_dataset(str(root), 'brats-ped', num_cases=2)
  with pytest.raises(errors.DataError) as error:
    load_splits(_data_config(root, tmp_path), regions=layouts.GLIOMA_REGIONS)
  assert 'WT [1, 2, 3]' in str(error.value) and 'WT [1, 2, 3, 4]' in str(error.value)


# --- Postprocessing: small components, on constructed cases. ---

def test_small_components_are_removed_from_their_region_and_the_regions_inside():
  regions = layouts.GLIOMA_RC_REGIONS
  labels = np.zeros((20, 20, 20), np.uint8)
  labels[2:10, 2:10, 2:10] = 2          # a tumour of 512 voxels...
  labels[4:8, 4:8, 4:8] = 1             # ...with a core
  labels[5:7, 5:7, 5:7] = 3             # ...and 8 voxels of enhancing tumour in it
  labels[15:17, 15:17, 15:17] = 3       # an 8-voxel island of enhancing tumour alone
  labels[15, 2, 2] = 4                  # a 1-voxel cavity
  masks = region_masks(labels, regions)
  spacing = (1.0, 1.0, 2.0)             # 2 mm^3 per voxel
  out = labels_from_regions(remove_small_components(masks, regions, {'ET': 17, 'RC': 3},
                                                    spacing), regions)
  expected = labels.copy()
  expected[5:7, 5:7, 5:7] = 1           # ET (16 mm^3) inside TC becomes core
  expected[15:17, 15:17, 15:17] = 1     # the island: ET removed, its TC (no threshold) stays
  expected[15, 2, 2] = 0                # the cavity (2 mm^3)
  np.testing.assert_array_equal(out, expected)
  # At or above the threshold nothing changes; a WT threshold removes the island only.
  kept = remove_small_components(masks, regions, {'ET': 16}, spacing)
  np.testing.assert_array_equal(kept, masks)
  out = labels_from_regions(remove_small_components(masks, regions, {'WT': 100}, spacing),
                            regions)
  island = np.zeros_like(labels, bool)
  island[15:17, 15:17, 15:17] = True
  np.testing.assert_array_equal(out, np.where(island, 0, labels))
  # Diagonal neighbours are one component (26-connectivity).
  diagonal = np.zeros((6, 6, 6), np.uint8)
  diagonal[1, 1, 1] = diagonal[2, 2, 2] = 3
  kept = remove_small_components(region_masks(diagonal, regions), regions, {'ET': 2}, (1, 1, 1))
  assert kept[..., 2].sum() == 2


def test_postprocessing_flag_values():
  regions = layouts.GLIOMA_REGIONS
  assert parse_min_volumes('', regions, 50) == {}
  assert parse_min_volumes('challenge', regions, 50) == {'WT': 50, 'TC': 50, 'ET': 50}
  assert parse_min_volumes('20', regions, None) == {'WT': 20, 'TC': 20, 'ET': 20}
  assert parse_min_volumes('ET=50,TC=5', regions, None) == {'ET': 50, 'TC': 5}
  for bad in ('XX=5', 'ET=-1', 'big', 'challenge'):
    with pytest.raises(errors.ConfigError):
      parse_min_volumes(bad, regions, None)


# --- Ensembles: the mean of the members' probabilities. ---

def test_ensemble_logits_are_those_of_the_mean_probability():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 3, 4, 2)) * 4, rng.normal(size=(2, 3, 4, 2)) * 4
  (index, logits), = ensemble.mean_probability_logits([iter([(0, a)]), iter([(0, b)])])
  sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  np.testing.assert_allclose(sigmoid(logits), (sigmoid(a) + sigmoid(b)) / 2, atol=1e-6)
  # Members with different numbers of iterations: their last iterations only.
  (_, logits), = ensemble.mean_probability_logits([iter([(0, a)]), iter([(0, b[:1])])])
  assert logits.shape == (1, 3, 4, 2)
  np.testing.assert_allclose(sigmoid(logits[0]), (sigmoid(a[1]) + sigmoid(b[0])) / 2, atol=1e-6)


# --- Trained runs on 2024-25 glioma data with resection cavities. ---

@pytest.fixture(scope='module')
def gli_runs(tmp_path_factory):
  """Two tiny 2D U-Nets (seeds 0 and 1) trained on BraTS-GLI cases with label 4."""
  from configs import unet
  from helpers import tiny
  base = tmp_path_factory.mktemp('gli')
  data = base / 'data'
  make_dataset(str(data), 'brats-gli', num_cases=4, extra_label=4)
  workdirs = []
  for seed in (0, 1):
    config = tiny(unet.get_config(None))
    config.data.root, config.data.cache_dir = str(data), str(base / 'cache')
    config.data.image_size = (16, 16)
    config.data.preprocess_workers = 0
    config.train.seed = seed
    workdir = str(base / f'run{seed}')
    training.train_and_evaluate(config, workdir)
    workdirs.append(workdir)
  return data, workdirs


def test_glioma_2024_trains_on_label_4_and_writes_it_where_predicted(gli_runs, tmp_path):
  data, (workdir, _) = gli_runs
  with open(os.path.join(workdir, 'regions.json')) as f:
    assert [r['name'] for r in json.load(f)] == ['WT', 'TC', 'ET', 'RC']
  out = tmp_path / 'out'
  evaluate(workdir, data_root=str(data), output_dir=str(out),
           num_figures=0, save_probabilities=True, lesion_wise='none')
  case_id = sorted(os.listdir(data))[0]
  labels = np.asarray(nib.load(out / 'predictions' / f'{case_id}.nii.gz').dataobj)
  with np.load(out / 'probabilities' / f'{case_id}.npz') as saved:
    assert list(saved['regions']) == ['WT', 'TC', 'ET', 'RC']
    probabilities = saved['probabilities'].astype(np.float32)
  assert probabilities.shape == (4, *labels.shape)
  # Where the probabilities are clear (float16), the label map is theirs: label 4 where
  # RC is predicted, painted after the tumour regions; 3 where ET is, and so on.
  clear = np.all(np.abs(probabilities - 0.5) > 2e-3, axis=0)
  expected = labels_from_regions(np.moveaxis(probabilities > 0.5, 0, -1),
                                 layouts.GLIOMA_RC_REGIONS)
  np.testing.assert_array_equal(labels[clear], expected[clear])
  assert clear.mean() > 0.9


def test_an_ensemble_averages_its_members_probabilities(gli_runs, tmp_path):
  data, workdirs = gli_runs
  saved = []
  for name, members in (('a', workdirs[:1]), ('b', workdirs[1:]), ('ab', workdirs)):
    out = tmp_path / name
    summary = evaluate(members, data_root=str(data), output_dir=str(out),
                       num_figures=0, save_probabilities=True,
                       lesion_wise='none')
    case_id = sorted(os.listdir(data))[0]
    with np.load(out / 'probabilities' / f'{case_id}.npz') as arrays:
      saved.append(arrays['probabilities'].astype(np.float32))
  assert summary['ensemble'] == ['run0', 'run1']
  np.testing.assert_allclose(saved[2], (saved[0] + saved[1]) / 2, atol=2e-3)
  assert not np.allclose(saved[0], saved[1], atol=1e-2)  # two different members
  # A fold predicted elsewhere joins through its saved probabilities: the same ensemble.
  out = tmp_path / 'b_and_saved_a'
  summary = evaluate(workdirs[1:], probability_dirs=[str(tmp_path / 'a')],
                     data_root=str(data), output_dir=str(out),
                     num_figures=0, save_probabilities=True,
                     lesion_wise='none')
  assert summary['ensemble'] == ['run1', 'a']
  with np.load(out / 'probabilities' / f'{case_id}.npz') as arrays:
    np.testing.assert_allclose(arrays['probabilities'].astype(np.float32), saved[2], atol=2e-3)


def test_saved_probabilities_that_do_not_fit_are_refused(gli_runs, tmp_path):
  data, (workdir, other) = gli_runs
  saved = tmp_path / 'saved'
  evaluate(other, data_root=str(data), output_dir=str(saved),
           num_figures=0, save_probabilities=True, lesion_wise='none')
  case_ids = sorted(os.listdir(data))
  args = dict(data_root=str(data), output_dir=str(tmp_path / 'out'), num_figures=0,
              lesion_wise='none')
  with np.load(saved / 'probabilities' / f'{case_ids[1]}.npz') as arrays:
    probabilities = arrays['probabilities']
  np.savez_compressed(saved / 'probabilities' / f'{case_ids[1]}.npz',
                      probabilities=probabilities[:3], regions=np.array(['WT', 'TC', 'ET']))
  with pytest.raises(errors.DataError) as error:  # another model's region set
    evaluate(workdir, probability_dirs=[str(saved)], **args)
  assert f'{case_ids[1]}.npz' in str(error.value) and 'WT,TC,ET,RC' in str(error.value)
  os.remove(saved / 'probabilities' / f'{case_ids[1]}.npz')
  with pytest.raises(errors.DataError) as error:  # a case missing
    evaluate(workdir, probability_dirs=[str(saved)], **args)
  assert str(saved) in str(error.value) and case_ids[1] in str(error.value)
  with pytest.raises(errors.ConfigError) as error:  # never overwrite what is averaged
    evaluate(workdir, probability_dirs=[str(saved)],
             **{**args, 'output_dir': str(saved)})
  assert 'overwrite' in str(error.value)
  assert not os.path.exists(tmp_path / 'out' / 'metrics.json')


def test_ensembles_of_members_that_disagree_are_refused(gli_runs, tmp_path):
  data, (workdir, other) = gli_runs
  config_path = os.path.join(other, 'config.json')
  with open(config_path) as f:
    config = json.load(f)
  changed = tmp_path / 'changed'
  shutil.copytree(other, changed)
  config['data']['image_size'] = [24, 24]
  with open(changed / 'config.json', 'w') as f:
    json.dump(config, f)
  with pytest.raises(errors.ConfigError) as error:
    evaluate([workdir, str(changed)], data_root=str(data),
             output_dir=str(tmp_path / 'out'))
  assert 'data.image_size' in str(error.value) and str(changed) in str(error.value)
  with open(changed / 'regions.json', 'w') as f:
    json.dump([{'name': 'WT', 'labels': [1, 2, 3]}], f)
  with pytest.raises(errors.ConfigError) as error:
    evaluate([workdir, str(changed)], data_root=str(data),
             output_dir=str(tmp_path / 'out'))
  assert 'regions' in str(error.value)
  with pytest.raises(errors.ConfigError) as error:  # fold ensembles need separate data
    evaluate(list(gli_runs[1]), output_dir=str(tmp_path / 'out'))
  assert '--data_root' in str(error.value)


def test_postprocessing_changes_files_and_metrics_alike(gli_runs, tmp_path):
  data, (workdir, _) = gli_runs
  results = {}
  for name, flag in (('raw', ''), ('post', '10000')):
    out = tmp_path / name
    results[name] = evaluate(
        workdir, data_root=str(data), output_dir=str(out), num_figures=0, lesion_wise='none',
        remove_lesions_below=flag)
  # Every component is smaller than 10000 mm^3: nothing is left, in files and metrics.
  for path in (tmp_path / 'post' / 'predictions').glob('*.nii.gz'):
    assert not np.asarray(nib.load(path).dataobj).any()
  assert results['post']['removed_components_below_mm3'] == {r: 10000.0 for r in
                                                            ('WT', 'TC', 'ET', 'RC')}
  assert results['post']['per_region']['WT']['recall'] == 0.0
  assert results['raw']['per_region']['WT']['recall'] > 0.0


# --- The organisers' package: its numbers, and the submission folder it accepts. ---

@needs_package
def test_lesion_wise_metrics_are_the_packages_on_the_written_files(gli_runs, tmp_path):
  data, (workdir, _) = gli_runs
  out = tmp_path / 'out'
  summary = evaluate(workdir, data_root=str(data), output_dir=str(out),
                     num_figures=0)  # auto: the layout's 'gli'
  lesion = summary['lesion_wise']
  assert lesion['challenge'] == 'gli' and 'brats-evaluation' in lesion['convention']
  import brats_evaluation
  from panoptica import Panoptica_Evaluator
  evaluator = Panoptica_Evaluator.load_from_config(str(brats_evaluation.config_path('gli')))
  with open(out / 'per_case_lesion_wise.csv') as f:
    import csv
    rows = list(csv.DictReader(f))
  cases = sorted(c for c in os.listdir(data) if not c.startswith('.'))
  assert sorted({r['case'] for r in rows}) == cases
  for case_id in cases:
    theirs = brats_evaluation.evaluate_single_exam(
        str(out / 'predictions' / f'{case_id}.nii.gz'),
        str(data / case_id / f'{case_id}-seg.nii.gz'), case_id, evaluator)
    for row in (r for r in rows if r['case'] == case_id):
      region = theirs[row['region']]
      for column, key in (('lesionwise_dsc', 'sq_dsc'), ('global_dsc', 'global_bin_dsc'),
                          ('f1', 'rq'), ('tp', 'tp'), ('fp', 'fp'), ('fn', 'fn')):
        np.testing.assert_equal(float(row[column]), float(region[key]),
                                err_msg=f'{case_id} {row["region"]} {column}')
  with open(out / 'metrics.json') as f:
    assert json.load(f)['lesion_wise']['per_region'].keys() == {
        'et', 'netc', 'snfh', 'rc', 'tc', 'wt'}


@needs_package
def test_a_challenge_validation_folder_gives_a_submission_the_package_accepts(gli_runs,
                                                                                tmp_path):
  _, (workdir, _) = gli_runs
  validation = tmp_path / 'BraTS-Validation'
  ids = make_dataset(str(validation), 'brats-gli', num_cases=0, num_unlabelled=2)
  before = snapshot(str(validation))
  out = tmp_path / 'submission'
  evaluate(workdir, data_root=str(validation), output_dir=str(out),
           num_figures=0)
  assert snapshot(str(validation)) == before
  predictions = out / 'predictions'
  assert sorted(os.listdir(predictions)) == sorted(f'{c}.nii.gz' for c in ids)
  for case_id in ids:
    prediction = nib.load(predictions / f'{case_id}.nii.gz')
    image = nib.load(validation / case_id / f'{case_id}-t1c.nii.gz')
    assert prediction.shape == image.shape and prediction.get_data_dtype() == np.uint8
    np.testing.assert_allclose(prediction.affine, image.affine)
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1, 2, 3, 4}
  # The organisers' command, with references for the same cases.
  references = tmp_path / 'references'
  make_dataset(str(tmp_path / 'labelled'), 'brats-gli', num_cases=2)
  references.mkdir()
  for case_id in ids:
    shutil.copy(tmp_path / 'labelled' / case_id / f'{case_id}-seg.nii.gz',
                references / f'{case_id}.nii.gz')
  summary = tmp_path / 'summary.json'
  subprocess.run([sys.executable, '-m', 'brats_evaluation.evaluation', '--config=gli',
                  f'--ref_path={references}', f'--pred_path={predictions}',
                  f'--summary_json={summary}'], check=True, capture_output=True)
  with open(summary) as f:
    result = json.load(f)
  assert result['missings'] == []
  assert [m['subject_name'] for m in result['metrics']] == [f'{c}.nii.gz' for c in ids]
  assert not any('error' in m for m in result['metrics'])


def test_lesion_wise_flag_errors(tmp_path):
  glioma_2021 = layouts.LAYOUTS['brats2021']
  assert challenge_metrics.choose('auto', glioma_2021) is None  # no challenge config
  assert challenge_metrics.choose('none', layouts.LAYOUTS['brats-gli']) is None
  with pytest.raises(errors.ConfigError) as error:
    challenge_metrics.choose('gli', glioma_2021)  # 4 is ET there, RC in 'gli'
  assert 'brats2021' in str(error.value)
  with pytest.raises(errors.ConfigError) as error:
    challenge_metrics.LesionWiseScorer('brats')
  assert 'gli, mets' in str(error.value)


# --- A labelled validation directory instead of a split. ---

def test_a_labelled_validation_directory_validates_and_nothing_is_split(tmp_path):
  from configs import unet
  from helpers import tiny
  train_ids = make_dataset(str(tmp_path / 'train'), 'brats-gli', num_cases=3, num_unlabelled=1)
  val_ids = make_dataset(str(tmp_path / 'val'), 'brats-gli', num_cases=2, num_unlabelled=1,
                         first_index=10)
  config = tiny(unet.get_config(None))
  config.data = _data_config(tmp_path / 'train', tmp_path)
  config.data.val_root = str(tmp_path / 'val')
  workdir = tmp_path / 'run'
  before = snapshot(str(tmp_path / 'val'))
  summary = training.train_and_evaluate(config, str(workdir))
  with open(workdir / 'splits.json') as f:
    assert json.load(f) == {'train': train_ids[:3], 'val': val_ids[:2]}
  assert summary['num_cases'] == 2
  assert snapshot(str(tmp_path / 'val')) == before
  # eval.py scores the recorded validation cases, read from data.val_root.
  result = evaluate(str(workdir), output_dir=str(tmp_path / 'out'),
                    num_figures=0, lesion_wise='none')
  assert result['num_cases'] == 2
  assert sorted(os.listdir(tmp_path / 'out' / 'predictions')) == [f'{c}.nii.gz'
                                                                   for c in val_ids[:2]]


def test_a_validation_directory_that_does_not_fit_is_refused(tmp_path):
  make_dataset(str(tmp_path / 'train'), 'brats-gli', num_cases=2, extra_label=4)
  make_dataset(str(tmp_path / 'same'), 'brats-gli', num_cases=2)
  make_dataset(str(tmp_path / 'old'), 'brats2021', num_cases=2, first_index=10)
  config = _data_config(tmp_path / 'train', tmp_path)
  config.val_root = str(tmp_path / 'same')  # the same case ids: they would leak
  with pytest.raises(errors.DataError) as error:
    load_splits(config)
  assert 'BraTS-GLI-00000-000' in str(error.value) and 'data.val_root' in str(error.value)
  config.val_root = str(tmp_path / 'old')  # 2021 data has no resection cavity (RC)
  with pytest.raises(errors.UserError) as error:
    load_splits(config)
  assert 'RC' in str(error.value) and str(tmp_path / 'old') in str(error.value)
  config.root = None
  with pytest.raises(errors.ConfigError) as error:
    load_splits(config)
  assert 'data.root' in str(error.value)


def _data_config(root, tmp_path):
  from configs import unet
  config = unet.get_config(None).data
  config.root, config.cache_dir, config.preprocess_workers = str(root), str(tmp_path / 'c'), 0
  config.image_size = (16, 16)
  return config


# --- The ranking metrics of BraTS 2023-24, and postprocessing chosen on them. ---

def test_cross_validated_postprocessing_and_the_ranking_metrics_in_eval(gli_runs, tmp_path):
  from jaxseg import lesionwise, postprocess_choice, ranking_metrics
  data, (workdir, other) = gli_runs
  folds = []
  for run in (workdir, other):  # each run's validation split, its probabilities saved
    folds.append(str(tmp_path / os.path.basename(run)))
    evaluate(run, split='val', output_dir=folds[-1], num_figures=0,
             save_probabilities=True, lesion_wise='none')
  cases, regions, rules, _ = postprocess_choice.validation_cases([workdir, other], folds, 'auto')
  assert rules.name == 'GLI 2024' and [r.name for r in regions] == ['WT', 'TC', 'ET', 'RC']
  choice = postprocess_choice.choose(cases, regions, rules)
  assert list(choice['scores']) == ['WT', 'TC', 'ET', 'RC']
  for region, scores in choice['scores'].items():  # kept only where strictly better
    none = scores['candidates_mm3']['0']
    chosen = scores['chosen_mm3']
    assert chosen is None or scores['candidates_mm3'][f'{chosen:g}'] > none
  path = tmp_path / 'postprocessing.json'
  postprocess_choice.write_choice(str(path), {**choice, 'min_lesion_volume_mm3': {'ET': 30.0}})
  out = tmp_path / 'applied'
  summary = evaluate([workdir, other], data_root=str(data),
                     output_dir=str(out), num_figures=0,
                     lesion_wise='none', postprocessing=str(path))
  assert summary['removed_components_below_mm3'] == {'ET': 30.0}
  # The leaderboard's metrics lead metrics.json, and are lesionwise.py's on the files.
  with open(out / 'metrics.json') as f:
    saved = json.load(f)
  assert list(saved)[0] == 'ranking' and saved['ranking']['rules'] == 'GLI 2024'
  case_id = sorted(os.listdir(data))[0]
  prediction, spacing = ranking_metrics.read_labels(str(out / 'predictions' / f'{case_id}.nii.gz'))
  truth, _ = ranking_metrics.read_labels(str(data / case_id / f'{case_id}-seg.nii.gz'))
  expected = lesionwise.case_scores(prediction, truth, spacing, rules)
  with open(out / 'per_case_ranking_metrics.csv') as f:
    import csv
    rows = [r for r in csv.DictReader(f) if r['case'] == case_id]
  assert [r['region'] for r in rows] == ['WT', 'TC', 'NETC', 'SNFH', 'ET', 'RC']
  for row in rows:
    assert float(row['dice']) == pytest.approx(expected[row['region']]['dice'], abs=1e-12)
    assert row['convention'] == 'BraTS GLI 2024 penalised lesion-wise'
  # A fold without its probabilities, a choice of another region set: one line each.
  os.remove(os.path.join(folds[1], 'probabilities', os.listdir(
      os.path.join(folds[1], 'probabilities'))[0]))
  with pytest.raises(errors.DataError) as error:
    postprocess_choice.validation_cases([workdir, other], folds, 'auto')
  assert folds[1] in str(error.value) and 'no probabilities for 1' in str(error.value)
  path.write_text(json.dumps({'regions': ['WT', 'TC', 'ET'], 'min_lesion_volume_mm3': {}}))
  result = subprocess.run([sys.executable, 'eval.py', f'--workdir={workdir}',
                           f'--data_root={data}', f'--output_dir={tmp_path / "x"}',
                           f'--postprocessing={path}'], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'WT,TC,ET,RC' in result.stderr.strip().splitlines()[-1]
