"""Evaluation of a model on one data set: per-case metrics, their summary, the printed
table and the result files. Used by validation during training and by eval.py.

The metrics here are voxel-wise, with the BraTS 2018-2021 conventions (metrics.py);
the challenges' lesion-wise metrics are challenge_metrics.py's.
"""

import csv
import json
import os

import numpy as np

from jaxseg import metrics as metrics_lib
from jaxseg.data import SegmentationData
from jaxseg.data.regions import labels_from_regions, region_masks
from jaxseg.postprocess import remove_small_components

CONVENTION = ('voxel-wise per region, BraTS 2018-2021 conventions: both masks empty -> '
              'Dice 1, HD95 0; one empty -> Dice 0, HD95 373.13 mm')


def converged_iteration(labels: np.ndarray, max_changed_fraction: float | None) -> int:
  """The refinement iteration (from 1) at which a case stops: the first t > 1 whose
  label map differs from that of iteration t - 1 in at most `max_changed_fraction` of
  its voxels; the last iteration when none does, or when `max_changed_fraction` is None.

  labels: (T, *spatial) predicted label maps, one per iteration.
  """
  if max_changed_fraction is not None:
    for t in range(1, len(labels)):
      if np.mean(labels[t] != labels[t - 1]) <= max_changed_fraction:
        return t + 1
  return len(labels)


def evaluate(case_logits, data: SegmentationData, *, with_hd95: bool = True, on_case=None,
             stop_changed_below: float | None = None, min_volumes: dict | None = None
             ) -> tuple[list[dict], dict | None]:
  """Per-case rows (one per labelled case, iteration and region) and their summary
  (None when no case is labelled).

  `case_logits` yields (case index, logits (T, *spatial, R)) of whole cases, as
  SlidingWindowPredictor.predict does. The region masks scored are those of the label
  map the prediction is written as (`labels_from_regions`, after removing components
  smaller than `min_volumes` (postprocess.py)), so that the metrics are those of the
  prediction files; `on_case(index, labels (t, *spatial), logits (*spatial, R))` sees
  every case's predicted label maps up to the iteration it stops at, and the logits of
  that iteration. With `stop_changed_below`, each case stops at its
  `converged_iteration`: the summary's top-level and per-region metrics are those of
  the stopped predictions, and 'iterations_used' says where each case stopped; the
  rows and 'per_iteration' still cover every iteration computed.
  """
  region_names = [r.name for r in data.regions]
  rows, stops = [], {}
  for index, logits in case_logits:
    # Sigmoid outputs need not nest (TC inside WT); the label map decides, as written.
    labels = np.stack([labels_from_regions(m, data.regions) for m in logits > 0])
    if min_volumes:
      labels = np.stack([labels_from_regions(remove_small_components(
          region_masks(l, data.regions), data.regions, min_volumes, data.spacings[index]),
          data.regions) for l in labels])
    stop = converged_iteration(labels, stop_changed_below)
    masks = region_masks(labels, data.regions)  # (T, *spatial, R)
    if data.labels[index] is not None:
      truths = region_masks(np.asarray(data.labels[index]), data.regions)
      for t in range(masks.shape[0]):
        for r, name in enumerate(region_names):
          values = metrics_lib.case_metrics(masks[t, ..., r], truths[..., r],
                                            data.spacings[index], with_hd95)
          rows.append({'case': data.case_ids[index], 'iteration': t + 1, 'region': name,
                       **values})
      stops[data.case_ids[index]] = stop
    if on_case is not None:
      on_case(index, labels[:stop], logits[stop - 1])
  if not rows:
    return rows, None
  num_iterations = max(r['iteration'] for r in rows)
  summary = metrics_lib.summarize(rows, region_names, num_iterations)
  summary.update(num_cases=len({r['case'] for r in rows}), regions=region_names,
                 convention=CONVENTION)
  if min_volumes:
    summary['removed_components_below_mm3'] = dict(min_volumes)
  if stop_changed_below is not None:
    # The stopped predictions, as iteration 1 of a one-iteration summary.
    stopped = metrics_lib.summarize([{**r, 'iteration': 1} for r in rows
                                     if r['iteration'] == stops[r['case']]], region_names, 1)
    summary.update({m: stopped[m] for m in metrics_lib.METRICS},
                   per_region=stopped['per_region'], stop_changed_below=stop_changed_below,
                   iterations_used=stops,
                   mean_iterations_used=float(np.mean(list(stops.values()))))
  return rows, summary


def dice_line(summary: dict) -> str:
  """One line: mean Dice at each iteration, then per region at the last (or where
  each case stopped)."""
  per_iteration = ' '.join(f'{it["dice"]:.4f}' for it in summary['per_iteration'])
  per_region = ' '.join(f'{name} {values["dice"]:.4f}'
                        for name, values in summary['per_region'].items())
  stopped = (f' | stopped at iteration {summary["mean_iterations_used"]:.2f} on average'
             if 'iterations_used' in summary else '')
  return f'Dice {summary["dice"]:.4f} | per iteration: {per_iteration} | {per_region}{stopped}'


def format_table(summary: dict) -> str:
  """Table of every metric per region (rows) for each refinement iteration."""
  header = f'{"iteration":>9}  {"region":<6}' + ''.join(f'{m:>10}' for m in metrics_lib.METRICS)
  lines = [f'Voxel-wise metrics ({CONVENTION})', header, '-' * len(header)]
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
    writer = csv.DictWriter(f, fieldnames=['case', 'iteration', 'region', *metrics_lib.METRICS,
                                           'convention'])
    writer.writeheader()
    writer.writerows({**row, 'convention': 'voxel-wise'} for row in rows)
  return json_path, csv_path
