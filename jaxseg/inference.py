"""Prediction on whole cases with jaxseg's model: sliding windows with Gaussian weighting.

Where the windows go and how their logits are averaged back is sliding_window.py's
(numpy, shared with the ONNX Runtime predictor); here the model's forward pass is
jit-compiled and the windows' batches are placed on the devices. A region is
predicted where its logit is positive (sigmoid above 0.5), for every refinement
iteration. `SlidingWindowPredictor` holds the compiled forward pass and `config.eval`'s
settings, built once.
"""

import dataclasses
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxseg import parallel, sliding_window
from jaxseg.errors import ConfigError
# Re-exported: callers of jaxseg's predictor find the window geometry here too.
from jaxseg.sliding_window import gaussian_importance, window_starts  # noqa: F401


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
  """Test-time augmentation on the device: sliding_window.mirrored with jnp.flip."""
  return sliding_window.mirrored(logits_fn, mirror_axes, jnp.flip)


def check_mirror_axes(mirror_axes, rank: int) -> None:
  if any(not 0 <= a < rank for a in mirror_axes) or len(set(mirror_axes)) != len(mirror_axes):
    raise ConfigError(f'eval.mirror_axes={tuple(mirror_axes)}: need distinct spatial axes of '
                     f'0..{rank - 1}')


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
    def run_batch(windows):
      batch = parallel.shard_global(windows, self.mesh)  # every process has all
      return parallel.to_host(self.logits_fn(params, batch))
    return sliding_window.predict_cases(images, run_batch, self.window_size, self.batch_size,
                                        self.overlap)
