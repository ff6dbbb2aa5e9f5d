"""Segmentation models, built by name from `config.model`.

`config.model` keys map one to one onto fields: those of `UNetSettings` (the U-Net
body both models share) and, for the LSTM-U-Net, those of `LSTMUNet`. `config.compute`
chooses what computes their layers (backend/).
"""

import ml_collections

from jaxseg.errors import ConfigError
from jaxseg.models.backend import Ops, ops_from_config
from jaxseg.models.convlstm import ConvLSTMCell
from jaxseg.models.lstm_unet import LSTMUNet
from jaxseg.models.unet import UNet, UNetBody, UNetSettings, check_input_shape

MODELS = ('unet', 'lstm_unet')
LSTM_KEYS = ('num_iterations', 'lstm_at', 'remat', 'unroll')  # LSTMUNet's own fields


def build_model(model_config: ml_collections.ConfigDict, num_outputs: int,
                compute_config: ml_collections.ConfigDict | None = None):
  """The flax module described by `config.model`, predicting `num_outputs` channels, its
  layers computed as `config.compute` says (None: all 'auto').

  Every value is checked here, when the module is built, not when it first runs.
  """
  if model_config.name not in MODELS:
    raise ConfigError(f'model.name: unknown model {model_config.name!r}; choose one of {MODELS}')
  settings = UNetSettings.from_config(model_config, num_outputs)
  ops = ops_from_config(compute_config, dtype=settings.dtype)
  if model_config.name == 'unet':
    return UNet(settings, ops)
  loop = {key: model_config[key] for key in LSTM_KEYS}
  return LSTMUNet(settings, ops, **{**loop, 'lstm_at': tuple(loop['lstm_at'])})


__all__ = ['ConvLSTMCell', 'LSTMUNet', 'Ops', 'UNet', 'UNetBody', 'UNetSettings',
           'build_model', 'check_input_shape']
