"""Evaluation of a model on a data split: per-case metrics, summaries, tables, files."""

import csv
import json
import os

import ml_collections
import numpy as np
from PIL import Image

from jaxseg import checkpointing, figures, inference, parallel, predictions
from jaxseg import metrics as metrics_lib
from jaxseg.data import SegmentationData, load_splits, splits
from jaxseg.data.regions import labels_from_regions, region_masks
from jaxseg.train_state import restore_train_state, setup_model


def evaluate(logits_fn, params, data: SegmentationData, eval_config, image_size, mesh,
             with_hd95: bool = True, on_case=None) -> tuple[list[dict], dict | None]:
  """Per-case rows (one per labelled case, iteration and region) and their summary
  (None when no case is labelled).

  Whole cases are predicted with sliding windows of `image_size` (inference.py). The
  region masks scored are those of the label map the prediction is written as
  (`labels_from_regions`), so that the metrics are those of the prediction files;
  `on_case(index, labels (T, *spatial))` sees every case's predicted label maps.
  """
  region_names = [r.name for r in data.regions]
  rows = []
  cases = inference.predict_cases(logits_fn, params, data.images, image_size,
                                  eval_config.batch_size, mesh, eval_config.overlap)
  for index, logits in cases:
    # Sigmoid outputs need not nest (TC inside WT); the label map decides, as written.
    labels = np.stack([labels_from_regions(m, data.regions) for m in logits > 0])
    masks = region_masks(labels, data.regions)  # (T, *spatial, R)
    if data.labels[index] is not None:
      truths = region_masks(np.asarray(data.labels[index]), data.regions)
      for t in range(masks.shape[0]):
        for r, name in enumerate(region_names):
          values = metrics_lib.case_metrics(masks[t, ..., r], truths[..., r],
                                            data.spacings[index], with_hd95)
          rows.append({'case': data.case_ids[index], 'iteration': t + 1, 'region': name,
                       **values})
    if on_case is not None:
      on_case(index, labels)
  if not rows:
    return rows, None
  num_iterations = max(r['iteration'] for r in rows)
  summary = metrics_lib.summarize(rows, region_names, num_iterations)
  summary.update(num_cases=len({r['case'] for r in rows}), regions=region_names)
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


def evaluate_workdir(workdir: str, checkpoint: str = 'best', split: str = 'val',
                     output_dir: str | None = None, data_root: str | None = None,
                     tta: bool = False, num_figures: int = 4,
                     all_iterations: bool = False,
                     defaults: ml_collections.ConfigDict | None = None) -> dict | None:
  """eval.py: restores a checkpoint of a training run, predicts the recorded `split` (or
  every case under `data_root`), scores the labelled cases and writes the results.
  `defaults` (the model's config file) fills keys the run's saved config predates."""
  config = checkpointing.read_config(workdir, defaults)
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  step = _checkpoint_step(checkpointer, checkpoint, workdir)
  if data_root:
    data_config = config.data.copy_and_resolve_references()
    data_config.root = data_root
    data = load_splits(data_config, ('all',))['all']
    source = os.path.abspath(data_root)
    output_dir = output_dir or os.path.join(workdir, f'eval_{os.path.basename(source)}')
  else:
    data = load_splits(config.data, (split,), splits.read(workdir))[split]
    source = f'{split} split'
    output_dir = output_dir or workdir
  if config.data.root or data_root:
    data_dir = os.path.abspath(os.path.expanduser(data_root or config.data.root))
    if os.path.commonpath([os.path.abspath(output_dir), data_dir]) == data_dir:
      raise ValueError(f'--output_dir {output_dir} is inside the data directory {data_dir}, '
                       'which is never written; choose another')
  image_size = tuple(config.data.image_size)
  mirror_axes = tuple(range(len(image_size))) if tta else tuple(config.eval.mirror_axes)
  inference.check_mirror_axes(mirror_axes, len(image_size))
  model, _, abstract_state = setup_model(config, data)
  mesh = parallel.make_mesh()
  state, _ = restore_train_state(checkpointer, step, abstract_state, parallel.replicated(mesh))
  logits_fn = inference.make_logits_fn(model, mesh, mirror_axes)
  print(f'{config.model.name}, checkpoint step {step} ({checkpoint}), {source}: '
        f'{len(data)} cases' + (f', mirroring TTA over axes {mirror_axes}' if mirror_axes else ''))
  writer = CaseOutputs(output_dir, data, num_figures, all_iterations)
  rows, summary = evaluate(logits_fn, state.params, data, config.eval, image_size, mesh,
                           on_case=writer)
  if writer.written:
    print(f'Wrote {writer.written} predicted segmentation(s) to {writer.predictions_dir}')
  if summary is None:
    print(f'No case of {source} has a segmentation: wrote predictions only, no metrics')
    return None
  # No paths or times: two runs with the same config and seed give identical files.
  summary.update(checkpoint_step=step, data=source if not data_root else 'data_root',
                 mirror_axes=list(mirror_axes))
  print(format_table(summary))
  print(f'{split if not data_root else "data"} {dice_line(summary)}')
  json_path, csv_path = write_results(output_dir, rows, summary)
  plot = os.path.join(output_dir, 'figures', 'dice_per_iteration.png')
  figures.dice_per_iteration_plot(plot, summary)
  print(f'Wrote {json_path}, {csv_path} and figures in {os.path.dirname(plot)}')
  return summary


class CaseOutputs:
  """on_case callback of `evaluate`: prediction files and figures of each case.

  NIfTI cases get `<case>.nii.gz` in their original geometry (predictions.py); 2D image
  folders get `<case>.png` masks at the model's resolution; the first `num_figures`
  cases get a PNG figure of every refinement iteration.
  """

  def __init__(self, output_dir: str, data: SegmentationData, num_figures: int,
               all_iterations: bool):
    self.data, self.num_figures, self.all_iterations = data, num_figures, all_iterations
    self.predictions_dir = os.path.join(output_dir, 'predictions')
    self.figures_dir = os.path.join(output_dir, 'figures')
    self.written = 0

  def __call__(self, index: int, labels: np.ndarray) -> None:
    """labels: (T, *spatial) predicted label maps of case `index`, one per iteration."""
    data, case_id = self.data, self.data.case_ids[index]
    if data.origin == 'nifti':  # back into the original geometry
      meta = data.source[index]
      last = predictions.original_labels(labels[-1], meta)
      predictions.write_nifti(os.path.join(self.predictions_dir, f'{case_id}.nii.gz'), last, meta)
      if self.all_iterations:
        for t in range(len(labels) - 1):
          path = os.path.join(self.predictions_dir, 'iterations',
                              f'{case_id}_iteration{t + 1}.nii.gz')
          predictions.write_nifti(path, predictions.original_labels(labels[t], meta), meta)
      self.written += 1
    elif data.origin == 'folders':
      scale = 255 if len(data.regions) == 1 else 1  # 0/255 masks as the input's, else labels
      os.makedirs(self.predictions_dir, exist_ok=True)
      Image.fromarray((labels[-1] * scale).astype(np.uint8)).save(
          os.path.join(self.predictions_dir, f'{case_id}.png'))
      self.written += 1
    if index < self.num_figures:
      channel = data.channels.index('flair') if 'flair' in data.channels else 0
      truth = None if data.labels[index] is None else np.asarray(data.labels[index])
      figures.case_figure(os.path.join(self.figures_dir, f'{case_id}.png'), case_id,
                          np.asarray(data.images[index]), channel, data.channels[channel],
                          truth, labels)


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
