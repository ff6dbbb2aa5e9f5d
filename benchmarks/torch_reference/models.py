"""PyTorch reference of jaxseg's U-Net and LSTM-U-Net, for benchmarks/compare_torch.py.

Mirrors jaxseg/models (defaults of configs/unet.py and configs/lstm_unet.py) layer for
layer, so that a timing comparison compares frameworks, not architectures:
- conv blocks: two (3^d conv without bias -> GroupNorm -> ReLU), GroupNorm with the
  group count of jaxseg's Norm (largest divisor of the width not above 8) and Flax's
  epsilon 1e-6;
- 2x max pooling down; 'transpose' upsampling = 2^d kernel, stride-2 transposed conv
  (jaxseg computes the same function as a dense layer + depth-to-space);
- ConvLSTM cells with the four gates fused in one 3^d conv over concat(x, h), gate
  order (i, f, g, o), forget-gate bias 1, at the same locations (default bottleneck);
- feedback: iteration t sees concat(image, sigmoid(logits of t-1)), zeros at t = 1;
- a 1^d conv head to `num_outputs` region logits; loss = batch-pooled soft Dice + BCE
  per region, averaged over iterations (jaxseg/losses.py without deep supervision).
Tensors are channels-first, (B, C, *spatial), as PyTorch's convolutions expect. The
spatial rank (2 or 3) is a constructor argument. Initialisation follows PyTorch's
defaults (except the forget-gate bias): it does not affect timings.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
FLAX_NORM_EPSILON = 1e-6  # flax.linen.GroupNorm's default (PyTorch's is 1e-5)


def group_count(features: int, num_groups: int = 8) -> int:
  """jaxseg's Norm('group'): the largest divisor of the width not above num_groups."""
  groups = min(num_groups, features)
  while features % groups:
    groups -= 1
  return groups


def lstm_locations(num_levels: int) -> list[str]:
  """Valid ConvLSTM locations, named as in jaxseg.models.unet."""
  return ([f'encoder{i}' for i in range(num_levels - 1)] + ['bottleneck'] +
          [f'decoder{i}' for i in range(num_levels - 1)])


def location_level(location: str, num_levels: int) -> int:
  return num_levels - 1 if location == 'bottleneck' else int(location[len('encoder'):])


class ConvBlock(nn.Sequential):
  """Two (conv -> GroupNorm -> ReLU) layers with 3^d kernels: one U-Net level."""

  def __init__(self, ndim: int, in_features: int, features: int):
    layers = []
    for cin in (in_features, features):
      # No conv bias: the norm's shift makes it redundant (as in jaxseg with a norm).
      layers += [CONV[ndim](cin, features, 3, padding=1, bias=False),
                 nn.GroupNorm(group_count(features), features, eps=FLAX_NORM_EPSILON),
                 nn.ReLU(inplace=True)]
    super().__init__(*layers)


