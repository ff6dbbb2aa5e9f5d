"""jaxseg's Flax parameters copied into the PyTorch reference of the same architecture,
and the check that both then compute the same logits. Import it after
jaxseg.startup.prepare_process (it imports JAX)."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import cases, jax_model
from benchmarks.torch_reference.steps import channels_first, torch_model


def load_flax_params(model: torch.nn.Module, params: dict, ndim: int) -> None:
  """Copies Flax parameters of the same architecture into the PyTorch reference."""
  def conv(kernel):  # (*k, in, out) -> (out, in, *k)
    return np.transpose(kernel, (ndim + 1, ndim, *range(ndim)))

  def set_(tensor, value):
    value = torch.tensor(np.asarray(value))  # a copy: device arrays are read-only
    assert tensor.shape == value.shape, (tensor.shape, value.shape)
    tensor.copy_(value)

  def block(sequential, p):  # conv, norm, relu, conv, norm, relu
    for i in range(2):
      set_(sequential[3 * i].weight, conv(p[f'Conv_{i}']['kernel']))
      set_(sequential[3 * i + 1].weight, p[f'Norm_{i}']['GroupNorm_0']['scale'])
      set_(sequential[3 * i + 1].bias, p[f'Norm_{i}']['GroupNorm_0']['bias'])

  body_params = params['refine']['body'] if 'refine' in params else params['body']
  body = model.body
  with torch.no_grad():
    for level, encoder in enumerate(body.encoders):
      block(encoder, body_params[f'encoder{level}'])
      block(body.decoders[level], body_params[f'decoder{level}'])
      # jaxseg's dense kernel (in, 2^d * out) in depth_to_space order (*factors, out)
      # is the transposed conv's (in, out, *factors) kernel.
      up = body_params[f'upsample{level}']
      kernel = up['kernel']['kernel']
      kernel = kernel.reshape(kernel.shape[0], *(2,) * ndim, -1)
      set_(body.upsamples[level].weight,
           np.transpose(kernel, (0, ndim + 1, *range(1, ndim + 1))))
      set_(body.upsamples[level].bias, up['bias'])
    block(body.bottleneck, body_params['bottleneck'])
    for location, cell in body.lstms.items():
      set_(cell.gates.weight, conv(body_params[f'lstm_{location}']['gates']['kernel']))
      set_(cell.gates.bias, body_params[f'lstm_{location}']['gates']['bias'])
    head = body_params['head']
    set_(body.head.weight, np.asarray(head['kernel']).T.reshape(*head['kernel'].shape[::-1],
                                                                 *(1,) * ndim))
    set_(body.head.bias, head['bias'])


def check_same_function(variant: str, shape) -> float:
  """Max |logit difference| of the Flax and PyTorch LSTM-U-Nets with the same weights."""
  config = cases.make_config('lstm_unet', variant, shape, 2)
  model, state = jax_model.model_and_state(config)
  image, _ = cases.make_inputs(config, seed=1)
  ours = np.asarray(model.apply({'params': state.params}, jnp.asarray(image))[0])
  reference = torch_model(config, len(shape))
  load_flax_params(reference, jax.device_get(state.params), len(shape))
  with torch.no_grad():
    theirs = reference(channels_first(image)).numpy()
  return float(np.abs(np.moveaxis(theirs, 2, -1) - ours).max())
