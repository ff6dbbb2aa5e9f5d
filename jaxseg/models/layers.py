"""Building blocks shared by the U-Net and the LSTM-U-Net, for any spatial rank.

Arrays are channels-last: (batch, *spatial, channels). The spatial rank (2 or 3)
is read from the input, so one module builds both 2D and 3D networks.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from jaxseg.errors import ConfigError
from jaxseg.models import fused_norm, onednn

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
CONV3D_METHODS = ('native', 'depth_folded')
CONV_LIBRARIES = ('xla', 'onednn')
NORM_KERNELS = ('xla', 'cpu')


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ConfigError(f'model.activation: unknown activation {name!r}; choose one of '
                      f'{sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


class Norm(nn.Module):
  """Normalisation over the spatial axes, chosen by name, then `activation` (if any).

  `kernel` 'cpu' computes group, instance and layer norm together with the activation
  in jaxseg's fused CPU kernel (fused_norm.py) where it supports them, 'xla' with flax's
  GroupNorm; the parameters are the same either way.
  """
  kind: str = 'group'
  num_groups: int = 8
  activation: str | None = None
  kernel: str = 'xla'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    check_norm(self.kind)
    check_norm_kernel(self.kernel)
    act = get_activation(self.activation) if self.activation else lambda y: y
    features = x.shape[-1]
    if self.kind == 'none':
      return act(x)
    if self.kind == 'group':
      groups = min(self.num_groups, features)
      while features % groups:  # largest divisor of the width not above num_groups
        groups -= 1
    elif self.kind == 'instance':
      groups = features
    else:  # 'layer'
      groups = 1
    x = x.astype(self.dtype)
    if self.kernel == 'cpu' and fused_norm.supports(x, self.activation or 'none'):
      return FusedGroupNorm(groups, self.activation or 'none', self.param_dtype,
                            name='GroupNorm_0')(x)
    group_norm = nn.GroupNorm
    if jnp.dtype(self.dtype).itemsize < 4:  # bfloat16, float16
      # flax's GroupNorm normalises in float32 (`x - mean` promotes a bfloat16 input), and
      # its gradient would keep those float32 intermediates: twice the bytes of the
      # activations. Recomputing them from the bfloat16 input in the backward pass costs
      # one elementwise pass and, compiled for a TPU, cut the bfloat16 3D LSTM-U-Net step's
      # temporaries by 29% (BENCHMARKS.md). Same values, same parameter names.
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


def check_norm(kind: str) -> None:
  if kind not in NORMS:
    raise ConfigError(f'model.norm: unknown normalisation {kind!r}; choose one of {NORMS}')


def check_upsampling(method: str) -> None:
  if method not in UPSAMPLINGS:
    raise ConfigError(f'model.upsampling: unknown method {method!r}; choose one of {UPSAMPLINGS}')


def check_conv3d(method: str) -> None:
  if method not in CONV3D_METHODS:
    raise ConfigError(f'model.conv3d: unknown method {method!r}; choose one of '
                     f'{("auto",) + CONV3D_METHODS}')


def resolve_conv3d(method: str, backend: str | None = None,
                   conv_library: str = 'xla') -> str:
  """model.conv3d 'auto' -> 'native' where a library with fast 3D kernels computes the
  convolutions: GPU and TPU, and oneDNN on CPU (`conv_library`, resolved); on CPU with
  XLA's convolutions 'depth_folded' (XLA:CPU's 3D convolutions are slow; BENCHMARKS.md
  measures both)."""
  if method == 'auto':
    cpu = (backend or jax.default_backend()) == 'cpu'
    return 'depth_folded' if cpu and conv_library == 'xla' else 'native'
  check_conv3d(method)
  return method


def check_conv_library(library: str) -> None:
  if library not in CONV_LIBRARIES:
    raise ConfigError(f'model.conv_library: unknown library {library!r}; choose one of '
                     f'{("auto",) + CONV_LIBRARIES}')


def check_norm_kernel(kernel: str) -> None:
  if kernel not in NORM_KERNELS:
    raise ConfigError(f'model.norm_kernel: unknown kernel {kernel!r}; choose one of '
                     f'{("auto",) + NORM_KERNELS}')


def _use_cpu_kernel(backend: str | None, num_devices: int | None) -> bool:
  """Whether 'auto' may pick one of jaxseg's CPU kernels: on a single CPU device. GPU and
  TPU keep XLA's ops. Several devices do too: XLA's partitioner would replicate the
  operands of a custom call instead of splitting the batch."""
  return ((backend or jax.default_backend()) == 'cpu'
          and (num_devices or jax.device_count()) == 1)


def resolve_conv_library(library: str, backend: str | None = None,
                         num_devices: int | None = None) -> str:
  """model.conv_library 'auto' -> 'onednn' on a single CPU device when jaxseg's oneDNN
  extension is built (faster, BENCHMARKS.md), else 'xla'."""
  if library == 'auto':
    if (backend or jax.default_backend()) == 'cpu' and not onednn.available():
      _notice_once(f'jaxseg: XLA convolutions on CPU, {onednn.unavailable_reason()}')
      return 'xla'
    return 'onednn' if _use_cpu_kernel(backend, num_devices) else 'xla'
  check_conv_library(library)
  if library == 'onednn' and not onednn.available():
    raise ConfigError(f'model.conv_library: oneDNN convolutions requested but '
                      f'{onednn.unavailable_reason()}')
  return library


def resolve_norm_kernel(kernel: str, backend: str | None = None,
                        num_devices: int | None = None) -> str:
  """model.norm_kernel 'auto' -> 'cpu' (the fused GroupNorm + activation kernel) on a
  single CPU device when it is built (faster, BENCHMARKS.md), else 'xla'."""
  if kernel == 'auto':
    if (backend or jax.default_backend()) == 'cpu' and not fused_norm.available():
      _notice_once(f'jaxseg: XLA GroupNorm on CPU, {fused_norm.unavailable_reason()}')
      return 'xla'
    return 'cpu' if _use_cpu_kernel(backend, num_devices) else 'xla'
  check_norm_kernel(kernel)
  if kernel == 'cpu':
    if (backend or jax.default_backend()) != 'cpu':
      raise ConfigError(f'model.norm_kernel: the fused CPU kernel cannot run on '
                        f'{backend or jax.default_backend()}; use auto or xla')
    if not fused_norm.available():
      raise ConfigError(f'model.norm_kernel: fused GroupNorm kernel requested but '
                        f'{fused_norm.unavailable_reason()}')
  return kernel


@functools.cache
def _notice_once(message: str) -> None:
  logging.warning(message)


def _conv(x: jax.Array, kernel: jax.Array, library: str = 'xla') -> jax.Array:
  """'SAME' convolution, stride 1, of channels-last x with a (*k, C_in, C_out) kernel."""
  if library == 'onednn' and onednn.supports(x, kernel):
    return onednn.conv(x, kernel)
  ndim = x.ndim - 2
  spatial = 'DHW'[-ndim:]
  return jax.lax.conv_general_dilated(
      x, kernel, (1,) * ndim, 'SAME',
      dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))


def depth_folded_conv(x: jax.Array, kernel: jax.Array, library: str = 'xla') -> jax.Array:
  """A 3D 'SAME' convolution computed as one 2D convolution; equal to _conv(x, kernel).

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
  `library` computes the 2D convolution (see _conv).
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
    return _conv(x, kernel, library).reshape(batch, depth, height, width, out_channels)
  # (kd, kh, kw, C_in, C_out) -> (kh, kw, C_in, kd * C_out)
  kernel = kernel.transpose(1, 2, 3, 0, 4).reshape(*kernel.shape[1:4], taps * out_channels)
  shares = _conv(x.reshape(batch * depth, height, width, channels), kernel, library)
  shares = jnp.pad(shares.reshape(batch, depth, height, width, taps, out_channels),
                   pad + ((0, 0),))
  # Output slice d takes tap kd's share of input slice d + kd - taps // 2.
  return sum(shares[:, tap:tap + depth, :, :, tap] for tap in range(taps))


