"""Workdirs made in-process for the export tests: a run's files and one checkpoint of
freshly initialised parameters, as train.py lays them out, without training (seconds
instead of a train.py run). Not a test module."""

import dataclasses

from jaxseg import checkpointing, workdir as files
from jaxseg.data import layouts, synthetic
from jaxseg.data.regions import Region
from jaxseg.train_state import schedule_segments, setup_model


@dataclasses.dataclass(frozen=True)
class _Data:  # what setup_model reads of a data set
  regions: tuple[Region, ...]
  channels: tuple[str, ...]


def make_workdir(path, config, regions=layouts.GLIOMA_REGIONS, channels=synthetic.CHANNELS,
                 step: int = 1):
  """Writes the workdir `path` of `config` with checkpoint `step`; returns the model and
  its parameters."""
  path = str(path)
  files.prepare_workdir(path)
  files.write_config(path, config)
  files.record_regions(path, tuple(regions))
  files.record_splits(path, {'train': [], 'val': []})
  model, init_state, _ = setup_model(config, _Data(tuple(regions), tuple(channels)))
  state = init_state()
  checkpointer = checkpointing.Checkpointer(path)
  checkpointer.save(step, state, {'dice': 0.0}, {}, schedule_segments(config.train))
  checkpointer.close()
  return model, state.params
