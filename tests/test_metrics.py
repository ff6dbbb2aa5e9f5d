import itertools

import numpy as np
import pytest

from jaxseg import metrics
from jaxseg.data.regions import (BRATS_2021_REGIONS, BRATS_2023_REGIONS, labels_from_regions,
                                 region_masks)


def test_overlap_metrics_hand_computed():
  pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
  truth = np.array([[1, 0, 1, 0], [1, 0, 1, 1]], bool)
  # tp = 2, fp = 1, fn = 3
  result = metrics.overlap_metrics(pred, truth)
  assert result['dice'] == pytest.approx(4 / 8)
  assert result['jaccard'] == pytest.approx(2 / 6)
  assert result['recall'] == pytest.approx(2 / 5)
  assert result['precision'] == pytest.approx(2 / 3)


def test_empty_masks_follow_brats_conventions():
  empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
  both_empty = metrics.case_metrics(empty, empty, (1.0, 1.0))
  assert both_empty == {'dice': 1.0, 'jaccard': 1.0, 'recall': 1.0, 'precision': 1.0, 'hd95': 0.0}
  for pred, truth in [(empty, full), (full, empty)]:
    result = metrics.case_metrics(pred, truth, (1.0, 1.0))
    assert result['dice'] == 0.0 and result['jaccard'] == 0.0
    assert result['hd95'] == pytest.approx(373.12866)
  assert metrics.case_metrics(empty, full, (1, 1))['recall'] == 0.0
  assert metrics.case_metrics(full, empty, (1, 1))['precision'] == 0.0


def test_hd95_hand_computed_with_anisotropic_spacing():
  pred = np.zeros((1, 8), bool)
  truth = np.zeros((1, 8), bool)
  pred[0, 1] = True
  truth[0, 4] = True
  # Three voxels apart along an axis of 2 mm spacing.
  assert metrics.hd95(pred, truth, (1.0, 2.0)) == pytest.approx(6.0)
  assert metrics.hd95(pred, pred, (1.0, 2.0)) == 0.0


def _brute_force_hd95(pred, truth, spacing):
  """Pairwise distances between surface voxels; surfaces found by neighbour checks."""
  def surface_points(mask):
    points = []
    for index in zip(*np.nonzero(mask)):
      for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
        neighbour = list(index)
        neighbour[axis] += step
        if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
          points.append(index)
          break
    return np.array(points, float) * np.asarray(spacing)
  a, b = surface_points(pred), surface_points(truth)
  distances = np.linalg.norm(a[:, None] - b[None], axis=-1)
  return np.percentile(np.concatenate([distances.min(1), distances.min(0)]), 95)


@pytest.mark.parametrize('seed', range(4))
def test_hd95_matches_brute_force_on_random_3d_masks(seed):
  rng = np.random.default_rng(seed)
  pred = rng.random((7, 9, 6)) > 0.6
  truth = rng.random((7, 9, 6)) > 0.5
  spacing = (1.0, 0.7, 2.5)
  assert metrics.hd95(pred, truth, spacing) == pytest.approx(
      _brute_force_hd95(pred, truth, spacing), abs=1e-6)


def test_summarize_means_over_cases_and_regions_at_last_iteration():
  rows = []
  for case, iteration, region in itertools.product(['a', 'b'], [1, 2], ['WT', 'ET']):
    value = 0.1 * iteration + (0.5 if region == 'WT' else 0.0) + (0.2 if case == 'a' else 0.0)
    rows.append({'case': case, 'iteration': iteration, 'region': region,
                 **{m: value for m in metrics.METRICS}})
  summary = metrics.summarize(rows, ['WT', 'ET'], 2)
  assert summary['dice'] == pytest.approx(np.mean([0.2 + 0.5 + 0.2, 0.2 + 0.5, 0.2 + 0.2, 0.2]))
  assert summary['per_region']['WT']['dice'] == pytest.approx(0.8)
  assert summary['per_region']['ET']['dice_std'] == pytest.approx(0.1)
  assert [e['dice'] for e in summary['per_iteration']] == pytest.approx([0.45, 0.55])


def test_brats_regions_of_both_label_conventions():
  labels_2021 = np.array([0, 1, 2, 4])
  labels_2023 = np.array([0, 1, 2, 3])
  expected = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)  # WT, TC, ET
  np.testing.assert_array_equal(region_masks(labels_2021, BRATS_2021_REGIONS), expected)
  np.testing.assert_array_equal(region_masks(labels_2023, BRATS_2023_REGIONS), expected)
  np.testing.assert_array_equal(labels_from_regions(expected, BRATS_2021_REGIONS), labels_2021)
  np.testing.assert_array_equal(labels_from_regions(expected, BRATS_2023_REGIONS), labels_2023)


# --- Against medpy, an independent and widely used implementation. ---

@pytest.mark.parametrize('shape, spacing', [((12, 15, 9), (1.0, 0.7, 2.5)),
                                            ((30, 24), (0.45, 1.3)),
                                            ((10, 11, 12), (3.0, 1.0, 1.0))])
@pytest.mark.parametrize('seed', range(3))
def test_metrics_agree_with_medpy(shape, spacing, seed):
  binary = pytest.importorskip('medpy.metric.binary')
  rng = np.random.default_rng(seed)
  # Blobby masks (smoothed noise), partly overlapping, as segmentations are.
  from scipy import ndimage
  pred = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0.05
  truth = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0.0
  truth |= np.roll(pred, 2, axis=0) & (rng.random(shape) > 0.3)
  ours = metrics.case_metrics(pred, truth, spacing)
  assert ours['dice'] == pytest.approx(binary.dc(pred, truth), abs=1e-6)
  assert ours['jaccard'] == pytest.approx(binary.jc(pred, truth), abs=1e-6)
  assert ours['recall'] == pytest.approx(binary.recall(pred, truth), abs=1e-6)
  assert ours['precision'] == pytest.approx(binary.precision(pred, truth), abs=1e-6)
  assert ours['hd95'] == pytest.approx(binary.hd95(pred, truth, voxelspacing=spacing), abs=1e-6)


def test_empty_cases_where_medpy_has_no_answer():
  """medpy raises on empty masks; these are the BraTS conventions, which we follow."""
  binary = pytest.importorskip('medpy.metric.binary')
  empty, blob = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
  blob[2:4, 2:4, 2:4] = True
  with pytest.raises(RuntimeError):
    binary.hd95(empty, blob)
  both_empty = metrics.case_metrics(empty, empty, (1.0, 1.0, 1.0))
  assert both_empty == {'dice': 1.0, 'jaccard': 1.0, 'recall': 1.0, 'precision': 1.0,
                        'hd95': 0.0}
  missed = metrics.case_metrics(empty, blob, (1.0, 1.0, 1.0))
  assert missed == {'dice': 0.0, 'jaccard': 0.0, 'recall': 0.0, 'precision': 0.0,
                    'hd95': metrics.EMPTY_MASK_HD95}
  # One side empty: the overlap metrics medpy does define agree.
  assert missed['dice'] == binary.dc(empty, blob)
  assert missed['recall'] == binary.recall(empty, blob)
  false_alarm = metrics.case_metrics(blob, empty, (1.0, 1.0, 1.0))
  assert false_alarm['precision'] == binary.precision(blob, empty) == 0.0
  assert false_alarm['hd95'] == metrics.EMPTY_MASK_HD95
