"""Segmentation models, built by name from `config.model`.

`config.model` keys map one to one onto fields: those of `UNetSettings` (the U-Net
body every model shares) and each model's own (registry.py, the list of models).
`config.compute` chooses what computes their layers (backend/).
"""

import ml_collections

from jaxseg.models import registry
from jaxseg.models.backend import Ops, ops_from_config
from jaxseg.models.convlstm import ConvLSTMCell
from jaxseg.models.lstm_unet import LSTMUNet
from jaxseg.models.unet import UNet, UNetBody, UNetSettings, check_input_shape


def build_model(model_config: ml_collections.ConfigDict, num_outputs: int,
                compute_config: ml_collections.ConfigDict | None = None):
  """The flax module described by `config.model`, predicting `num_outputs` channels, its
  layers computed as `config.compute` says (None: all 'auto').

  Every value is checked here, when the module is built, not when it first runs.
  """
  registry.get(model_config.name)  # an unknown name first, then the body's values
  settings = UNetSettings.from_config(model_config, num_outputs)
  return registry.build(model_config, settings, ops_from_config(compute_config, settings.dtype))


__all__ = ['ConvLSTMCell', 'LSTMUNet', 'Ops', 'UNet', 'UNetBody', 'UNetSettings',
           'build_model', 'check_input_shape', 'registry']
