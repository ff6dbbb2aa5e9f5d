"""The training loop: `train_and_evaluate(config, workdir)`, everything with side effects
around the pure train step (train_step.py): data, validation, logs, checkpoints,
progress, signals. What it runs is built, and bad config values refused, by
loop_parts.build before any data is read or any file written; what it does after each
step besides the step is loop_actions.py's.
"""

import contextlib
import functools
import os
import signal
import sys
import time
from typing import Callable

import jax
import ml_collections
from tqdm import tqdm

from jaxseg import (checkpointing, device_prefetch, evaluation, loop_actions, out_of_memory,
                    parallel, preemption, resume, workdir as files, workdir_lock)
from jaxseg.data import case_ids_by_split, load_splits, train_iterator
from jaxseg.errors import Stopped
from jaxseg.logs import MetricLogger
from jaxseg.loop_parts import LoopParts, build, for_data, make_train_batches
from jaxseg.time_budget import TimeBudget
from jaxseg.train_state import make_optimiser, schedule_segments


_STOPPED_BEFORE_TRAINING = ('SIGTERM: stopped before training started, nothing to save; '
                            'run the same command again to start')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       clock: Callable[[], float] = time.monotonic,
                       batches: Callable = make_train_batches,
                       evaluate: Callable = evaluation.evaluate) -> dict:
  """Trains (or resumes) in `workdir`; returns the validation summary of the best
  checkpoint. `clock` (seconds) measures train.time_budget_minutes.

  The loop reads its training batches from `batches(config, train data, process index,
  process count)` (a grain MapDataset, as make_train_batches), and scores validation
  with `evaluate(case logits, val data, with_hd95=False)` (as evaluation.evaluate).
  The train step is compiled first, and refused if it cannot fit the device's memory,
  before any data is read; the workdir is locked for the run (workdir_lock.py).
  """
  with preemption.StopOnSigterm(_STOPPED_BEFORE_TRAINING):
    parts = build(config)
    needed = out_of_memory.check_fits(parts.step_fn, parts.abstract_state, config, parts.mesh,
                                      len(parts.channels), len(parts.regions))
    data = load_splits(config.data)  # bad data stops the run before the workdir is touched
    files.prepare_workdir(workdir)
    parts = for_data(parts, config, data['train'])
    with (workdir_lock.held(workdir, jax.process_index(), jax.process_count()),
          out_of_memory.explained(config, needed)):
      return _train(config, workdir, data, parts, clock, batches, evaluate)


def _warn(line: str) -> None:
  print(f'warning: {line}', file=sys.stderr, flush=True)


def _start(config, workdir, checkpointer, parts: LoopParts):
  """(train state, data stream position or None, train config, schedule segments,
  training seconds used) where the run starts: its newest readable checkpoint, or
  the initial state."""
  replicated = parallel.replicated(parts.mesh)
  restored = resume.restore_newest(checkpointer, parts.abstract_state, replicated, _warn)
  train_config = config.train.copy_and_resolve_references()
  if not restored:
    state = jax.jit(parts.init_state, out_shardings=replicated)()
    return state, None, train_config, schedule_segments(train_config), 0.0
  state = restored['state']
  if train_config.get('time_budget_minutes'):  # the budget, not train.num_steps, set its end
    train_config.num_steps = restored['schedule'][-1]['num_steps']
  segments = schedule_segments(train_config, restored['schedule'], int(state.step))
  print(f'Resuming from step {int(state.step)} in {workdir}')
  return (state.replace(tx=make_optimiser(train_config, segments)), restored['data_iterator'],
          train_config, segments, restored['seconds_used'])


