"""The training state built from a config: model, optimiser (AdamW on a warm-up +
cosine schedule, `config.train`) and initial parameters."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxseg.data import SegmentationData
from jaxseg.errors import ConfigError
from jaxseg.models import build_model


class TrainState(train_state.TrainState):
  """params, opt_state and step (number of completed updates)."""


# The config keys that shape the schedule; a restart that changes one starts a new segment.
_SCHEDULE_KEYS = ('num_steps', 'learning_rate', 'warmup_steps')


def schedule_segments(train_config: ml_collections.ConfigDict, saved: list[dict] | None = None,
                      step: int = 0) -> list[dict]:
  """The schedule of a run resumed at `step`: the segments it was saved with, and a new
  one from `step` if train.num_steps, learning_rate or warmup_steps changed since.

  Each segment is {'from_step', 'num_steps', 'learning_rate', 'warmup_steps'}. Only
  restarts during the first warm-up start the schedule over (nothing to keep yet).
  """
  current = {key: train_config[key] for key in _SCHEDULE_KEYS}
  if not saved:
    return [{'from_step': 0, **current}]
  last = saved[-1]
  if all(last[key] == value for key, value in current.items()):
    return saved
  if len(saved) == 1 and step < _warmup(last):
    return [{'from_step': 0, **current}]
  return [*saved, {'from_step': step, **current}]


def _warmup(segment: dict) -> int:
  return min(segment['warmup_steps'], segment['num_steps'] // 2)


def learning_rate_schedule(train_config: ml_collections.ConfigDict,
                           segments: list[dict] | None = None) -> optax.Schedule:
  """Linear warm-up to train.learning_rate, then cosine decay to 1% of it at
  train.num_steps.

  A run extended or shortened on a restart (`segments`, see schedule_segments) keeps
  the rates it has trained with: from the restart step the rate goes on from where it
  was, by a cosine to 1% of train.learning_rate at the new train.num_steps. No jump.
  """
  if train_config.learning_rate <= 0:
    raise ConfigError(f'train.learning_rate must be positive, got {train_config.learning_rate}')
  segments = segments or schedule_segments(train_config)
  first = segments[0]
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=first['learning_rate'], warmup_steps=_warmup(first),
      decay_steps=max(first['num_steps'], 1), end_value=0.01 * first['learning_rate'])
  for segment in segments[1:]:
    start = segment['from_step']
    schedule = optax.join_schedules(
        [schedule, _cosine_from(float(schedule(start)), 0.01 * segment['learning_rate'],
                                segment['num_steps'] - start)], [start])
  return schedule


def _cosine_from(start_value: float, end_value: float, length: int) -> optax.Schedule:
  """Cosine from `start_value` (count 0) to `end_value` (count `length` and after)."""
  def schedule(count):
    progress = jnp.clip(count / max(length, 1), 0.0, 1.0)
    return end_value + (start_value - end_value) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
  return schedule


def make_optimiser(train_config: ml_collections.ConfigDict,
                   segments: list[dict] | None = None) -> optax.GradientTransformation:
  """AdamW on the schedule above, after global-norm gradient clipping."""
  return optax.chain(optax.clip_by_global_norm(train_config.grad_clip),
                     optax.adamw(learning_rate_schedule(train_config, segments),
                                 weight_decay=train_config.weight_decay))


def init_key(seed: int) -> jax.Array:
  """PRNG key for parameter initialisation.

  'rbg' rather than the default threefry: XLA:CPU compiles each threefry sampler so
  slowly that it dominated start-up (BENCHMARKS.md).
  """
  return jax.random.key(seed, impl='rbg')


def create_train_state(model, optimiser, input_shape, seed: int) -> TrainState:
  params = model.init(init_key(seed), jnp.zeros(input_shape, jnp.float32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=optimiser)


def setup_model(config: ml_collections.ConfigDict, data: SegmentationData):
  """(model, init_state, abstract train state) for this config and data.

  `init_state()` builds the initial state; `abstract_state` is its shapes and dtypes.
  """
  model = build_model(config.model, len(data.regions), config.compute)
  return (model, *initial_state(config, model, len(data.channels)))


def initial_state(config: ml_collections.ConfigDict, model, num_channels: int):
  """(init_state, abstract train state) of `model` built from this config, for images
  of `num_channels` channels."""
  input_shape = (1, *config.data.image_size, num_channels)
  init_state = functools.partial(create_train_state, model, make_optimiser(config.train),
                                 input_shape, config.train.seed)
  return init_state, jax.eval_shape(init_state)
