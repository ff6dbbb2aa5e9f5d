"""2D and 3D 'SAME' convolutions computed by oneDNN on CPU, through jax.ffi custom calls.

XLA:CPU computes every weight gradient after transposing both of its operands, and
bfloat16 convolutions in float32 with conversions around them (BENCHMARKS.md, "Where
the time goes"). oneDNN, the library behind PyTorch's CPU convolutions, computes all
three passes (forward, data gradient, weight gradient) from channels-last arrays as
they are, and in bfloat16 on CPUs with bfloat16 dot units. `conv` has the values and
gradients of `lax.conv_general_dilated(x, kernel, (1,) * d, 'SAME')` with NHWC / HWIO
(2D) or NDHWC / DHWIO (3D) operands, float32 or bfloat16 (tests/test_onednn.py).

`convolve` and `pointwise` are what the models call: any dtype, any spatial rank, with
XLA's ops for what oneDNN does not compute here. bfloat16 convolutions need AVX-512 BF16
or AMX units (oneDNN's ONEDNN_MAX_CPU_ISA caps what it may use): without them they run
as float32 oneDNN convolutions between conversions (`supports_bfloat16`).

The kernels are kernels/onednn_conv.cc, built by `pip install` where a C++ compiler and
oneDNN are available (setup.py) into the shared library `jaxseg._onednn`. `available()`
says whether it loaded; the backend (__init__.py) picks it by default on one CPU device
and says once, in one line, why not when it could not.
"""

import functools
import importlib.metadata
import os

import jax
import jax.numpy as jnp

from jaxseg.models.backend import ffi_library, xla

ONEDNN_LIBRARY = 'libdnnl.so.3'
PASSES = ('forward', 'backward_data', 'backward_weights')


def _onednn_library_path() -> str | None:
  """libdnnl from the PyPI package onednn-cpu-gomp (a wheel data file under the
  environment's prefix), or None to leave it to the dynamic loader's search path."""
  try:
    files = importlib.metadata.files('onednn-cpu-gomp') or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if str(file).endswith('/' + ONEDNN_LIBRARY):
      return os.path.abspath(file.locate())
  return None


@functools.cache
def _load():
  """Loads the extension and registers its handlers with XLA: (library or None, why not)."""
  targets = [f'jaxseg_conv_{kernel_pass}_{suffix}' for kernel_pass in PASSES
             for suffix in ffi_library.DTYPES.values()]
  # The extension links libdnnl by name; it is loaded first from where pip put it.
  library, reason = ffi_library.load('jaxseg._onednn', targets,
                                     preload=_onednn_library_path() or ONEDNN_LIBRARY)
  if library is None and 'not built' in reason:
    reason += (' (pip install needs a C++ compiler and, on Linux x86-64, the '
               'onednn-cpu-gomp packages)')
  return library, reason


def available() -> bool:
  """Whether the oneDNN convolutions are built and loaded (CPU only)."""
  return _load()[0] is not None


def unavailable_reason() -> str:
  return _load()[1]


@functools.cache
def supports_bfloat16() -> bool:
  """Whether oneDNN computes bfloat16 convolutions on this CPU (as capped)."""
  return available() and bool(_load()[0].jaxseg_onednn_supports_bf16())


def supports(x: jax.Array, kernel: jax.Array) -> bool:
  """Whether `conv` computes this convolution: 2D or 3D, both operands float32 or
  bfloat16."""
  return x.ndim in (4, 5) and x.dtype == kernel.dtype and x.dtype in ffi_library.DTYPES


def convolve(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """xla.conv(x, kernel) computed by oneDNN where it can: float32, and bfloat16 in
  bfloat16 or, on CPUs without bfloat16 convolutions, in float32; XLA's otherwise."""
  if not supports(x, kernel):
    return xla.conv(x, kernel)
  if x.dtype == jnp.bfloat16 and not supports_bfloat16():
    return conv(x.astype(jnp.float32), kernel.astype(jnp.float32)).astype(x.dtype)
  return conv(x, kernel)


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel for channels-last x and a (C_in, C_out) kernel, as a 1^d convolution.

  For the U-Net's upsampling and output heads it is faster than XLA:CPU's product
  forward and backward (BENCHMARKS.md): XLA:CPU copies the incoming gradient once per
  layout its two products want and takes the kernel's gradient through a transposed
  dot; oneDNN's passes read it as it is.
  """
  if x.ndim not in (4, 5):
    return xla.pointwise(x, kernel)
  return convolve(x, kernel.reshape((1,) * (x.ndim - 2) + kernel.shape))


def _call(kernel_pass: str, out_shape, dtype, *operands):
  if not available():
    raise RuntimeError(f'oneDNN convolutions requested but {unavailable_reason()}')
  name = f'jaxseg_conv_{kernel_pass}_{ffi_library.DTYPES[jnp.dtype(dtype)]}'
  # Under vmap (the models do not use it), one call per mapped element: slow but right.
  return jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(out_shape, dtype),
                          vmap_method='sequential')(*operands)


@jax.custom_vjp
def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME', stride-1 convolution of x (N, *spatial, C_in) with kernel (*window, C_in,
  C_out), 2 or 3 spatial axes, float32 or (where supports_bfloat16()) bfloat16."""
  return _call('forward', x.shape[:-1] + kernel.shape[-1:], x.dtype, x, kernel)


def _conv_forward(x, kernel):
  return conv(x, kernel), (x, kernel)


def _conv_backward(residuals, dy):
  x, kernel = residuals
  dy = dy.astype(x.dtype)
  dx = _call('backward_data', x.shape, x.dtype, dy, kernel)
  dkernel = _call('backward_weights', kernel.shape, kernel.dtype, x, dy)
  return dx, dkernel


conv.defvjp(_conv_forward, _conv_backward)
