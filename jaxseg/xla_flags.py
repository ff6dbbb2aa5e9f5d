"""Settings that jaxseg applies by default: XLA flags, a persistent compilation cache and
glibc's handling of freed host memory.

`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT` hands
dot products and convolutions to a faster CPU library; it made convolution weight
gradients 3-4x faster and the 2D train step ~20% faster (BENCHMARKS.md), with the
same numerics to float32 rounding (tests/test_xla_flags.py). It affects only XLA:CPU.
Set JAXSEG_XLA_DEFAULTS=0 to leave XLA_FLAGS as they are. The flags must be set before
JAX creates its CPU backend.
"""

import ctypes
import ctypes.util
import os
import sys
import tempfile

DEFAULT_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',)


def apply_default_flags(environ=os.environ) -> str:
  """Adds each default flag to XLA_FLAGS unless the user set that flag already.

  Must run before the first JAX computation (XLA reads the variable once, when the
  backend starts); train.py and eval.py call it first thing.
  """
  if environ.get('JAXSEG_XLA_DEFAULTS', '1') == '0':
    return environ.get('XLA_FLAGS', '')
  flags = environ.get('XLA_FLAGS', '').split()
  for flag in DEFAULT_FLAGS:
    name = flag.split('=')[0]
    if not any(f.split('=')[0] == name for f in flags):
      flags.append(flag)
  environ['XLA_FLAGS'] = ' '.join(flags)
  return environ['XLA_FLAGS']


# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB


def keep_freed_host_memory(environ=os.environ) -> bool:
  """Has glibc keep freed memory for reuse instead of handing it back to the kernel.

  XLA:CPU allocates each execution's buffers anew. With glibc's defaults, blocks that
  large are fresh mmap'd pages, or come from per-thread heaps that are trimmed on free,
  so every train step touches its temporaries for the first time again: 41,000 page
  faults and ~0.09 s of kernel time per step of the 2D U-Net benchmark on 2 cores
  (BENCHMARKS.md). One arena, no mmap for large blocks and a 2 GiB trim threshold let a
  step reuse the previous step's pages. The price: the process keeps its peak heap
  until it exits. Linux with glibc only (elsewhere nothing changes);
  JAXSEG_KEEP_HOST_MEMORY=0 turns it off. Returns whether it applied. Call it before
  JAX starts its threads (train.py and eval.py do, first thing): heaps that threads
  already have are kept as they are.
  """
  if environ.get('JAXSEG_KEEP_HOST_MEMORY', '1') == '0' or not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  (glibc, not musl)
  except (OSError, AttributeError):
    return False
  # mallopt returns 1 on success; all three or the effect is partial but harmless.
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))


def enable_compilation_cache(environ=os.environ) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory (None: off).

  A second run of the same model loads its compiled train step from disk instead of
  compiling it again (the 2D LSTM-U-Net: 7.6 s -> 1.6 s, BENCHMARKS.md). The directory
  is $JAX_COMPILATION_CACHE_DIR when set, else <jaxseg cache>/xla, the jaxseg cache
  being that of the preprocessed data ($JAXSEG_CACHE_DIR or ~/.cache/jaxseg). Entries
  are keyed by the program, the XLA flags and the jax version, so a stale entry is
  never used.
  JAXSEG_COMPILATION_CACHE=0 turns it off; a directory that cannot be written turns it
  off with one line on stderr (training goes on, compiling as usual).
  """
  # pylint: disable=import-outside-toplevel  (both start JAX: after apply_default_flags)
  import jax

  from jaxseg.data.cache import cache_directory

  if environ.get('JAXSEG_COMPILATION_CACHE', '1') == '0':
    return None
  directory = os.path.abspath(os.path.expanduser(environ.get('JAX_COMPILATION_CACHE_DIR') or (
      os.path.join(cache_directory(environ.get('JAXSEG_CACHE_DIR')), 'xla'))))
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as error:
    print(f'warning: compilation cache off, cannot write {directory} '
          f'({error.strerror or error}); set JAXSEG_CACHE_DIR', file=sys.stderr)
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory
