"""Deterministic train/validation splits by case.

Cases are ordered by id and permuted with `data.seed`; then either the first
`data.val_fraction` of them validate, or, with `data.num_folds` = k > 0, fold
`data.fold` of k near-equal folds does (as nnU-Net's 5-fold cross-validation). A case
is never in both. The split of a run is recorded in `<workdir>/splits.json`
(workdir.py); a restart follows the recorded split, and eval.py scores it.
"""

import ml_collections
import numpy as np

from jaxseg.errors import ConfigError, DataError


def compute_split(case_ids, data_config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """{'train': [...], 'val': [...]}: a new split of the (labelled) case ids."""
  case_ids = sorted(case_ids)
  order = np.random.default_rng(data_config.seed).permutation(len(case_ids))
  num_folds, fold = data_config.num_folds, data_config.fold
  if num_folds:
    if not 2 <= num_folds <= len(case_ids):
      raise ConfigError(f'data.num_folds={num_folds}: need between 2 and the number of '
                        f'labelled cases ({len(case_ids)})')
    if not 0 <= fold < num_folds:
      raise ConfigError(f'data.fold={fold}: must be in 0..{num_folds - 1}')
    val = np.array_split(order, num_folds)[fold]
  else:
    fraction = data_config.val_fraction
    if not 0 < fraction < 1:
      raise ConfigError(f'data.val_fraction must be between 0 and 1, got {fraction}')
    num_val = max(1, round(fraction * len(case_ids)))
    if num_val >= len(case_ids):
      raise DataError(f'data.root: {len(case_ids)} labelled case(s) are too few to split '
                      f'into training and validation (data.val_fraction={fraction})')
    val = order[:num_val]
  val_ids = {case_ids[i] for i in val}
  return {'train': [c for c in case_ids if c not in val_ids],
          'val': [c for c in case_ids if c in val_ids]}


def choose_split(case_ids, data_config: ml_collections.ConfigDict,
                 recorded: dict | None) -> dict[str, list[str]]:
  """The split a run follows: `recorded` (a workdir's splits.json) when there is one,
  checked against the cases present; otherwise a new one (`compute_split`)."""
  if recorded is None:
    return compute_split(case_ids, data_config)
  unknown = sorted(set(recorded['train'] + recorded['val']) - set(case_ids))
  if unknown:
    raise DataError(f'data.root: case {unknown[0]} of the recorded split is missing')
  return recorded
