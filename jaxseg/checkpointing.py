"""Orbax checkpoints of a workdir: the latest two (to resume, with one to fall back on)
and the best (by validation Dice).

`<workdir>/checkpoints/<step>/` holds the train state (parameters, optimiser state,
step), the validation summary of that step, the position of the training data stream
and the run's learning-rate schedule. A checkpoint that cannot be read (truncated,
deleted or overwritten files) raises `CheckpointDamaged`, one of another model
`CheckpointError`; a write the disk refuses, `CheckpointError` naming it. What a
restart does with a damaged checkpoint is resume.py's; the workdir's other files are
workdir.py's.
"""

import contextlib
import json
import logging
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg import workdir as files
from jaxseg.errors import CheckpointError
from jaxseg.train_state import schedule_segments

BEST_METRIC = 'dice'  # mean validation Dice at the last refinement iteration
# The JSON files of a checkpoint that Orbax parses before any array is read: garbage in
# one of them fails opening the workdir (metrics) or restoring (the rest).
_JSON_FILES = ('metrics/metrics', 'summary/metadata', 'data_iterator/metadata',
               'schedule/metadata', 'state/_METADATA')
# How the OS reports a write that cannot be done, in Python's and TensorStore's errors.
_WRITE_FAILURE = re.compile(r'No space left|Disk quota|File too large|Read-only file system|'
                            r'Permission denied|OS error|errno', re.IGNORECASE)


class CheckpointDamaged(CheckpointError):
  """A checkpoint whose files cannot be read; `step` names it."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _best_metric(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC]


def _first_line(error: BaseException) -> str:
  """The first line of the innermost cause: TensorStore's own words about the file."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0][:300]


