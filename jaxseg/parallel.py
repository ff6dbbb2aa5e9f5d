"""Data parallelism over every device of the job: a 1-D mesh with a 'data' axis.

Batches are sharded along their leading axis, parameters and optimiser state are
replicated; XLA inserts the gradient all-reduce into the jit-compiled step. With
several processes (hosts), each feeds its own rows of every global batch.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxseg.errors import ConfigError


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts jax.distributed when the job runs as several processes: from explicit
  settings, or detected by JAX where a cluster launched the job (SLURM's srun with
  several tasks, TPU pod slices, Open MPI). A lone process starts nothing."""
  if coordinator_address or num_processes:
    if not (coordinator_address and num_processes and process_id is not None):
      raise ConfigError('--coordinator_address, --num_processes and --process_id go together')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _launched_as_several_processes():
    jax.distributed.initialize()  # JAX reads the cluster's environment


def _launched_as_several_processes() -> bool:
  env = os.environ
  counts = (env.get('SLURM_NTASKS') if env.get('SLURM_STEP_ID') else None,
            env.get('OMPI_COMM_WORLD_SIZE'))
  several_tpu_hosts = ',' in env.get('TPU_WORKER_HOSTNAMES', '')
  return several_tpu_hosts or any(c is not None and c.isdigit() and int(c) > 1 for c in counts)


def make_mesh() -> Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str) -> None:
  devices = jax.device_count()
  if batch_size % devices:
    raise ConfigError(f'{name}={batch_size} must be a multiple of the number of devices '
                      f'({devices})')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host batch (this process's rows) -> global arrays sharded along 'data'."""
  sharding = NamedSharding(mesh, P('data'))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def shard_global(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A global batch that every process holds whole -> sharded along 'data' (each
  process places only the rows of its own devices)."""
  sharding = NamedSharding(mesh, P('data'))
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) array, on every process."""
  if array.is_fully_addressable:
    return np.asarray(jax.device_get(array))
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))
