"""U-Net for 2D and 3D inputs, with optional ConvLSTM cells at any level.

`UNetBody` is one encoder-decoder pass. It carries the states of the ConvLSTM cells
placed in it (none for a plain U-Net), so the LSTM-U-Net reuses it unchanged as the
body of its refinement loop.

Level i works at resolution 1/2^i and width features[i]; the deepest level is the
bottleneck. ConvLSTM locations are named 'encoder{i}', 'bottleneck', 'decoder{i}'
with i in 0 .. len(features) - 2; a cell sits after that level's conv block.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.convlstm import Carry, ConvLSTMCell
from jaxseg.models.layers import ConvBlock, Upsample, downsample

Dtype = Any
Outputs = tuple[jax.Array, tuple[jax.Array, ...]]  # (logits, deep-supervision logits)


def lstm_locations(num_levels: int) -> list[str]:
  """All valid ConvLSTM locations of a U-Net with `num_levels` levels."""
  return ([f'encoder{i}' for i in range(num_levels - 1)] + ['bottleneck'] +
          [f'decoder{i}' for i in range(num_levels - 1)])


def location_level(location: str, num_levels: int) -> int:
  return num_levels - 1 if location == 'bottleneck' else int(location[len('encoder'):])


def check_input_shape(spatial: Sequence[int], num_levels: int) -> None:
  factor = 2**(num_levels - 1)
  if any(s % factor for s in spatial):
    raise ValueError(f'input spatial shape {tuple(spatial)} must be divisible by {factor} '
                     f'(2^(number of levels - 1)) for a U-Net with {num_levels} levels')


def check_lstm_locations(lstm_at: Sequence[str], num_levels: int) -> None:
  valid = lstm_locations(num_levels)
  for location in lstm_at:
    if location not in valid:
      raise ValueError(f'model.lstm_at: unknown location {location!r}; valid ones are {valid}')


class UNetBody(nn.Module):
  """One U-Net pass: `(new_lstm_carry, (logits, aux_logits)) = body(lstm_carry, x)`.

  `lstm_carry` maps each location in `lstm_at` to its ConvLSTM (c, h) state.
  `aux_logits` holds the deep-supervision heads of decoder levels 1, 2, ... (coarser
  resolutions), empty unless `deep_supervision`.
  """
  features: Sequence[int]
  num_outputs: int
  norm: str = 'group'
  activation: str = 'relu'
  upsampling: str = 'transpose'
  deep_supervision: bool = False
  lstm_at: Sequence[str] = ()
  conv3d: str = 'native'
  remat_levels: bool = False  # recompute each level's conv block and ConvLSTM cell
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _block(self, features, name):
    block = nn.remat(ConvBlock) if self.remat_levels else ConvBlock
    return block(features, self.norm, self.activation, self.conv3d, self.dtype,
                 self.param_dtype, name=name)

  def _maybe_lstm(self, location, x, carry, new_carry):
    if location not in self.lstm_at:
      return x
    level = location_level(location, len(self.features))
    cell_class = nn.remat(ConvLSTMCell) if self.remat_levels else ConvLSTMCell
    cell = cell_class(self.features[level], conv3d=self.conv3d, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=f'lstm_{location}')
    new_carry[location], x = cell(carry[location], x)
    return x

  def _head(self, x, name):
    return nn.Dense(self.num_outputs, dtype=jnp.float32, param_dtype=self.param_dtype,
                    name=name)(x).astype(jnp.float32)

  @nn.compact
  def __call__(self, carry: dict[str, Carry], x: jax.Array):
    num_levels = len(self.features)
    check_lstm_locations(self.lstm_at, num_levels)
    check_input_shape(x.shape[1:-1], num_levels)
    x = x.astype(self.dtype)
    new_carry: dict[str, Carry] = {}
    skips = []
    for level in range(num_levels - 1):
      x = self._block(self.features[level], f'encoder{level}')(x)
      x = self._maybe_lstm(f'encoder{level}', x, carry, new_carry)
      skips.append(x)
      x = downsample(x)
    x = self._block(self.features[-1], 'bottleneck')(x)
    x = self._maybe_lstm('bottleneck', x, carry, new_carry)
    aux = []
    for level in reversed(range(num_levels - 1)):
      x = Upsample(self.features[level], self.upsampling, self.dtype, self.param_dtype,
                   name=f'upsample{level}')(x)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = self._block(self.features[level], f'decoder{level}')(x)
      x = self._maybe_lstm(f'decoder{level}', x, carry, new_carry)
      if self.deep_supervision and level > 0:
        aux.append(self._head(x, f'aux_head{level}'))
    logits = self._head(x, 'head')
    return new_carry, (logits, tuple(reversed(aux)))


class UNet(nn.Module):
  """Plain U-Net. Returns (logits, aux) with a leading iteration axis of length 1,
  the same output structure as the LSTM-U-Net, so losses and metrics treat both alike.
  """
  features: Sequence[int] = (16, 32, 64, 128)
  num_outputs: int = 3
  norm: str = 'group'
  activation: str = 'relu'
  upsampling: str = 'transpose'
  deep_supervision: bool = False
  conv3d: str = 'native'
  remat_levels: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> Outputs:
    body = UNetBody(self.features, self.num_outputs, self.norm, self.activation,
                    self.upsampling, self.deep_supervision, (), self.conv3d,
                    self.remat_levels, self.dtype, self.param_dtype, name='body')
    _, (logits, aux) = body({}, x)
    return logits[None], tuple(a[None] for a in aux)
