"""Building blocks shared by the U-Net and the LSTM-U-Net, for any spatial rank.

Arrays are channels-last: (batch, *spatial, channels). The spatial rank (2 or 3)
is read from the input, so one module builds both 2D and 3D networks. Blocks with
parameters take the module constructors `conv`, `dense` and `norm_act` of a
`backend.Ops`, so whatever computes them, a new block gets it too.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError

ModuleDef = Any

UPSAMPLINGS = ('transpose', 'resize')


def check_upsampling(method: str) -> None:
  if method not in UPSAMPLINGS:
    raise ConfigError(f'model.upsampling: unknown method {method!r}; choose one of {UPSAMPLINGS}')


class ConvBlock(nn.Module):
  """Two (conv -> norm -> activation) layers with 3^d kernels: one U-Net level.

  `conv` and `norm_act` are module constructors with the dtypes already bound.
  """
  features: int
  conv: ModuleDef
  norm_act: ModuleDef
  norm: str = 'group'
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x):
    for i in range(2):
      x = self.conv(self.features, 3, use_bias=self.norm == 'none', name=f'Conv_{i}')(x)
      x = self.norm_act(self.norm, activation=self.activation, name=f'Norm_{i}')(x)
    return x


def downsample(x: jax.Array) -> jax.Array:
  """2x max pooling along every spatial axis.

  Written as a reshape and a max over the 2^d window axes, not nn.max_pool: XLA
  differentiates reduce-window pooling through an argmax reduce-window over index
  arrays, which dominated the 2D train step on XLA:CPU (BENCHMARKS.md). The forward
  values are identical; gradients differ only for ties inside a window, which the
  plain max splits evenly instead of sending to one element.
  """
  batch, *spatial, channels = x.shape
  ndim = len(spatial)
  windows = [d for s in spatial for d in (s // 2, 2)]
  x = x.reshape(batch, *windows, channels)
  return x.max(axis=tuple(range(2, 2 * ndim + 1, 2)))


def depth_to_space(x: jax.Array, factor: int = 2) -> jax.Array:
  """(B, *S, f^d * C) -> (B, *(f*S), C): the inverse of a space-to-depth fold."""
  batch, *spatial, channels = x.shape
  ndim = len(spatial)
  out_channels = channels // factor**ndim
  x = x.reshape(batch, *spatial, *(factor,) * ndim, out_channels)
  # Interleave each spatial axis with its factor axis: (B, s0, f0, s1, f1, ..., C).
  order = [0]
  for axis in range(ndim):
    order += [1 + axis, 1 + ndim + axis]
  x = x.transpose(*order, 2 * ndim + 1)
  return x.reshape(batch, *(s * factor for s in spatial), out_channels)


class Upsample(nn.Module):
  """2x upsampling to `features` channels; `dense` a module constructor with the dtypes
  bound, `param_dtype` the bias's.

  'transpose' is a transposed convolution with kernel 2 and stride 2. Its windows do
  not overlap, so it equals a per-voxel dense layer to 2^d * features channels
  followed by depth_to_space; we compute it that way because the gradient of
  nn.ConvTranspose is very slow on XLA:CPU (BENCHMARKS.md) while a dense layer is one
  matrix multiplication. 'resize' is linear interpolation then a 1^d conv.
  """
  features: int
  dense: ModuleDef
  method: str = 'transpose'
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    check_upsampling(self.method)
    ndim = x.ndim - 2
    if self.method == 'transpose':
      x = self.dense(2**ndim * self.features, use_bias=False, name='kernel')(x)
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,),
                        self.param_dtype)
      return depth_to_space(x, 2) + bias.astype(x.dtype)
    batch, *spatial, channels = x.shape  # 'resize'
    x = jax.image.resize(x, (batch, *(2 * s for s in spatial), channels), 'linear')
    return self.dense(self.features, name='Dense_0')(x)
