"""Experiments: a sweep of configs (arms) times seeds, each run trained and evaluated in
its own workdir, and one table and figure that compare them.

A sweep file is Python, like a config file: `get_sweep()` returns

  dict(arms={name: (config file[:variant], {dotted key: value, ...}), ...},
       seeds=(0, 1, 2),             # train.seed of each run; data and split stay fixed
       overrides={key: value},      # applied to every arm first (optional)
       baseline=name)               # the arm the others are compared with (optional)

Run `name`/seed `k` lives in `<root>/<name>/seed<k>/`; a run with its `run.json` is
finished and never retrained, so the command resumes a sweep. The results
(`results.json`, `results.md`, `dice_per_iteration.png` in `<root>`) give, per arm,
mean and standard deviation over seeds of each metric per region and per refinement
iteration, training time, steps and parameters; and, against the baseline, the paired
difference of mean Dice (same seeds, same cases) with a 95% bootstrap interval over
seeds and cases.
"""

import csv
import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np

from jaxseg import checkpointing, cli, eval_workdir, figures, training
from jaxseg.data import load_splits
from jaxseg.errors import ConfigError
from jaxseg.metrics import METRICS
from jaxseg.train_state import setup_model

RUN_FILE = 'run.json'


@dataclasses.dataclass(frozen=True)
class Run:
  arm: str
  seed: int
  config_spec: str
  overrides: dict
  workdir: str


def load_sweep(path: str, variant: str | None = None) -> dict:
  """The dict of a sweep file's get_sweep([variant]), checked; a ConfigError names
  what is wrong."""
  module = cli.load_module(path, f'--sweep={path}', 'sweep')
  if not callable(getattr(module, 'get_sweep', None)):
    raise ConfigError(f'--sweep={path}: {path} defines no get_sweep() function')
  sweep = cli.call_user_code(lambda: module.get_sweep(*([variant] if variant else [])),
                             path, f'--sweep={path}')
  if not isinstance(sweep, dict) or not sweep.get('arms'):
    raise ConfigError(f'--sweep={path}: get_sweep() must return a dict with "arms"')
  if sweep.get('baseline') is not None and sweep['baseline'] not in sweep['arms']:
    raise ConfigError(f'--sweep={path}: baseline {sweep["baseline"]!r} is not an arm; arms: '
                      f'{sorted(sweep["arms"])}')
  return sweep


def plan(sweep: dict, root: str) -> list[Run]:
  """Every run of the sweep, in a fixed order (arms as listed, then seeds)."""
  runs = []
  for arm, (spec, overrides) in sweep['arms'].items():
    for seed in sweep.get('seeds', (0,)):
      runs.append(Run(arm, int(seed), spec, {**sweep.get('overrides', {}), **overrides},
                      os.path.join(root, arm, f'seed{seed}')))
  return runs


def run_config(run: Run) -> ml_collections.ConfigDict:
  config = cli.load_config_file(run.config_spec)
  for key, value in {**run.overrides, 'train.seed': run.seed}.items():
    node = config
    *parents, leaf = key.split('.')
    for name in parents:
      node = node[name] if name in node else None
      if not isinstance(node, ml_collections.ConfigDict):
        break
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f'run {run.arm}/seed{run.seed}: no such config key {key!r} in '
                        f'{run.config_spec}')
    node[leaf] = value
  return config


def is_finished(run: Run) -> bool:
  return os.path.exists(os.path.join(run.workdir, RUN_FILE))


def execute(run: Run) -> None:
  """Trains and evaluates `run` in its workdir (resuming it if it was stopped), then
  writes run.json: the mark of a finished run."""
  config = run_config(run)
  start = time.monotonic()
  training.train_and_evaluate(config, run.workdir)
  seconds = time.monotonic() - start
  eval_workdir.evaluate_workdir(run.workdir, eval_workdir.EvalOptions(num_figures=0))
  _, _, abstract = setup_model(config, load_splits(config.data, ('train',))['train'])
  record = {'arm': run.arm, 'seed': run.seed, 'config': run.config_spec,
            'overrides': run.overrides, 'train_seconds': seconds,
            'steps': checkpointing.Checkpointer(run.workdir, create=False).latest_step(),
            'parameters': int(sum(x.size for x in jax.tree.leaves(abstract.params)))}
  with open(os.path.join(run.workdir, RUN_FILE), 'w') as f:
    json.dump(record, f, indent=1)


