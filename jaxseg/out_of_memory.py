"""Out of memory, the commonest failure on an accelerator, in one line with what to change.

`check_fits` compiles the train step before any data is read and compares what XLA's
memory analysis of the compiled program says one device needs (its arguments:
parameters, optimiser state and batch; and its temporaries: mostly the activations
kept for the backward pass) with what the device has: the allocator's limit on a GPU
or TPU, on a CPU the machine's memory or what `ulimit -v` leaves. A step that cannot
fit is refused there. `explained` turns an out-of-memory error raised later (XLA's
RESOURCE_EXHAUSTED while compiling or running, Python's MemoryError) into the same
kind of line. The compiled step is jit's to reuse: the loop does not compile it again.
"""

import contextlib
import os
import re
import resource
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxseg.errors import UserError

GIB = 2**30


class OutOfMemory(UserError):
  """The train step does not fit the device's memory; the message says what lowers it."""


def _host_memory() -> tuple[int | None, str]:
  """(bytes, what they are) this process can still allocate on the host."""
  try:
    total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError):
    total = None
  capacity, what = total, "the machine's memory"
  limit = resource.getrlimit(resource.RLIMIT_AS)[0]
  if limit != resource.RLIM_INFINITY:
    left = limit - _address_space_used()
    if capacity is None or left < capacity:
      capacity, what = max(left, 0), 'address space left under ulimit -v'
  return capacity, what


def _address_space_used() -> int:
  try:
    with open('/proc/self/status') as f:
      return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmSize:'))
  except (OSError, StopIteration, ValueError, IndexError):
    return 0


def device_memory(device) -> tuple[int | None, str]:
  """(bytes, what they are) that `device` can hold; (None, '') where unknown."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without it raise)
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']), f'{device.device_kind} memory available to XLA'
  if device.platform == 'cpu':
    return _host_memory()
  return None, ''


def step_bytes(compiled) -> int | None:
  """What one device needs to run `compiled`: its arguments and temporaries (outputs
  reuse the donated state); None where XLA gives no analysis."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not implemented on some backends)
    return None
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.temp_size_in_bytes)


def remedies(config: ml_collections.ConfigDict) -> str:
  """The switches that lower the train step's memory, with their current values."""
  lower = [f'train.batch_size (now {config.train.batch_size})',
           f'data.image_size (now {tuple(config.data.image_size)})']
  if not config.model.get('remat_levels', True):
    lower.append('model.remat_levels=True')
  lower.append(f'train.microbatches={2 * config.train.microbatches} (now '
               f'{config.train.microbatches})')
  if config.model.get('dtype', 'bfloat16') != 'bfloat16':
    lower.append('model.dtype=bfloat16')
  return 'lower it with ' + ', '.join(lower)


def _sizes(needed: int | None, capacity: int | None, what: str, source: str = '') -> str:
  parts = []
  if needed is not None:
    parts.append(f'needs {needed / GIB:.2f} GiB per device{source}')
  if capacity is not None:
    parts.append(f'the device has {capacity / GIB:.2f} GiB ({what})')
  return ', '.join(parts)


def check_fits(step_fn, abstract_state, config: ml_collections.ConfigDict, mesh,
               num_channels: int, num_regions: int) -> int | None:
  """Compiles `step_fn` for `abstract_state` (replicated over `mesh`) and a batch of
  `config` (sharded as parallel.shard_batch does, so the loop reuses the compiled step);
  raises OutOfMemory when XLA's memory analysis shows that it cannot fit the device.
  Returns the bytes it needs per device (None: unknown)."""
  replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated,
                                                      weak_type=x.weak_type), abstract_state)
  shape = (config.train.batch_size, *config.data.image_size)
  batch = {'image': jax.ShapeDtypeStruct((*shape, num_channels), jnp.float32, sharding=rows),
           'target': jax.ShapeDtypeStruct((*shape, num_regions), jnp.uint8, sharding=rows)}
  try:
    compiled = step_fn.lower(state, batch).compile()
  except (jax.errors.JaxRuntimeError, MemoryError) as error:
    _raise_explained(error, None, config)
  needed = step_bytes(compiled)
  capacity, what = device_memory(jax.local_devices()[0])
  if needed is not None and capacity is not None and needed > capacity:
    sizes = _sizes(needed, capacity, what, " (XLA's memory analysis; nothing was run)")
    raise OutOfMemory(f'out of memory: the train step {sizes}; {remedies(config)}')
  return needed


# What XLA says when a buffer does not fit: the bytes asked for (CPU, GPU), or the
# program's use against the capacity (TPU compiler).
_ASKED = re.compile(r'allocat\w* ([\d,]+) bytes', re.IGNORECASE)
_TPU_USED = re.compile(r'Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm', re.IGNORECASE)
_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def _explain(error: BaseException, needed: int | None, config) -> OutOfMemory | None:
  """The OutOfMemory line for an out-of-memory `error`; None for any other error."""
  text = str(error)
  if not (isinstance(error, MemoryError) or 'RESOURCE_EXHAUSTED' in text
          or 'out of memory' in text.lower()):
    return None
  capacity, what = device_memory(jax.local_devices()[0])
  if (asked := _ASKED.search(text)):
    detail = f'an allocation of {int(asked.group(1).replace(",", "")) / GIB:.2f} GiB failed'
  elif (used := _TPU_USED.search(text)):
    needed = int(float(used.group(1)) * _UNITS[used.group(2).upper()])
    capacity = int(float(used.group(3)) * _UNITS[used.group(4).upper()])
    detail, what = 'the compiled step', 'high-bandwidth memory'
  else:
    detail = 'it ran out of memory'
  sizes = _sizes(needed, capacity, what)
  return OutOfMemory(f'out of memory: {detail}; the train step {sizes}; {remedies(config)}'
                     if sizes else f'out of memory: {detail}; {remedies(config)}')


@contextlib.contextmanager
def explained(config: ml_collections.ConfigDict, needed: int | None) -> Iterator[None]:
  """Out-of-memory errors raised in the block become one OutOfMemory line; `needed`:
  check_fits's figure."""
  try:
    yield
  except (jax.errors.JaxRuntimeError, MemoryError) as error:
    _raise_explained(error, needed, config)


def _raise_explained(error: BaseException, needed: int | None, config) -> None:
  explanation = _explain(error, needed, config)
  if explanation is None:
    raise error  # not memory: a bug keeps its traceback
  raise explanation from None
