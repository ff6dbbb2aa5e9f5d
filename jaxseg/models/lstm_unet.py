"""Hybrid LSTM-U-Net: a U-Net with ConvLSTM cells, refined over T feedback iterations.

Iteration t sees the image concatenated with sigmoid(logits of iteration t-1) (zeros
at t = 0); the ConvLSTM states carry over from one iteration to the next. The loop is
unrolled with `nn.scan`, with the parameters broadcast (shared by every iteration), so
the parameter count does not depend on T and gradients flow back through all
iterations, through both the LSTM states and the fed-back prediction.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backend import Ops
from jaxseg.models.convlstm import Carry, ConvLSTMCell
from jaxseg.models.unet import (Outputs, UNetBody, UNetSettings, check_lstm_locations,
                                location_level)


class RefinementStep(nn.Module):
  """One feedback iteration: image + previous prediction -> new prediction."""
  body: UNetBody

  @nn.compact
  def __call__(self, state: tuple[dict[str, Carry], jax.Array], image: jax.Array):
    lstm_carry, previous_probs = state
    body_input = jnp.concatenate([image, previous_probs.astype(image.dtype)], axis=-1)
    lstm_carry, (logits, aux) = self.body(lstm_carry, body_input)
    return (lstm_carry, jax.nn.sigmoid(logits)), (logits, aux)


class LSTMUNet(nn.Module):
  """Returns (logits, aux): logits (T, B, *spatial, num_outputs), one per iteration.

  `settings` are those of the U-Net body and `ops` what computes its layers; the other
  fields (`config.model` keys of the same names) are the loop's.
  """
  settings: UNetSettings = UNetSettings()
  ops: Ops = Ops()
  num_iterations: int = 3
  lstm_at: Sequence[str] = ('bottleneck',)
  remat: bool = False
  unroll: bool = True  # False: a rolled loop, faster to compile, much slower on XLA:CPU

  def __post_init__(self):
    # At construction: build_model refuses bad values before any file is written.
    if self.num_iterations < 1:
      raise ConfigError(f'model.num_iterations must be at least 1, got {self.num_iterations}')
    check_lstm_locations(self.lstm_at, len(self.settings.features))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> Outputs:
    features, num_outputs = self.settings.features, self.settings.num_outputs
    num_levels = len(features)
    batch, *spatial, _ = x.shape
    lstm_carry = {}
    for location in self.lstm_at:
      level = location_level(location, num_levels)
      shape = (batch, *(s // 2**level for s in spatial))
      lstm_carry[location] = ConvLSTMCell.initialize_carry(shape, features[level])
    previous_probs = jnp.zeros((batch, *spatial, num_outputs), jnp.float32)

    body = UNetBody(self.settings, tuple(self.lstm_at), self.ops, parent=None)
    # remat: recompute each iteration's activations in the backward pass, so the
    # activation memory of training no longer grows with T.
    step = nn.remat(RefinementStep) if self.remat else RefinementStep
    state = (lstm_carry, previous_probs)
    if self.num_iterations == 1 and self.unroll:
      # A length-1 scan still compiles to a while loop (see below); call the step
      # directly. The parameter tree is the same as with the scan.
      _, (logits, aux) = step(body, name='refine')(state, x)
      return logits[None], tuple(a[None] for a in aux)
    # Fully unrolled: XLA:CPU runs convolutions inside a while loop far slower than the
    # same convolutions unrolled (BENCHMARKS.md); T is small, so unrolling
    # costs only compile time.
    refine = nn.scan(step, variable_broadcast='params',
                     split_rngs={'params': False}, in_axes=nn.broadcast, out_axes=0,
                     length=self.num_iterations, unroll=self.unroll or 1)
    _, (logits, aux) = refine(body, name='refine')(state, x)
    return logits, aux
