"""The training state built from a config: model, optimiser (AdamW on a warm-up +
cosine schedule, `config.train`) and initial parameters."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxseg.data import SegmentationData
from jaxseg.models import build_model


class TrainState(train_state.TrainState):
  """params, opt_state and step (number of completed updates)."""


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to train.learning_rate, then cosine decay to 1% of it."""
  if train_config.learning_rate <= 0:
    raise ValueError(f'train.learning_rate must be positive, got {train_config.learning_rate}')
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate,
      warmup_steps=min(train_config.warmup_steps, train_config.num_steps // 2),
      decay_steps=max(train_config.num_steps, 1), end_value=0.01 * train_config.learning_rate)


def make_optimiser(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW on the schedule above, after global-norm gradient clipping."""
  return optax.chain(optax.clip_by_global_norm(train_config.grad_clip),
                     optax.adamw(learning_rate_schedule(train_config),
                                 weight_decay=train_config.weight_decay))


def init_key(seed: int) -> jax.Array:
  """PRNG key for parameter initialisation.

  'rbg' rather than the default threefry: XLA:CPU takes seconds to compile each
  threefry sampler (about 5 s for one normal draw here), which dominated start-up.
  """
  return jax.random.key(seed, impl='rbg')


def create_train_state(model, optimiser, input_shape, seed: int) -> TrainState:
  params = model.init(init_key(seed), jnp.zeros(input_shape, jnp.float32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=optimiser)


def num_iterations(model_config: ml_collections.ConfigDict) -> int:
  return model_config.num_iterations if model_config.name == 'lstm_unet' else 1


def setup_model(config: ml_collections.ConfigDict, data: SegmentationData):
  """(model, init_state, abstract train state) for this config and data.

  `init_state()` builds the initial state; `abstract_state` is its shapes and dtypes.
  """
  model = build_model(config.model, num_outputs=len(data.regions))
  input_shape = (1, *config.data.image_size, len(data.channels))
  init_state = functools.partial(create_train_state, model, make_optimiser(config.train),
                                 input_shape, config.train.seed)
  return model, init_state, jax.eval_shape(init_state)
