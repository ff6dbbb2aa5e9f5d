"""Shared fixtures: tiny configs that compile and train in seconds on 2 CPU cores."""

import os

import jax
import pytest

from jaxseg.xla_flags import apply_default_flags
apply_default_flags()  # test the numerics that train.py runs with
# Keys made in tests use the PRNG that jaxseg initialises parameters with: threefry
# samplers take seconds each to compile on XLA:CPU (see jaxseg/train_state.py).
jax.config.update('jax_default_prng_impl', 'rbg')

from configs import lstm_unet, unet  # noqa: E402  (after the XLA flags)
from helpers import tiny  # noqa: E402


@pytest.fixture
def tiny_lstm_config():
  return tiny(lstm_unet.get_config(None))


@pytest.fixture
def tiny_unet_config():
  return tiny(unet.get_config(None))


@pytest.fixture(scope='session', autouse=True)
def jaxseg_cache(tmp_path_factory):
  """train.py / eval.py run by the tests cache (compiled steps, preprocessed cases) in
  one temporary directory, never in ~/.cache; the tests share its compiled steps."""
  os.environ['JAXSEG_CACHE_DIR'] = str(tmp_path_factory.mktemp('jaxseg_cache'))
  yield os.environ['JAXSEG_CACHE_DIR']


# The scopes that take longest, longest first (tests/test_isa_levels.py's AVX2 class runs
# the kernel tests again in a child). pytest-xdist (setup.cfg: --dist loadscope
# --no-loadscope-reorder) hands whole scopes to its two workers in collection order, so
# these start first and the short ones fill the end; xdist's own order (most tests
# first) would leave one core idle behind a long scope started last.
LONGEST_FIRST = ('tests/test_isa_levels.py::TestAtAVX2', 'tests/test_real_data.py',
                 'tests/test_resume.py', 'tests/test_faults.py', 'tests/test_parallel.py',
                 'tests/test_cli.py', 'tests/test_experiments.py', 'tests/test_onednn.py',
                 'tests/test_models.py', 'tests/test_cluster_faults.py')


def pytest_collection_modifyitems(items):
  def rank(item):
    return next((i for i, scope in enumerate(LONGEST_FIRST) if item.nodeid.startswith(scope)),
                len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: the others keep their order
