"""The train step: one optimiser update, and `make_train_step`, the one place it is built.

`train_step` is a pure function of (state, batch) and of keyword-only settings.
`make_train_step(config)` binds those settings from `config.loss`, `config.augment`
and `config.train` and jit-compiles the result; train.py, the benchmarks and the tests
all get their step from it, so what is measured is what is trained.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxseg import augment, losses, parallel
from jaxseg.errors import ConfigError
from jaxseg.models import registry
from jaxseg.train_state import TrainState, init_key


def train_step(state: TrainState, batch: dict, *, iteration_weights: jax.Array,
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


def check_batch(train_config: ml_collections.ConfigDict) -> None:
  """train.batch_size: split over every device, and into train.microbatches parts."""
  k, batch_size = train_config.microbatches, train_config.batch_size
  if batch_size < 1:
    raise ConfigError(f'train.batch_size must be at least 1, got {batch_size}')
  parallel.check_batch_size(batch_size, 'train.batch_size')
  if k < 1 or batch_size % (k * jax.device_count()):
    raise ConfigError(f'train.microbatches={k}: train.batch_size={batch_size} must be a '
                     f'multiple of microbatches x devices ({k} x {jax.device_count()})')


def make_train_step(config: ml_collections.ConfigDict):
  """`step(state, batch) -> (state, metrics)`, jit-compiled, the state donated: the
  step train.py runs for this config (loss weights, augmentation and its key,
  micro-batches). The state passed in is consumed; use the one returned."""
  check_batch(config.train)
  augment.check_config(config.augment)
  weights = losses.iteration_weights(registry.num_iterations(config.model),
                                     tuple(config.loss.iteration_weights))
  step = functools.partial(
      train_step, iteration_weights=weights, dice_weight=config.loss.dice_weight,
      ce_weight=config.loss.ce_weight, augment_config=config.augment,
      augment_key=jax.random.fold_in(init_key(config.train.seed), 1),
      microbatches=config.train.microbatches)
  return jax.jit(step, donate_argnums=0)
