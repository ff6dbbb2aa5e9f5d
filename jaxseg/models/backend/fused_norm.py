"""GroupNorm and the activation after it as one CPU kernel, through jax.ffi custom calls.

Between two convolutions of a U-Net sits norm -> activation. XLA:CPU computes GroupNorm's
statistics and the sums in its gradient as reduce-window trees over the outer axes and
splits the rest into several elementwise passes, several times PyTorch's time for the
same work (BENCHMARKS.md, "Where the time goes"). kernels/group_norm.cc does the
forward pass in two reads of x and one write, and the backward pass in two reads of x
and dy and one write, recomputing the pre-activation instead of storing it.

`group_norm(x, scale, bias, groups, activation)` has the values and gradients of
`activation(nn.GroupNorm(groups)(x))` with flax's epsilon and variance formula, for
channels-last x of any spatial rank, float32 or bfloat16 (statistics in float32;
tests/test_fused_norm.py). Instance norm is groups = C, layer norm groups = 1.

The kernel's loops are compiled for three x86-64 levels (the baseline's SSE2, AVX2,
AVX-512; elsewhere for the baseline only) and run at the best this CPU has
(`supported_isa`), capped like oneDNN's: JAXSEG_MAX_CPU_ISA=baseline|x86-64-v3|x86-64-v4
or, when unset, the level of ONEDNN_MAX_CPU_ISA (AVX2 caps at x86-64-v3, SSE41 at the
baseline), so that one machine runs the paths of older CPUs. `group_norm`'s `isa`
caps it for one call (tests, benchmarks).

The kernel is built by `pip install` where a C++ compiler with OpenMP is available
(setup.py) into `jaxseg._group_norm`; the backend (__init__.py) picks it by default on
one CPU device and says once, in one line, why not when it could not.
"""

import ctypes
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError
from jaxseg.models.backend import ffi_library

# Activation name -> (the kernel's code, negative slope). The slope is layers'
# leaky_relu's; tests compare the two.
ACTIVATIONS = {'none': (0, 0.0), 'relu': (1, 0.0), 'leaky_relu': (2, 0.01)}
EPSILON = 1e-6  # flax.linen.GroupNorm's default
# The kernel's `isa` attribute: 'auto' is the best level the CPU has, as capped.
ISA_LEVELS = {'auto': 0, 'baseline': 1, 'x86-64-v3': 2, 'x86-64-v4': 3}
# ONEDNN_MAX_CPU_ISA's values by prefix (longest first) -> our level.
_ONEDNN_ISA_LEVELS = (('AVX512', 'x86-64-v4'), ('AVX10', 'x86-64-v4'), ('AMX', 'x86-64-v4'),
                      ('AVX2', 'x86-64-v3'), ('AVX', 'baseline'), ('SSE', 'baseline'))


@functools.cache
def _load():
  targets = [f'jaxseg_group_norm_{kernel_pass}_{suffix}' for kernel_pass in ('forward', 'backward')
             for suffix in ffi_library.DTYPES.values()]
  library, reason = ffi_library.load('jaxseg._group_norm', targets)
  if library is None and 'not built' in reason:
    reason += ' (pip install needs a C++ compiler with OpenMP)'
  return library, reason


def available() -> bool:
  """Whether the fused GroupNorm kernel is built and loaded (CPU only)."""
  return _load()[0] is not None


def unavailable_reason() -> str:
  return _load()[1]


def supported_isa() -> str | None:
  """The best level the kernel runs at on this CPU: 'baseline' (what the compiler may
  assume anywhere: SSE2 on x86-64, and the only level elsewhere), 'x86-64-v3' (AVX2) or
  'x86-64-v4' (AVX-512); None where the kernel is not built."""
  if not available():
    return None
  library = _load()[0]
  library.jaxseg_group_norm_supported_isa.restype = ctypes.c_int64
  level = library.jaxseg_group_norm_supported_isa()
  return next(name for name, code in ISA_LEVELS.items() if code == level)


def max_isa(environ=os.environ) -> str:
  """The level the environment caps the kernel at ('auto': no cap)."""
  ours = environ.get('JAXSEG_MAX_CPU_ISA', '').strip()
  if ours:
    if ours not in ISA_LEVELS:
      raise ConfigError(f'JAXSEG_MAX_CPU_ISA={ours!r}: unknown level; choose one of '
                        f'{tuple(ISA_LEVELS)}')
    return ours
  onednn = environ.get('ONEDNN_MAX_CPU_ISA', environ.get('DNNL_MAX_CPU_ISA', '')).upper()
  return next((level for prefix, level in _ONEDNN_ISA_LEVELS if onednn.startswith(prefix)),
              'auto')


def effective_isa() -> str | None:
  """The level the kernel runs at here: the CPU's best, as capped; None where not built."""
  best, cap = supported_isa(), max_isa()
  if best is None or cap == 'auto':
    return best
  return min(best, cap, key=ISA_LEVELS.get)


def supports(x: jax.Array, activation: str) -> bool:
  """Whether `group_norm` computes this: float32 or bfloat16 (batch, *spatial, C), and an
  activation the kernel knows (others are applied by XLA after a plain GroupNorm)."""
  return x.ndim >= 3 and x.dtype in ffi_library.DTYPES and activation in ACTIVATIONS


def _kernel_attributes(x, activation, isa_level):
  code, slope = ACTIVATIONS[activation]
  if isa_level == 'auto':
    isa_level = max_isa()
  attributes = dict(activation=np.int64(code), slope=np.float32(slope),
                    isa=np.int64(ISA_LEVELS[isa_level]))
  return ffi_library.DTYPES[jnp.dtype(x.dtype)], attributes


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int,
               activation: str = 'none', isa: str = 'auto') -> jax.Array:
  """activation(GroupNorm(x) * scale + bias), over groups of x's last axis; `isa`, a key
  of ISA_LEVELS, the highest level the kernel may use."""
  return _forward(x, scale, bias, groups, activation, isa)[0]


def _forward(x, scale, bias, groups, activation, isa):
  if not available():
    raise RuntimeError(f'fused GroupNorm requested but {unavailable_reason()}')
  suffix, attributes = _kernel_attributes(x, activation, isa)
  stats = jax.ShapeDtypeStruct((x.shape[0], groups), jnp.float32)
  # Under vmap (the models do not use it), one call per mapped element: slow but right.
  y, mean, rstd = jax.ffi.ffi_call(
      f'jaxseg_group_norm_forward_{suffix}', (jax.ShapeDtypeStruct(x.shape, x.dtype), stats,
                                              stats), vmap_method='sequential')(
      x, scale.astype(jnp.float32), bias.astype(jnp.float32), groups=np.int64(groups),
      epsilon=np.float32(EPSILON), **attributes)
  return y, (x, scale, bias, mean, rstd)


def _backward(groups, activation, isa, residuals, dy):
  x, scale, bias, mean, rstd = residuals
  suffix, attributes = _kernel_attributes(x, activation, isa)
  channels = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
  dx, dscale, dbias = jax.ffi.ffi_call(
      f'jaxseg_group_norm_backward_{suffix}',
      (jax.ShapeDtypeStruct(x.shape, x.dtype), channels, channels),
      vmap_method='sequential')(
      dy.astype(x.dtype), x, scale.astype(jnp.float32), bias.astype(jnp.float32), mean, rstd,
      groups=np.int64(groups), **attributes)
  return dx, dscale.astype(scale.dtype), dbias.astype(bias.dtype)


group_norm.defvjp(_forward, _backward)