class Checkpointer:
  """The checkpoints under `workdir/checkpoints`: the latest two and the best."""

  def __init__(self, workdir: str, create: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    for step in self._step_directories():
      problem = self.unreadable_file(step)
      if problem and problem.startswith('metrics'):  # Orbax could not even list the steps
        raise CheckpointDamaged(f'checkpoint {self.directory}/{step} is damaged ({problem})',
                                step)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=2),
        ocp.checkpoint_managers.BestN(get_metric_fn=_best_metric, reverse=False, n=1),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_best_metric, best_mode='max', create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _step_directories(self) -> list[int]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def unreadable_file(self, step: int) -> str | None:
    """'<file>: <problem>' for the first JSON file of checkpoint `step` that cannot be
    parsed, or None."""
    for name in _JSON_FILES:
      path = os.path.join(self.directory, str(step), name)
      if not os.path.exists(path) and name in ('schedule/metadata', 'metrics/metrics'):
        continue  # older checkpoints have no schedule (`restore`); Orbax tolerates no metrics
      try:
        with open(path, 'rb') as f:
          json.loads(f.read())
      except (OSError, ValueError) as error:
        return f'{name}: {getattr(error, "strerror", None) or _first_line(error)}'
    return None

  def save(self, step: int, state: Any, summary: dict, data_state: dict,
           schedule: list[dict], seconds_used: float = 0.0) -> None:
    """Saves state with its validation summary, the position of the training data stream
    (`data_state`, a grain iterator state), the learning-rate schedule's segments and
    the training time used so far; `summary[BEST_METRIC]` ranks it. Written in the
    background; a failed write (a full disk) is raised by the next save or `close`,
    naming the checkpoint."""
    with _write_errors(self):
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), summary=ocp.args.JsonSave(summary),
          data_iterator=ocp.args.JsonSave(data_state),
          schedule=ocp.args.JsonSave({'segments': schedule,
                                      'seconds_used': seconds_used})),
          metrics={BEST_METRIC: float(summary[BEST_METRIC])})

  def restore(self, step: int, abstract_state: Any) -> dict:
    """{'state', 'summary', 'data_iterator', 'schedule', 'seconds_used'} of checkpoint
    `step` (for checkpoints older than them, the schedule of the workdir's config.json
    and no time used).

    `abstract_state` gives structure, shapes and shardings (without it optax states
    would come back as plain dicts). Raises CheckpointError when the checkpoint holds
    another model, CheckpointDamaged when its files cannot be read.
    """
    where = f'checkpoint {self.directory}/{step}'
    problem = self.unreadable_file(step)
    if problem:
      raise CheckpointDamaged(f'{where} is damaged ({problem})', step)
    saved, wanted = self._saved_shapes(step), sorted(
        tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    if not saved:  # an unreadable array index lists no arrays at all
      raise CheckpointDamaged(f'{where} is damaged (no array can be listed from its index)',
                              step)
    if saved != wanted:
      raise CheckpointError(f'{where} does not fit this model (it holds {len(saved)} arrays '
                            f'of {sum(map(np.prod, saved)):,.0f} values, the model has '
                            f'{len(wanted)} of {sum(map(np.prod, wanted)):,.0f})')
    items = dict(state=ocp.args.StandardRestore(abstract_state),
                 summary=ocp.args.JsonRestore(), data_iterator=ocp.args.JsonRestore())
    # Checkpoints written before 2026-12-02 hold no schedule (nor training time): known
    # per checkpoint, not by the workdir's format version (workdir_format.py), since a
    # restart rewrites config.json at the current version and keeps older checkpoints.
    has_schedule = os.path.isdir(os.path.join(self.directory, str(step), 'schedule'))
    if has_schedule:
      items['schedule'] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:  # pylint: disable=broad-except
      # The shapes matched, so what fails now is reading the files: TensorStore and
      # Orbax raise ValueError, OSError or plain Exception for missing or corrupt data.
      raise CheckpointDamaged(f'{where} cannot be read ({_first_line(error)})', step) from error
    schedule = restored.schedule if has_schedule else {
        # Such a run followed the schedule of the config it last started with.
        'segments': schedule_segments(files.read_config(self.workdir).train)}
    return {'state': restored.state, 'summary': restored.summary,
            'data_iterator': restored.data_iterator, 'schedule': schedule['segments'],
            'seconds_used': schedule.get('seconds_used', 0.0)}

  def _saved_shapes(self, step: int) -> list[tuple[int, ...]]:
    """The global shapes of the arrays of checkpoint `step`, from its metadata."""
    path = os.path.join(self.directory, str(step), 'state')
    absl_logger = logging.getLogger('absl')
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Orbax warns that a per-item file is absent
    try:
      metadata = ocp.StandardCheckpointer().metadata(path)
    except Exception as error:  # pylint: disable=broad-except
      raise CheckpointDamaged(f'checkpoint {self.directory}/{step} is damaged (its array '
                              f'metadata: {_first_line(error)})', step) from error
    finally:
      absl_logger.setLevel(level)
    tree = getattr(metadata, 'item_metadata', metadata)
    return sorted(tuple(x.shape) for x in jax.tree.leaves(
        tree, is_leaf=lambda x: hasattr(x, 'shape')) if hasattr(x, 'shape'))

  def summary(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(
        summary=ocp.args.JsonRestore())).summary

  def reload(self) -> None:
    """Re-reads the directory (after a checkpoint was moved out of it)."""
    self._manager.reload()

  def last_complete_step(self) -> int | None:
    """The newest checkpoint whose save was completed (Orbax renames a checkpoint into
    place when complete), without waiting for saves in flight."""
    steps = self._step_directories()
    return steps[-1] if steps else None

  def close(self) -> None:
    """Waits for saves in flight; a failed one raises CheckpointError."""
    with _write_errors(self):
      self._manager.wait_until_finished()
    self._manager.close()


@contextlib.contextmanager
def _write_errors(checkpointer: Checkpointer):
  """Turns a checkpoint write that the OS refused (full disk, quota, permissions) into
  one CheckpointError naming the checkpoint directory and the step that is kept."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    if not (isinstance(error, OSError) or _WRITE_FAILURE.search(str(error))):
      raise  # not the disk: a bug keeps its traceback
    kept = checkpointer.last_complete_step()
    kept_text = (f'the last complete checkpoint, step {kept}, is kept' if kept is not None
                 else 'no checkpoint was complete yet')
    raise CheckpointError(f'could not write a checkpoint in {checkpointer.directory} '
                          f'({_first_line(error)}); {kept_text}') from error


def checkpoint_step(checkpointer: Checkpointer, checkpoint: str) -> int:
  """The step that eval.py's --checkpoint names: 'best', 'latest' or a step number."""
  if checkpoint == 'best':
    step = checkpointer.best_step()
  elif checkpoint == 'latest':
    step = checkpointer.latest_step()
  elif checkpoint.isdigit():
    step = int(checkpoint)
    if step not in checkpointer.all_steps():
      raise CheckpointError(f'--checkpoint={checkpoint}: no such step in '
                            f'{checkpointer.workdir}; saved steps: {checkpointer.all_steps()}')
  else:
    raise CheckpointError(f"--checkpoint={checkpoint!r}: use 'best', 'latest' or a step number")
  if step is None:
    raise CheckpointError(f'{checkpointer.workdir}: no checkpoint found')
  return step


def restore_train_state(checkpointer: Checkpointer, step: int, abstract_state: Any,
                        sharding) -> dict:
  """Checkpointer.restore of `step` with every array placed by `sharding`."""
  return checkpointer.restore(step, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state))
