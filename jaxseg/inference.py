"""Prediction on whole cases: sliding windows with Gaussian weighting.

The model sees windows of `data.image_size`. A case larger than that is covered by
overlapping windows (nnU-Net style): their logits are averaged with a Gaussian
importance map that trusts window centres more than borders. A 2D model on 3D volumes
predicts every slice along the last axis (windows one voxel thick). Windows of
several cases share batches, so one jit-compiled function of a fixed batch serves all
and memory stays bounded by the batch. A region is predicted where its logit is
positive (sigmoid above 0.5), for every refinement iteration. `SlidingWindowPredictor`
holds the model's compiled forward pass and `config.eval`'s settings, built once.
"""

import dataclasses
import itertools
import math
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxseg import parallel
from jaxseg.data import sampling
from jaxseg.errors import ConfigError


def make_logits_fn(model, mesh: Mesh, mirror_axes=()):
  """fn(params, images (B, *window, C)) -> logits (T, B, *window, R), averaged over
  mirrorings along `mirror_axes` (test-time augmentation) if any.

  The forward pass is jit-compiled once and called once per mirroring: compiled as one
  program, the 8 passes of 3D TTA kept buffers for all of them on XLA:CPU and ran out
  of memory at the brats3d LSTM-U-Net's 128^3 windows (BENCHMARKS.md).
  """
  def logits(params, images):
    return model.apply({'params': params}, images)[0].astype(np.float32)
  return mirrored(jax.jit(logits, out_shardings=NamedSharding(mesh, P(None, 'data'))),
                  mirror_axes)


def mirrored(logits_fn, mirror_axes):
  """Test-time augmentation: the mean of logits_fn over every combination of flips of
  the spatial axes in `mirror_axes` (0 = first spatial axis), each flipped back, as
  nnU-Net does (2^k predictions for k axes)."""
  mirror_axes = tuple(mirror_axes)
  if not mirror_axes:
    return logits_fn

  def averaged(params, images):
    total = logits_fn(params, images)
    count = 1
    for k in range(1, len(mirror_axes) + 1):
      for axes in itertools.combinations(mirror_axes, k):
        flipped = logits_fn(params, jnp.flip(images, [1 + a for a in axes]))
        total = total + jnp.flip(flipped, [2 + a for a in axes])  # logits: (T, B, *spatial, R)
        count += 1
    return total / count
  return averaged


def check_mirror_axes(mirror_axes, rank: int) -> None:
  if any(not 0 <= a < rank for a in mirror_axes) or len(set(mirror_axes)) != len(mirror_axes):
    raise ConfigError(f'eval.mirror_axes={tuple(mirror_axes)}: need distinct spatial axes of '
                     f'0..{rank - 1}')


def window_starts(size: int, window: int, overlap: float) -> list[int]:
  """Starts of windows covering [0, size) with at least `overlap` between neighbours."""
  if size <= window:
    return [0]
  count = math.ceil((size - window) / (window * (1 - overlap))) + 1
  return sorted({round(i * (size - window) / (count - 1)) for i in range(count)})


def gaussian_importance(window: tuple[int, ...], sigma_scale: float = 0.125,
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
  return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


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


@dataclasses.dataclass(frozen=True)
class SlidingWindowPredictor:
  """Predicts whole cases with overlapping windows of `window_size`, built once.

  `logits_fn(params, windows (batch_size, *window_size, C)) -> (T, batch_size,
  *window_size, R)` is the model's forward pass (`from_config` builds it with TTA);
  `batch_size` windows, of one case or several, go through each call.
  """
  logits_fn: Callable
  window_size: tuple[int, ...]
  mesh: Mesh
  batch_size: int = 2
  overlap: float = 0.5

  def __post_init__(self):
    object.__setattr__(self, 'window_size', tuple(self.window_size))
    if not 0 <= self.overlap < 1:
      raise ConfigError(f'eval.overlap must be in [0, 1), got {self.overlap}')
    if self.batch_size < 1:
      raise ConfigError(f'eval.batch_size must be at least 1, got {self.batch_size}')
    parallel.check_batch_size(self.batch_size, 'eval.batch_size')

  @classmethod
  def from_config(cls, model, eval_config, window_size, mesh: Mesh,
                  mirror_axes=None) -> 'SlidingWindowPredictor':
    """The predictor of `config.eval` for `model` on windows of `data.image_size`;
    `mirror_axes` overrides eval.mirror_axes (eval.py --tta)."""
    axes = tuple(eval_config.mirror_axes if mirror_axes is None else mirror_axes)
    check_mirror_axes(axes, len(window_size))
    return cls(make_logits_fn(model, mesh, axes), window_size, mesh, eval_config.batch_size,
               eval_config.overlap)

  def predict(self, params, images: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (case index, logits (T, *spatial, R) float32) for every case, in order."""
    queue: list[tuple[_Case, tuple[int, ...]]] = []
    for index, image in enumerate(images):
      window = sampling.window_shape(self.window_size, image.ndim - 1)
      volume = _pad_to(np.asarray(image, np.float32), window)
      starts = [window_starts(s, w, self.overlap) for s, w in zip(volume.shape, window)]
      weight = gaussian_importance(window, smooth=[len(s) > 1 and w > 1
                                                   for s, w in zip(starts, window)])
      case = _Case(index, volume, image.shape[:-1], window, weight)
      for start in itertools.product(*starts):
        queue.append((case, start))
        case.remaining += 1
      while len(queue) >= self.batch_size:
        yield from self._run_batch(params, queue[:self.batch_size])
        del queue[:self.batch_size]
    if queue:
      yield from self._run_batch(params, queue)

  def _run_batch(self, params, items):
    """Predicts one batch of windows, adds them to their cases, yields finished cases."""
    windows = []
    for case, start in items:
      cut = case.volume[tuple(slice(s, s + w) for s, w in zip(start, case.window))]
      windows.append(cut.reshape(*self.window_size, cut.shape[-1]))
    windows += [windows[-1]] * (self.batch_size - len(windows))  # one compiled batch size
    batch = parallel.shard_global(np.stack(windows), self.mesh)  # every process has all
    logits = parallel.to_host(self.logits_fn(params, batch))  # (T, B, *window_size, R)
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


def _pad_to(volume: np.ndarray, window) -> np.ndarray:
  """Zero-pads the end of each spatial axis shorter than the window."""
  padding = [(0, max(0, w - s)) for s, w in zip(volume.shape, window)] + [(0, 0)]
  return np.pad(volume, padding) if any(after for _, after in padding) else volume
