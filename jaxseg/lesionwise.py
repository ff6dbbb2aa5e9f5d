"""The penalised lesion-wise Dice and HD95 that ranked BraTS 2023 and 2024.

jaxseg's own implementation of the organisers' published rules (read in
rachitsaluja/BraTS-2023-Metrics metrics.py and BraTS-2024-Metrics metrics_<SUB>.py;
BENCHMARKS.md says how its numbers were checked against theirs). Per region of a case:

1. Ground-truth lesions: the region's voxels grouped by the 26-connected components of
   the region dilated `dilation` times by the 18-connected cross, so lesions close to
   each other are one lesion; the voxels themselves are not changed.
2. Predicted lesions: 26-connected components of the prediction. 2024 only: grouped by
   dilation like the ground truth, and groups of at most `prediction_min_voxels` voxels
   removed; for the glioma tissues, lesions of one tissue that touch (18-neighbours)
   lesions of other tissues are merged through them (`_merge_touching`).
3. Each ground-truth lesion is matched to every predicted lesion inside its own
   dilation (same iterations); its Dice and HD95 (surface_distance.py) are those of the
   lesion against the union of its matches: a missed lesion has Dice 0 and HD95
   `missing_hd95`. A prediction bridging two lesions counts, whole, for both.
4. Lesions of at most `min_volume` mm^3 are left out. Every predicted lesion matched to
   no ground-truth lesion (whatever its size) is a false positive: Dice 0, HD95
   `missing_hd95`.
5. The case's score is the mean over its counted and false-positive lesions; with
   none (empty ground truth, after the threshold, and empty prediction) Dice 1, HD95 0.
"""

import dataclasses

import numpy as np
from scipy import ndimage

from jaxseg.surface_distance import robust_hausdorff

_CROSS = ndimage.generate_binary_structure(3, 2)    # the rules' dilation element
_CUBE = ndimage.generate_binary_structure(3, 3)     # 26-connected lesions


@dataclasses.dataclass(frozen=True)
class RegionRule:
  name: str
  labels: tuple[int, ...]
  dilation: int                 # iterations of the 18-connected dilation
  min_volume: float             # mm^3: ground-truth lesions of at most this are left out
  prediction_min_voxels: int | None = None   # 2024: predicted groups of at most this removed
  merge_through: tuple[str, ...] = ()        # 2024 glioma: tissues whose lesions merge its own


@dataclasses.dataclass(frozen=True)
class RuleSet:
  name: str
  source: str
  regions: tuple[RegionRule, ...]
  missing_hd95: float

  @property
  def convention(self) -> str:
    return (f'BraTS {self.name} penalised lesion-wise (jaxseg, rules of {self.source}): '
            'ground-truth lesions grouped by dilation, small ones left out, missed and '
            f'false-positive lesions Dice 0 and HD95 {self.missing_hd95:g}, mean per case')


def _rules_2023(name, dilation, min_volume, source='rachitsaluja/BraTS-2023-Metrics'):
  return RuleSet(name, source, tuple(RegionRule(region, labels, dilation, min_volume)
                                     for region, labels in (('WT', (1, 2, 3)), ('TC', (1, 3)),
                                                            ('ET', (3,)))), 374.0)


def _glioma_2024():
  def rule(name, labels, dilation=3, threshold=20, merge=()):
    return RegionRule(name, labels, dilation, threshold, threshold, merge)
  # The script dilates NETC and RC 5 times; SNFH 3 (its test names 'SFNH').
  return RuleSet('GLI 2024', 'rachitsaluja/BraTS-2024-Metrics metrics_GLI.py', (
      rule('WT', (1, 2, 3)), rule('TC', (1, 3)),
      rule('NETC', (1,), 5, merge=('ET', 'RC')), rule('SNFH', (2,), merge=('ET', 'RC', 'NETC')),
      rule('ET', (3,), threshold=10, merge=('NETC', 'RC')),
      rule('RC', (4,), 5, merge=('ET', 'NETC'))),
      337.0)


RULE_SETS = {rules.name: rules for rules in (
    _rules_2023('GLI 2023', 3, 50), _rules_2023('SSA 2023', 3, 50),
    _rules_2023('MEN 2023', 1, 50), _rules_2023('PED 2023', 3, 50),
    _rules_2023('MET 2023', 1, 2),
    _rules_2023('MEN 2024', 1, 50, 'rachitsaluja/BraTS-2024-Metrics metrics_MEN.py'),
    _glioma_2024())}


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
  return ndimage.binary_dilation(mask, _CROSS, iterations=iterations) if iterations else mask


def grouped_lesions(mask: np.ndarray, dilation: int) -> np.ndarray:
  """Lesion labels of `mask`'s voxels: those of the components of its dilation."""
  groups, _ = ndimage.label(_dilate(mask, dilation), _CUBE)
  return np.where(mask, groups, 0)


def _touching_pairs(first: np.ndarray, second: np.ndarray) -> list[tuple[int, int]]:
  """(label in first, label in second) of lesions that are 18-neighbours or overlap."""
  where = np.nonzero(first)
  labels, found = first[where], []
  for offset in np.argwhere(_CROSS) - 1:
    moved = [w + o for w, o in zip(where, offset)]
    inside = np.all([(m >= 0) & (m < n) for m, n in zip(moved, first.shape)], axis=0)
    other = second[tuple(m[inside] for m in moved)]
    found.append(np.stack([labels[inside], other])[:, other > 0])
  pairs = np.unique(np.concatenate(found, axis=1), axis=1)
  return [(int(a), int(b)) for a, b in pairs.T]