class Conv(nn.Module):
  """'SAME' convolution with stride 1 and a k^d kernel: nn.Conv's parameters and values.

  `conv3d` picks how 3D convolutions are computed ('native' or 'depth_folded', see
  depth_folded_conv); `conv_library` which library computes them ('xla' or 'onednn',
  see onednn.py; a folded one is a 2D convolution of that library). The parameters are the same
  either way, so checkpoints do not depend on the choices.
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  conv3d: str = 'native'
  conv_library: str = 'xla'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    check_conv3d(self.conv3d)
    check_conv_library(self.conv_library)
    ndim = x.ndim - 2
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size,) * ndim + (x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if ndim == 3 and self.conv3d == 'depth_folded':
      y = depth_folded_conv(x, kernel, self.conv_library)
    else:
      y = _conv(x, kernel, self.conv_library)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class ConvBlock(nn.Module):
  """Two (conv -> norm -> activation) layers with 3^d kernels: one U-Net level."""
  features: int
  norm: str = 'group'
  activation: str = 'relu'
  conv3d: str = 'native'
  conv_library: str = 'xla'
  norm_kernel: str = 'xla'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = Conv(self.features, 3, use_bias=self.norm == 'none', conv3d=self.conv3d,
               conv_library=self.conv_library, dtype=self.dtype,
               param_dtype=self.param_dtype)(x)
      x = Norm(self.norm, activation=self.activation, kernel=self.norm_kernel,
               dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return x


def downsample(x: jax.Array) -> jax.Array:
  """2x max pooling along every spatial axis.

  Written as a reshape and a max over the 2^d window axes, not nn.max_pool: XLA
  differentiates reduce-window pooling through an argmax reduce-window over index
  arrays, which took half of the 2D train step's op time on XLA:CPU (BENCHMARKS.md).
  The forward values are identical; gradients differ only for ties inside a window,
  which the plain max splits evenly instead of sending to one element.
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


