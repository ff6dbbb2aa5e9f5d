"""Orbax checkpoints of a workdir: the latest (to resume) and the best (by validation Dice).

`<workdir>/checkpoints/<step>/` holds the train state (parameters, optimiser state,
step), the validation summary of that step and the position of the training data
stream. The workdir's other files are workdir.py's.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxseg.train_state import TrainState

BEST_METRIC = 'dice'  # mean validation Dice at the last refinement iteration


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message is one line for the user."""


def _best_metric(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC]


class Checkpointer:
  """Keeps the latest and the best checkpoint under `workdir/checkpoints`."""

  def __init__(self, workdir: str, create: bool = True):
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=1),
        ocp.checkpoint_managers.BestN(get_metric_fn=_best_metric, reverse=False, n=1),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_best_metric, best_mode='max',
        create=create)
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, summary: dict, data_state: dict) -> None:
    """Saves state with its validation summary and the position of the training data
    stream (`data_state`, a grain iterator state); `summary[BEST_METRIC]` ranks it."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), summary=ocp.args.JsonSave(summary),
        data_iterator=ocp.args.JsonSave(data_state)),
        metrics={BEST_METRIC: float(summary[BEST_METRIC])})

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state, validation summary) of `step`; `abstract_state` gives structure, shapes
    and shardings (without it optax states would come back as plain dicts)."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), summary=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as error:
      first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
      raise CheckpointError(f'checkpoint {self.directory}/{step} does not fit this model '
                            f'({first_line[:200]})') from error
    return restored.state, restored.summary

  def data_state(self, step: int) -> dict:
    """The training data iterator state saved with checkpoint `step`."""
    return self._manager.restore(step, args=ocp.args.Composite(
        data_iterator=ocp.args.JsonRestore())).data_iterator

  def summary(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(
        summary=ocp.args.JsonRestore())).summary

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def restore_train_state(checkpointer: Checkpointer, step: int, abstract_state: TrainState,
                        sharding) -> tuple[TrainState, dict]:
  """(state placed with `sharding`, validation summary) of checkpoint `step`."""
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state)
  return checkpointer.restore(step, abstract_state)


def checkpoint_step(checkpointer: Checkpointer, checkpoint: str) -> int:
  """The step that eval.py's --checkpoint names: 'best', 'latest' or a step number."""
  workdir = os.path.dirname(checkpointer.directory)
  if checkpoint == 'best':
    step = checkpointer.best_step()
  elif checkpoint == 'latest':
    step = checkpointer.latest_step()
  elif checkpoint.isdigit():
    step = int(checkpoint)
    if step not in checkpointer.all_steps():
      raise CheckpointError(f'--checkpoint={checkpoint}: no such step in {workdir}; saved '
                            f'steps: {sorted(checkpointer.all_steps())}')
  else:
    raise ValueError(f"--checkpoint={checkpoint!r}: use 'best', 'latest' or a step number")
  if step is None:
    raise CheckpointError(f'{workdir}: no checkpoint found')
  return step