def _merge_touching(lesions: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
  """2024 glioma: lesions touching the same lesion of another tissue become one. As the
  script does: only where more than one pair touches, each lesion joins the group of the
  lowest-numbered lesion it touches, and the labels are renumbered 1.. in order."""
  for other in others:
    pairs = _touching_pairs(lesions, other)
    if len(pairs) > 1:
      start = int(lesions.max()) + 1
      group = {}
      for _, common in pairs:
        group.setdefault(common, start + len(group))
      lookup = np.arange(start + len(group))
      for label, common in reversed(pairs):
        lookup[label] = group[common]
      lesions = lookup[lesions]
  values = np.unique(lesions)
  lookup = np.zeros(int(values.max()) + 1, np.int64)
  lookup[values] = np.arange(len(values)) if values[0] == 0 else np.arange(1, len(values) + 1)
  return lookup[lesions]


def _predicted_lesions(mask: np.ndarray, rule: RegionRule) -> np.ndarray:
  if rule.prediction_min_voxels is None:
    return ndimage.label(mask, _CUBE)[0]
  lesions = grouped_lesions(mask, rule.dilation)
  counts = np.bincount(lesions.ravel())
  small = np.flatnonzero(counts <= rule.prediction_min_voxels)
  return np.where(np.isin(lesions, small[small > 0]), 0, lesions)


def lesion_maps(labels: np.ndarray, rules: RuleSet, predicted: bool) -> dict[str, np.ndarray]:
  """Region name -> lesion label map of a label map, as the rules number lesions."""
  maps = {}
  for rule in rules.regions:
    mask = np.isin(labels, rule.labels)
    maps[rule.name] = (_predicted_lesions(mask, rule) if predicted
                       else grouped_lesions(mask, rule.dilation))
  merged = {rule.name: _merge_touching(maps[rule.name], [maps[o] for o in rule.merge_through])
            for rule in rules.regions if rule.merge_through}
  return {**maps, **merged}


def _box(slices, shape, margin):
  return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin))
               for s, n in zip(slices, shape))


def region_scores(predicted: np.ndarray, truth: np.ndarray, spacing, rule: RegionRule,
                  missing_hd95: float) -> dict:
  """Lesion-wise Dice, HD95 and lesion counts of one region from its lesion maps."""
  boxes = ndimage.find_objects(predicted)
  matched, dice, hd95, tp, fn = set(), [], [], 0, 0
  for label, where in enumerate(ndimage.find_objects(truth), start=1):
    if where is None:
      continue
    roi = _box(where, truth.shape, rule.dilation)
    lesion = truth[roi] == label
    hits = np.unique(predicted[roi][_dilate(lesion, rule.dilation)])
    hits = [int(h) for h in hits if h]
    matched.update(hits)
    volume = np.count_nonzero(lesion) * float(spacing[0])  # in the scripts' order of products
    volume = volume * float(spacing[1]) * float(spacing[2])
    if volume <= rule.min_volume:
      continue
    box = tuple(slice(min([s.start] + [boxes[h - 1][i].start for h in hits]),
                      max([s.stop] + [boxes[h - 1][i].stop for h in hits]))
                for i, s in enumerate(where))
    lesion, prediction = truth[box] == label, np.isin(predicted[box], hits)
    dice.append(2 * np.count_nonzero(lesion & prediction) /
                (np.count_nonzero(lesion) + np.count_nonzero(prediction)))
    distance = robust_hausdorff(lesion, prediction, spacing)
    hd95.append(missing_hd95 if np.isinf(distance) else distance)
    tp, fn = tp + bool(hits), fn + (not hits)
  fp = len(set(np.unique(predicted).tolist()) - matched - {0})
  count = len(dice) + fp
  if not count:
    return {'dice': 1.0, 'hd95': 0.0, 'tp': 0, 'fp': 0, 'fn': 0}
  return {'dice': float(np.sum(dice) / count),
          'hd95': float((np.sum(hd95) + fp * missing_hd95) / count),
          'tp': tp, 'fp': fp, 'fn': fn}


def case_scores(prediction: np.ndarray, truth: np.ndarray, spacing, rules: RuleSet) -> dict:
  """Region name -> {'dice', 'hd95', 'tp', 'fp', 'fn'} of one case's 3D label maps."""
  # Only the tumour's surroundings: every dilation and touch stays within this margin,
  # and cropping keeps the scan order that numbers the lesions.
  foreground = ndimage.find_objects(((prediction > 0) | (truth > 0)).astype(np.uint8))
  if foreground:
    margin = 1 + max(rule.dilation for rule in rules.regions)
    box = _box(foreground[0], truth.shape, margin)
    prediction, truth = prediction[box], truth[box]
  predicted = lesion_maps(prediction, rules, predicted=True)
  reference = lesion_maps(truth, rules, predicted=False)
  return {rule.name: region_scores(predicted[rule.name], reference[rule.name], spacing, rule,
                                   rules.missing_hd95)
          for rule in rules.regions}
