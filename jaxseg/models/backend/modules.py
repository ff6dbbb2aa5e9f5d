"""The modules whose arithmetic a backend chooses: convolution, dense layer, norm +
activation.

Each has the parameters (names, shapes, initial values) of its flax counterpart
whatever computes it, so a checkpoint does not depend on the backend. The function
that computes it is an attribute, set by `backend.Ops`; the model code only calls the
constructors it is handed.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.models.backend import fused_norm, xla

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


class Conv(nn.Module):
  """'SAME' convolution with stride 1 and a k^d kernel: nn.Conv's parameters and values,
  computed by `convolve(x, kernel)`."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  bias_init: Callable = nn.initializers.zeros_init()
  convolve: xla.ConvFunction = xla.conv

  @nn.compact
  def __call__(self, x):
    ndim = x.ndim - 2
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size,) * ndim + (x.shape[-1], self.features),
                        self.param_dtype)
    y = self.convolve(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Dense(nn.Module):
  """nn.Dense over the last axis, with its parameters, the product computed by
  `product(x, kernel)`."""
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  product: Callable[[jax.Array, jax.Array], jax.Array] = xla.pointwise

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features), self.param_dtype)
    y = self.product(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros_init(), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ConfigError(f'model.activation: unknown activation {name!r}; choose one of '
                      f'{sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


def check_norm(kind: str) -> None:
  if kind not in NORMS:
    raise ConfigError(f'model.norm: unknown normalisation {kind!r}; choose one of {NORMS}')


def num_groups(kind: str, features: int, groups: int) -> int:
  """Groups of a `kind` norm over `features` channels: group norm takes the largest
  divisor of the width not above `groups`, instance norm one per channel, layer norm one."""
  if kind == 'instance':
    return features
  if kind == 'layer':
    return 1
  groups = min(groups, features)
  while features % groups:
    groups -= 1
  return groups


class NormAct(nn.Module):
  """Normalisation over the spatial axes (`kind` in NORMS), then `activation` (if any).

  `fused`: computed by jaxseg's fused CPU kernel where it supports the input and the
  activation (fused_norm.py), else by flax's GroupNorm; the parameters are the same.
  """
  kind: str = 'group'
  num_groups: int = 8
  activation: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  fused: bool = False

  @nn.compact
  def __call__(self, x):
    act = get_activation(self.activation) if self.activation else lambda y: y
    if self.kind == 'none':
      return act(x)
    groups = num_groups(self.kind, x.shape[-1], self.num_groups)
    x = x.astype(self.dtype)
    if self.fused and fused_norm.supports(x, self.activation or 'none'):
      return FusedGroupNorm(groups, self.activation or 'none', self.param_dtype,
                            name='GroupNorm_0')(x)
    group_norm = nn.GroupNorm
    if jnp.dtype(self.dtype).itemsize < 4:  # bfloat16, float16
      # flax's GroupNorm normalises in float32 (`x - mean` promotes a bfloat16 input), and
      # its gradient would keep those float32 intermediates: twice the bytes of the
      # activations. Recomputing them from the bfloat16 input in the backward pass costs
      # one elementwise pass and keeps the saved activations bfloat16 (BENCHMARKS.md).
      # Same values, same parameter names.
      group_norm = nn.remat(nn.GroupNorm)
    return act(group_norm(num_groups=groups, dtype=self.dtype, param_dtype=self.param_dtype,
                          name='GroupNorm_0')(x))


class FusedGroupNorm(nn.Module):
  """nn.GroupNorm's parameters and values, then an activation, in one CPU kernel."""
  groups: int
  activation: str = 'none'
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones_init(), (features,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros_init(), (features,), self.param_dtype)
    return fused_norm.group_norm(x, scale, bias, self.groups, self.activation)
