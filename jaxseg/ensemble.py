"""Several trained models as one predictor: the mean of their probabilities.

The k models of a k-fold cross-validation (or any models with the same regions, input
channels and window size) each predict every case; their sigmoid probabilities are
averaged per region and voxel, and a region is predicted where the mean is above 0.5,
as nnU-Net ensembles folds. Models with the same number of refinement iterations are
averaged iteration by iteration; otherwise only their final iterations are. Probabilities
saved earlier by eval.py --save_probabilities (folds predicted on other machines) join
as members too (`saved_probability_logits`).
"""

import os
import zipfile
from typing import Iterable, Iterator

import numpy as np
from scipy import special

from jaxseg import predictions
from jaxseg.errors import ConfigError, DataError


def mean_probability_logits(streams: list[Iterable[tuple[int, np.ndarray]]]
                            ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (case index, logits (T, *spatial, R)) whose sigmoid is the mean of the
  streams' sigmoids; each stream yields (case index, logits) of every case in order."""
  if len(streams) == 1:
    yield from streams[0]
    return
  for items in zip(*streams, strict=True):
    indices = {index for index, _ in items}
    if len(indices) != 1:
      raise AssertionError(f'ensemble members predicted different cases: {indices}')
    logits = [case_logits for _, case_logits in items]
    if len({case_logits.shape[0] for case_logits in logits}) > 1:
      logits = [case_logits[-1:] for case_logits in logits]
    mean = np.mean([special.expit(case_logits) for case_logits in logits], axis=0)
    yield indices.pop(), special.logit(mean).astype(np.float32)


def check_members(workdirs: list[str], configs: list, regions: list) -> None:
  """Refuses, in one line, an ensemble whose members cannot be averaged."""
  first = workdirs[0]
  for workdir, config, member_regions in zip(workdirs[1:], configs[1:], regions[1:]):
    for name, mine, theirs in (
        ('regions', [f'{r.name} {list(r.labels)}' for r in member_regions],
         [f'{r.name} {list(r.labels)}' for r in regions[0]]),
        ('data.image_size', list(config.data.image_size), list(configs[0].data.image_size)),
        ('data.modalities', list(config.data.modalities), list(configs[0].data.modalities))):
      if mine != theirs:
        raise ConfigError(f'ensemble: {workdir} has {name} {mine}, but {first} has {theirs}; '
                          'the members of an ensemble must agree')


def saved_probability_logits(folder: str, data) -> Iterator[tuple[int, np.ndarray]]:
  """A member of the ensemble from probabilities saved earlier (eval.py
  --save_probabilities): yields (case index, logits (1, *spatial, R)) of every case of
  `data`, like a model's predictions. `folder` is the output directory of that eval.py
  run or its probabilities/ folder. Every case must have its file, with the ensemble's
  regions; both are checked before anything is predicted (one-line DataError)."""
  return _saved_stream(_probability_files(folder, data), data)


def _saved_stream(paths: list[str], data) -> Iterator[tuple[int, np.ndarray]]:
  region_names = [r.name for r in data.regions]
  for index, path in enumerate(paths):
    probabilities = _read_probabilities(path, region_names)
    if data.origin == 'nifti':  # original geometry -> the cropped case the models see
      meta = data.source[index]
      if probabilities.shape[1:] != tuple(meta['original_shape']):
        raise DataError(f'{path}: probabilities of shape {probabilities.shape[1:]}, but case '
                        f'{data.case_ids[index]} has shape {tuple(meta["original_shape"])}')
      probabilities = predictions.cropped_probabilities(probabilities, meta)
    else:  # 2D folders: saved at the model's resolution
      probabilities = np.moveaxis(probabilities, 0, -1)
    expected = tuple(np.shape(data.images[index])[:-1])
    if probabilities.shape[:-1] != expected:
      raise DataError(f'{path}: probabilities of shape {probabilities.shape[:-1]}, but the '
                      f'ensemble predicts case {data.case_ids[index]} at {expected}')
    # float16 holds 0 and 1 exactly; clip so that the logit stays finite.
    clipped = np.clip(probabilities.astype(np.float32), 1e-6, 1 - 1e-6)
    yield index, special.logit(clipped)[None].astype(np.float32)


def probability_files(folder: str, data) -> list[str]:
  """The saved probability file of every case of `data` (one-line DataError when any is
  missing or of other regions)."""
  return _probability_files(folder, data)


def read_probabilities(path: str, region_names: list[str]) -> np.ndarray:
  """(R, *shape) probabilities of a file written by eval.py --save_probabilities."""
  return _read_probabilities(path, region_names)


def _probability_files(folder: str, data) -> list[str]:
  directory = os.path.join(folder, 'probabilities')
  directory = directory if os.path.isdir(directory) else folder
  if not os.path.isdir(directory):
    raise DataError(f'--probabilities {folder}: not a directory')
  paths = [os.path.join(directory, f'{case_id}.npz') for case_id in data.case_ids]
  missing = [case_id for case_id, path in zip(data.case_ids, paths) if not os.path.isfile(path)]
  if missing:
    some = ', '.join(missing[:3]) + (', ...' if len(missing) > 3 else '')
    raise DataError(f'--probabilities {folder}: no probabilities for {len(missing)} of the '
                    f'{len(paths)} case(s) ({some}); write them with eval.py '
                    '--save_probabilities on the same data')
  region_names = [r.name for r in data.regions]
  for path in paths:  # cheap: the region names only, before hours of predicting
    _read_probabilities(path, region_names, names_only=True)
  return paths


def _read_probabilities(path: str, region_names: list[str], names_only: bool = False):
  try:
    with np.load(path) as saved:  # no allow_pickle: a user's file
      regions = [str(name) for name in saved['regions']]
      if regions != region_names:
        raise DataError(f'{path}: probabilities of regions {",".join(regions)}, but the '
                        f'ensemble predicts {",".join(region_names)}')
      if names_only:
        return None
      probabilities = saved['probabilities']
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
    raise DataError(f'{path}: not readable as probabilities written by eval.py '
                    f'--save_probabilities ({error})') from None
  if probabilities.ndim < 3 or len(probabilities) != len(region_names):
    raise DataError(f'{path}: probabilities of shape {probabilities.shape}, expected '
                    f'({len(region_names)}, *case shape)')
  return probabilities


def check_arguments(workdirs: list[str], probability_dirs: list[str], data_root: str | None,
                    output_dir: str | None) -> bool:
  """Whether eval.py's members (workdirs and saved probabilities) are an ensemble;
  refuses, in one line, an ensemble that cannot be evaluated or would overwrite its own
  members."""
  is_ensemble = len(workdirs) + len(probability_dirs) > 1
  if is_ensemble and not data_root:
    raise ConfigError('an ensemble is evaluated on --data_root (a test or challenge '
                      'validation directory): each fold\'s validation cases are training '
                      'cases of the other folds')
  if is_ensemble and not output_dir:
    raise ConfigError('an ensemble needs --output_dir for its results')
  for flag, paths in (('--workdir', workdirs), ('--probabilities', probability_dirs)):
    if len(set(map(os.path.abspath, paths))) < len(paths):
      raise ConfigError(f'{flag} lists a directory twice: {",".join(paths)}')
  for folder in probability_dirs:
    if output_dir and os.path.abspath(folder) in (os.path.abspath(output_dir), os.path.abspath(
        os.path.join(output_dir, 'probabilities'))):
      raise ConfigError(f'--output_dir {output_dir} would overwrite the probabilities it '
                        f'averages (--probabilities {folder}); choose another')
  return is_ensemble