def _train(config, workdir, data, parts: LoopParts, clock, batches_of, evaluate) -> dict:
  train_data, val_data = data['train'], data['val']
  checkpointer = resume.open_for_training(workdir, _warn)
  if checkpointer.latest_step() is not None:
    files.check_same_model(workdir, config)
  primary = jax.process_index() == 0  # files shared by all processes: written by one
  if primary:
    files.record_splits(workdir, case_ids_by_split(data))
    files.record_regions(workdir, train_data.regions)
  files.check_free_space(workdir, parts.abstract_state)

  state, data_state, train_config, segments, seconds_used = _start(config, workdir,
                                                                   checkpointer, parts)
  minutes = train_config.get('time_budget_minutes')
  budget = TimeBudget(minutes, seconds_used, clock) if minutes else None
  if primary:
    files.write_config(workdir, config)  # the config this run continues with
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f'{config.model.name}: {num_params:,} parameters; {len(train_data)} training and '
        f'{len(val_data)} validation cases, training on {tuple(config.data.image_size)} '
        f'windows; {jax.device_count()} {jax.devices()[0].platform} device(s)')

  host_batches = train_iterator(
      batches_of(config, train_data, jax.process_index(), jax.process_count()),
      config.data.num_workers if config.data.root else 0, config.data.prefetch, data_state)
  logger = MetricLogger(workdir) if primary else None
  completed = int(state.step)
  plan = loop_actions.StepPlan(train_config, segments, budget, completed,
                               config.train.num_steps,
                               on_new_end=lambda end: setattr(progress, 'total', end))
  progress = tqdm(total=plan.last_step, initial=completed, desc='train', unit='step',
                  dynamic_ncols=True, disable=jax.process_index() != 0)
  train_log = loop_actions.TrainLog(config.train.batch_size, progress, logger, completed)
  nonfinite = loop_actions.NonFiniteCheck(config.train.on_nonfinite, checkpointer, workdir,
                                          progress.write)
  validate = functools.partial(_validate, parts.predictor, val_data, evaluate, progress, logger)
  stop = False
  with (_closed_at_exit(progress, logger),
        _ctrl_c_stops(checkpointer, workdir, lambda: completed),
        device_prefetch.DevicePrefetch(
            host_batches, functools.partial(parallel.shard_batch, mesh=parts.mesh),
            config.data.prefetch_to_device) as batches,
        preemption.SigtermRequest() as sigterm):
    while completed < plan.last_step:
      state, metrics = parts.step_fn(state, next(batches))
      completed += 1
      progress.update(1)
      nonfinite.add(completed, metrics.pop('finite'))
      state = plan.after_step(state, completed)
      # Read once: a SIGTERM that arrives while this step is logged or validated is
      # acted on (saved, then stopped) at the next step, never stopped on unsaved.
      stop = sigterm.requested
      now = loop_actions.due(completed, plan.last_step, config, stop)
      if now.log or now.validate:
        nonfinite.check()  # before anything is logged or saved
      if now.log:
        train_log.write(completed, metrics, float(plan.learning_rate(completed - 1)))
      if now.validate:
        summary = validate(completed, state.params)
        if now.save:
          # The position after this step's batch, not of the batches placed ahead; every
          # process's stream is at the same position: process 0's state serves all.
          checkpointer.save(completed, state, summary, batches.get_state(), plan.segments,
                            plan.seconds_used)
        train_log.restart_window(completed)  # validation is not training time
      if stop:
        break
  checkpointer.close()
  if stop:
    raise Stopped(f'SIGTERM: saved the checkpoint of step {completed} in {workdir}; run the '
                  'same command again to resume from it', signal.SIGTERM)

  best = checkpointer.best_step()
  summary = checkpointer.summary(best)
  if budget:
    print(f'Time budget: {budget.used_seconds / 60:.2f} of {budget.seconds / 60:.2f} minutes '
          f'used, {plan.last_step} steps')
  print(f'Best checkpoint: step {best} of {plan.last_step} in {os.path.abspath(workdir)}')
  print(f'Final validation (best checkpoint, last iteration): {evaluation.dice_line(summary)}')
  return summary


def _validate(predictor, val_data, evaluate, progress, logger, step: int, params) -> dict:
  """The validation summary of `params` after `step`, printed and logged."""
  _, summary = evaluate(predictor.predict(params, val_data.images), val_data, with_hd95=False)
  progress.write(f'step {step}: validation {evaluation.dice_line(summary)}')
  if logger:
    logger.write(step, 'val', _val_scalars(summary))
  return summary


@contextlib.contextmanager
def _closed_at_exit(progress, logger):
  """Closes the progress bar and the metric logger; when an error ends the loop, a
  failed close does not hide it (the error raised says what went wrong)."""
  try:
    yield
  except BaseException:
    progress.close()
    if logger:
      with contextlib.suppress(OSError):
        logger.close()
    raise
  progress.close()
  if logger:
    logger.close()


@contextlib.contextmanager
def _ctrl_c_stops(checkpointer, workdir: str, completed: Callable[[], int]):
  """Ctrl-C as Stopped, saying where the run resumes from: no new save (it could take
  long), the last complete checkpoint is what resumes."""
  try:
    yield
  except KeyboardInterrupt:
    raise Stopped(f'interrupted (Ctrl-C) at step {completed()}; '
                  f'{_resumes_from(checkpointer, workdir)}', signal.SIGINT) from None


def _val_scalars(summary: dict) -> dict[str, float]:
  scalars = {'dice': summary['dice']}
  for entry in summary['per_iteration']:
    scalars[f'dice_iteration{entry["iteration"]}'] = entry['dice']
  for name, values in summary['per_region'].items():
    scalars[f'dice_{name}'] = values['dice']
  return scalars


def _resumes_from(checkpointer: checkpointing.Checkpointer, workdir: str) -> str:
  kept = checkpointer.last_complete_step()
  if kept is None:
    return f'no checkpoint was complete: a rerun of the same command starts {workdir} afresh'
  return (f'{workdir} resumes from step {kept}, its last complete checkpoint: run the same '
          'command again')
