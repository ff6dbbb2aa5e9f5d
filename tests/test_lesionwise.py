"""The BraTS 2023-24 penalised lesion-wise metrics (lesionwise.py, surface_distance.py)
and the postprocessing chosen on them (postprocess_choice.py), on constructed cases whose
expected values follow by hand from the published rules: GLI 2023 dilates ground-truth
lesions 3 times, leaves out lesions of at most 50 mm^3 and gives missed and
false-positive lesions Dice 0 and HD95 374; GLI 2024 penalises with 337, removes
predicted groups of at most 20 voxels (ET 10) and merges lesions through other tissues."""

import json

import numpy as np
import pytest

from jaxseg import errors, lesionwise, postprocess_choice
from jaxseg.data import layouts
from jaxseg.data.regions import region_masks
from jaxseg.surface_distance import robust_hausdorff

GLI_2023 = lesionwise.RULE_SETS['GLI 2023']
GLI_2024 = lesionwise.RULE_SETS['GLI 2024']
ISO = (1.0, 1.0, 1.0)


def volume(*boxes, label=3, shape=(32, 20, 20)):
  labels = np.zeros(shape, np.uint8)
  for box in boxes:
    labels[box] = label
  return labels


def cube(x, size=4, y=2):
  return np.s_[x:x + size, y:y + size, 2:2 + size]   # 64 voxels by default


def et(prediction, truth, spacing=ISO, rules=GLI_2023):
  scores = lesionwise.case_scores(prediction, truth, spacing, rules)
  # Label 3 alone is in WT, TC and ET alike: the three regions score the same.
  assert scores['WT'] == scores['TC'] == scores['ET']
  return scores['ET']


def test_a_missed_lesion_scores_dice_0_and_hd95_374():
  truth = volume(cube(2), cube(22))
  score = et(volume(cube(2)), truth)
  assert score == {'dice': 0.5, 'hd95': 187.0, 'tp': 1, 'fp': 0, 'fn': 1}


def test_a_false_positive_of_any_size_scores_dice_0_and_hd95_374():
  score = et(volume(cube(2), cube(22, size=2)), volume(cube(2)))  # an 8-voxel island
  assert score == {'dice': 0.5, 'hd95': 187.0, 'tp': 1, 'fp': 1, 'fn': 0}


@pytest.mark.parametrize('gap, joined', [(6, True), (7, False)])
def test_ground_truth_lesions_closer_than_the_dilation_are_one_lesion(gap, joined):
  # Dilated 3 times, two cubes 6 voxels apart touch (26-connected); 7 apart they do not.
  truth = volume(cube(2), cube(6 + gap))
  score = et(volume(cube(2)), truth)
  if joined:   # one lesion of 128 voxels, half predicted
    assert score['dice'] == pytest.approx(2 * 64 / (128 + 64), abs=1e-12)
    assert (score['tp'], score['fn']) == (1, 0) and 0 < score['hd95'] < 374
  else:        # two lesions, one missed
    assert score == {'dice': 0.5, 'hd95': 187.0, 'tp': 1, 'fp': 0, 'fn': 1}


def test_a_prediction_bridging_two_lesions_counts_whole_for_each():
  truth = volume(cube(2), cube(18))
  bridge = volume(np.s_[2:22, 2:6, 2:6])           # 20 x 4 x 4 = 320 voxels
  score = et(bridge, truth)
  assert score['dice'] == pytest.approx(2 * 64 / (64 + 320), abs=1e-12)
  assert (score['tp'], score['fp'], score['fn']) == (2, 0, 0)


def test_lesions_at_or_under_the_threshold_are_left_out_in_mm3():
  small = np.s_[24:29, 10:15, 10:12]                  # 50 voxels
  truth = volume(cube(2), small)
  assert et(volume(cube(2)), truth) == {'dice': 1.0, 'hd95': 0.0, 'tp': 1, 'fp': 0, 'fn': 0}
  # Its predicted match is no false positive either.
  assert et(volume(cube(2), small), truth)['fp'] == 0
  # 27 voxels of 2 mm^3 are 54 mm^3: counted, and missed.
  truth = volume(cube(2), cube(24, size=3))
  assert et(volume(cube(2)), truth, (1.0, 1.0, 2.0))['dice'] == 0.5
  assert et(volume(cube(2)), truth, ISO)['dice'] == 1.0


def test_empty_ground_truth():
  empty = volume()
  assert et(empty, empty) == {'dice': 1.0, 'hd95': 0.0, 'tp': 0, 'fp': 0, 'fn': 0}
  assert et(volume(cube(2)), empty) == {'dice': 0.0, 'hd95': 374.0, 'tp': 0, 'fp': 1, 'fn': 0}
  assert et(volume(cube(2), cube(22)), empty)['fp'] == 2
  # Only a lesion under the threshold: as if empty.
  assert et(empty, volume(cube(2, size=3)))['dice'] == 1.0


