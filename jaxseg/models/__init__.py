"""Segmentation models, chosen by name from `config.model`."""

import jax
import jax.numpy as jnp
import ml_collections

from jaxseg.models.convlstm import ConvLSTMCell
from jaxseg.models.layers import check_conv3d, check_norm, check_upsampling, get_activation
from jaxseg.models.lstm_unet import LSTMUNet
from jaxseg.models.unet import UNet, UNetBody

MODELS = ('unet', 'lstm_unet')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def _dtype(key: str, name: str):
  if name not in DTYPES:
    raise ValueError(f'model.{key}: unknown dtype {name!r}; choose one of {sorted(DTYPES)}')
  return DTYPES[name]


def resolve_conv3d(method: str, backend: str | None = None) -> str:
  """model.conv3d 'auto' -> 'depth_folded' on CPU (XLA:CPU's 3D convolutions are slow,
  BENCHMARKS.md), 'native' on GPU and TPU, whose libraries have fast 3D kernels."""
  if method != 'auto':
    check_conv3d(method)
    return method
  return 'depth_folded' if (backend or jax.default_backend()) == 'cpu' else 'native'


def build_model(model_config: ml_collections.ConfigDict, num_outputs: int):
  """The flax module described by `config.model`, predicting `num_outputs` channels."""
  common = dict(
      features=tuple(model_config.features),
      num_outputs=num_outputs,
      norm=model_config.norm,
      activation=model_config.activation,
      upsampling=model_config.upsampling,
      deep_supervision=model_config.deep_supervision,
      conv3d=resolve_conv3d(model_config.get('conv3d', 'auto')),
      remat_levels=model_config.get('remat_levels', False),
      dtype=_dtype('dtype', model_config.dtype),
      param_dtype=_dtype('param_dtype', model_config.param_dtype),
  )
  # Checked here, before any file is written, rather than when the model first runs.
  check_norm(model_config.norm)
  check_upsampling(model_config.upsampling)
  get_activation(model_config.activation)
  if len(common['features']) < 2:
    raise ValueError(f'model.features: need at least 2 levels, got {common["features"]}')
  if model_config.name == 'unet':
    return UNet(**common)
  if model_config.name == 'lstm_unet':
    return LSTMUNet(num_iterations=model_config.num_iterations,
                    lstm_at=tuple(model_config.lstm_at), remat=model_config.remat,
                    unroll=model_config.unroll, **common)
  raise ValueError(f'model.name: unknown model {model_config.name!r}; choose one of {MODELS}')


__all__ = ['ConvLSTMCell', 'LSTMUNet', 'UNet', 'UNetBody', 'build_model']
