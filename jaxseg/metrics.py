"""Overlap and distance metrics of binary masks, and their summaries.

Pure numpy/scipy functions of one case's masks, evaluated on the host after
prediction. Conventions follow the BraTS challenge evaluation (2018-2021):

- Empty ground truth and empty prediction: a perfect result, Dice = Jaccard = recall
  = precision = 1 and HD95 = 0.
- Exactly one of them empty: Dice = Jaccard = 0 and HD95 = 373.13 mm (the diagonal of
  the 240 x 240 x 155 mm BraTS volume, the penalty the challenge uses). Recall or
  precision whose denominator is zero (nothing to find / nothing predicted) is 0.
- HD95 is the 95th percentile of the distances, in mm (voxel spacing from the image
  header), from each surface voxel of one mask to the surface of the other, pooled
  over both directions (the definition of medpy's hd95). Surface voxels are the mask
  voxels that touch the background along an axis.
"""

import numpy as np
from scipy import ndimage

EMPTY_MASK_HD95 = 373.12866  # sqrt(240^2 + 240^2 + 155^2)
METRICS = ('dice', 'jaccard', 'recall', 'precision', 'hd95')


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
  if denominator == 0:
    return 1.0 if both_empty else 0.0
  return numerator / denominator


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Dice, Jaccard, recall (sensitivity) and precision of two boolean masks."""
  pred, truth = pred.astype(bool), truth.astype(bool)
  tp = int(np.count_nonzero(pred & truth))
  fp = int(np.count_nonzero(pred & ~truth))
  fn = int(np.count_nonzero(~pred & truth))
  both_empty = tp + fp + fn == 0
  return {
      'dice': _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
      'jaccard': _ratio(tp, tp + fp + fn, both_empty),
      'recall': _ratio(tp, tp + fn, both_empty),
      'precision': _ratio(tp, tp + fp, both_empty),
  }


def _surface(mask: np.ndarray) -> np.ndarray:
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
  """95th percentile symmetric surface distance in the units of `spacing` (mm)."""
  pred, truth = pred.astype(bool), truth.astype(bool)
  if not pred.any() and not truth.any():
    return 0.0
  if not pred.any() or not truth.any():
    return EMPTY_MASK_HD95
  pred_surface, truth_surface = _surface(pred), _surface(truth)
  # Distance from every voxel to the nearest surface voxel of the other mask.
  to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)
  to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
  distances = np.concatenate([to_truth[pred_surface], to_pred[truth_surface]])
  return float(np.percentile(distances, 95))


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing, with_hd95: bool = True):
  """All metrics of one region of one case."""
  result = overlap_metrics(pred, truth)
  result['hd95'] = hd95(pred, truth, spacing) if with_hd95 else float('nan')
  return result


def summarize(rows: list[dict], region_names: list[str], num_iterations: int) -> dict:
  """Summary of per-case rows {'case', 'iteration' (from 1), 'region', <metric>: value}.

  Top-level metrics are means over cases and regions at the last iteration;
  'per_region' breaks them down by region (mean, std, median), 'per_iteration' by
  iteration.
  """
  def stats(selected):
    out = {}
    for metric in METRICS:
      values = np.array([r[metric] for r in selected], np.float64)
      out[metric] = float(np.mean(values)) if len(values) else float('nan')
    return out

  def region_stats(selected):
    out = {}
    for region in region_names:
      in_region = [r for r in selected if r['region'] == region]
      out[region] = stats(in_region)
      for metric in METRICS:
        values = np.array([r[metric] for r in in_region], np.float64)
        out[region][f'{metric}_std'] = float(np.std(values))
        out[region][f'{metric}_median'] = float(np.median(values))
    return out

  per_iteration = []
  for iteration in range(1, num_iterations + 1):
    selected = [r for r in rows if r['iteration'] == iteration]
    per_iteration.append({'iteration': iteration, **stats(selected),
                          'per_region': region_stats(selected)})
  last = per_iteration[-1]
  return {**{m: last[m] for m in METRICS}, 'per_region': last['per_region'],
          'per_iteration': per_iteration}
