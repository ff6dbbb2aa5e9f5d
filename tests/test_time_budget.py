"""train.time_budget_minutes, with a fake clock (one second per step): the run stops
within a step of the budget, saved and resumable, on a schedule that ends there."""

import csv
import itertools
import os

import pytest

from helpers import final_state
from jaxseg import checkpointing, resume, parallel, time_budget
from jaxseg.data import load_splits
from jaxseg.train_state import learning_rate_schedule, setup_model
from jaxseg.training import train_and_evaluate


def _one_second_per_call():
  ticks = itertools.count()
  return lambda: float(next(ticks))


def _restored(workdir, config):
  _, _, abstract = setup_model(config, load_splits(config.data, ('train',))['train'])
  return resume.restore_newest(checkpointing.Checkpointer(str(workdir)), abstract,
                               parallel.replicated(parallel.make_mesh()), print)


def test_the_budget_ends_the_run_and_its_schedule(tmp_path, tiny_lstm_config, capsys):
  config = tiny_lstm_config
  config.train.num_steps = 1000                       # an upper bound only
  config.train.time_budget_minutes = 0.25             # 15 fake seconds: 15 steps
  config.train.log_every_steps = 1
  config.eval.every_steps = config.checkpoint.every_steps = 1000
  train_and_evaluate(config, str(tmp_path), clock=_one_second_per_call())

  restored = _restored(tmp_path, config)
  assert int(restored['state'].step) == 15           # within one step of the budget
  assert restored['seconds_used'] == pytest.approx(15.0)
  # The cosine was set, after the calibration steps, to end at the budget.
  assert restored['schedule'][-1]['num_steps'] == 15
  assert restored['schedule'][-1]['from_step'] == time_budget.CALIBRATION_STEPS + 1
  train_config = config.train.copy_and_resolve_references()
  train_config.num_steps = 15
  rate = learning_rate_schedule(train_config, restored['schedule'])
  assert float(rate(15)) == pytest.approx(0.01 * config.train.learning_rate, rel=1e-5)
  with open(os.path.join(tmp_path, 'metrics.csv')) as f:
    logged = {int(r['step']): float(r['value']) for r in csv.DictReader(f)
              if r['name'] == 'learning_rate'}
  assert max(logged) == 15
  assert all(logged[s + 1] <= logged[s] for s in range(2, 15))  # decays, no jump
  assert 'Time budget: 0.25 of 0.25 minutes used, 15 steps' in capsys.readouterr().out

  # A rerun finds the budget used: nothing more is trained.
  train_and_evaluate(config, str(tmp_path), clock=_one_second_per_call())
  assert int(final_state(tmp_path, config)[0].step) == 15


def test_a_stopped_budget_run_resumes_with_the_time_left(tmp_path, tiny_lstm_config):
  """A 15 s budget stopped at step 8 by a smaller num_steps resumes with 8 s used and
  stops at the budget."""
  config = tiny_lstm_config
  config.train.time_budget_minutes = 0.25
  config.train.num_steps = 8
  config.eval.every_steps = config.checkpoint.every_steps = 1000
  train_and_evaluate(config, str(tmp_path), clock=_one_second_per_call())
  first = _restored(tmp_path, config)
  assert int(first['state'].step) == 8 and first['seconds_used'] == pytest.approx(8.0)
  config.train.num_steps = 1000
  train_and_evaluate(config, str(tmp_path), clock=_one_second_per_call())
  second = _restored(tmp_path, config)
  assert second['seconds_used'] == pytest.approx(15.0)
  assert int(second['state'].step) == 15
