"""A training run bounded by time: `train.time_budget_minutes`.

For scheduler time limits and for comparing models at equal training time. The budget
is the wall-clock time of the training loop (steps, validation, saves; the first
step's compilation included), summed over restarts: each checkpoint records the time
used so far. When it is used up, the run validates, saves and ends as if it had
reached train.num_steps.

The learning-rate schedule follows the budget: after `CALIBRATION_STEPS` steps (the
first, which compiles, not counted), the steps the rest of the budget holds are
estimated from their speed, and the cosine decay is set to end there (a schedule
segment, train_state.schedule_segments: the rate goes on from where it is, no jump).
`train.num_steps` is then only the first guess, and an upper bound.
"""

import time
from typing import Callable

CALIBRATION_STEPS = 10


class TimeBudget:
  """Time used by a run, read from `clock` (seconds) once per step via `tick`."""

  def __init__(self, minutes: float, used_seconds: float = 0.0,
               clock: Callable[[], float] = time.monotonic):
    self.seconds = 60.0 * minutes
    self.used_seconds = used_seconds
    self._clock = clock
    self._last = clock()
    self._ticks = 0
    self._calibration_start = None  # (clock, tick) after the first, compiling step
    self._estimated = False

  @property
  def used_up(self) -> bool:
    return self.used_seconds >= self.seconds

  def tick(self) -> None:
    """Called after every step: counts the time since the previous call."""
    now = self._clock()
    self.used_seconds += now - self._last
    self._last = now
    self._ticks += 1
    if self._ticks == 1:
      self._calibration_start = (now, self._ticks)

  def estimated_end_step(self, completed: int) -> int | None:
    """Once, when calibrated: the step at which the budget will be used up at the speed
    of the steps since the first (validation included when it fell among them)."""
    if self._estimated or self._calibration_start is None:
      return None
    start, start_tick = self._calibration_start
    timed = self._ticks - start_tick
    if timed < CALIBRATION_STEPS:
      return None
    self._estimated = True
    seconds_per_step = max(self._last - start, 1e-9) / timed
    remaining = max(self.seconds - self.used_seconds, 0.0)
    return completed + max(1, round(remaining / seconds_per_step))
