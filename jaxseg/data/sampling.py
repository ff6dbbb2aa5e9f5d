"""Training samples cut from cases: patches, or 2D slices of 3D volumes.

A model with spatial size `patch` (2 or 3 sizes) trains on windows of a case volume:
a patch of the same rank, or, for a 2D model on 3D volumes, a window one voxel thick
along the last axis (the axial slice of BraTS volumes). Where the volume is smaller
than the window it is padded with zeros. A share of the windows is centred on a
tumour voxel of a randomly chosen label (foreground oversampling, as in nnU-Net), so
that small sub-regions such as enhancing tumour are seen often enough.
"""

import numpy as np

from jaxseg.errors import ConfigError


def window_shape(patch: tuple[int, ...], volume_rank: int) -> tuple[int, ...]:
  """The window cut from a volume of `volume_rank` for a model on `patch`-sized inputs."""
  if volume_rank not in (len(patch), len(patch) + 1):
    raise ConfigError(f'data.image_size {tuple(patch)} ({len(patch)}D) does not fit '
                      f'{volume_rank}D volumes')
  return tuple(patch) + (1,) * (volume_rank - len(patch))


def crop_padded(array: np.ndarray, start, size) -> np.ndarray:
  """array[start:start + size] over the leading len(size) axes, zero where outside.

  Reads only the window, so it is cheap on memory-mapped volumes.
  """
  out = np.zeros(tuple(size) + array.shape[len(size):], array.dtype)
  source, target = [], []
  for s, n, total in zip(start, size, array.shape):
    lo, hi = max(s, 0), min(s + n, total)
    if hi <= lo:
      return out
    source.append(slice(lo, hi))
    target.append(slice(lo - s, hi - s))
  out[tuple(target)] = array[tuple(source)]
  return out


def sample_start(rng: np.random.Generator, volume_shape, window, foreground: np.ndarray | None,
                 foreground_probability: float) -> np.ndarray:
  """Start corner of a random window; with `foreground_probability` centred on tumour.

  `foreground` rows are [label, *index] (see jaxseg.data.preprocessing.foreground_voxels).
  Starts range over every window that overlaps the volume as much as it can.
  """
  volume_shape, window = np.asarray(volume_shape), np.asarray(window)
  low = np.minimum(0, volume_shape - window)
  high = np.maximum(0, volume_shape - window)
  if foreground is not None and len(foreground) and rng.random() < foreground_probability:
    label = rng.choice(np.unique(foreground[:, 0]))
    voxels = foreground[foreground[:, 0] == label, 1:]
    centre = voxels[rng.integers(len(voxels))]
    return np.clip(centre - window // 2, low, high)
  return np.array([rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])


def sample_window(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray,
                  foreground: np.ndarray | None, patch: tuple[int, ...],
                  foreground_probability: float) -> tuple[np.ndarray, np.ndarray]:
  """(image (*patch, C), labels (*patch)) of one random training window."""
  window = window_shape(patch, labels.ndim)
  start = sample_start(rng, labels.shape, window, foreground, foreground_probability)
  image_window = crop_padded(image, start, window).reshape(*patch, image.shape[-1])
  return image_window, crop_padded(labels, start, window).reshape(patch)
