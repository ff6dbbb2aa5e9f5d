"""What the training loop does after each step besides the step itself, one object or
function each, so that the loop reads as the list of them: which of logging,
validation and saving a step is due for (`due`), the deferred check of non-finite
steps (`NonFiniteCheck`), the training scalars' log (`TrainLog`) and the
learning-rate schedule with the end that a time budget moves (`StepPlan`).
"""

import time
from typing import Callable, NamedTuple

import ml_collections

from jaxseg.errors import NonFiniteError
from jaxseg.time_budget import TimeBudget
from jaxseg.train_state import learning_rate_schedule, make_optimiser, schedule_segments


class Due(NamedTuple):
  """What follows a step: its training scalars logged, a validation, a checkpoint."""
  log: bool
  validate: bool
  save: bool


def due(step: int, last_step: int, config: ml_collections.ConfigDict, stop: bool) -> Due:
  """What completed step `step` is due for: each at its period, all three at the last
  step, and a save (which validates, so every checkpoint has its metrics) on `stop`."""
  save = step % config.checkpoint.every_steps == 0 or step == last_step or stop
  log = step % config.train.log_every_steps == 0 or step == last_step
  return Due(log=log, validate=save or step % config.eval.every_steps == 0, save=save)


class NonFiniteCheck:
  """The steps' 'finite' flags, read only when a log or save is due: reading one at
  every step would wait for that step and end the overlap of the host with the device.

  `check` acts on the flags held: with `on_nonfinite='stop'` it closes the checkpointer
  (pending saves complete, so the last good checkpoint is kept) and raises
  NonFiniteError naming the first bad step; with 'skip' it warns (the step already
  left such an update out).
  """

  def __init__(self, on_nonfinite: str, checkpointer, workdir: str,
               warn: Callable[[str], None]):
    self._on_nonfinite, self._checkpointer, self._workdir = on_nonfinite, checkpointer, workdir
    self._warn = warn
    self._unchecked = []  # (step, device flag 'loss and gradient finite')

  def add(self, step: int, finite) -> None:
    self._unchecked.append((step, finite))

  def check(self) -> None:
    bad = [step for step, finite in self._unchecked if not bool(finite)]
    self._unchecked.clear()
    if bad and self._on_nonfinite == 'stop':
      self._checkpointer.close()
      raise NonFiniteError(
          f'step {bad[0]}: non-finite loss or gradient; its update was not applied and '
          'training stopped. The last good checkpoint, step '
          f'{self._checkpointer.latest_step()}, is kept in {self._workdir}. Lower '
          'train.learning_rate or check the data; --config.train.on_nonfinite=skip '
          'skips such updates instead')
    if bad:
      self._warn(f'warning: non-finite loss or gradient at step(s) {bad}: update(s) skipped')


class TrainLog:
  """The training scalars of a logged step, with the throughput since the last log (or
  validation: it is not training time) and the step's learning rate, to the progress
  bar and (process 0) the metric logger."""

  def __init__(self, batch_size: int, progress, logger, start_step: int):
    self._batch_size, self._progress, self._logger = batch_size, progress, logger
    self.restart_window(start_step)

  def restart_window(self, step: int) -> None:
    """Throughput is measured from here, after `step`."""
    self._window = (time.perf_counter(), step)

  def write(self, step: int, metrics: dict, learning_rate: float) -> None:
    scalars = {k: float(v) for k, v in metrics.items()}  # waits for the step
    start, start_step = self._window
    elapsed = time.perf_counter() - start
    scalars['images_per_second'] = (step - start_step) * self._batch_size / elapsed
    scalars['learning_rate'] = learning_rate
    self._progress.set_postfix(loss=f'{scalars["loss"]:.4f}',
                               img_s=f'{scalars["images_per_second"]:.1f}')
    if self._logger:
      self._logger.write(step, 'train', scalars)
    self.restart_window(step)


class StepPlan:
  """The learning-rate schedule's segments and the loop's last step.

  Without a time budget both are the config's. With one (`budget`), train.num_steps
  only bounds the loop; once the budget has timed its steps, the cosine is set to end
  where the rest of the budget ends (`on_new_end(step)` is told; the step is compiled
  again for the new schedule), and when it is used up, the step just completed is the
  last.
  """

  def __init__(self, train_config: ml_collections.ConfigDict, segments: list[dict],
               budget: TimeBudget | None, start_step: int, max_steps: int,
               on_new_end: Callable[[int], None]):
    self._train_config, self.segments, self.budget = train_config, segments, budget
    self._max_steps, self._on_new_end = max_steps, on_new_end
    self.learning_rate = learning_rate_schedule(train_config, segments)
    # A rerun of a finished budget run trains nothing.
    self.last_step = start_step if budget and budget.used_up else max_steps

  @property
  def seconds_used(self) -> float:
    return self.budget.used_seconds if self.budget else 0.0

  def after_step(self, state, step: int):
    """The train state to go on with after completed step `step`: its optimiser follows
    a schedule moved by the budget."""
    if not self.budget:
      return state
    self.budget.tick()
    if (end := self.budget.estimated_end_step(step)) is not None:
      self._train_config.num_steps = min(end, self._max_steps)
      self.segments = schedule_segments(self._train_config, self.segments, step)
      state = state.replace(tx=make_optimiser(self._train_config, self.segments))
      self.learning_rate = learning_rate_schedule(self._train_config, self.segments)
      self._on_new_end(self._train_config.num_steps)
    if self.budget.used_up:
      self.last_step = step  # validate, save and end here
    return state
