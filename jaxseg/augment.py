"""Training-time data augmentation, jit-compiled on the device, for 2D and 3D.

`augment_batch(key, images, targets, aug)` draws independent transforms for every
sample of a (B, *spatial, C) batch; the spatial rank (2 or 3) follows from the array
rank. In order:

- spatial, images and targets together: a flip of each axis, then one affine map
  (rotation and isotropic zoom about the patch centre) interpolated linearly with
  zeros outside; interpolated targets are thresholded at 0.5 so they stay 0/1;
- intensity, images only: multiply, shift, gamma, Gaussian noise.

Whether a transform happens is drawn once per sample with its probability; its amounts
(factor, shift, gamma, noise std) are drawn per channel. The values in `aug` are Python
constants, so a probability of 0 leaves that transform out of the compiled program.
Call `check_config(aug)` once at start-up.
"""

import math

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from jaxseg.errors import ConfigError

PROBABILITIES = ('flip_probability', 'rotation_probability', 'scale_probability',
                 'intensity_scale_probability', 'intensity_shift_probability',
                 'gamma_probability', 'noise_probability')
# (low, high) ranges of factors and exponents: zero or negative values make no sense.
POSITIVE_RANGES = ('scale_range', 'intensity_scale_range', 'gamma_range')
NON_NEGATIVE = ('rotation_degrees', 'intensity_shift', 'noise_std')


def check_config(aug) -> None:
  """Raises a ValueError naming the first `augment.*` value that is out of range."""
  for name in PROBABILITIES:
    p = getattr(aug, name)
    if not 0 <= p <= 1:
      raise ConfigError(f'augment.{name} must be in [0, 1], got {p}')
  for name in POSITIVE_RANGES:
    bounds = tuple(getattr(aug, name))
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
      raise ConfigError(f'augment.{name} must be (low, high) with 0 < low <= high, '
                       f'got {bounds}')
  for name in NON_NEGATIVE:
    value = getattr(aug, name)
    if not value >= 0:
      raise ConfigError(f'augment.{name} must be >= 0, got {value}')


def rotation_matrix(angles: jax.Array) -> jax.Array:
  """Rotation by `angles` (radians): (1,) in-plane in 2D; (3,) about axes 0, 1, 2 in 3D."""
  n = 2 if angles.shape[0] == 1 else 3
  planes = [(0, 1)] if n == 2 else [(1, 2), (0, 2), (0, 1)]  # the plane each angle turns
  matrix = jnp.eye(n)
  for k, (i, j) in enumerate(planes):
    c, s = jnp.cos(angles[k]), jnp.sin(angles[k])
    turn = jnp.eye(n).at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)
    matrix = turn @ matrix
  return matrix


def affine_matrix(angles: jax.Array, zoom: jax.Array) -> jax.Array:
  """Maps an output voxel's offset from the centre to the input offset it samples.

  Sampling nearer the centre enlarges the content, so zoom > 1 zooms in.
  """
  return rotation_matrix(angles) / zoom


def apply_affine(volume: jax.Array, matrix: jax.Array) -> jax.Array:
  """Resamples each channel of `volume` (*spatial, C) at centre + matrix @ (x - centre).

  Linear interpolation, zeros outside; the centre is that of the voxel grid.
  """
  spatial = volume.shape[:-1]
  centre = ((jnp.array(spatial, jnp.float32) - 1) / 2).reshape(-1, *[1] * len(spatial))
  coords = jnp.tensordot(matrix, jnp.indices(spatial, jnp.float32) - centre, axes=1) + centre
  coords = [coords[i] for i in range(len(spatial))]
  resample = lambda channel: ndimage.map_coordinates(channel, coords, order=1,
                                                     mode='constant', cval=0.0)
  # The coordinates are shared, so only the gathers are repeated per channel.
  return jax.vmap(resample, in_axes=-1, out_axes=-1)(volume)


# Rows of the table of uniform draws that one sample gets: [row, 0, 0] decides whether
# the transform happens (flips: [FLIP, 0, axis]); [row, 1] gives its amounts (per
# channel; the angles and the zoom for ROTATE and SCALE).
FLIP, ROTATE, SCALE, INTENSITY_SCALE, SHIFT, GAMMA, NOISE = range(7)


