"""Data parallelism over every device of the job: a 1-D mesh with a 'data' axis.

Batches are sharded along their leading axis, parameters and optimiser state are
replicated; XLA inserts the gradient all-reduce into the jit-compiled step.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str) -> None:
  devices = jax.device_count()
  if batch_size % devices:
    raise ValueError(f'{name}={batch_size} must be a multiple of the number of devices ({devices})')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host batch (this process's rows) -> global arrays sharded along 'data'."""
  sharding = NamedSharding(mesh, P('data'))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
