"""U-Net. `--config=configs/unet.py` (2D) or `--config=configs/unet.py:3d`."""

from configs.common import get_common_config, model_defaults


def get_config(variant=None):
  config = get_common_config(variant)
  config.model = model_defaults(variant)
  config.model.name = 'unet'
  return config
