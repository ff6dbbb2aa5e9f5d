"""Training: state creation, the jit-compiled train step, and the training loop.

`train_step` is a pure function of (state, batch); everything with side effects
(data loading, logging, checkpoints, progress) lives in `train_and_evaluate`.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax
from tqdm import tqdm

from jaxseg import (augment, checkpointing, evaluation, inference, losses, parallel,
                    preemption)
from jaxseg.data import load_splits, split_ids, splits, train_batches, train_iterator
from jaxseg.logs import MetricLogger
from jaxseg.models import build_model
from jaxseg.train_state import (TrainState, init_key, learning_rate_schedule, num_iterations,
                                restore_train_state, setup_model)


def train_step(state: TrainState, batch: dict, iteration_weights: jax.Array,
               dice_weight: float, ce_weight: float, augment_config=None,
               augment_key: jax.Array | None = None, microbatches: int = 1):
  """One optimiser update. Returns (new state, scalar metrics of this step).

  With `microbatches` = k > 1 the batch is split into k parts whose gradients are
  computed one after the other (a scan) and averaged: the activations of only one part
  are alive at a time. The Dice term is then pooled per part rather than per batch.

  With `augment_config.enabled`, the batch is augmented first (augment.py), with a key
  that depends only on `augment_key` and the step, so a resumed run augments alike.
  A non-finite loss or gradient leaves parameters and optimiser state as they were
  (metrics['finite'] is then False; the training loop decides what happens next).
  """
  images, targets = batch['image'], batch['target'].astype(jnp.float32)
  if augment_config is not None and augment_config.enabled:
    images, targets = augment.augment_batch(jax.random.fold_in(augment_key, state.step),
                                            images, targets, augment_config)

  def loss_fn(params, images, targets):
    logits, aux = state.apply_fn({'params': params}, images)
    return losses.total_loss(logits, aux, targets, iteration_weights, dice_weight, ce_weight)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (loss, per_iteration), grads = grad_fn(state.params, images, targets)
  else:
    # Part m holds rows m, m + k, ...: the sharded batch axis stays whole on each device.
    def split(x):
      return x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)

    def accumulate(total, part):
      out = grad_fn(state.params, *part)
      return jax.tree.map(jnp.add, total, out), None
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params, split(images)[0],
                                                         split(targets)[0]))
    total, _ = jax.lax.scan(accumulate, zeros, (split(images), split(targets)))
    (loss, per_iteration), grads = jax.tree.map(lambda x: x / microbatches, total)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads)}
  for t in range(per_iteration.shape[0]):
    metrics[f'loss_iteration{t + 1}'] = per_iteration[t]
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
  updated = state.apply_gradients(grads=grads)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
  metrics['finite'] = finite
  return updated.replace(params=keep(updated.params, state.params),
                         opt_state=keep(updated.opt_state, state.opt_state)), metrics


class NonFiniteError(ValueError):
  """A non-finite loss or gradient stopped training; the message names the step."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks of values whose mistakes would otherwise surface deep inside JAX, or after
  the workdir has been written to."""
  build_model(config.model, num_outputs=1)  # unknown names and dtypes of config.model
  for key in ('train.num_steps', 'train.batch_size', 'eval.batch_size', 'eval.every_steps',
              'checkpoint.every_steps', 'train.log_every_steps'):
    section, name = key.split('.')
    if config[section][name] < 1:
      raise ValueError(f'{key} must be at least 1, got {config[section][name]}')
  parallel.check_batch_size(config.train.batch_size, 'train.batch_size')
  k = config.train.microbatches
  if k < 1 or config.train.batch_size % (k * jax.device_count()):
    raise ValueError(f'train.microbatches={k}: train.batch_size={config.train.batch_size} must '
                     f'be a multiple of microbatches x devices ({k} x {jax.device_count()})')
  parallel.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  augment.check_config(config.augment)
  inference.check_mirror_axes(tuple(config.eval.mirror_axes), len(config.data.image_size))
  if not 0 <= config.eval.overlap < 1:
    raise ValueError(f'eval.overlap must be in [0, 1), got {config.eval.overlap}')
  if config.train.on_nonfinite not in ('stop', 'skip'):
    raise ValueError(f"train.on_nonfinite must be 'stop' or 'skip', got "
                     f'{config.train.on_nonfinite!r}')
  if config.data.num_workers < 0 or config.data.prefetch < 1:
    raise ValueError(f'data.num_workers must be >= 0 and data.prefetch >= 1, got '
                     f'{config.data.num_workers} and {config.data.prefetch}')
  if (config.data.preprocess_workers or 0) < 0:
    raise ValueError(f'data.preprocess_workers must be >= 0, got '
                     f'{config.data.preprocess_workers}')
  if not 0 <= config.data.foreground_fraction <= 1:
    raise ValueError('data.foreground_fraction must be in [0, 1], got '
                     f'{config.data.foreground_fraction}')
  factor = 2**(len(config.model.features) - 1)
  if any(size % factor for size in config.data.image_size):
    raise ValueError(f'data.image_size {tuple(config.data.image_size)} must be divisible by '
                     f'{factor}, 2^(levels - 1) for model.features {tuple(config.model.features)}')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the validation summary of the best checkpoint."""
  validate_config(config)
  weights = losses.iteration_weights(num_iterations(config.model),
                                     tuple(config.loss.iteration_weights))
  data = load_splits(config.data)  # bad data stops the run before the workdir is touched
  train_data, val_data = data['train'], data['val']
  checkpointing.prepare_workdir(workdir)
  checkpointer = checkpointing.Checkpointer(workdir)
  if checkpointer.latest_step() is not None:
    checkpointing.check_same_model(workdir, config)
  primary = jax.process_index() == 0  # files shared by all processes: written by one
  if primary:
    splits.record(workdir, split_ids(data))
  model, init_state, abstract_state = setup_model(config, train_data)
  checkpointing.check_free_space(workdir, abstract_state)
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)

  data_state = None
  if checkpointer.latest_step() is not None:
    state, _ = restore_train_state(checkpointer, checkpointer.latest_step(), abstract_state,
                                   replicated)
    data_state = checkpointer.data_state(checkpointer.latest_step())
    print(f'Resuming from step {int(state.step)} in {workdir}')
  else:
    state = jax.jit(init_state, out_shardings=replicated)()
  if primary:
    checkpointing.write_config(workdir, config)  # the config this run continues with
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f'{config.model.name}: {num_params:,} parameters; {len(train_data)} training and '
        f'{len(val_data)} validation cases, training on {tuple(config.data.image_size)} '
        f'windows; {jax.device_count()} {jax.devices()[0].platform} device(s)')

  step_fn = jax.jit(functools.partial(
      train_step, iteration_weights=weights, dice_weight=config.loss.dice_weight,
      ce_weight=config.loss.ce_weight, augment_config=config.augment,
      microbatches=config.train.microbatches,
      augment_key=jax.random.fold_in(init_key(config.train.seed), 1)), donate_argnums=0)
  logits_fn = inference.make_logits_fn(model, mesh, tuple(config.eval.mirror_axes))
  batches = train_iterator(
      train_batches(train_data, config, jax.process_index(), jax.process_count()),
      config.data.num_workers if config.data.root else 0, config.data.prefetch, data_state)
  schedule = learning_rate_schedule(config.train)
  logger = MetricLogger(workdir) if primary else None

  start_step, num_steps = int(state.step), config.train.num_steps
  progress = tqdm(total=num_steps, initial=start_step, desc='train', unit='step',
                  dynamic_ncols=True, disable=jax.process_index() != 0)
  window_start, window_steps = time.perf_counter(), 0
  unchecked = []  # (step, device flag 'loss and gradient finite'), checked in batches
  with preemption.SigtermRequest() as sigterm:
    for step in range(start_step, num_steps):
      batch = parallel.shard_batch(next(batches), mesh)
      state, step_metrics = step_fn(state, batch)
      completed = step + 1
      window_steps += 1
      progress.update(1)
      unchecked.append((completed, step_metrics.pop('finite')))

      # Read once: a SIGTERM that arrives while this step is logged or validated is
      # acted on (saved, then stopped) at the next step, never stopped on unsaved.
      stop = sigterm.requested
      save = completed % config.checkpoint.every_steps == 0 or completed == num_steps or stop
      log = completed % config.train.log_every_steps == 0 or completed == num_steps
      validate = save or completed % config.eval.every_steps == 0
      if log or validate:  # checked before anything is logged or saved
        bad = [s for s, finite in unchecked if not bool(finite)]
        unchecked.clear()
        if bad and config.train.on_nonfinite == 'stop':
          progress.close()
          checkpointer.close()  # pending saves complete: the last good checkpoint is kept
          raise NonFiniteError(
              f'step {bad[0]}: non-finite loss or gradient; its update was not applied and '
              f'training stopped. The last good checkpoint, step {checkpointer.latest_step()}, '
              f'is kept in {workdir}. Lower train.learning_rate or check the data; '
              '--config.train.on_nonfinite=skip skips such updates instead')
        if bad:
          progress.write(f'warning: non-finite loss or gradient at step(s) {bad}: '
                         'update(s) skipped')

      if log:
        scalars = {k: float(v) for k, v in step_metrics.items()}  # waits for the step
        elapsed = time.perf_counter() - window_start
        scalars['images_per_second'] = window_steps * config.train.batch_size / elapsed
        scalars['learning_rate'] = float(schedule(completed))
        progress.set_postfix(loss=f'{scalars["loss"]:.4f}',
                             img_s=f'{scalars["images_per_second"]:.1f}')
        if logger:
          logger.write(completed, 'train', scalars)
        window_start, window_steps = time.perf_counter(), 0

      if validate:
        _, summary = evaluation.evaluate(logits_fn, state.params, val_data, config.eval,
                                         config.data.image_size, mesh, with_hd95=False)
        progress.write(f'step {completed}: validation {evaluation.dice_line(summary)}')
        if logger:
          logger.write(completed, 'val', _val_scalars(summary))
        if save:
          # Every process's stream is at the same position: process 0's state serves all.
          checkpointer.save(completed, state, summary, batches.get_state())
        window_start, window_steps = time.perf_counter(), 0  # validation is not training time
      if stop:
        progress.write(f'SIGTERM: saved the checkpoint of step {completed}; run the same '
                       'command again to resume from it')
        break
  progress.close()
  checkpointer.close()
  if logger:
    logger.close()

  best = checkpointer.best_step()
  summary = checkpointer.summary(best)
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