def pointwise(x: jax.Array, kernel: jax.Array, library: str = 'xla') -> jax.Array:
  """x @ kernel for channels-last x and a (C_in, C_out) kernel: a dense layer per voxel.

  With `library` 'onednn', oneDNN computes it as a 1^d convolution. For the U-Net's
  upsampling and output heads that is 1.6-4.5x faster on CPU, forward + backward
  (BENCHMARKS.md): XLA:CPU copies the incoming gradient twice, once per layout its two
  products want, and takes the kernel's gradient through a slow transposed dot;
  oneDNN's passes read it as it is.
  """
  if library == 'onednn' and onednn.supports(x, kernel):
    return _conv(x, kernel.reshape((1,) * (x.ndim - 2) + kernel.shape), library)
  return x @ kernel


class Dense(nn.Module):
  """nn.Dense over the last axis, with its parameters (names, shapes, initial values: so
  checkpoints are the same either way), the product computed by `pointwise`."""
  features: int
  use_bias: bool = True
  conv_library: str = 'xla'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features), self.param_dtype)
    y = pointwise(x.astype(self.dtype), kernel.astype(self.dtype), self.conv_library)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros_init(), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class Upsample(nn.Module):
  """2x upsampling to `features` channels.

  'transpose' is a transposed convolution with kernel 2 and stride 2. Its windows do
  not overlap, so it equals a per-voxel dense layer to 2^d * features channels
  followed by depth_to_space; we compute it that way because the gradient of
  nn.ConvTranspose is very slow on XLA:CPU (see BENCHMARKS.md) while a dense layer is
  one matrix multiplication. `conv_library` computes that dense layer (see pointwise).
  'resize' is linear interpolation then a 1^d conv.
  """
  features: int
  method: str = 'transpose'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  conv_library: str = 'xla'

  @nn.compact
  def __call__(self, x):
    check_upsampling(self.method)
    ndim = x.ndim - 2
    if self.method == 'transpose':
      x = Dense(2**ndim * self.features, use_bias=False, conv_library=self.conv_library,
                dtype=self.dtype, param_dtype=self.param_dtype, name='kernel')(x)
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), self.param_dtype)
      return depth_to_space(x, 2) + bias.astype(x.dtype)
    batch, *spatial, channels = x.shape  # 'resize'
    x = jax.image.resize(x, (batch, *(2 * s for s in spatial), channels), 'linear')
    return Dense(self.features, conv_library=self.conv_library, dtype=self.dtype,
                 param_dtype=self.param_dtype)(x)
