"""Loading jaxseg's compiled CPU kernels and registering them with XLA (jax.ffi).

Each extension (built by setup.py where it can be, see onednn.py and fused_norm.py) is a
plain shared library exporting XLA FFI handlers by name. Loading never raises: it says
whether the kernels are there and, when not, why, so that callers can fall back to
XLA's own ops and say so in one line.
"""

import ctypes
import importlib.util
from collections.abc import Iterable

import jax
import jax.numpy as jnp

# The dtypes the kernels handle, and the suffix of their handlers' names for each.
DTYPES = {jnp.dtype(jnp.float32): 'f32', jnp.dtype(jnp.bfloat16): 'bf16'}


def load(extension: str, targets: Iterable[str], preload: str | None = None
         ) -> tuple[ctypes.CDLL | None, str]:
  """Loads `extension` (a module name such as 'jaxseg._onednn') and registers its handler
  symbols `targets` as CPU custom-call targets: (the library, or None and why not).
  `preload` is a shared library to load first, globally, for an extension that links it
  by name."""
  spec = importlib.util.find_spec(extension)
  if spec is None or not spec.origin:
    return None, f'the extension {extension} was not built'
  try:
    if preload:
      ctypes.CDLL(preload, mode=ctypes.RTLD_GLOBAL)
    library = ctypes.CDLL(spec.origin)
  except OSError as error:
    return None, f'the extension {extension} did not load: {error}'
  for name in targets:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform='cpu')
  return library, ''
