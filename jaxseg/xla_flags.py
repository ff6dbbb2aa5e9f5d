"""XLA flags that jaxseg sets by default, before JAX creates its CPU backend.

`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT` hands
dot products and convolutions to a faster CPU library; it made convolution weight
gradients 3-4x faster and the 2D train step ~20% faster (BENCHMARKS.md), with the
same numerics to float32 rounding (tests/test_xla_flags.py). It affects only XLA:CPU.
Set JAXSEG_XLA_DEFAULTS=0 to leave XLA_FLAGS as they are.
"""

import os

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
