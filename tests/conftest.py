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
