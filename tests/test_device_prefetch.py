"""Batches placed on the devices ahead of the steps: the same batches in order, sharded
as the step takes them, and a saved position that is that of the batches taken."""

import functools
import time

import grain
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxseg import parallel
from jaxseg.data import train_iterator
from jaxseg.device_prefetch import DevicePrefetch, check_config
from jaxseg.errors import ConfigError, DataError


def _batches() -> grain.MapDataset:
  """Batch s: rows of the value s (batch 2 divides over any forced device count)."""
  return grain.MapDataset.range(50).map(
      lambda s: {'image': np.full((2, 3), s, np.float32), 'target': np.full((2, 1), s, np.uint8)})


class _Counted:
  """A host iterator that counts the batches drawn from it."""

  def __init__(self, iterator):
    self.iterator, self.drawn = iterator, 0

  def __next__(self):
    batch = next(self.iterator)
    self.drawn += 1
    return batch

  def get_state(self):
    return self.iterator.get_state()


def _prefetch(depth, host):
  mesh = parallel.make_mesh()
  return DevicePrefetch(host, functools.partial(parallel.shard_batch, mesh=mesh), depth), mesh


@pytest.mark.parametrize('depth', [0, 2])
def test_the_same_batches_in_order_on_the_devices(depth):
  prefetch, mesh = _prefetch(depth, train_iterator(_batches(), 0, 1))
  with prefetch:
    for s in range(6):
      batch = next(prefetch)
      assert isinstance(batch['image'], jax.Array)
      assert batch['image'].sharding == NamedSharding(mesh, P('data'))
      np.testing.assert_array_equal(np.asarray(batch['image']), np.full((2, 3), s))
      np.testing.assert_array_equal(np.asarray(batch['target']), np.full((2, 1), s))


def test_the_state_after_step_k_resumes_at_batch_k_plus_one():
  host = _Counted(train_iterator(_batches(), 0, 1))
  prefetch, _ = _prefetch(2, host)
  with prefetch:
    for _ in range(3):  # steps 1-3 take batches 0-2
      next(prefetch)
    deadline = time.monotonic() + 60
    while host.drawn < 3 + 2 and time.monotonic() < deadline:
      time.sleep(0.01)
    assert host.drawn >= 5  # the host iterator is ahead of the steps
    state = prefetch.get_state()
  resumed = train_iterator(_batches(), 0, 1, state)
  np.testing.assert_array_equal(next(resumed)['image'], np.full((2, 3), 3))


def test_an_error_of_the_host_is_raised_where_its_batch_was_due():
  def failing():
    yield {'image': np.zeros((2, 3), np.float32)}
    raise DataError('case 7 cannot be read')

  class Host:
    def __init__(self):
      self.batches = failing()

    def __next__(self):
      return next(self.batches)

    def get_state(self):
      return {}
  prefetch, _ = _prefetch(2, Host())
  with prefetch:
    next(prefetch)
    for _ in range(2):  # and again: the stream stays ended
      with pytest.raises(DataError, match='case 7'):
        next(prefetch)


def test_a_negative_depth_is_refused():
  check_config(ml_collections.ConfigDict({'prefetch_to_device': 0}))
  with pytest.raises(ConfigError, match='data.prefetch_to_device'):
    check_config(ml_collections.ConfigDict({'prefetch_to_device': -1}))
