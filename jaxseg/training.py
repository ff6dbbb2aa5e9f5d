"""The training loop: `train_and_evaluate(config, workdir)`, everything with side effects
around the pure train step (train_step.py): data, validation, logs, checkpoints,
progress, signals. Bad config values are refused by `check_config` before any data is
read or any file written.
"""

import contextlib
import os
import signal
import sys
import time
from typing import Callable

import jax
import ml_collections
from tqdm import tqdm

from jaxseg import (checkpointing, evaluation, inference, out_of_memory, parallel, preemption,
                    resume, workdir as files, workdir_lock)
from jaxseg.data import (SegmentationData, case_ids_by_split, input_pipeline, layouts,
                         load_splits, synthetic, train_batches, train_iterator)
from jaxseg.logs import MetricLogger
from jaxseg.models import build_model, check_input_shape
from jaxseg.errors import ConfigError, DataError, NonFiniteError, Stopped
from jaxseg.train_state import (learning_rate_schedule, make_optimiser, schedule_segments,
                                setup_model)
from jaxseg.time_budget import TimeBudget
from jaxseg.train_step import make_train_step


# config keys read by the loop below; every other section is checked where it is used.
_LOOP_COUNTS = ('train.num_steps', 'train.log_every_steps', 'eval.every_steps',
                'checkpoint.every_steps')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses bad values before data is read or files are written: each section is
  checked by the code that uses it, by building it (model, train step, predictor)."""
  for key in _LOOP_COUNTS:
    section, name = key.split('.')
    if config[section][name] < 1:
      raise ConfigError(f'{key} must be at least 1, got {config[section][name]}')
  budget = config.train.get('time_budget_minutes')
  if budget is not None and budget <= 0:
    raise ConfigError(f'train.time_budget_minutes must be positive, got {budget}')
  if config.train.on_nonfinite not in ('stop', 'skip'):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got "
                     f'{config.train.on_nonfinite!r}')
  model = build_model(config.model, 1, config.compute)
  check_input_shape(config.data.image_size, len(config.model.features), 'data.image_size')
  make_train_step(config)  # loss, augmentation, micro-batches
  learning_rate_schedule(config.train)
  inference.SlidingWindowPredictor.from_config(model, config.eval, config.data.image_size,
                                               parallel.make_mesh())
  input_pipeline.check_config(config.data)
  for key in ('root', 'val_root'):  # before the step is compiled; load_splits checks the rest
    if config.data.get(key) and not os.path.isdir(os.path.expanduser(config.data[key])):
      raise DataError(f'data.{key}: {config.data[key]} is not a directory')


_STOPPED_BEFORE_TRAINING = ('SIGTERM: stopped before training started, nothing to save; '
                            'run the same command again to start')


def make_train_batches(config: ml_collections.ConfigDict, data: SegmentationData,
                       process_index: int = 0, process_count: int = 1):
  """The training batches of `config` (input_pipeline.train_batches): element s is this
  process's part of step s's global batch, as the loop below and the benchmarks read it."""
  return train_batches(data, batch_size=config.train.batch_size,
                       window_size=config.data.image_size,
                       foreground_fraction=config.data.foreground_fraction,
                       seed=config.train.seed, process_index=process_index,
                       process_count=process_count)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       clock: Callable[[], float] = time.monotonic) -> dict:
  """Trains (or resumes) in `workdir`; returns the validation summary of the best
  checkpoint. `clock` (seconds) measures train.time_budget_minutes.

  The train step is compiled first, and refused if it cannot fit the device's memory,
  before any data is read; the workdir is locked for the run (workdir_lock.py).
  """
  check_config(config)
  with preemption.StopOnSigterm(_STOPPED_BEFORE_TRAINING):
    mesh, step_fn = parallel.make_mesh(), make_train_step(config)
    # The data's channels and regions as the config implies them: if the data then has
    # others, the model is set up (and its step compiled) again for them.
    channels = tuple(config.data.modalities) if config.data.root else synthetic.CHANNELS
    expected = SegmentationData([], [], (), (), layouts.GLIOMA_REGIONS, channels)
    setup = setup_model(config, expected)
    needed = out_of_memory.check_fits(step_fn, setup[2], config, mesh,
                                      len(channels), len(expected.regions))
    data = load_splits(config.data)  # bad data stops the run before the workdir is touched
    files.prepare_workdir(workdir)
    if (data['train'].channels, data['train'].regions) != (channels, expected.regions):
      setup = setup_model(config, data['train'])
    with (workdir_lock.held(workdir, jax.process_index(), jax.process_count()),
          out_of_memory.explained(config, needed)):
      return _train(config, workdir, data, mesh, step_fn, setup, clock)


def _train(config, workdir, data, mesh, step_fn, setup, clock) -> dict:
  train_data, val_data = data['train'], data['val']
  warn = lambda line: print(f'warning: {line}', file=sys.stderr, flush=True)  # noqa: E731
  checkpointer = resume.open_for_training(workdir, warn)
  if checkpointer.latest_step() is not None:
    files.check_same_model(workdir, config)
  primary = jax.process_index() == 0  # files shared by all processes: written by one
  if primary:
    files.record_splits(workdir, case_ids_by_split(data))
    files.record_regions(workdir, train_data.regions)
  model, init_state, abstract_state = setup
  files.check_free_space(workdir, abstract_state)
  replicated = parallel.replicated(mesh)

  restored = resume.restore_newest(checkpointer, abstract_state, replicated, warn)
  train_config = config.train.copy_and_resolve_references()
  minutes = train_config.get('time_budget_minutes')
  if restored:
    state, data_state = restored['state'], restored['data_iterator']
    saved_schedule = restored['schedule']
    if minutes:  # the budget, not train.num_steps, set the schedule's end
      train_config.num_steps = saved_schedule[-1]['num_steps']
    schedule = schedule_segments(train_config, saved_schedule, int(state.step))
    state = state.replace(tx=make_optimiser(train_config, schedule))
    print(f'Resuming from step {int(state.step)} in {workdir}')
  else:
    state, data_state = jax.jit(init_state, out_shardings=replicated)(), None
    schedule = schedule_segments(train_config)
  budget = (TimeBudget(minutes, restored['seconds_used'] if restored else 0.0, clock)
            if minutes else None)
  if primary:
    files.write_config(workdir, config)  # the config this run continues with
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f'{config.model.name}: {num_params:,} parameters; {len(train_data)} training and '
        f'{len(val_data)} validation cases, training on {tuple(config.data.image_size)} '
        f'windows; {jax.device_count()} {jax.devices()[0].platform} device(s)')

  predictor = inference.SlidingWindowPredictor.from_config(model, config.eval,
                                                           config.data.image_size, mesh)
  batches = train_iterator(
      make_train_batches(config, train_data, jax.process_index(), jax.process_count()),
      config.data.num_workers if config.data.root else 0, config.data.prefetch, data_state)
  learning_rate = learning_rate_schedule(train_config, schedule)
  logger = MetricLogger(workdir) if primary else None

  # With a time budget, train.num_steps bounds the loop; the schedule's end
  # (train_config.num_steps) is the budget's estimate.
  start_step, num_steps = int(state.step), config.train.num_steps
  if budget and budget.used_up:
    num_steps = start_step  # a rerun of a finished budget run trains nothing
  progress = tqdm(total=num_steps, initial=start_step, desc='train', unit='step',
                  dynamic_ncols=True, disable=jax.process_index() != 0)
  window_start, window_steps = time.perf_counter(), 0
  unchecked = []  # (step, device flag 'loss and gradient finite'), checked in batches
  completed, stop = start_step, False
  try:
    try:
      with preemption.SigtermRequest() as sigterm:
        while completed < num_steps:
          batch = parallel.shard_batch(next(batches), mesh)
          state, step_metrics = step_fn(state, batch)
          completed += 1
          window_steps += 1
          progress.update(1)
          unchecked.append((completed, step_metrics.pop('finite')))
          if budget:
            budget.tick()
            if (end := budget.estimated_end_step(completed)) is not None:
              # The schedule follows the budget: its cosine now ends at `end` (one
              # recompilation of the step, for the new schedule).
              train_config.num_steps = min(end, config.train.num_steps)
              schedule = schedule_segments(train_config, schedule, completed)
              state = state.replace(tx=make_optimiser(train_config, schedule))
              learning_rate = learning_rate_schedule(train_config, schedule)
              progress.total = train_config.num_steps
            if budget.used_up:
              num_steps = completed  # validate, save and end here

          # Read once: a SIGTERM that arrives while this step is logged or validated is
          # acted on (saved, then stopped) at the next step, never stopped on unsaved.
          stop = sigterm.requested
          save = (completed % config.checkpoint.every_steps == 0 or completed == num_steps
                  or stop)
          log = completed % config.train.log_every_steps == 0 or completed == num_steps
          validate = save or completed % config.eval.every_steps == 0
          if log or validate:  # checked before anything is logged or saved
            bad = [s for s, finite in unchecked if not bool(finite)]
            unchecked.clear()
            if bad and config.train.on_nonfinite == 'stop':
              checkpointer.close()  # pending saves complete: the last good checkpoint is kept
              raise NonFiniteError(
                  f'step {bad[0]}: non-finite loss or gradient; its update was not applied and '
                  'training stopped. The last good checkpoint, step '
                  f'{checkpointer.latest_step()}, is kept in {workdir}. Lower '
                  'train.learning_rate or check the data; --config.train.on_nonfinite=skip '
                  'skips such updates instead')
            if bad:
              progress.write(f'warning: non-finite loss or gradient at step(s) {bad}: '
                             'update(s) skipped')

          if log:
            scalars = {k: float(v) for k, v in step_metrics.items()}  # waits for the step
            elapsed = time.perf_counter() - window_start
            scalars['images_per_second'] = window_steps * config.train.batch_size / elapsed
            scalars['learning_rate'] = float(learning_rate(completed - 1))  # of this step
            progress.set_postfix(loss=f'{scalars["loss"]:.4f}',
                                 img_s=f'{scalars["images_per_second"]:.1f}')
            if logger:
              logger.write(completed, 'train', scalars)
            window_start, window_steps = time.perf_counter(), 0

          if validate:
            _, summary = evaluation.evaluate(predictor.predict(state.params, val_data.images),
                                             val_data, with_hd95=False)
            progress.write(f'step {completed}: validation {evaluation.dice_line(summary)}')
            if logger:
              logger.write(completed, 'val', _val_scalars(summary))
            if save:
              # Every process's stream is at the same position: process 0's state serves all.
              checkpointer.save(completed, state, summary, batches.get_state(), schedule,
                              budget.used_seconds if budget else 0.0)
            window_start, window_steps = time.perf_counter(), 0  # validation is not training time
          if stop:
            break
    except KeyboardInterrupt:
      # No new save (it could take long): the last complete checkpoint is what resumes.
      raise Stopped(f'interrupted (Ctrl-C) at step {completed}; '
                    f'{_resumes_from(checkpointer, workdir)}', signal.SIGINT) from None
  except BaseException:
    progress.close()
    if logger:  # the error being raised says what went wrong, not a failed close
      with contextlib.suppress(OSError):
        logger.close()
    raise
  progress.close()
  if logger:
    logger.close()
  checkpointer.close()
  if stop:
    raise Stopped(f'SIGTERM: saved the checkpoint of step {completed} in {workdir}; run the '
                  'same command again to resume from it', signal.SIGTERM)

  best = checkpointer.best_step()
  summary = checkpointer.summary(best)
  if budget:
    print(f'Time budget: {budget.used_seconds / 60:.2f} of {budget.seconds / 60:.2f} minutes '
          f'used, {num_steps} steps')
  print(f'Best checkpoint: step {best} of {num_steps} in {os.path.abspath(workdir)}')
  print(f'Final validation (best checkpoint, last iteration): {evaluation.dice_line(summary)}')
  return summary


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
