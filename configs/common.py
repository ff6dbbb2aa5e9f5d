"""Data, loss, training, evaluation and checkpoint settings shared by every model config."""

import ml_collections
from ml_collections import config_dict


def get_common_config(variant: str | None) -> ml_collections.ConfigDict:
  """Everything but the model. `variant` '2d' (default) or '3d' picks the input rank."""
  variant = variant or '2d'
  if variant not in ('2d', '3d'):
    raise ValueError(f'unknown config variant {variant!r}; use :2d or :3d')
  config = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  config.data.root = config_dict.placeholder(str)  # unset: embedded synthetic data
  config.data.seed = 0              # synthetic data, and the train/val split of a data.root
  config.data.val_fraction = 0.3    # share of a data.root's cases used for validation
  config.data.image_size = (64, 64) if variant == '2d' else (32, 32, 32)
  config.data.num_train_cases = 256 if variant == '2d' else 64
  config.data.num_val_cases = 32 if variant == '2d' else 16

  config.loss = ml_collections.ConfigDict()
  config.loss.dice_weight = 1.0
  config.loss.ce_weight = 1.0
  config.loss.iteration_weights = ()  # one per refinement iteration; empty = equal weights

  config.train = ml_collections.ConfigDict()
  config.train.seed = 0
  config.train.num_steps = 500 if variant == '2d' else 300
  config.train.batch_size = 8 if variant == '2d' else 2
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 50
  config.train.weight_decay = 1e-4
  config.train.grad_clip = 1.0
  config.train.log_every_steps = 20

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 100
  config.eval.batch_size = 16 if variant == '2d' else 2

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 200 if variant == '2d' else 100
  return config


def model_defaults(variant: str | None) -> ml_collections.ConfigDict:
  """Model settings shared by the U-Net and the LSTM-U-Net."""
  model = ml_collections.ConfigDict()
  model.features = (16, 32, 64, 128) if (variant or '2d') == '2d' else (8, 16, 32, 64)
  model.norm = 'group'              # group | instance | layer | none
  model.activation = 'relu'         # relu | leaky_relu | gelu | silu
  model.upsampling = 'transpose'    # transpose | resize
  model.deep_supervision = False
  model.dtype = 'float32'           # computation dtype: float32 | bfloat16
  model.param_dtype = 'float32'
  return model
