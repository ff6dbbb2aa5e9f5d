"""experiment.py: a 2 x 2 sweep (two arms, two seeds) of tiny runs, its table checked
against the runs' own metrics.json and per-case metrics, and a rerun that skips them."""

import csv
import json
import os

import numpy as np
import pytest

from helpers import assert_one_line_error, run
from jaxseg import experiments

SWEEP = '''
TINY = {'data.image_size': (32, 32), 'data.num_train_cases': 4, 'data.num_val_cases': 3,
        'model.features': (8, 16), 'train.num_steps': 4, 'train.batch_size': 2,
        'train.warmup_steps': 1, 'train.log_every_steps': 2, 'eval.every_steps': 2,
        'eval.batch_size': 2, 'checkpoint.every_steps': 2}

def get_sweep():
  lstm = 'configs/lstm_unet.py'
  return dict(arms={'T1': (lstm, {'model.num_iterations': 1}),
                    'T2': (lstm, {'model.num_iterations': 2})},
              seeds=(0, 1), overrides=TINY, baseline='T1')
'''


def _case_dice(workdir):
  """{case: Dice averaged over regions} at the last iteration, from the CSV."""
  with open(os.path.join(workdir, 'per_case_metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  last = max(int(r['iteration']) for r in rows)
  cases = sorted({r['case'] for r in rows})
  return np.array([np.mean([float(r['dice']) for r in rows
                            if r['case'] == c and int(r['iteration']) == last]) for c in cases])


def test_a_sweep_compares_its_arms_and_a_rerun_skips_finished_runs(tmp_path):
  sweep, root = tmp_path / 'sweep.py', tmp_path / 'runs'
  sweep.write_text(SWEEP)
  code, out, err = run('experiment.py', f'--sweep={sweep}', f'--workdir={root}')
  assert code == 0, err
  with open(root / 'results.json') as f:
    results = json.load(f)
  assert set(results) == {'T1', 'T2'}
  for arm, iterations in (('T1', 1), ('T2', 2)):
    summaries = []
    for seed in (0, 1):
      with open(root / arm / f'seed{seed}' / 'metrics.json') as f:
        summaries.append(json.load(f))
    dice = [s['dice'] for s in summaries]
    assert results[arm]['metrics']['dice']['mean'] == pytest.approx(np.mean(dice), abs=1e-12)
    assert results[arm]['metrics']['dice']['std'] == pytest.approx(np.std(dice), abs=1e-12)
    assert len(results[arm]['per_iteration']) == iterations
    assert results[arm]['steps'] == 4
  assert results['T1']['parameters'] == results['T2']['parameters']  # shared weights over T
  # The paired difference: same seeds, same cases.
  differences = np.stack([_case_dice(root / 'T2' / f'seed{s}') -
                          _case_dice(root / 'T1' / f'seed{s}') for s in (0, 1)])
  versus = results['T2']['versus_baseline']
  assert versus['dice_difference'] == pytest.approx(differences.mean(), abs=1e-12)
  assert versus['interval_95'][0] <= versus['dice_difference'] <= versus['interval_95'][1]
  assert 'versus_baseline' not in results['T1']
  assert (root / 'dice_per_iteration.png').stat().st_size > 0
  assert 'T2' in (root / 'results.md').read_text()

  marks = {p: os.path.getmtime(p) for p in root.glob('*/seed*/run.json')}
  assert len(marks) == 4
  code, out, err = run('experiment.py', f'--sweep={sweep}', f'--workdir={root}')
  assert code == 0, err
  assert out.count('finished, skipped') == 4
  assert {p: os.path.getmtime(p) for p in root.glob('*/seed*/run.json')} == marks
  before = (root / 'results.json').read_text()
  (root / 'results.json').unlink()
  code, out, err = run('experiment.py', f'--sweep={sweep}', f'--workdir={root}',
                       '--collect_only')
  assert code == 0 and 'skipped' not in out, err
  assert (root / 'results.json').read_text() == before


def test_bootstrap_interval_of_constant_and_of_spread_differences():
  assert experiments.bootstrap_interval(np.full((3, 5), 0.02)) == pytest.approx((0.02, 0.02))
  rng = np.random.default_rng(1)
  low, high = experiments.bootstrap_interval(rng.normal(0.01, 0.05, (3, 40)))
  assert low < 0.01 < high and high - low < 0.05


def test_a_sweep_with_an_unknown_key_or_baseline_is_one_line(tmp_path):
  sweep = tmp_path / 'sweep.py'
  sweep.write_text("def get_sweep():\n  return dict(arms={'a': ('configs/unet.py', {}), "
                   "'b': ('configs/unet.py', {'train.nnum_steps': 2})}, baseline='c')\n")
  code, _, err = run('experiment.py', f'--sweep={sweep}', f'--workdir={tmp_path / "runs"}')
  assert_one_line_error(code, err, "baseline 'c'")
  sweep.write_text("def get_sweep():\n  return dict(arms={'b': ('configs/unet.py', "
                   "{'train.nnum_steps': 2})})\n")
  code, _, err = run('experiment.py', f'--sweep={sweep}', f'--workdir={tmp_path / "runs"}')
  assert_one_line_error(code, err, "'train.nnum_steps'")
  assert not (tmp_path / 'runs').exists()
