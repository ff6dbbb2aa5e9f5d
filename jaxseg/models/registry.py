"""The models jaxseg knows, by `config.model.name`: the one place that knows each model.

A model is a U-Net body (`UNetSettings`, whose fields are `config.model` keys shared by
every model) plus its own keys. Each entry says how to build it, whether it refines
its prediction over `model.num_iterations`, and which of its keys change only speed or
memory (they may differ when a run is resumed or evaluated). Adding a model means one
entry here, its module and its config file in `configs/`.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import ml_collections

from jaxseg.errors import ConfigError
from jaxseg.models.backend import Ops
from jaxseg.models.lstm_unet import LSTMUNet
from jaxseg.models.unet import UNet, UNetSettings

# UNetSettings fields that change speed or memory, not what is computed.
BODY_RUNTIME_KEYS = ('remat_levels', 'dtype')


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """How to build one model from (body settings, ops, its own keys' values)."""
  build: Callable[..., nn.Module]
  own_keys: tuple[str, ...] = ()  # config.model keys beyond UNetSettings' fields
  runtime_keys: tuple[str, ...] = ()  # own keys that change speed or memory only
  iterates: bool = False  # outputs one prediction per model.num_iterations
  config_file: str = ''  # configs/<file>.py with its defaults


MODELS: dict[str, ModelEntry] = {
    'unet': ModelEntry(build=UNet, config_file='unet'),
    'lstm_unet': ModelEntry(
        build=lambda settings, ops, lstm_at, **loop: LSTMUNet(
            settings, ops, lstm_at=tuple(lstm_at), **loop),
        own_keys=('num_iterations', 'lstm_at', 'remat', 'unroll'),
        runtime_keys=('remat', 'unroll'), iterates=True, config_file='lstm_unet'),
}


def get(name: str) -> ModelEntry:
  if name not in MODELS:
    raise ConfigError(f'model.name: unknown model {name!r}; choose one of {tuple(MODELS)}')
  return MODELS[name]


def build(model_config: ml_collections.ConfigDict, settings: UNetSettings, ops: Ops
          ) -> nn.Module:
  """Model `model_config.name` with body `settings`, its layers computed by `ops`."""
  entry = get(model_config.name)
  return entry.build(settings, ops, **{key: model_config[key] for key in entry.own_keys})


def num_iterations(model_config: ml_collections.ConfigDict) -> int:
  """How many predictions the model makes per input (1 unless it iterates)."""
  return model_config.num_iterations if get(model_config.name).iterates else 1


def iterating_models() -> tuple[str, ...]:
  return tuple(name for name, entry in MODELS.items() if entry.iterates)


def runtime_keys(name: str | None) -> tuple[str, ...]:
  """`config.model` keys of model `name` that may change between runs of one workdir."""
  own = MODELS[name].runtime_keys if name in MODELS else ()
  return BODY_RUNTIME_KEYS + own


def config_module(name: str | None) -> str | None:
  """The module of configs/ holding model `name`'s defaults (None: not a known model)."""
  return f'configs.{MODELS[name].config_file}' if name in MODELS else None