def _last_iteration_dice(workdir: str) -> dict[str, float]:
  """{case: Dice averaged over regions} at the last refinement iteration."""
  with open(os.path.join(workdir, 'per_case_metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  last = max(int(r['iteration']) for r in rows)
  by_case = {}
  for r in rows:
    if int(r['iteration']) == last:
      by_case.setdefault(r['case'], []).append(float(r['dice']))
  return {case: float(np.mean(values)) for case, values in by_case.items()}


def bootstrap_interval(differences: np.ndarray, samples: int = 2000, seed: int = 0
                       ) -> tuple[float, float]:
  """95% interval of the mean of `differences` (seeds, cases), resampling seeds and then
  cases within each, so that both sources of spread count."""
  rng = np.random.default_rng(seed)
  num_seeds, num_cases = differences.shape
  means = np.empty(samples)
  for i in range(samples):
    seeds = rng.integers(0, num_seeds, num_seeds)
    cases = rng.integers(0, num_cases, (num_seeds, num_cases))
    means[i] = differences[seeds[:, None], cases].mean()
  low, high = np.percentile(means, [2.5, 97.5])
  return float(low), float(high)


def collect(runs: list[Run], baseline: str | None) -> dict:
  """The results of the finished runs, per arm (see the module docstring)."""
  arms = {}
  for run in runs:
    if is_finished(run):
      arms.setdefault(run.arm, []).append(run)
  results = {}
  for arm, arm_runs in arms.items():
    summaries, records = [], []
    for run in arm_runs:
      with open(os.path.join(run.workdir, 'metrics.json')) as f:
        summaries.append(json.load(f))
      with open(os.path.join(run.workdir, RUN_FILE)) as f:
        records.append(json.load(f))
    entry = {'seeds': [r.seed for r in arm_runs], 'metrics': {}, 'per_region': {},
             'per_iteration': []}
    for metric in METRICS:
      values = [s[metric] for s in summaries]
      entry['metrics'][metric] = {'mean': float(np.mean(values)), 'std': float(np.std(values))}
    for region in summaries[0]['per_region']:
      values = [s['per_region'][region]['dice'] for s in summaries]
      entry['per_region'][region] = {'mean': float(np.mean(values)),
                                     'std': float(np.std(values))}
    for t in range(min(len(s['per_iteration']) for s in summaries)):
      values = [s['per_iteration'][t]['dice'] for s in summaries]
      entry['per_iteration'].append({'iteration': t + 1, 'mean': float(np.mean(values)),
                                     'std': float(np.std(values))})
    for key in ('train_seconds', 'steps', 'parameters'):
      entry[key] = float(np.mean([r[key] for r in records]))
    results[arm] = entry
  if baseline in arms:
    reference = {run.seed: _last_iteration_dice(run.workdir) for run in arms[baseline]}
    for arm, arm_runs in arms.items():
      paired = [run for run in arm_runs if run.seed in reference]
      if arm == baseline or not paired:
        continue
      cases = sorted(reference[paired[0].seed])
      differences = np.array([[_last_iteration_dice(run.workdir)[c] - reference[run.seed][c]
                               for c in cases] for run in paired])
      low, high = bootstrap_interval(differences)
      results[arm]['versus_baseline'] = {'baseline': baseline, 'dice_difference':
                                         float(differences.mean()), 'interval_95': [low, high],
                                         'seeds': len(paired), 'cases': len(cases)}
  return results


def markdown_table(results: dict) -> str:
  """One row per arm: Dice (mean ± std over seeds) at the last iteration and per
  iteration, per region, HD95, the difference to the baseline, time, steps, size."""
  lines = ['| arm | seeds | Dice | Dice per iteration | per region | HD95 | vs baseline '
           '[95% CI] | train s | steps | parameters |',
           '| --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |']
  for arm, r in results.items():
    dice, hd95 = r['metrics']['dice'], r['metrics']['hd95']
    iterations = ' / '.join(f'{it["mean"]:.4f}' for it in r['per_iteration'])
    regions = ', '.join(f'{n} {v["mean"]:.4f}' for n, v in r['per_region'].items())
    versus = r.get('versus_baseline')
    paired = (f'{versus["dice_difference"]:+.4f} [{versus["interval_95"][0]:+.4f}, '
              f'{versus["interval_95"][1]:+.4f}]' if versus else '')
    lines.append(f'| {arm} | {len(r["seeds"])} | {dice["mean"]:.4f} ± {dice["std"]:.4f} | '
                 f'{iterations} | {regions} | {hd95["mean"]:.2f} | {paired} | '
                 f'{r["train_seconds"]:.0f} | {r["steps"]:.0f} | {r["parameters"]:,.0f} |')
  return '\n'.join(lines)


def write_results(root: str, results: dict) -> list[str]:
  """results.json, results.md and dice_per_iteration.png in `root`; returns the paths."""
  os.makedirs(root, exist_ok=True)
  paths = [os.path.join(root, name) for name in
           ('results.json', 'results.md', 'dice_per_iteration.png')]
  with open(paths[0], 'w') as f:
    json.dump(results, f, indent=1)
  with open(paths[1], 'w') as f:
    f.write(markdown_table(results) + '\n')
  figures.sweep_dice_plot(paths[2], {arm: r['per_iteration'] for arm, r in results.items()})
  return paths


def slurm_script(runs: list[Run], command: list[str], root: str) -> str:
  """A SLURM array job, one task per run, each running `command --run_index=$TASK`."""
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, 'slurm_array.sh')
  with open(path, 'w') as f:
    f.write('#!/bin/bash\n'
            f'#SBATCH --array=0-{len(runs) - 1}\n'
            f'#SBATCH --output={root}/slurm-%A_%a.out\n'
            '# One task per run; runs already finished return at once. Then, once, without\n'
            '# --run_index, to collect the table and figure.\n'
            f'{" ".join(command)} --run_index=$SLURM_ARRAY_TASK_ID\n')
  return path
