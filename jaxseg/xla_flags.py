"""Settings that jaxseg applies by default: XLA flags, a persistent compilation cache and
glibc's handling of host memory. jaxseg.startup.prepare_process applies them in order.

`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT` hands
dot products and convolutions to a faster CPU library (BENCHMARKS.md), with the same
numerics to float32 rounding (tests/test_xla_flags.py). It affects only XLA:CPU.
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
  backend starts); jaxseg.startup.prepare_process calls it.
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

# glibc >= 2.35 reads this at start-up: malloc then madvises the blocks it maps for
# transparent huge pages.
HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb=1'


def current_glibc_version() -> tuple[int, int] | None:
  """glibc's (major, minor), or None where the C library is not glibc."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    major, minor = libc.gnu_get_libc_version().decode().split('.')[:2]
    return int(major), int(minor)
  except (OSError, AttributeError, ValueError):
    return None


def huge_pages_environment(environ, glibc_version, thp_mode: str) -> dict | None:
  """The environment to restart the process with for huge-page malloc, or None.

  None when it is off (JAXSEG_HUGE_PAGES=0), already decided (GLIBC_TUNABLES names
  glibc.malloc.hugetlb, by us after the restart or by the user), or of no use: no
  glibc >= 2.35, or the kernel's transparent huge pages `never` (thp_mode is the text
  of /sys/kernel/mm/transparent_hugepage/enabled, '' where it is missing).
  """
  tunables = environ.get('GLIBC_TUNABLES', '')
  if (environ.get('JAXSEG_HUGE_PAGES', '1') == '0' or 'glibc.malloc.hugetlb' in tunables
      or glibc_version is None or glibc_version < (2, 35)
      or not thp_mode or '[never]' in thp_mode):
    return None
  return {**environ, 'GLIBC_TUNABLES': ':'.join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))}


def allocator_environment(environ, *, huge_pages: bool, keep_memory: bool) -> dict:
  """`environ` for a new jaxseg process with the given host-memory settings: the two
  switches set, and this process's huge-page tunable dropped from GLIBC_TUNABLES (so
  that the child decides anew; other tunables stay)."""
  tunables = [t for t in environ.get('GLIBC_TUNABLES', '').split(':')
              if t and not t.startswith('glibc.malloc.hugetlb')]
  child = {k: v for k, v in environ.items() if k != 'GLIBC_TUNABLES'}
  if tunables:
    child['GLIBC_TUNABLES'] = ':'.join(tunables)
  return {**child, 'JAXSEG_HUGE_PAGES': str(int(huge_pages)),
          'JAXSEG_KEEP_HOST_MEMORY': str(int(keep_memory))}


def keep_freed_host_memory(environ=os.environ) -> bool:
  """Opt-in (JAXSEG_KEEP_HOST_MEMORY=1): has glibc keep freed memory for reuse instead
  of handing it back to the kernel.

  One arena, no mmap for large blocks and a 2 GiB trim threshold let a step reuse the
  previous step's pages, which saves little time beside huge pages; but the heap
  fragments and is never returned, so the peak memory grows, and where a step's
  temporaries pass the trim threshold (3D at 128^3) they are trimmed every step and it
  is slower than glibc's defaults (BENCHMARKS.md). Linux with glibc only. Returns
  whether it applied. Call it before JAX starts its threads (startup.prepare_process
  does): heaps that threads already have are kept.
  """
  if environ.get('JAXSEG_KEEP_HOST_MEMORY', '0') != '1' or current_glibc_version() is None:
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  # mallopt returns 1 on success; all three or the effect is partial but harmless.
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))


def enable_compilation_cache(environ=os.environ) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory (None: off).

  A second run of the same model loads its compiled train step from disk instead of
  compiling it again (BENCHMARKS.md). The directory is $JAX_COMPILATION_CACHE_DIR when
  set, else <jaxseg cache>/xla, the jaxseg cache being that of the preprocessed data
  ($JAXSEG_CACHE_DIR or ~/.cache/jaxseg). Entries are keyed by the program, the XLA
  flags and the jax version, so a stale entry is never used.
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
