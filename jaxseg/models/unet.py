"""U-Net for 2D and 3D inputs, with optional ConvLSTM cells at any level.

`UNetSettings` holds what every U-Net pass is built from (widths, normalisation,
dtypes, ...), read from `config.model` by key name; the U-Net and the LSTM-U-Net both
take one. `UNetBody` is one encoder-decoder pass. It carries the states of the ConvLSTM
cells placed in it (none for a plain U-Net), so the LSTM-U-Net reuses it unchanged as the
body of its refinement loop.

Level i works at resolution 1/2^i and width features[i]; the deepest level is the
bottleneck. ConvLSTM locations are named 'encoder{i}', 'bottleneck', 'decoder{i}'
with i in 0 .. len(features) - 2; a cell sits after that level's conv block.
"""

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg.errors import ConfigError
from jaxseg.models import layers
from jaxseg.models.backend import Ops, modules
from jaxseg.models.convlstm import Carry, ConvLSTMCell
from jaxseg.models.layers import ConvBlock, Upsample, downsample

Outputs = tuple[jax.Array, tuple[jax.Array, ...]]  # (logits, deep-supervision logits)


def lstm_locations(num_levels: int) -> list[str]:
  """All valid ConvLSTM locations of a U-Net with `num_levels` levels."""
  return ([f'encoder{i}' for i in range(num_levels - 1)] + ['bottleneck'] +
          [f'decoder{i}' for i in range(num_levels - 1)])


def location_level(location: str, num_levels: int) -> int:
  return num_levels - 1 if location == 'bottleneck' else int(location[len('encoder'):])


def check_input_shape(spatial: Sequence[int], num_levels: int,
                      what: str = 'input spatial shape') -> None:
  """2 or 3 sizes, each halving num_levels - 1 times; `what` names them in the message."""
  if len(spatial) not in (2, 3):
    raise ConfigError(f'{what} {tuple(spatial)}: need 2 sizes (2D) or 3 (3D), got '
                      f'{len(spatial)}')
  factor = 2**(num_levels - 1)
  if any(s % factor for s in spatial):
    raise ConfigError(f'{what} {tuple(spatial)} must be divisible by {factor} '
                     f'(2^(number of levels - 1)) for a U-Net with {num_levels} levels')


def check_lstm_locations(lstm_at: Sequence[str], num_levels: int) -> None:
  valid = lstm_locations(num_levels)
  for location in lstm_at:
    if location not in valid:
      raise ConfigError(f'model.lstm_at: unknown location {location!r}; valid ones are {valid}')


DTYPES = ('float32', 'bfloat16', 'float16')  # what model.dtype and model.param_dtype take


def _dtype(key: str, value) -> jnp.dtype:
  name = value if isinstance(value, str) else jnp.dtype(value).name
  if name not in DTYPES:
    raise ConfigError(f'model.{key}: unknown dtype {value!r}; choose one of {DTYPES}')
  return jnp.dtype(name)


@dataclasses.dataclass(frozen=True)
class UNetSettings:
  """The settings of one U-Net pass; each field is the `config.model` key of that name.

  Checked when built, so a bad value is refused before any file is written; the
  dtypes, given by name, are held as dtypes. What computes the layers is not a setting
  of the model: see `backend.Ops`.
  """
  features: tuple[int, ...] = (16, 32, 64, 128)
  num_outputs: int = 3
  norm: str = 'group'
  activation: str = 'relu'
  upsampling: str = 'transpose'
  deep_supervision: bool = False
  remat_levels: bool = False  # recompute each level's conv block and ConvLSTM cell
  dtype: Any = 'float32'  # a name in DTYPES, held as the dtype itself once built
  param_dtype: Any = 'float32'

  def __post_init__(self):
    object.__setattr__(self, 'features', tuple(self.features))  # JSON configs give lists
    if len(self.features) < 2:
      raise ConfigError(f'model.features: need at least 2 levels, got {self.features}')
    modules.check_norm(self.norm)
    modules.get_activation(self.activation)
    layers.check_upsampling(self.upsampling)
    for key in ('dtype', 'param_dtype'):  # config names -> the dtypes themselves
      object.__setattr__(self, key, _dtype(key, getattr(self, key)))

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict, num_outputs: int
                  ) -> 'UNetSettings':
    """The body settings of `config.model`, predicting `num_outputs` channels."""
    values = {field.name: model_config[field.name] for field in dataclasses.fields(cls)
              if field.name != 'num_outputs'}
    return cls(num_outputs=num_outputs, **values)


