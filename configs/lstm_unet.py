"""LSTM-U-Net with T feedback iterations. `--config=configs/lstm_unet.py` (2D) or `:3d`."""

from configs.common import get_common_config, model_defaults


def get_config(variant=None):
  config = get_common_config(variant)
  config.model = model_defaults(variant)
  config.model.name = 'lstm_unet'
  config.model.num_iterations = 3
  config.model.lstm_at = ('bottleneck',)  # any of encoder{i}, bottleneck, decoder{i}
  config.model.remat = False              # recompute activations: less memory, more time
  config.model.unroll = True              # unrolled loop: slower to compile, far faster on CPU
  return config