def test_hd95_weighs_surfels_by_area_with_the_voxel_spacing():
  # Single voxels 3 apart along the last axis: half of each one's surfel corners (of
  # equal areas) are 2 voxels from the other's, half 3; the 95th percentile: 3 voxels.
  a, b = np.zeros((3, 3, 8), bool), np.zeros((3, 3, 8), bool)
  a[1, 1, 1] = b[1, 1, 4] = True
  assert robust_hausdorff(a, b, (1.0, 1.0, 1.0)) == 3.0
  assert robust_hausdorff(a, b, (1.0, 1.0, 2.5)) == 7.5
  assert robust_hausdorff(a, a, (0.5, 1.0, 2.5)) == 0.0
  assert robust_hausdorff(a, np.zeros_like(a), ISO) == float('inf')


def test_glioma_2024_removes_small_predicted_groups_and_penalises_337():
  truth = volume(cube(2))
  island = volume(cube(2), cube(22, size=2))        # 8 voxels: removed (ET 10, others 20)
  assert lesionwise.case_scores(island, truth, ISO, GLI_2024)['ET']['dice'] == 1.0
  island = volume(cube(2), np.s_[22:25, 2:5, 2:5])  # 27 voxels: a false positive
  scores = lesionwise.case_scores(island, truth, ISO, GLI_2024)
  assert scores['ET'] == {'dice': 0.5, 'hd95': 337 / 2, 'tp': 1, 'fp': 1, 'fn': 0}
  # Regions absent from both: NETC, SNFH and RC score as empty.
  assert scores['RC'] == {'dice': 1.0, 'hd95': 0.0, 'tp': 0, 'fp': 0, 'fn': 0}


def test_glioma_2024_merges_lesions_that_touch_the_same_lesion_of_another_tissue():
  # Two NETC cubes 14 voxels apart (not joined by 5 dilations) at both ends of an ET bar.
  truth = volume(np.s_[6:20, 2:6, 2:6])
  truth[cube(2)] = truth[cube(20)] = 1
  prediction = truth.copy()
  prediction[cube(20)] = 0
  scores = lesionwise.case_scores(prediction, truth, ISO, GLI_2024)
  # One NETC lesion of 128 voxels, half predicted (apart, they would score (1 + 0) / 2).
  assert scores['NETC']['dice'] == pytest.approx(2 * 64 / (128 + 64), abs=1e-12)
  assert (scores['NETC']['tp'], scores['NETC']['fn']) == (1, 0)
  assert GLI_2023 is not GLI_2024 and 'NETC' not in lesionwise.case_scores(
      prediction, truth, ISO, GLI_2023)


# --- The postprocessing chosen on these metrics. ---

def _cases(*pairs):
  regions = layouts.GLIOMA_REGIONS
  return lambda: iter((str(i), region_masks(p, regions), t, ISO)
                      for i, (p, t) in enumerate(pairs))


def test_a_rule_that_helps_is_kept_one_that_hurts_dropped_and_ties_keep_none():
  island = (volume(cube(2), cube(22, size=2)), volume(cube(2)))    # an 8-voxel false positive
  part = (volume(np.s_[3:6, 3:6, 3:6]), volume(cube(2)))           # 27 of a 64-voxel lesion
  choice = postprocess_choice.choose(_cases(island, part), layouts.GLIOMA_REGIONS, GLI_2023, 50)
  part_dice = 2 * 27 / (27 + 64)
  wt = choice['scores']['WT']['candidates_mm3']
  assert wt['0'] == pytest.approx((0.5 + part_dice) / 2)     # none
  assert wt['10'] == wt['25'] == pytest.approx((1 + part_dice) / 2)   # the island goes
  assert wt['50'] == pytest.approx((1 + 0) / 2)                       # the lesion goes too
  assert wt['100'] == 0.0                                             # and the whole cube
  # WT keeps the smallest volume that helps; removing from WT removed the island from TC
  # and ET as well, so the small volumes change nothing there (a tie keeps none) and the
  # larger ones remove the partly predicted lesion (they hurt).
  assert choice['min_lesion_volume_mm3'] == {'WT': 10.0}
  for region in ('TC', 'ET'):
    scores = choice['scores'][region]
    assert scores['chosen_mm3'] is None
    assert scores['candidates_mm3']['0'] == scores['candidates_mm3']['25'] == wt['10']
    assert scores['candidates_mm3']['50'] < wt['10']
  perfect = postprocess_choice.choose(_cases(part[1:] * 2), layouts.GLIOMA_REGIONS, GLI_2023)
  assert perfect['min_lesion_volume_mm3'] == {}


def test_a_choice_for_another_region_set_is_refused(tmp_path):
  path = tmp_path / 'postprocessing.json'
  path.write_text(json.dumps({'regions': ['WT', 'TC', 'ET'],
                              'min_lesion_volume_mm3': {'WT': 10}}))
  assert postprocess_choice.read_choice(str(path), layouts.GLIOMA_REGIONS) == {'WT': 10.0}
  with pytest.raises(errors.ConfigError) as error:
    postprocess_choice.read_choice(str(path), layouts.GLIOMA_RC_REGIONS)
  assert 'WT,TC,ET' in str(error.value) and 'WT,TC,ET,RC' in str(error.value)
  path.write_text('{"regions": ')
  with pytest.raises(errors.ConfigError) as error:
    postprocess_choice.read_choice(str(path), layouts.GLIOMA_REGIONS)
  assert str(path) in str(error.value) and '\n' not in str(error.value)
