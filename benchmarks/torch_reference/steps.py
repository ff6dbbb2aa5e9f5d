"""The PyTorch reference's train and inference steps on a benchmark case, eager or
through torch.compile, in either memory format, timed as jaxseg's are."""

import numpy as np
import torch

from benchmarks import report, timing
from benchmarks.torch_reference import models
from jaxseg.data.regions import BRATS_2023_REGIONS


def channels_first(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def torch_model(config, ndim: int) -> torch.nn.Module:
  model = config.model
  if (model.norm, model.activation, model.upsampling,
      model.deep_supervision) != ('group', 'relu', 'transpose', False):
    raise ValueError('the PyTorch reference mirrors only the default model settings')
  common = dict(ndim=ndim, in_channels=len(config.data.modalities),
                features=tuple(model.features), num_outputs=len(BRATS_2023_REGIONS))
  if model.name == 'unet':
    return models.UNet(**common)
  return models.LSTMUNet(num_iterations=model.num_iterations,
                         lstm_at=tuple(model.lstm_at), **common)


def make_torch_steps(config, image, target, compile_model: bool = False,
                     channels_last: bool = False, device: str | None = None):
  """The same step in PyTorch: forward, loss, backward, clipping, AdamW; eager, or the
  model through torch.compile. config.model.dtype bfloat16 runs it under autocast.
  `channels_last`: model and inputs in PyTorch's channels-last memory format (the
  faster one for oneDNN convolutions on a CPU); the tensors' shapes do not change.
  `device`: by default, the same kind of device as JAX's (a GPU when there is one:
  JAX takes it by default).
  Returns (model, train, infer, device): train and infer run one step each and wait
  for it."""
  torch.manual_seed(config.train.seed)
  device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
  wait = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  model = torch_model(config, image.ndim - 2).to(device)
  memory_format = ({4: torch.channels_last, 5: torch.channels_last_3d}[image.ndim]
                   if channels_last else torch.contiguous_format)
  model = model.to(memory_format=memory_format)
  autocast = torch.bfloat16 if config.model.dtype == 'bfloat16' else None
  if compile_model:
    model = torch.compile(model)
  train_config = config.train
  optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                weight_decay=train_config.weight_decay)
  x = channels_first(image).to(device).contiguous(memory_format=memory_format)
  y = channels_first(target).float().to(device).contiguous(memory_format=memory_format)

  def train():
    models.train_step(model, optimiser, x, y, config, autocast)
    wait()

  def infer():
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast,
                                                enabled=autocast is not None):
      model(x)[-1]
    wait()
  return model, train, infer, device


def measure_torch(config, image, target, steps: int, compile_model: bool = False,
                  channels_last: bool = False) -> dict:
  """make_torch_steps' train and inference steps, timed."""
  model, train, infer, device = make_torch_steps(config, image, target, compile_model,
                                                 channels_last)
  first_s, train_s = timing.first_and_median(train, steps)
  _, infer_s = timing.first_and_median(infer, steps)
  return {'params': models.num_params(model), 'compile_s': first_s, 'train_s': train_s,
          'infer_s': infer_s,
          'device': torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu',
          'peak_gib': None, 'rss_gib': report.peak_rss_gib()}
