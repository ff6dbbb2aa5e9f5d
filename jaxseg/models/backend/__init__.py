"""What computes the models' convolutions, dense layers and norms: the one backend seam.

The model code builds its layers from the three module constructors of an `Ops`
(`conv`, `dense`, `norm_act`, as flax's examples pass `conv` and `norm`); which
library does the arithmetic is decided here, once, from `config.compute` and the
devices. The parameters never depend on it, so neither do checkpoints.

  xla.py         XLA's own ops: every backend, and the reference the others are tested against
  onednn.py      oneDNN's convolutions on CPU (custom calls; kernels/onednn_conv.cc)
  fused_norm.py  GroupNorm + activation in one CPU kernel (kernels/group_norm.cc)
  modules.py     Conv, Dense, NormAct: flax's parameters, the arithmetic an attribute

`config.compute` keys, each 'auto' by default:
  conv_library  'onednn' | 'xla': who computes convolutions and per-voxel products;
                auto = onednn on one CPU device where the extension is built
  norm_kernel   'cpu' | 'xla': the fused GroupNorm + activation kernel, or flax's;
                auto = cpu on one CPU device where the extension is built
  conv3d        'native' | 'depth_folded': 3D convolutions as they are, or as one 2D
                convolution over stacked depth taps (XLA:CPU's 3D convolutions are slow);
                auto = depth_folded on CPU with XLA's convolutions, else native
Several CPU devices keep XLA's ops: XLA's partitioner would replicate the operands of a
custom call instead of splitting the batch. GPU and TPU always take XLA's.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from jaxseg.errors import ConfigError
from jaxseg.models.backend import fused_norm, modules, onednn, xla

ModuleDef = Any  # a flax module class, or a functools.partial of one

CONV_LIBRARIES = ('xla', 'onednn')
NORM_KERNELS = ('xla', 'cpu')
CONV3D_METHODS = ('native', 'depth_folded')
KEYS = ('conv_library', 'norm_kernel', 'conv3d')  # config.compute


@dataclasses.dataclass(frozen=True)
class Ops:
  """The resolved choices, and the module constructors the models build from."""
  conv_library: str = 'xla'
  norm_kernel: str = 'xla'
  conv3d: str = 'native'

  def __post_init__(self):
    _check('conv_library', self.conv_library, CONV_LIBRARIES)
    _check('norm_kernel', self.norm_kernel, NORM_KERNELS)
    _check('conv3d', self.conv3d, CONV3D_METHODS)

  @property
  def conv(self) -> ModuleDef:
    """Conv(features, kernel_size=3, use_bias=True, dtype, param_dtype, bias_init)."""
    return functools.partial(modules.Conv, convolve=_convolution(self.conv_library,
                                                                 self.conv3d))

  @property
  def dense(self) -> ModuleDef:
    """Dense(features, use_bias=True, dtype, param_dtype): a per-voxel dense layer."""
    product = onednn.pointwise if self.conv_library == 'onednn' else xla.pointwise
    return functools.partial(modules.Dense, product=product)

  @property
  def norm_act(self) -> ModuleDef:
    """NormAct(kind, num_groups, activation, dtype, param_dtype)."""
    return functools.partial(modules.NormAct, fused=self.norm_kernel == 'cpu')


@functools.cache
def _convolution(library: str, conv3d: str) -> xla.ConvFunction:
  """The convolution function of a choice: one object per choice, so that modules
  built from equal choices compare equal."""
  convolve = onednn.convolve if library == 'onednn' else xla.conv
  if conv3d == 'native':
    return convolve

  def folding_depth(x, kernel):
    if x.ndim == 5:
      return xla.depth_folded_conv(x, kernel, convolve)
    return convolve(x, kernel)
  return folding_depth


def _check(key: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ConfigError(f'compute.{key}: unknown choice {value!r}; choose one of '
                      f'{("auto",) + choices}')


def ops_from_config(compute: ml_collections.ConfigDict | None, dtype: Any = 'float32',
                    backend: str | None = None, num_devices: int | None = None) -> Ops:
  """`config.compute` (None: all 'auto') resolved for `backend` and `num_devices` (default:
  JAX's); `dtype`, the models' compute dtype, for the note on bfloat16 convolutions."""
  values = {key: (compute or {}).get(key, 'auto') for key in KEYS}
  backend = backend or jax.default_backend()
  one_cpu = backend == 'cpu' and (num_devices or jax.device_count()) == 1
  library = _resolve('conv_library', values['conv_library'], CONV_LIBRARIES, backend, one_cpu,
                     'onednn', onednn, 'oneDNN convolutions')
  norm = _resolve('norm_kernel', values['norm_kernel'], NORM_KERNELS, backend, one_cpu, 'cpu',
                  fused_norm, 'fused GroupNorm kernel')
  conv3d = values['conv3d']
  if conv3d == 'auto':
    conv3d = 'depth_folded' if backend == 'cpu' and library == 'xla' else 'native'
  if library == 'onednn' and jnp.dtype(dtype) == jnp.bfloat16 and not onednn.supports_bfloat16():
    _note_once('jaxseg: this CPU has no bfloat16 units for oneDNN (AVX-512 BF16 or AMX): '
               'bfloat16 convolutions run in float32 between conversions, and '
               'model.dtype=float32 trains as fast or faster here (BENCHMARKS.md)')
  return Ops(library, norm, conv3d)


def _resolve(key, value, choices, backend, one_cpu, cpu_choice, extension, what) -> str:
  """'auto' -> `cpu_choice` on one CPU device where `extension` is built, else 'xla'; an
  explicit CPU choice that cannot run is a ConfigError."""
  if value == 'auto':
    if not one_cpu:
      return 'xla'
    if not extension.available():
      if backend == 'cpu':
        _note_once(f'jaxseg: XLA instead of the {what} on CPU, '
                   f'{extension.unavailable_reason()}')
      return 'xla'
    return cpu_choice
  _check(key, value, choices)
  if value == cpu_choice:
    if backend != 'cpu':
      raise ConfigError(f'compute.{key}: the {what} cannot run on {backend}; use auto or xla')
    if not extension.available():
      raise ConfigError(f'compute.{key}: {what} requested but '
                        f'{extension.unavailable_reason()}')
  return value


@functools.cache
def _note_once(message: str) -> None:
  logging.warning(message)


def describe(ops: Ops) -> str:
  """One line for logs and benchmarks: what computes what, and at which CPU level."""
  names = {'xla': 'XLA', 'onednn': 'oneDNN', 'cpu': 'fused CPU'}
  norm = f'{names[ops.norm_kernel]} GroupNorm'
  if ops.norm_kernel == 'cpu':
    norm += f' ({fused_norm.effective_isa()})'
  return f'{names[ops.conv_library]} convolutions ({ops.conv3d} 3D), {norm}'

