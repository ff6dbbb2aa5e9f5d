"""Convolutional LSTM cell for 2D and 3D feature maps."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.backend.modules import Conv

Dtype = Any
ModuleDef = Any
Carry = tuple[jax.Array, jax.Array]  # (cell state c, hidden state h)


class ConvLSTMCell(nn.Module):
  """ConvLSTM (Shi et al., 2015) with the four gates fused into one convolution.

  One convolution over concat(input, h) computes all four gates at once: a single
  large convolution is faster than eight small ones, and it is the same function
  as separate input and recurrent kernels. The spatial rank comes from the input.

  Call: `(c, h), h = cell((c, h), x)`; x is (B, *spatial, C_in), c and h are
  (B, *spatial, features). `conv` is a convolution module constructor (a backend's, with
  the dtypes bound).
  """
  features: int
  conv: ModuleDef = Conv
  kernel_size: int = 3

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
    c, h = carry
    gates = self.conv(4 * self.features, self.kernel_size,
                      bias_init=_forget_gate_bias_init(self.features),
                      name='gates')(jnp.concatenate([x, h.astype(x.dtype)], axis=-1))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    # The cell state stays float32 under mixed precision: it accumulates over time.
    c = nn.sigmoid(f).astype(c.dtype) * c + (nn.sigmoid(i) * jnp.tanh(g)).astype(c.dtype)
    h = (nn.sigmoid(o) * jnp.tanh(c).astype(o.dtype)).astype(h.dtype)
    return (c, h), h

  @staticmethod
  def initialize_carry(batch_and_spatial: tuple[int, ...], features: int,
                       dtype: Dtype = jnp.float32) -> Carry:
    """Zero state for inputs of shape (*batch_and_spatial, C_in)."""
    shape = (*batch_and_spatial, features)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def _forget_gate_bias_init(features: int):
  """Bias 1 on the forget gate so that the state is kept by default at the start."""
  def init(key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype)
    return bias.at[features:2 * features].set(1.0)
  return init
