"""What follows a training step: when logs, validations and saves are due, and the
deferred check of non-finite steps."""

import ml_collections
import numpy as np
import pytest

from jaxseg.errors import NonFiniteError
from jaxseg.loop_actions import NonFiniteCheck, due


def _periods(log, validate, save):
  return ml_collections.ConfigDict({'train': {'log_every_steps': log},
                                    'eval': {'every_steps': validate},
                                    'checkpoint': {'every_steps': save}})


def test_each_is_due_at_its_period_and_all_at_the_last_step():
  config = _periods(log=2, validate=3, save=5)
  steps = {s: due(s, 10, config, stop=False) for s in range(1, 11)}
  assert [s for s, d in steps.items() if d.log] == [2, 4, 6, 8, 10]
  assert [s for s, d in steps.items() if d.save] == [5, 10]
  # Every save validates, so every checkpoint has its metrics.
  assert [s for s, d in steps.items() if d.validate] == [3, 5, 6, 9, 10]


def test_a_stop_saves_and_so_validates():
  assert due(7, 10, _periods(log=2, validate=3, save=5), stop=True) == (False, True, True)


class _Checkpointer:
  def __init__(self):
    self.closed = False

  def close(self):
    self.closed = True

  def latest_step(self):
    return 4


def test_a_non_finite_step_stops_naming_it_and_the_kept_checkpoint():
  checkpointer = _Checkpointer()
  check = NonFiniteCheck('stop', checkpointer, '/runs/a', print)
  for step, finite in [(5, True), (6, False), (7, False)]:
    check.add(step, np.bool_(finite))
  with pytest.raises(NonFiniteError, match=r'step 6: .*step 4, is kept in /runs/a'):
    check.check()
  assert checkpointer.closed  # pending saves complete before the error


def test_skip_warns_of_each_bad_step_once():
  warnings = []
  check = NonFiniteCheck('skip', _Checkpointer(), '/runs/a', warnings.append)
  for step, finite in [(1, True), (2, False), (3, False)]:
    check.add(step, np.bool_(finite))
  check.check()
  check.add(4, np.bool_(True))
  check.check()
  assert len(warnings) == 1 and 'step(s) [2, 3]' in warnings[0]
