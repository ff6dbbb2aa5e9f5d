"""Evaluation of a model on a data split: per-case metrics, summaries, tables, files."""

import csv
import json
import os

import numpy as np

from jaxseg import checkpointing, inference, parallel
from jaxseg import metrics as metrics_lib
from jaxseg.data import SegmentationData, load_splits, splits
from jaxseg.data.regions import region_masks
from jaxseg.train_state import restore_train_state, setup_model


def evaluate(logits_fn, params, data: SegmentationData, eval_config, image_size, mesh,
             with_hd95: bool = True) -> tuple[list[dict], dict]:
  """Per-case rows (one per case, iteration and region) and their summary.

  Whole cases are predicted with sliding windows of `image_size` (inference.py).
  """
  region_names = [r.name for r in data.regions]
  rows = []
  cases = inference.predict_cases(logits_fn, params, data.images, image_size,
                                  eval_config.batch_size, mesh, eval_config.overlap)
  for index, logits in cases:
    masks = logits > 0  # (T, *spatial, R)
    truths = region_masks(np.asarray(data.labels[index]), data.regions)
    for t in range(masks.shape[0]):
      for r, name in enumerate(region_names):
        values = metrics_lib.case_metrics(masks[t, ..., r], truths[..., r],
                                          data.spacings[index], with_hd95)
        rows.append({'case': data.case_ids[index], 'iteration': t + 1, 'region': name,
                     **values})
  num_iterations = max(r['iteration'] for r in rows)
  summary = metrics_lib.summarize(rows, region_names, num_iterations)
  summary.update(num_cases=len(data), regions=region_names)
  return rows, summary


def dice_line(summary: dict) -> str:
  """One line: mean Dice at each iteration, then per region at the last."""
  per_iteration = ' '.join(f'{it["dice"]:.4f}' for it in summary['per_iteration'])
  per_region = ' '.join(f'{name} {values["dice"]:.4f}'
                        for name, values in summary['per_region'].items())
  return f'Dice {summary["dice"]:.4f} | per iteration: {per_iteration} | {per_region}'


def format_table(summary: dict) -> str:
  """Table of every metric per region (rows) for each refinement iteration."""
  header = f'{"iteration":>9}  {"region":<6}' + ''.join(f'{m:>10}' for m in metrics_lib.METRICS)
  lines = [header, '-' * len(header)]
  for entry in summary['per_iteration']:
    for name, values in [*entry['per_region'].items(), ('mean', entry)]:
      lines.append(f'{entry["iteration"]:>9}  {name:<6}' +
                   ''.join(f'{values[m]:>10.4f}' for m in metrics_lib.METRICS))
  return '\n'.join(lines)


def write_results(directory: str, rows: list[dict], summary: dict) -> tuple[str, str]:
  """Writes metrics.json (summary) and per_case_metrics.csv; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  json_path = os.path.join(directory, 'metrics.json')
  csv_path = os.path.join(directory, 'per_case_metrics.csv')
  with open(json_path, 'w') as f:
    json.dump(summary, f, indent=2)
  with open(csv_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['case', 'iteration', 'region', *metrics_lib.METRICS])
    writer.writeheader()
    writer.writerows(rows)
  return json_path, csv_path


def evaluate_workdir(workdir: str, checkpoint: str, split: str, output_dir: str) -> dict:
  """eval.py: restores a checkpoint of a training run, evaluates a split, writes results."""
  config = checkpointing.read_config(workdir)
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  step = _checkpoint_step(checkpointer, checkpoint, workdir)
  data = load_splits(config.data, (split,), splits.read(workdir))[split]
  model, _, abstract_state = setup_model(config, data)
  mesh = parallel.make_mesh()
  state, _ = restore_train_state(checkpointer, step, abstract_state, parallel.replicated(mesh))
  logits_fn = inference.make_logits_fn(model, mesh)
  rows, summary = evaluate(logits_fn, state.params, data, config.eval, config.data.image_size,
                           mesh)
  summary.update(checkpoint_step=step, split=split, workdir=os.path.abspath(workdir))
  print(f'{config.model.name}, checkpoint step {step} ({checkpoint}), {split} split, '
        f'{len(data)} cases')
  print(format_table(summary))
  print(f'{split} {dice_line(summary)}')
  json_path, csv_path = write_results(output_dir, rows, summary)
  print(f'Wrote {json_path} and {csv_path}')
  return summary


def _checkpoint_step(checkpointer, checkpoint: str, workdir: str) -> int:
  if checkpoint == 'best':
    step = checkpointer.best_step()
  elif checkpoint == 'latest':
    step = checkpointer.latest_step()
  elif checkpoint.isdigit():
    step = int(checkpoint)
    if step not in checkpointer.all_steps():
      raise checkpointing.CheckpointError(
          f'--checkpoint={checkpoint}: no such step in {workdir}; saved steps: '
          f'{sorted(checkpointer.all_steps())}')
  else:
    raise ValueError(f"--checkpoint={checkpoint!r}: use 'best', 'latest' or a step number")
  if step is None:
    raise checkpointing.CheckpointError(f'{workdir}: no checkpoint found')
  return step
