"""Soft Dice + binary cross-entropy on overlapping regions, over every refinement iteration.

Targets are region masks (..., R), not one-hot labels: BraTS scores the nested regions
WT, TC and ET, and a voxel of enhancing tumour belongs to all three. One sigmoid per
region learns exactly what is scored (the region-based training of nnU-Net's BraTS
entries); a softmax over mutually exclusive labels would have to be re-assembled into
regions and would not penalise region errors directly.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from jaxseg.errors import ConfigError


def soft_dice_loss(logits: jax.Array, targets: jax.Array, smooth: float = 1e-5) -> jax.Array:
  """1 - soft Dice per region, pooled over the batch and space, averaged over regions.

  Pooling over the batch ("batch Dice") keeps the loss defined and stable when a
  region is absent from some samples of the batch.
  """
  probs = jax.nn.sigmoid(logits)
  axes = tuple(range(logits.ndim - 1))
  intersection = jnp.sum(probs * targets, axis=axes)
  total = jnp.sum(probs, axis=axes) + jnp.sum(targets, axis=axes)
  return 1.0 - jnp.mean((2.0 * intersection + smooth) / (total + smooth))


def bce_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def segmentation_loss(logits, targets, dice_weight: float = 1.0, ce_weight: float = 1.0):
  logits = logits.astype(jnp.float32)
  return dice_weight * soft_dice_loss(logits, targets) + ce_weight * bce_loss(logits, targets)


def downsample_targets(targets: jax.Array, factor: int) -> jax.Array:
  """Average-pool region masks by `factor` per spatial axis: soft targets for coarse heads."""
  batch, *spatial, regions = targets.shape
  shape = [batch]
  for s in spatial:
    shape += [s // factor, factor]
  pooled = targets.reshape(*shape, regions)
  return pooled.mean(axis=tuple(range(2, 2 * len(spatial) + 1, 2)))


def iteration_weights(num_iterations: int, weights: Sequence[float] = ()) -> jax.Array:
  """Normalised loss weight of each refinement iteration; empty `weights` = uniform."""
  if not weights:
    return jnp.full((num_iterations,), 1.0 / num_iterations)
  if len(weights) != num_iterations or min(weights) < 0 or sum(weights) <= 0:
    raise ConfigError(f'loss.iteration_weights: need {num_iterations} non-negative weights '
                     f'(one per refinement iteration) with a positive sum, got {tuple(weights)}')
  weights = jnp.asarray(weights, jnp.float32)
  return weights / weights.sum()


def total_loss(logits, aux_logits, targets, weights, dice_weight=1.0, ce_weight=1.0):
  """Weighted loss over iterations (and deep-supervision heads).

  logits: (T, B, *spatial, R); aux_logits: tuple of (T, B, *spatial / 2^k, R) for
  k = 1, 2, ...; targets: (B, *spatial, R). Deep-supervision head k has weight 2^-k
  relative to the full-resolution output, as in nnU-Net.
  Returns (scalar loss, per-iteration loss of the full-resolution output (T,)).
  """
  per_iteration = jax.vmap(lambda l: segmentation_loss(l, targets, dice_weight, ce_weight))(logits)
  loss = jnp.sum(weights * per_iteration)
  if aux_logits:
    head_weights = [1.0] + [0.5**k for k in range(1, len(aux_logits) + 1)]
    for k, aux in enumerate(aux_logits, start=1):
      coarse = downsample_targets(targets, 2**k)
      aux_loss = jax.vmap(lambda l: segmentation_loss(l, coarse, dice_weight, ce_weight))(aux)
      loss += head_weights[k] * jnp.sum(weights * aux_loss)
    loss /= sum(head_weights)
  return loss, per_iteration
