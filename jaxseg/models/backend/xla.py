"""The convolution and per-voxel product as XLA's own ops, for any backend.

Every function here is a pure function of arrays, channels-last: x is (N, *spatial, C),
a convolution kernel (*window, C_in, C_out), a pointwise kernel (C_in, C_out).
"""

from typing import Callable

import jax
import jax.numpy as jnp

ConvFunction = Callable[[jax.Array, jax.Array], jax.Array]


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' convolution, stride 1, of channels-last x with a (*k, C_in, C_out) kernel."""
  ndim = x.ndim - 2
  spatial = 'DHW'[-ndim:]
  return jax.lax.conv_general_dilated(
      x, kernel, (1,) * ndim, 'SAME',
      dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))


def depth_folded_conv(x: jax.Array, kernel: jax.Array, conv2d: ConvFunction = conv
                      ) -> jax.Array:
  """A 3D 'SAME' convolution computed as one 2D convolution `conv2d`; equal to conv(x,
  kernel).

  XLA:CPU's 3D convolutions, and their gradients above all, are several times slower
  than its 2D ones (BENCHMARKS.md). The k taps along the first spatial axis are folded
  into channels, and depth into the batch, on whichever side has fewer channels:
  - inputs (C_in <= C_out): the input is stacked with its k-1 depth-shifted copies
    along the channels (kd-major) and convolved with the kernel reshaped to
    (kh, kw, k * C_in, C_out);
  - outputs (C_in > C_out, e.g. a decoder conv after a skip concatenation): one 2D
    convolution gives k * C_out channels, each tap's share of every slice, and the
    output is the sum over taps of those shares, shifted along depth.
  The folded side is k times larger; choosing the narrower one keeps that copy small.
  """
  batch, depth, height, width, channels = x.shape
  taps, out_channels = kernel.shape[0], kernel.shape[-1]
  if taps % 2 != 1:
    raise ValueError(f'depth_folded_conv needs an odd kernel size, got {kernel.shape[:3]}')
  pad = ((0, 0), (taps // 2, taps // 2)) + ((0, 0),) * 3
  if channels <= out_channels:
    x = jnp.pad(x, pad)
    x = jnp.concatenate([x[:, tap:tap + depth] for tap in range(taps)], axis=-1)
    x = x.reshape(batch * depth, height, width, taps * channels)
    # (kd, kh, kw, C_in, C_out) -> (kh, kw, kd * C_in, C_out), as stacked above.
    kernel = kernel.transpose(1, 2, 0, 3, 4).reshape(*kernel.shape[1:3], -1, out_channels)
    return conv2d(x, kernel).reshape(batch, depth, height, width, out_channels)
  # (kd, kh, kw, C_in, C_out) -> (kh, kw, C_in, kd * C_out)
  kernel = kernel.transpose(1, 2, 3, 0, 4).reshape(*kernel.shape[1:4], taps * out_channels)
  shares = conv2d(x.reshape(batch * depth, height, width, channels), kernel)
  shares = jnp.pad(shares.reshape(batch, depth, height, width, taps, out_channels),
                   pad + ((0, 0),))
  # Output slice d takes tap kd's share of input slice d + kd - taps // 2.
  return sum(shares[:, tap:tap + depth, :, :, tap] for tap in range(taps))


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel: a dense layer applied to every voxel."""
  return x @ kernel
