"""The metrics a BraTS 2023-24 leaderboard ranked by, for eval.py and the choice of
postprocessing: lesionwise.py's rules chosen from the data's layout (or named), scored
on prediction and reference files, summarised per region and written with their
convention.

`--ranking_rules=auto` takes the rules of the layout's sub-challenge: post-treatment
glioma data (with resection cavities) the 2024 glioma rules, other glioma data
(brats-gli without label 4, brats2023) the 2023 ones, SSA and MET the 2023 ones, MEN
the 2024 ones (the same as 2023's). Paediatric (2024-25 numbering) and GoAT data have
none here; `--ranking_rules=none` turns them off.
"""

import csv

import nibabel as nib
import numpy as np

from jaxseg import lesionwise
from jaxseg.errors import ConfigError, DataError

# flag value -> rule set
RULES = {rules.name.lower().replace(' ', '-'): rules for rules in lesionwise.RULE_SETS.values()}
_BY_LAYOUT = {'brats2023': 'gli-2023', 'brats-ssa': 'ssa-2023', 'brats-men': 'men-2024',
              'brats-met': 'met-2023'}
COLUMNS = ('dice', 'hd95', 'tp', 'fp', 'fn')


def choose(flag: str, layout, regions) -> lesionwise.RuleSet | None:
  """The rules of --ranking_rules: 'none', 'auto' (the layout's, see above) or a name."""
  if flag == 'none':
    return None
  if flag == 'auto':
    if layout is None:
      return None
    if layout.name == 'brats-gli':
      return RULES['gli-2024' if 'RC' in [r.name for r in regions] else 'gli-2023']
    return RULES.get(_BY_LAYOUT.get(layout.name))
  if flag not in RULES:
    raise ConfigError(f'--ranking_rules={flag}: not a rule set; choose from '
                      f'{", ".join(RULES)}, auto or none')
  if layout is None:
    raise ConfigError(f'--ranking_rules={flag}: the ranking metrics need NIfTI data with '
                      'segmentation files (a BraTS layout)')
  if layout.family != 'glioma' or any(own != canonical
                                      for own, canonical in layout.to_canonical.items()):
    raise ConfigError(f'--ranking_rules={flag}: the {layout.name} layout numbers its labels '
                      f'{layout.label_values[1:]}, not as the BraTS 2023-24 glioma rules do')
  return RULES[flag]


def read_labels(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
  """A label map file and its voxel spacing (header), as the organisers read them."""
  try:
    image = nib.load(path)
    labels = np.rint(np.asarray(image.dataobj, np.float64)).astype(np.int64)
  except Exception as error:  # nibabel raises many kinds for a damaged file
    raise DataError(f'{path}: not readable as a NIfTI label map ({error})') from None
  if labels.ndim != 3:
    raise DataError(f'{path}: a label map of shape {labels.shape}; the ranking metrics '
                    'score 3D volumes')
  return labels, tuple(float(s) for s in image.header.get_zooms()[:3])


def score(case_id: str, prediction, truth, spacing, rules: lesionwise.RuleSet) -> list[dict]:
  """Rows {'case', 'region', <COLUMNS>} of one case's label maps."""
  scores = lesionwise.case_scores(prediction, truth, spacing, rules)
  return [{'case': case_id, 'region': region, **values} for region, values in scores.items()]


def score_files(case_id: str, prediction_path: str, reference_path: str,
                rules: lesionwise.RuleSet) -> list[dict]:
  """score() of a prediction file against its reference, with the prediction's spacing
  (the scripts take it from the prediction's header)."""
  prediction, spacing = read_labels(prediction_path)
  truth, _ = read_labels(reference_path)
  if truth.shape != prediction.shape:
    raise DataError(f'{prediction_path}: shape {prediction.shape}, but its reference '
                    f'{reference_path} has {truth.shape}')
  return score(case_id, prediction, truth, spacing, rules)


def summarize(rows: list[dict], rules: lesionwise.RuleSet) -> dict:
  """Per region: the mean over cases of Dice and HD95, the sums of lesion counts."""
  per_region = {}
  for rule in rules.regions:
    selected = [r for r in rows if r['region'] == rule.name]
    per_region[rule.name] = {
        'lesionwise_dice': float(np.mean([r['dice'] for r in selected])),
        'lesionwise_hd95': float(np.mean([r['hd95'] for r in selected])),
        **{f'{c}_lesions': int(sum(r[c] for r in selected)) for c in ('tp', 'fp', 'fn')}}
  return {'convention': rules.convention, 'rules': rules.name,
          'num_cases': len({r['case'] for r in rows}), 'per_region': per_region,
          'mean_lesionwise_dice': float(np.mean([v['lesionwise_dice']
                                                 for v in per_region.values()]))}


def format_table(summary: dict) -> str:
  columns = ('lesionwise_dice', 'lesionwise_hd95', 'tp_lesions', 'fp_lesions', 'fn_lesions')
  header = f'{"region":<6}' + ''.join(f'{c:>17}' for c in columns)
  lines = [f'Ranking metrics ({summary["convention"]})', header, '-' * len(header)]
  for region, values in summary['per_region'].items():
    lines.append(f'{region:<6}{values["lesionwise_dice"]:>17.4f}'
                 f'{values["lesionwise_hd95"]:>17.4f}' +
                 ''.join(f'{values[c]:>17d}' for c in columns[2:]))
  return '\n'.join(lines)


def write_rows(path: str, rows: list[dict], rules: lesionwise.RuleSet) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['case', 'region', *COLUMNS, 'convention'])
    writer.writeheader()
    writer.writerows({**row, 'convention': f'BraTS {rules.name} penalised lesion-wise'}
                     for row in rows)
