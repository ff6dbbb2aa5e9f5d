"""Whole cases predicted window by window, in numpy alone: where the windows go, how
their outputs are weighted and put back together, and test-time mirroring.

The model sees windows of `data.image_size`. A case larger than that is covered by
overlapping windows (nnU-Net style): their logits are averaged with a Gaussian
importance map that trusts window centres more than borders. A 2D model on 3D volumes
predicts every slice along the last axis (windows one voxel thick). Windows of
several cases share batches, so one function of a fixed batch size serves all and
memory stays bounded by the batch.

No JAX here: jaxseg's predictor (inference.py, the model jit-compiled) and the ONNX
Runtime predictor (onnx_predict.py) both run on this code, so the two cannot drift
apart. The function that predicts a batch of windows is the caller's.
"""

import dataclasses
import itertools
import math
from typing import Callable, Iterable, Iterator

import numpy as np

from jaxseg.data import sampling

# The Gaussian importance map: sigma as a fraction of the window size, and the weight
# every voxel keeps at least (the exported models' JSON records both).
SIGMA_SCALE = 0.125
MIN_WEIGHT = 1e-3

# windows (batch, *window_size, C) -> logits (T, batch, *window_size, R)
BatchFunction = Callable[[np.ndarray], np.ndarray]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
  """Starts of windows covering [0, size) with at least `overlap` between neighbours."""
  if size <= window:
    return [0]
  count = math.ceil((size - window) / (window * (1 - overlap))) + 1
  return sorted({round(i * (size - window) / (count - 1)) for i in range(count)})


def gaussian_importance(window: tuple[int, ...], sigma_scale: float = SIGMA_SCALE,
                        smooth=None) -> np.ndarray:
  """Separable Gaussian centred on the window, sigma = sigma_scale * size, max 1; flat
  along axes where `smooth` is False (no overlapping windows there: the output is then
  exactly the window's, without weighting round-off)."""
  weights = np.ones((), np.float64)
  for size, on in zip(window, smooth if smooth is not None else [True] * len(window)):
    x = np.arange(size) - (size - 1) / 2
    axis = np.exp(-0.5 * (x / max(sigma_scale * size, 1e-6))**2) if on else np.ones(size)
    weights = np.multiply.outer(weights, axis)
  # Borders must keep some weight: a voxel covered only by window borders needs a value.
  return np.maximum(weights / weights.max(), MIN_WEIGHT).astype(np.float32)


def mirrored(logits_fn: Callable, mirror_axes, flip: Callable = np.flip) -> Callable:
  """Test-time augmentation: the mean of `logits_fn(*args, images)` over every
  combination of flips of the spatial axes in `mirror_axes` (0 = first spatial axis),
  each flipped back, as nnU-Net does (2^k predictions for k axes). Images are (B,
  *spatial, C), logits (T, B, *spatial, R); `flip` is np.flip or jnp.flip."""
  mirror_axes = tuple(mirror_axes)
  if not mirror_axes:
    return logits_fn

  def averaged(*args):
    *others, images = args
    total = logits_fn(*args)
    count = 1
    for k in range(1, len(mirror_axes) + 1):
      for axes in itertools.combinations(mirror_axes, k):
        flipped = logits_fn(*others, flip(images, tuple(1 + a for a in axes)))
        total = total + flip(flipped, tuple(2 + a for a in axes))
        count += 1
    return total / count
  return averaged


@dataclasses.dataclass
class _Case:
  index: int
  volume: np.ndarray           # (*spatial, C), padded to at least the window
  shape: tuple[int, ...]       # spatial shape before padding
  window: tuple[int, ...]      # the window cut from this case's volume
  weight: np.ndarray           # (*window) importance of each window of this case
  logits: np.ndarray | None = None   # (T, *padded, R) weighted sum
  weights: np.ndarray | None = None  # (*padded,) sum of weights
  remaining: int = 0


def predict_cases(images: Iterable[np.ndarray], run_batch: BatchFunction,
                  window_size: tuple[int, ...], batch_size: int, overlap: float
                  ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (case index, logits (T, *spatial, R) float32) for every image (*spatial, C),
  in order; `run_batch` always gets `batch_size` windows (the last batch repeats its
  last window)."""
  window_size = tuple(window_size)
  queue: list[tuple[_Case, tuple[int, ...]]] = []
  for index, image in enumerate(images):
    window = sampling.window_shape(window_size, image.ndim - 1)
    volume = pad_to(np.asarray(image, np.float32), window)
    starts = [window_starts(s, w, overlap) for s, w in zip(volume.shape, window)]
    weight = gaussian_importance(window, smooth=[len(s) > 1 and w > 1
                                                 for s, w in zip(starts, window)])
    case = _Case(index, volume, image.shape[:-1], window, weight)
    for start in itertools.product(*starts):
      queue.append((case, start))
      case.remaining += 1
    while len(queue) >= batch_size:
      yield from _run_batch(queue[:batch_size], run_batch, window_size, batch_size)
      del queue[:batch_size]
  if queue:
    yield from _run_batch(queue, run_batch, window_size, batch_size)


def _run_batch(items, run_batch: BatchFunction, window_size, batch_size: int):
  """Predicts one batch of windows, adds them to their cases, yields finished cases."""
  windows = []
  for case, start in items:
    cut = case.volume[tuple(slice(s, s + w) for s, w in zip(start, case.window))]
    windows.append(cut.reshape(*window_size, cut.shape[-1]))
  windows += [windows[-1]] * (batch_size - len(windows))  # one batch size for every call
  logits = np.asarray(run_batch(np.stack(windows)))  # (T, B, *window_size, R)
  for b, (case, start) in enumerate(items):
    if case.logits is None:
      padded = case.volume.shape[:-1]
      case.logits = np.zeros((logits.shape[0], *padded, logits.shape[-1]), np.float32)
      case.weights = np.zeros(padded, np.float32)
    where = tuple(slice(s, s + w) for s, w in zip(start, case.window))
    weighted = logits[:, b].reshape(logits.shape[0], *case.window, -1) * case.weight[..., None]
    case.logits[(slice(None), *where)] += weighted
    case.weights[where] += case.weight
    case.remaining -= 1
    if case.remaining == 0:
      crop = tuple(slice(0, s) for s in case.shape)
      averaged = case.logits[(slice(None), *crop)] / case.weights[crop][None, ..., None]
      yield case.index, averaged


def pad_to(volume: np.ndarray, window) -> np.ndarray:
  """Zero-pads the end of each spatial axis shorter than the window."""
  padding = [(0, max(0, w - s)) for s, w in zip(volume.shape, window)] + [(0, 0)]
  return np.pad(volume, padding) if any(after for _, after in padding) else volume