class ConvLSTMCell(nn.Module):
  """ConvLSTM with the four gates fused into one convolution over concat(x, h)."""

  def __init__(self, ndim: int, in_features: int, features: int, kernel_size: int = 3):
    super().__init__()
    self.features = features
    self.gates = CONV[ndim](in_features + features, 4 * features, kernel_size,
                            padding=kernel_size // 2)
    with torch.no_grad():  # forget-gate bias 1: keep the state by default at the start
      self.gates.bias.zero_()
      self.gates.bias[features:2 * features] = 1.0

  def forward(self, carry, x):
    c, h = carry
    i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (c, h), h


class UNetBody(nn.Module):
  """One U-Net pass: `new_carry, logits = body(carry, x)`; carry maps location -> (c, h)."""

  def __init__(self, ndim: int, in_channels: int, features: Sequence[int], num_outputs: int,
               lstm_at: Sequence[str] = ()):
    super().__init__()
    num_levels = len(features)
    for location in lstm_at:
      if location not in lstm_locations(num_levels):
        raise ValueError(f'unknown ConvLSTM location {location!r}')
    self.ndim, self.features, self.lstm_at = ndim, tuple(features), tuple(lstm_at)
    widths = [in_channels, *features]
    self.encoders = nn.ModuleList(ConvBlock(ndim, widths[i], widths[i + 1])
                                  for i in range(num_levels - 1))
    self.bottleneck = ConvBlock(ndim, features[-2], features[-1])
    # Decoder level i: upsample level i+1 to features[i], concat the skip, conv block.
    self.upsamples = nn.ModuleList(
        CONV_TRANSPOSE[ndim](features[i + 1], features[i], 2, stride=2)
        for i in range(num_levels - 1))
    self.decoders = nn.ModuleList(ConvBlock(ndim, 2 * features[i], features[i])
                                  for i in range(num_levels - 1))
    self.lstms = nn.ModuleDict()
    for location in self.lstm_at:
      width = features[location_level(location, num_levels)]
      self.lstms[location] = ConvLSTMCell(ndim, width, width)
    self.head = CONV[ndim](features[0], num_outputs, 1)

  def _maybe_lstm(self, location, x, carry, new_carry):
    if location not in self.lstm_at:
      return x
    new_carry[location], x = self.lstms[location](carry[location], x)
    return x

  def forward(self, carry: dict, x: torch.Tensor):
    new_carry, skips = {}, []
    for level, encoder in enumerate(self.encoders):
      x = self._maybe_lstm(f'encoder{level}', encoder(x), carry, new_carry)
      skips.append(x)
      x = MAX_POOL[self.ndim](x, 2)
    x = self._maybe_lstm('bottleneck', self.bottleneck(x), carry, new_carry)
    for level in reversed(range(len(self.encoders))):
      x = torch.cat([self.upsamples[level](x), skips[level]], dim=1)
      x = self._maybe_lstm(f'decoder{level}', self.decoders[level](x), carry, new_carry)
    return new_carry, self.head(x)


class UNet(nn.Module):
  """Plain U-Net; returns logits (1, B, R, *spatial), with jaxseg's iteration axis."""

  def __init__(self, ndim: int, in_channels: int = 4, features: Sequence[int] = (16, 32, 64, 128),
               num_outputs: int = 3):
    super().__init__()
    self.body = UNetBody(ndim, in_channels, features, num_outputs)

  def forward(self, x):
    return self.body({}, x)[1][None]


class LSTMUNet(nn.Module):
  """U-Net with ConvLSTM cells, run T times with feedback; returns logits (T, B, R, *spatial).

  The loop is a plain Python loop: eager PyTorch has no compile step to unroll, and
  autograd flows through the LSTM states and the fed-back sigmoid as in jaxseg.
  """

  def __init__(self, ndim: int, in_channels: int = 4, features: Sequence[int] = (16, 32, 64, 128),
               num_outputs: int = 3, num_iterations: int = 3,
               lstm_at: Sequence[str] = ('bottleneck',)):
    super().__init__()
    if num_iterations < 1:
      raise ValueError(f'num_iterations must be at least 1, got {num_iterations}')
    self.num_outputs, self.num_iterations = num_outputs, num_iterations
    # The body sees the image and the previous prediction: in_channels + num_outputs.
    self.body = UNetBody(ndim, in_channels + num_outputs, features, num_outputs, lstm_at)

  def forward(self, x):
    batch, _, *spatial = x.shape
    features = self.body.features
    carry = {}
    for location in self.body.lstm_at:
      level = location_level(location, len(features))
      shape = (batch, features[level], *(s // 2**level for s in spatial))
      carry[location] = (x.new_zeros(shape), x.new_zeros(shape))
    probs = x.new_zeros((batch, self.num_outputs, *spatial))
    outputs = []
    for _ in range(self.num_iterations):
      carry, logits = self.body(carry, torch.cat([x, probs], dim=1))
      probs = torch.sigmoid(logits)
      outputs.append(logits)
    return torch.stack(outputs)


def soft_dice_loss(logits, targets, smooth: float = 1e-5):
  """1 - soft Dice per region (channel axis 1), pooled over batch and space; mean of regions."""
  probs = torch.sigmoid(logits)
  axes = [0, *range(2, logits.ndim)]
  intersection = (probs * targets).sum(axes)
  total = probs.sum(axes) + targets.sum(axes)
  return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def total_loss(logits, targets, dice_weight: float = 1.0, ce_weight: float = 1.0):
  """Dice + BCE of each iteration's logits (T, B, R, *spatial), averaged over iterations
  (jaxseg's default uniform iteration weights)."""
  per_iteration = [dice_weight * soft_dice_loss(logit, targets) +
                   ce_weight * F.binary_cross_entropy_with_logits(logit, targets)
                   for logit in logits]
  return torch.stack(per_iteration).mean()


def train_step(model: nn.Module, optimiser, x, y, config, autocast_dtype=None) -> None:
  """jaxseg's train step in eager PyTorch: loss of every iteration, backward, global-norm
  clipping to train.grad_clip, and the optimiser step unless loss or norm is non-finite.
  `autocast_dtype` (e.g. torch.bfloat16): mixed precision for the model, the loss in
  float32, as jaxseg's model.dtype does."""
  optimiser.zero_grad(set_to_none=True)
  with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
    logits = model(x)
  loss = total_loss(logits.float(), y, config.loss.dice_weight, config.loss.ce_weight)
  loss.backward()
  norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
  if torch.isfinite(loss) and torch.isfinite(norm):  # as jaxseg: skip non-finite updates
    optimiser.step()


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
