"""jaxseg's model and initial train state for a benchmark case, with no data: the
parameters a config gives, on the default device. Import it after
jaxseg.startup.prepare_process (it imports JAX)."""

import jax

from jaxseg.data import SegmentationData
from jaxseg.data.regions import BRATS_2023_REGIONS
from jaxseg.train_state import setup_model


def model_and_state(config):
  """(Flax model, initial TrainState) of `config`, as train.py builds them."""
  data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, tuple(config.data.modalities))
  model, init_state, _ = setup_model(config, data)
  return model, jax.jit(init_state)()
