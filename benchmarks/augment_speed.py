"""Spatial augmentation (rotation + zoom) on the device against the host, on this machine.

  python benchmarks/augment_speed.py [--runs=5]

Decides where augmentation runs: inside the jitted step (jaxseg.augment on XLA:CPU) or
in the host input pipeline (scipy.ndimage). Both resample 4 image and 3 target channels
per sample with order-1 interpolation about the patch centre, zeros outside, targets
thresholded at 0.5. (a) jit-compiled `augment_batch` with rotation_probability =
scale_probability = 1 (all else off); (b) `scipy.ndimage.affine_transform` per sample and
channel in one thread, as one data-loader worker would. Times are medians after warm-up.
"""

import functools
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

# before JAX starts its CPU backend
prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import ndimage  # noqa: E402

from benchmarks import timing  # noqa: E402
from configs.common import get_common_config  # noqa: E402
from jaxseg import augment  # noqa: E402

jax.config.update('jax_default_prng_impl', 'rbg')

CASES = [('3D', 2, (128, 128, 128)), ('2D', 4, (240, 240))]  # name, batch, spatial
IMAGE_CHANNELS, TARGET_CHANNELS = 4, 3


def spatial_only_config() -> ml_collections.ConfigDict:
  aug = get_common_config(None).augment
  aug.update({'enabled': True, **{name: 0.0 for name in augment.PROBABILITIES},
              'rotation_probability': 1.0, 'scale_probability': 1.0})
  augment.check_config(aug)
  return aug


def make_batch(batch, spatial, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch, *spatial, IMAGE_CHANNELS)).astype(np.float32)
  targets = (rng.random((batch, *spatial, TARGET_CHANNELS)) < 0.2).astype(np.float32)
  return images, targets


def time_device(images, targets, runs):
  """(compile seconds, median seconds per batch, cores used) of the jitted
  augment_batch."""
  fn = jax.jit(functools.partial(augment.augment_batch, aug=spatial_only_config()))
  images, targets = jax.device_put(images), jax.device_put(targets)
  key = jax.random.key(0)
  compile_seconds, compiled = timing.once(fn.lower(key, images, targets).compile)
  jax.block_until_ready(compiled(key, images, targets))  # warm-up
  # The same key each run: every sample is rotated and zoomed anyway.
  timings = timing.repeat(lambda: jax.block_until_ready(compiled(key, images, targets)), runs)
  return compile_seconds, timings.median, timings.cores


def host_affine(volume, matrix, target=False):
  """scipy's counterpart of augment.apply_affine for one channel (*spatial)."""
  centre = (np.array(volume.shape) - 1) / 2
  # 'grid-constant' is the constant mode that jax.scipy.ndimage implements.
  out = ndimage.affine_transform(volume, matrix, centre - matrix @ centre, order=1,
                                 mode='grid-constant', cval=0.0)
  return (out >= 0.5).astype(volume.dtype) if target else out


def host_spatial(images, targets, matrices):
  out_images, out_targets = np.empty_like(images), np.empty_like(targets)
  for b, matrix in enumerate(matrices):
    for c in range(images.shape[-1]):
      out_images[b, ..., c] = host_affine(images[b, ..., c], matrix)
    for r in range(targets.shape[-1]):
      out_targets[b, ..., r] = host_affine(targets[b, ..., r], matrix, target=True)
  return out_images, out_targets


def random_matrices(batch, rank, aug, seed=0):
  rng = np.random.default_rng(seed)
  limit = np.radians(aug.rotation_degrees)
  return [np.asarray(augment.affine_matrix(
      jnp.asarray(rng.uniform(-limit, limit, 1 if rank == 2 else 3), jnp.float32),
      rng.uniform(*aug.scale_range))) for _ in range(batch)]


def time_host(images, targets, runs):
  """(median seconds per batch, cores used) of scipy's transform of every sample."""
  matrices = random_matrices(len(images), images.ndim - 2, spatial_only_config())
  host_spatial(images[:1], targets[:1], matrices[:1])  # warm-up
  timings = timing.repeat(lambda: host_spatial(images, targets, matrices), runs)
  return timings.median, timings.cores


def max_difference(images, targets):
  """Largest |device - host| image value for one sample and one matrix (same transform?)."""
  matrix = random_matrices(1, images.ndim - 2, spatial_only_config(), seed=1)[0]
  device = jax.jit(augment.apply_affine)(images[0], matrix)
  host, _ = host_spatial(images[:1], targets[:1], [matrix])
  return float(np.abs(np.asarray(device) - host[0]).max())


def main():
  runs = 5
  for arg in sys.argv[1:]:
    if arg.startswith('--runs='):
      runs = int(arg.split('=')[1])
  print(f'python {platform.python_version()}, jax {jax.__version__}, numpy '
        f'{np.__version__}, scipy {scipy.__version__}; {os.cpu_count()} CPUs '
        f'({platform.machine()}), JAX devices {jax.devices()}')
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}; PRNG {jax.config.jax_default_prng_impl}")
  print(f'{IMAGE_CHANNELS} image + {TARGET_CHANNELS} target channels, order 1, '
        f'median of {runs} runs after warm-up')
  for name, batch, spatial in CASES:
    images, targets = make_batch(batch, spatial)
    shape = f'{batch}x{"x".join(map(str, spatial))}'
    compile_seconds, device, device_cores = time_device(images, targets, runs)
    host, host_cores = time_host(images, targets, runs)
    print(f'\n{name} batch {shape}:')
    for label, seconds, cores in [
        (f'(a) device, jit augment_batch (compile {compile_seconds:.2f} s)', device,
         device_cores),
        ('(b) host, scipy affine_transform', host, host_cores)]:
      print(f'  {label}: {seconds * 1e3:.1f} ms/batch, {seconds / batch * 1e3:.1f} '
            f'ms/sample, {batch / seconds:.1f} samples/s, {cores:.1f} cores busy')
    print(f'  host/device time: {host / device:.2f}; max |device - host| on one sample: '
          f'{max_difference(images, targets):.1e}')


if __name__ == '__main__':
  main()
