"""XLA settings that jaxseg applies by default: flags, and a persistent compilation cache.

`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT` hands
dot products and convolutions to a faster CPU library; it made convolution weight
gradients 3-4x faster and the 2D train step ~20% faster (BENCHMARKS.md), with the
same numerics to float32 rounding (tests/test_xla_flags.py). It affects only XLA:CPU.
Set JAXSEG_XLA_DEFAULTS=0 to leave XLA_FLAGS as they are. The flags must be set before
JAX creates its CPU backend.
"""

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
