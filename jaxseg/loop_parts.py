"""What the training loop runs, built once from the config: `build(config)` makes the
device mesh, the jit-compiled train step, the model with its initial state and the
validation predictor, and so refuses bad config values (each section by the code that
uses it) before any data is read or any file written; `for_data` fits the model to the
channels and regions the data turns out to have. `make_train_batches` is the loop's
training data.
"""

import dataclasses
import os
from typing import Any, Callable

import ml_collections
from jax.sharding import Mesh

from jaxseg import device_prefetch, inference, parallel
from jaxseg.data import SegmentationData, input_pipeline, layouts, synthetic, train_batches
from jaxseg.errors import ConfigError, DataError
from jaxseg.models import build_model, check_input_shape
from jaxseg.train_state import initial_state, learning_rate_schedule
from jaxseg.train_step import make_train_step


# config keys read by the training loop; every other section is checked where it is used.
_LOOP_COUNTS = ('train.num_steps', 'train.log_every_steps', 'eval.every_steps',
                'checkpoint.every_steps')


@dataclasses.dataclass(frozen=True)
class LoopParts:
  """What the loop runs, built once from the config: the device mesh, the jit-compiled
  train step, and for data of `channels` and `regions` the model, its initial state
  (`init_state()`) and abstract state, and the validation predictor."""
  mesh: Mesh
  step_fn: Callable
  channels: tuple[str, ...]
  regions: tuple
  model: Any
  init_state: Callable
  abstract_state: Any
  predictor: inference.SlidingWindowPredictor


def _model_parts(config: ml_collections.ConfigDict, mesh: Mesh, channels, regions) -> dict:
  model = build_model(config.model, len(regions), config.compute)
  check_input_shape(config.data.image_size, len(config.model.features), 'data.image_size')
  predictor = inference.SlidingWindowPredictor.from_config(model, config.eval,
                                                           config.data.image_size, mesh)
  init_state, abstract_state = initial_state(config, model, len(channels))
  return dict(channels=tuple(channels), regions=tuple(regions), model=model,
              init_state=init_state, abstract_state=abstract_state, predictor=predictor)


def build(config: ml_collections.ConfigDict) -> LoopParts:
  """The loop's parts for the data's channels and regions as the config implies them.

  Bad values are refused here, before data is read or files are written: each section
  by the code that uses it, by building it (model, predictor, train step, schedule).
  """
  for key in _LOOP_COUNTS:
    section, name = key.split('.')
    if config[section][name] < 1:
      raise ConfigError(f'{key} must be at least 1, got {config[section][name]}')
  budget = config.train.get('time_budget_minutes')
  if budget is not None and budget <= 0:
    raise ConfigError(f'train.time_budget_minutes must be positive, got {budget}')
  if config.train.on_nonfinite not in ('stop', 'skip'):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got "
                     f'{config.train.on_nonfinite!r}')
  mesh = parallel.make_mesh()
  channels = tuple(config.data.modalities) if config.data.root else synthetic.CHANNELS
  model_parts = _model_parts(config, mesh, channels, layouts.GLIOMA_REGIONS)
  step_fn = make_train_step(config)  # loss, augmentation, micro-batches
  learning_rate_schedule(config.train)
  input_pipeline.check_config(config.data)
  device_prefetch.check_config(config.data)
  for key in ('root', 'val_root'):  # before the step is compiled; load_splits checks the rest
    if config.data.get(key) and not os.path.isdir(os.path.expanduser(config.data[key])):
      raise DataError(f'data.{key}: {config.data[key]} is not a directory')
  return LoopParts(mesh=mesh, step_fn=step_fn, **model_parts)


def for_data(parts: LoopParts, config: ml_collections.ConfigDict,
             data: SegmentationData) -> LoopParts:
  """`parts` for the channels and regions that `data` has: the model, its state and the
  predictor built again where they differ from those the config implied."""
  if (data.channels, data.regions) == (parts.channels, parts.regions):
    return parts
  return dataclasses.replace(parts, **_model_parts(config, parts.mesh, data.channels,
                                                   data.regions))


def make_train_batches(config: ml_collections.ConfigDict, data: SegmentationData,
                       process_index: int = 0, process_count: int = 1):
  """The training batches of `config` (input_pipeline.train_batches): element s is this
  process's part of step s's global batch, as the training loop and the benchmarks read it."""
  return train_batches(data, batch_size=config.train.batch_size,
                       window_size=config.data.image_size,
                       foreground_fraction=config.data.foreground_fraction,
                       seed=config.train.seed, process_index=process_index,
                       process_count=process_count)