def _between(u, bounds):
  """Maps uniform [0, 1) draws onto [low, high); low == high gives exactly low."""
  return bounds[0] + (bounds[1] - bounds[0]) * u


def _gamma(image, gamma):
  """x**gamma per channel, on the channel's [min, max] rescaled to [0, 1]."""
  axes = tuple(range(image.ndim - 1))
  low, high = image.min(axes), image.max(axes)
  span = high - low
  unit = (image - low) / jnp.where(span > 0, span, 1.0)  # a constant channel stays put
  return unit**gamma * span + low


def _augment_sample(keys, image, target, aug):
  """One sample: image (*spatial, C), target (*spatial, R); keys (2,) for draws and noise."""
  n, channels = image.ndim - 1, image.shape[-1]
  # One uniform call for every scalar: each jax.random call adds compile time on XLA:CPU.
  u = jax.random.uniform(keys[0], (7, 2, max(3, channels)))  # 3: axes and 3D angles

  if aug.flip_probability > 0:  # static: a probability of 0 leaves it out of the program
    for axis in range(n):
      flip = u[FLIP, 0, axis] < aug.flip_probability
      image, target = (jnp.where(flip, jnp.flip(x, axis), x) for x in (image, target))

  if aug.rotation_probability > 0 or aug.scale_probability > 0:
    rotate = u[ROTATE, 0, 0] < aug.rotation_probability
    scale = u[SCALE, 0, 0] < aug.scale_probability
    limit = math.radians(aug.rotation_degrees)
    angles = _between(u[ROTATE, 1, :1 if n == 2 else 3], (-limit, limit))
    zoom = _between(u[SCALE, 1, 0], aug.scale_range)
    matrix = affine_matrix(jnp.where(rotate, angles, 0.0), jnp.where(scale, zoom, 1.0))
    # Untouched samples keep their exact values, not an interpolated copy. Images and
    # targets stay separate arrays: concatenating and slicing them along the channel
    # axis made the 3D transform slower on XLA:CPU (BENCHMARKS.md).
    image = jnp.where(rotate | scale, apply_affine(image, matrix), image)
    moved_target = (apply_affine(target, matrix) >= 0.5).astype(target.dtype)
    target = jnp.where(rotate | scale, moved_target, target)

  def maybe(row, probability, bounds, transform, x):
    """transform(x, per-channel amounts) with `probability`, otherwise x exactly."""
    if probability == 0:
      return x
    amounts = _between(u[row, 1, :channels], bounds)
    return jnp.where(u[row, 0, 0] < probability, transform(x, amounts), x)

  image = maybe(INTENSITY_SCALE, aug.intensity_scale_probability,
                aug.intensity_scale_range, lambda x, factor: x * factor, image)
  shift = (-aug.intensity_shift, aug.intensity_shift)  # in standard deviations (z-scored)
  image = maybe(SHIFT, aug.intensity_shift_probability, shift, lambda x, s: x + s, image)
  image = maybe(GAMMA, aug.gamma_probability, aug.gamma_range, _gamma, image)
  image = maybe(NOISE, aug.noise_probability, (0.0, aug.noise_std),
                lambda x, std: x + std * jax.random.normal(keys[1], x.shape, x.dtype), image)
  return image, target


def augment_batch(key: jax.Array, images: jax.Array, targets: jax.Array,
                  aug) -> tuple[jax.Array, jax.Array]:
  """Augmented (images, targets): (B, *spatial, C) float z-scores, (B, *spatial, R) 0/1.

  `aug` is the augment ConfigDict; its values are static (a new one recompiles).
  """
  if not aug.enabled:
    return images, targets
  if images.ndim not in (4, 5) or images.shape[:-1] != targets.shape[:-1]:
    raise ValueError(f'augment_batch: need images (B, *spatial, C) and targets '
                     f'(B, *spatial, R) with 2 or 3 spatial axes, got {images.shape} '
                     f'and {targets.shape}')
  keys = jax.random.split(key, (images.shape[0], 2))  # per sample: draws, noise
  return jax.vmap(lambda k, x, y: _augment_sample(k, x, y, aug))(keys, images, targets)
