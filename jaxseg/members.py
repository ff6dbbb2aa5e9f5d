"""The trained models an evaluation starts from: each workdir's run config and regions,
the checkpoint chosen, and its parameters.

`read_members` reads what needs no data (configs, regions, the checkpoint step) and
refuses members that cannot be averaged; `Member.restore` then builds the model for
the data's channels and regions and restores the checkpoint's parameters. eval.py
(eval_workdir.py) evaluates them; any other user of a trained model restores it the
same way.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections

from jaxseg import checkpointing, ensemble, parallel, workdir as files
from jaxseg.data import SegmentationData
from jaxseg.data.regions import Region
from jaxseg.errors import ConfigError
from jaxseg.models import registry
from jaxseg.train_state import setup_model


@dataclasses.dataclass(frozen=True)
class Member:
  """One workdir's checkpoint, before any array of it is read."""
  workdir: str
  config: ml_collections.ConfigDict  # the run's; model.num_iterations as asked
  regions: tuple[Region, ...] | None  # None: those of the data (a 2D image folder's)
  checkpointer: checkpointing.Checkpointer
  step: int
  trained_iterations: int | None  # refinement iterations trained (None: does not iterate)

  def restore(self, data: SegmentationData, mesh) -> tuple[nn.Module, Any]:
    """(model, parameters): the model for `data`'s channels and regions, and the
    checkpoint's parameters replicated over `mesh`."""
    model, _, abstract_state = setup_model(self.config, data)
    try:
      state = checkpointing.restore_train_state(self.checkpointer, self.step, abstract_state,
                                                parallel.replicated(mesh))['state']
    except checkpointing.CheckpointDamaged as error:
      others = [s for s in self.checkpointer.all_steps() if s != self.step]
      raise checkpointing.CheckpointDamaged(
          f'{error}; other checkpoints of {self.workdir}: {others or "none"} '
          '(--checkpoint=STEP)', self.step) from error
    return model, state.params


def read_members(workdirs: list[str], checkpoint: str = 'best',
                 num_iterations: int | None = None) -> list[Member]:
  """The members of `workdirs`, each at its checkpoint `checkpoint` ('best', 'latest' or
  a step number), their configs and regions read as the current workdir format.
  `num_iterations`: refinement iterations to run, more (or fewer) than trained: the
  same parameters serve every iteration. Members that cannot be averaged (other
  regions, window or modalities) are refused in one line."""
  saved = [files.read_saved(w) for w in workdirs]
  for workdir, run in zip(workdirs, saved):
    for note in run.notes:  # an older workdir: what is read otherwise than saved
      print(f'{workdir}: {note}')
  configs, regions = [run.config for run in saved], [run.regions for run in saved]
  ensemble.check_members(workdirs, configs, regions)
  trained = [set_iterations(c.model, num_iterations) for c in configs]
  checkpointers = [_open_checkpoints(w) for w in workdirs]
  return [Member(w, c, r, checkpointer, checkpointing.checkpoint_step(checkpointer, checkpoint), t)
          for w, c, r, checkpointer, t in zip(workdirs, configs, regions, checkpointers, trained)]


def _open_checkpoints(workdir: str) -> checkpointing.Checkpointer:
  try:
    return checkpointing.Checkpointer(workdir, create=False)
  except checkpointing.CheckpointDamaged as error:
    raise checkpointing.CheckpointDamaged(
        f'{error}; move it out of checkpoints/ to evaluate the others (train.py sets it aside '
        'by itself on its next start)', error.step) from error


def set_iterations(model_config: ml_collections.ConfigDict, num_iterations: int | None
                   ) -> int | None:
  """Sets model.num_iterations to `num_iterations` (if given); returns the number the
  model was trained with (None for a model that does not iterate)."""
  if not registry.get(model_config.name).iterates:
    if num_iterations is not None:
      raise ConfigError(f'--num_iterations: a {model_config.name} has no refinement '
                        f'iterations; models with them: {registry.iterating_models()}')
    return None
  trained = model_config.num_iterations
  if num_iterations is not None:
    if num_iterations < 1:
      raise ConfigError(f'--num_iterations={num_iterations}: need at least 1')
    model_config.num_iterations = num_iterations
  return trained
