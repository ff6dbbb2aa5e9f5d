"""Preprocessing of one NIfTI case, as pure functions of arrays: the brain's bounding
box, per-channel z-scores over the brain, and the foreground voxels remembered for
oversampling (nnU-Net's class locations). cache.py applies them once per case."""

import numpy as np

from jaxseg.errors import DataError

# Foreground voxels remembered per label for oversampling.
MAX_FOREGROUND_VOXELS = 10_000


def brain_crop(image: np.ndarray) -> tuple[slice, ...]:
  """Bounding box of the voxels that are non-zero in any channel of (*spatial, C)."""
  brain = np.any(image != 0, axis=-1)
  if not brain.any():
    raise DataError('every voxel is zero')
  box = []
  for axis in range(brain.ndim):
    hits = np.flatnonzero(np.any(brain, axis=tuple(a for a in range(brain.ndim) if a != axis)))
    box.append(slice(int(hits[0]), int(hits[-1]) + 1))
  return tuple(box)


def normalise(image: np.ndarray) -> np.ndarray:
  """Per-channel z-score over brain voxels (non-zero in any channel); background 0."""
  brain = np.any(image != 0, axis=-1)
  out = np.zeros_like(image, dtype=np.float32)
  for c in range(image.shape[-1]):
    values = image[..., c][brain]
    out[..., c][brain] = (values - values.mean()) / max(float(values.std()), 1e-8)
  return out


def foreground_voxels(labels: np.ndarray, seed: int) -> np.ndarray:
  """(K, 1 + ndim) int32 rows [label, *index]: up to MAX_FOREGROUND_VOXELS per label."""
  rng = np.random.default_rng(seed)
  rows = []
  for value in np.unique(labels[labels > 0]):
    where = np.argwhere(labels == value)
    if len(where) > MAX_FOREGROUND_VOXELS:
      where = where[np.sort(rng.choice(len(where), MAX_FOREGROUND_VOXELS, replace=False))]
    rows.append(np.concatenate([np.full((len(where), 1), value), where], axis=1))
  return (np.concatenate(rows) if rows else np.zeros((0, 1 + labels.ndim))).astype(np.int32)
