"""The BraTS challenges' lesion-wise metrics, computed by the organisers' own package.

`brats-evaluation` (PyPI, built on panoptica; `pip install -e '.[brats]'`) scores a
prediction file against a reference file with the config of a challenge (layouts.py
names it per layout: gli, mets, ped, MenPre, MenRT, GoAT): connected components as
lesions, matched one to one by Dice, then per region the lesion-wise Dice and HD95
over matched lesions, the lesion F1, and the whole-region ("global") Dice, NSD and
HD95. The values reported are those of the package's own CSV (`parse_seg_results`):
an infinite global HD95 becomes 373, and a region absent from both files is NaN
(left out of the means, as pandas does). jaxseg never recomputes them itself.
"""

import contextlib
import csv
import io
import math
import os
import warnings

import numpy as np

from jaxseg.errors import ConfigError, DataError

INSTALL_HINT = "pip install -e '.[brats]' (the organisers' brats-evaluation package)"
CHALLENGES = ('gli', 'mets', 'ped', 'MenRT', 'MenPre', 'GoAT')
# Column -> key in the package's per-region result, in parse_seg_results' order.
COLUMNS = {'lesionwise_dsc': 'sq_dsc', 'lesionwise_hd95': 'sq_hd95', 'lesionwise_nsd': 'sq_nsd',
           'global_dsc': 'global_bin_dsc', 'global_hd95': 'global_bin_hd95',
           'global_nsd': 'global_bin_nsd', 'f1': 'rq', 'tp': 'tp', 'fp': 'fp', 'fn': 'fn'}
SUMMARY_COLUMNS = ('lesionwise_dsc', 'lesionwise_hd95', 'global_dsc', 'global_hd95', 'f1')
MISSING_HD95 = 373  # the package's penalty for an infinite global HD95


def installed() -> bool:
  try:
    import brats_evaluation  # noqa: F401
  except ImportError:
    return False
  return True


def convention(challenge: str) -> str:
  from importlib import metadata
  versions = ', '.join(f'{name} {metadata.version(name)}'
                       for name in ('brats-evaluation', 'panoptica'))
  return f'lesion-wise, BraTS challenge config {challenge!r} ({versions})'


class LesionWiseScorer:
  """Scores prediction files of one challenge; the package's evaluator is built once."""

  def __init__(self, challenge: str):
    if challenge not in CHALLENGES:
      raise ConfigError(f'--lesion_wise={challenge}: not a challenge config; choose from '
                        f'{", ".join(CHALLENGES)}, auto or none')
    if not installed():
      raise ConfigError(f'--lesion_wise={challenge}: lesion-wise metrics need the '
                        f'organisers\' package; {INSTALL_HINT}')
    import brats_evaluation
    from panoptica import Panoptica_Evaluator
    self.challenge = challenge
    with _quiet():  # panoptica prints a banner and its config on loading
      self._evaluator = Panoptica_Evaluator.load_from_config(
          str(brats_evaluation.config_path(challenge)))
    self._evaluate = brats_evaluation.evaluate_single_exam

  def score(self, case_id: str, prediction: str, reference: str) -> list[dict]:
    """Rows {'case', 'region', <COLUMNS>} of one case, one per region of the config."""
    with _quiet():
      result = self._evaluate(prediction, reference, case_id, self._evaluator)
    if 'error' in result:  # the package reports failures instead of raising
      raise DataError(f'{prediction}: the brats-evaluation package could not score it against '
                      f'{reference} ({result["error"]})')
    rows = []
    for region, values in result.items():
      if isinstance(values, dict):
        row = {'case': case_id, 'region': region}
        for column, key in COLUMNS.items():
          value = float(values.get(key, math.nan))
          if column == 'global_hd95' and math.isinf(value):
            value = MISSING_HD95
          row[column] = value
        rows.append(row)
    return rows


@contextlib.contextmanager
def _quiet():
  with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter('ignore')
    yield


def summarize(rows: list[dict], challenge: str) -> dict:
  """Means over cases per region (NaN left out, as the package's CSV does)."""
  per_region = {}
  for region in dict.fromkeys(r['region'] for r in rows):
    selected = [r for r in rows if r['region'] == region]
    per_region[region] = {}
    for column in COLUMNS:
      values = np.array([r[column] for r in selected], np.float64)
      finite_or_inf = values[~np.isnan(values)]
      per_region[region][column] = float(np.mean(finite_or_inf)) if len(finite_or_inf) else math.nan
  return {'convention': convention(challenge), 'challenge': challenge,
          'num_cases': len({r['case'] for r in rows}), 'per_region': per_region}


def format_table(summary: dict) -> str:
  header = f'{"region":<6}' + ''.join(f'{c:>16}' for c in SUMMARY_COLUMNS)
  lines = [f'Lesion-wise metrics ({summary["convention"]})', header, '-' * len(header)]
  for region, values in summary['per_region'].items():
    lines.append(f'{region:<6}' + ''.join(f'{values[c]:>16.4f}' for c in SUMMARY_COLUMNS))
  return '\n'.join(lines)


def write_rows(path: str, rows: list[dict], challenge: str) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['case', 'region', *COLUMNS, 'convention'])
    writer.writeheader()
    writer.writerows({**row, 'convention': f'lesion-wise {challenge}'} for row in rows)


def choose(flag: str, layout) -> str | None:
  """The challenge config of --lesion_wise: 'none', 'auto' (the layout's, when the
  package is installed; otherwise a note), or a config name."""
  if flag == 'none':
    return None
  if flag == 'auto':
    if layout is None or layout.challenge is None:
      return None
    if not installed():
      print(f'note: no lesion-wise metrics for the {layout.name} layout ({layout.challenge} '
            f'challenge): {INSTALL_HINT}')
      return None
    return layout.challenge
  if layout is None:
    raise ConfigError(f'--lesion_wise={flag}: lesion-wise metrics need NIfTI data with '
                      'segmentation files (a BraTS layout)')
  if any(own != canonical for own, canonical in layout.to_canonical.items()):
    raise ConfigError(f'--lesion_wise={flag}: the {layout.name} layout numbers its labels '
                      f'{layout.label_values[1:]}, not as the challenge configs do; its files '
                      'cannot be scored by them')
  return flag


def reference_path(meta: dict) -> str:
  if not meta.get('seg') or not os.path.exists(meta['seg']):
    raise DataError(f'{meta.get("seg")}: the segmentation file of case {meta["case_id"]} is '
                    'gone; lesion-wise metrics score the prediction file against it')
  return meta['seg']