class UNetBody(nn.Module):
  """One U-Net pass: `(new_lstm_carry, (logits, aux_logits)) = body(lstm_carry, x)`.

  `lstm_carry` maps each location in `lstm_at` (valid ones, checked by LSTMUNet) to its
  ConvLSTM (c, h) state.
  `aux_logits` holds the deep-supervision heads of decoder levels 1, 2, ... (coarser
  resolutions), empty unless `settings.deep_supervision`. `ops` computes the layers.
  """
  settings: UNetSettings
  lstm_at: Sequence[str] = ()
  ops: Ops = Ops()

  def _bound(self, constructor, dtype=None):
    s = self.settings
    return functools.partial(constructor, dtype=dtype or s.dtype, param_dtype=s.param_dtype)

  def _block(self, features, name):
    s = self.settings
    block = nn.remat(ConvBlock) if s.remat_levels else ConvBlock
    return block(features, self._bound(self.ops.conv), self._bound(self.ops.norm_act),
                 s.norm, s.activation, name=name)

  def _maybe_lstm(self, location, x, carry, new_carry):
    if location not in self.lstm_at:
      return x
    s = self.settings
    level = location_level(location, len(s.features))
    cell_class = nn.remat(ConvLSTMCell) if s.remat_levels else ConvLSTMCell
    cell = cell_class(s.features[level], self._bound(self.ops.conv), name=f'lstm_{location}')
    new_carry[location], x = cell(carry[location], x)
    return x

  def _head(self, x, name):
    return self._bound(self.ops.dense, jnp.float32)(self.settings.num_outputs, name=name)(x)

  @nn.compact
  def __call__(self, carry: dict[str, Carry], x: jax.Array):
    s = self.settings
    num_levels = len(s.features)
    check_input_shape(x.shape[1:-1], num_levels)
    x = x.astype(s.dtype)
    new_carry: dict[str, Carry] = {}
    skips = []
    for level in range(num_levels - 1):
      x = self._block(s.features[level], f'encoder{level}')(x)
      x = self._maybe_lstm(f'encoder{level}', x, carry, new_carry)
      skips.append(x)
      x = downsample(x)
    x = self._block(s.features[-1], 'bottleneck')(x)
    x = self._maybe_lstm('bottleneck', x, carry, new_carry)
    aux = []
    for level in reversed(range(num_levels - 1)):
      x = Upsample(s.features[level], self._bound(self.ops.dense), s.upsampling,
                   s.param_dtype, name=f'upsample{level}')(x)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = self._block(s.features[level], f'decoder{level}')(x)
      x = self._maybe_lstm(f'decoder{level}', x, carry, new_carry)
      if s.deep_supervision and level > 0:
        aux.append(self._head(x, f'aux_head{level}'))
    logits = self._head(x, 'head')
    return new_carry, (logits, tuple(reversed(aux)))


class UNet(nn.Module):
  """Plain U-Net. Returns (logits, aux) with a leading iteration axis of length 1,
  the same output structure as the LSTM-U-Net, so losses and metrics treat both alike.
  """
  settings: UNetSettings = UNetSettings()
  ops: Ops = Ops()

  @nn.compact
  def __call__(self, x: jax.Array) -> Outputs:
    _, (logits, aux) = UNetBody(self.settings, ops=self.ops, name='body')({}, x)
    return logits[None], tuple(a[None] for a in aux)
