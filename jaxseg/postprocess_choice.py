"""Postprocessing chosen on cross-validation, as nnU-Net chooses its own.

The candidates of each region are: none, the challenge's lesion thresholds (the layout's
and the ranking rules' for that region) and a small grid of minimum lesion volumes
(postprocess.py removes smaller predicted components). The criterion is the ranking
metric of the data's BraTS rules (ranking_metrics.py): the mean over cases and the
rules' regions of the penalised lesion-wise Dice, on the validation predictions of a
run's folds (or of one run's validation split), from their saved probabilities.

Regions are decided one after another, outermost first, each with the choices made so
far: a region keeps a rule only where its score is strictly higher than with none (and
than every smaller volume), so a tie keeps none. The choice and every score that
justified it go to postprocessing.json, which eval.py --postprocessing applies (to one
model or an ensemble).
"""

import json
import math
from typing import Callable, Iterable, Iterator

import numpy as np

from jaxseg import ensemble, lesionwise, ranking_metrics, workdir as files
from jaxseg.data import load_splits
from jaxseg.data.regions import Region, labels_from_regions, region_masks
from jaxseg.errors import ConfigError
from jaxseg.postprocess import remove_small_components

GRID_MM3 = (10.0, 25.0, 50.0, 100.0, 250.0)
FORMAT = 'jaxseg postprocessing choice 1'

# A validation case: (case id, predicted region masks (*spatial, R), reference label
# map, spacing in mm).
Case = tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]


def candidates(region: Region, rules: lesionwise.RuleSet, layout_volume: float | None
               ) -> list[float]:
  """Minimum lesion volumes (mm^3) to try for `region`, 0 (none) first."""
  volumes = {0.0, *GRID_MM3}
  if layout_volume:
    volumes.add(float(layout_volume))
  volumes.update(float(r.min_volume) for r in rules.regions if r.name == region.name)
  return sorted(volumes)


def postprocessed_labels(masks: np.ndarray, regions: tuple[Region, ...], volumes: dict,
                         spacing) -> np.ndarray:
  """The label map eval.py writes for these region masks with these minimum volumes."""
  labels = labels_from_regions(masks, regions)
  if volumes:
    labels = labels_from_regions(remove_small_components(
        region_masks(labels, regions), regions, volumes, spacing), regions)
  return labels


def _mean_dice(cases: Iterable[Case], regions, rules, choices: list[dict]) -> list[float]:
  """Per choice of volumes: mean over cases and rule regions of the lesion-wise Dice."""
  totals, count = np.zeros(len(choices)), 0
  for _, masks, truth, spacing in cases:
    for i, volumes in enumerate(choices):
      labels = postprocessed_labels(masks, regions, volumes, spacing)
      scores = lesionwise.case_scores(labels, truth, spacing, rules)
      totals[i] += np.mean([s['dice'] for s in scores.values()])
    count += 1
  if not count:
    raise ConfigError('no validation case to choose the postprocessing on')
  return [float(t / count) for t in totals]


def choose(cases: Callable[[], Iterator[Case]], regions: tuple[Region, ...],
           rules: lesionwise.RuleSet, layout_volume: float | None = None) -> dict:
  """The choice and its scores; `cases()` yields the validation cases (once per region)."""
  chosen, scores = {}, {}
  for region in regions:
    volumes = candidates(region, rules, layout_volume)
    means = _mean_dice(cases(), regions, rules,
                       [{**chosen, region.name: v} if v else dict(chosen) for v in volumes])
    best = 0
    for index in range(1, len(volumes)):
      if means[index] > means[best]:  # strictly better: a tie keeps the smaller, or none
        best = index
    if volumes[best]:
      chosen[region.name] = volumes[best]
    scores[region.name] = {'candidates_mm3': {f'{v:g}': m for v, m in zip(volumes, means)},
                           'chosen_mm3': volumes[best] or None}
  return {'format': FORMAT, 'regions': [r.name for r in regions],
          'min_lesion_volume_mm3': chosen,
          'criterion': f'mean over cases and regions of the {rules.convention}',
          'rules': rules.name, 'scores': scores}


def write_choice(path: str, choice: dict) -> None:
  with open(path, 'w') as f:
    json.dump(choice, f, indent=2)


def read_choice(path: str, regions: tuple[Region, ...]) -> dict[str, float]:
  """The minimum volumes of a postprocessing.json, for a model of these regions."""
  try:
    with open(path) as f:
      choice = json.load(f)
    names, volumes = choice['regions'], choice['min_lesion_volume_mm3']
    volumes = {str(k): float(v) for k, v in volumes.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
    raise ConfigError(f'--postprocessing {path}: not a postprocessing.json written by '
                      f'choose_postprocessing.py ({error})') from None
  model = [r.name for r in regions]
  if list(names) != model or not set(volumes) <= set(model) or not all(
      math.isfinite(v) and v >= 0 for v in volumes.values()):
    raise ConfigError(f'--postprocessing {path}: chosen for the regions {",".join(names)}, '
                      f'but the model predicts {",".join(model)}; choose it on this '
                      'model\'s folds')
  return volumes


def validation_cases(workdirs: list[str], probability_dirs: list[str], ranking_rules: str):
  """The validation cases of each fold (its workdir's recorded split), with the
  probabilities eval.py --save_probabilities wrote for them (in the workdir, or in the
  fold's folder of `probability_dirs`). Returns (cases factory, regions, rules, the
  layout's lesion volume); every file is checked before anything is scored."""
  if probability_dirs and len(probability_dirs) != len(workdirs):
    raise ConfigError(f'--probabilities lists {len(probability_dirs)} folder(s) for '
                      f'{len(workdirs)} fold(s); give one per --workdir, in the same order')
  items, regions, data = [], None, None
  for workdir, folder in zip(workdirs, probability_dirs or workdirs):
    saved = files.read_saved(workdir)
    data = load_splits(saved.config.data, ('val',), files.read_splits(workdir),
                       regions=saved.regions)['val']
    if regions is not None and data.regions != regions:
      raise ConfigError(f'{workdir}: regions {",".join(r.name for r in data.regions)}, but '
                        f'{workdirs[0]} has {",".join(r.name for r in regions)}; the folds of '
                        'one choice must predict the same regions')
    regions = data.regions
    paths = ensemble.probability_files(folder, data)
    items += [(case_id, path, meta.get('seg'))
              for case_id, path, meta in zip(data.case_ids, paths, data.source)]
  rules = ranking_metrics.choose(ranking_rules, data.layout, data.regions)
  if rules is None:
    raise ConfigError(f'--ranking_rules={ranking_rules}: no BraTS ranking rules for this '
                      f'data; name them (one of {", ".join(ranking_metrics.RULES)})')
  names = [r.name for r in regions]

  def cases() -> Iterator[Case]:
    for case_id, path, seg in items:
      probabilities = ensemble.read_probabilities(path, names)
      truth, spacing = ranking_metrics.read_labels(seg)
      yield case_id, np.moveaxis(probabilities > 0.5, 0, -1), truth, spacing
  return cases, regions, rules, data.layout.min_lesion_voxels if data.layout else None
