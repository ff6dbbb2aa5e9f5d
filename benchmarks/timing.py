"""The benchmarks' one clock: the wall time of a call (time.perf_counter), of repeated
calls and their median, with this process's CPU time beside it where the cores used
matter; and the wall-clock deadlines that a measuring process is handed by its parent.

A call that runs on a device must wait for its result inside `run` (e.g.
jax.block_until_ready): JAX dispatches asynchronously, and the clock stops when `run`
returns.
"""

import dataclasses
import statistics
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Timings:
  """The timed calls of `repeat`: wall and CPU seconds of each, the last call's result."""
  seconds: tuple[float, ...]
  cpu_seconds: tuple[float, ...]
  result: object = None

  @property
  def median(self) -> float:
    """Median wall seconds of a call."""
    return statistics.median(self.seconds)

  @property
  def cores(self) -> float:
    """CPU seconds per wall second over the calls: the cores they kept busy."""
    return sum(self.cpu_seconds) / sum(self.seconds)


def repeat(run: Callable[[], object], repeats: int, warmups: int = 0,
           deadline: float | None = None) -> Timings:
  """`run()` called `warmups` times untimed, then `repeats` times timed. With a
  `deadline` (seconds since the epoch, see `deadline_after`), the timed calls stop once
  it has passed, after two of them at least."""
  for _ in range(warmups):
    run()
  walls, cpus, result = [], [], None
  while len(walls) < repeats and (deadline is None or len(walls) < 2
                                  or not passed(deadline)):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return Timings(tuple(walls), tuple(cpus), result)


def once(run: Callable[[], object]) -> tuple[float, object]:
  """(wall seconds, result) of one call of `run()`, e.g. a compilation."""
  timings = repeat(run, 1)
  return timings.seconds[0], timings.result


def median_ms(run: Callable[[], object], repeats: int, warmups: int = 1) -> float:
  """Median wall time of `run()` in milliseconds, after `warmups` untimed calls."""
  return 1000 * repeat(run, repeats, warmups).median


def first_and_median(run: Callable[[], object], steps: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of the `steps` calls after it): the
  first includes compiling or warming up."""
  first, _ = once(run)
  return first, repeat(run, steps).median


class Stopwatch:
  """Wall seconds since it was made, for progress lines and sums over a loop's parts."""

  def __init__(self):
    self._start = time.perf_counter()

  def seconds(self) -> float:
    return time.perf_counter() - self._start


def deadline_after(seconds: float) -> float:
  """A deadline `seconds` from now, as seconds since the epoch: another process, handed
  it, reads the same clock."""
  return time.time() + seconds


def passed(deadline: float) -> bool:
  return time.time() >= deadline
