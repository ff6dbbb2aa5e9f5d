"""Several trained models as one predictor: the mean of their probabilities.

The k models of a k-fold cross-validation (or any models with the same regions, input
channels and window size) each predict every case; their sigmoid probabilities are
averaged per region and voxel, and a region is predicted where the mean is above 0.5,
as nnU-Net ensembles folds. Models with the same number of refinement iterations are
averaged iteration by iteration; otherwise only their final iterations are.
"""

from typing import Iterable, Iterator

import numpy as np
from scipy import special

from jaxseg.errors import ConfigError


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
