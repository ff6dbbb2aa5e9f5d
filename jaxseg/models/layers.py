"""Building blocks shared by the U-Net and the LSTM-U-Net, for any spatial rank.

Arrays are channels-last: (batch, *spatial, channels). The spatial rank (2 or 3)
is read from the input, so one module builds both 2D and 3D networks.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'leaky_relu': lambda x: nn.leaky_relu(x, negative_slope=0.01),  # nnU-Net's choice
    'gelu': nn.gelu,
    'silu': nn.silu,
}

# Batch norm is left out on purpose: 3D segmentation trains with a batch of 2 per
# device, where batch statistics are noise (nnU-Net uses instance norm for that reason).
NORMS = ('group', 'instance', 'layer', 'none')
UPSAMPLINGS = ('transpose', 'resize')


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f'model.activation: unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


class Norm(nn.Module):
  """Normalisation over the spatial axes, chosen by name."""
  kind: str = 'group'
  num_groups: int = 8
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    if self.kind == 'none':
      return x
    if self.kind == 'group':
      groups = min(self.num_groups, features)
      while features % groups:  # largest divisor of the width not above num_groups
        groups -= 1
    elif self.kind == 'instance':
      groups = features
    elif self.kind == 'layer':
      groups = 1
    else:
      raise ValueError(f'model.norm: unknown normalisation {self.kind!r}; choose one of {NORMS}')
    return nn.GroupNorm(num_groups=groups, dtype=self.dtype, param_dtype=self.param_dtype)(x)


class ConvBlock(nn.Module):
  """Two (conv -> norm -> activation) layers with 3^d kernels: one U-Net level."""
  features: int
  norm: str = 'group'
  activation: str = 'relu'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    ndim = x.ndim - 2
    act = get_activation(self.activation)
    for _ in range(2):
      x = nn.Conv(self.features, (3,) * ndim, padding='SAME', dtype=self.dtype,
                  param_dtype=self.param_dtype, use_bias=self.norm == 'none')(x)
      x = act(Norm(self.norm, dtype=self.dtype, param_dtype=self.param_dtype)(x))
    return x


def downsample(x: jax.Array) -> jax.Array:
  """2x max pooling along every spatial axis."""
  ndim = x.ndim - 2
  return nn.max_pool(x, (2,) * ndim, strides=(2,) * ndim)


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
  """2x upsampling to `features` channels.

  'transpose' is a transposed convolution with kernel 2 and stride 2. Its windows do
  not overlap, so it equals a per-voxel dense layer to 2^d * features channels
  followed by depth_to_space; we compute it that way because the gradient of
  nn.ConvTranspose is very slow on XLA:CPU (see BENCHMARKS.md) while a dense layer
  is one matrix multiplication. 'resize' is linear interpolation then a 1^d conv.
  """
  features: int
  method: str = 'transpose'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    ndim = x.ndim - 2
    if self.method == 'transpose':
      x = nn.Dense(2**ndim * self.features, use_bias=False, dtype=self.dtype,
                   param_dtype=self.param_dtype, name='kernel')(x)
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), self.param_dtype)
      return depth_to_space(x, 2) + bias.astype(x.dtype)
    if self.method == 'resize':
      batch, *spatial, channels = x.shape
      x = jax.image.resize(x, (batch, *(2 * s for s in spatial), channels), 'linear')
      return nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype)(x)
    raise ValueError(f'model.upsampling: unknown method {self.method!r}; choose one of {UPSAMPLINGS}')
