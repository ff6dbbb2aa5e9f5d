"""What the per-pass CPU benchmarks share (conv2d.py, group_norm.py, upsample.py): the
U-Net they take their shapes from, as flags; their timing; and arrays handed to PyTorch
in its memory formats. A script imports it after jaxseg.startup.prepare_process, as
its other modules.
"""

import functools

from absl import flags
import numpy as np

from benchmarks import timing

FEATURES = flags.DEFINE_list('features', ['16', '32', '64', '128'], 'U-Net widths per level.')
BATCH = flags.DEFINE_integer('batch', 8, 'Images per batch.')
SIZE = flags.DEFINE_integer('size', 128, 'Image side at the top level.')
DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')

REPEATS = 15
median_ms = functools.partial(timing.median_ms, repeats=REPEATS, warmups=2)


def features() -> list[int]:
  return [int(f) for f in FEATURES.value]


def describe() -> str:
  """The shapes and dtype of a run, for its header line."""
  return (f'{DTYPE.value}; U-Net {features()}, batch {BATCH.value}, {SIZE.value}^2; '
          f'ms, median of {REPEATS}')


def torch_dtype(torch, array):
  """PyTorch's dtype for a float32 or bfloat16 jax array."""
  return {'float32': torch.float32, 'bfloat16': torch.bfloat16}[str(array.dtype)]


def to_torch(torch, array, memory_format, axes=(0, 3, 1, 2)):
  """A channels-last jax/numpy array as a PyTorch tensor (NCHW dimensions by default) of
  the same dtype, in `memory_format`."""
  values = np.ascontiguousarray(np.transpose(np.asarray(array, np.float32), axes))
  return torch.from_numpy(values).to(torch_dtype(torch, array)).contiguous(
      memory_format=memory_format)
