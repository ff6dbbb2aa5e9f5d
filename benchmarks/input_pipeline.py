"""Input pipeline throughput on BraTS-sized volumes: host part and device part.

  python benchmarks/input_pipeline.py            # writes a few 240x240x155 cases to a temp dir

Measures, on this machine:
  - preprocessing (read NIfTI, crop, z-score, cache) per case;
  - the host part of the training stream (grain: pick a case, cut a window from the
    memory-mapped cache with foreground oversampling, region targets, batch), for
    3D patches of 4x128^3 and 2D slices of 4x240x240, in the training process and in
    worker processes;
  - the device part: the full augmentation (flips, rotation + scaling, intensity,
    gamma, noise) jit-compiled on the default JAX device, every transform forced on
    (probability 1), which is the worst case.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import grain  # noqa: E402
from absl import flags as absl_flags  # noqa: E402
import jax  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from configs import lstm_unet  # noqa: E402
from jaxseg import augment  # noqa: E402
from jaxseg.data import load_splits, train_iterator  # noqa: E402
from jaxseg.data.synthetic import synthetic_case  # noqa: E402
from jaxseg.training import make_train_batches  # noqa: E402

BRATS_SHAPE = (240, 240, 155)


def write_cases(root: str, num_cases: int, num_distinct: int) -> None:
  """BraTS 2021-layout cases at full size (synthetic anatomy; distinct ones are slow to make)."""
  cases = [synthetic_case(BRATS_SHAPE, 0, 'train', i) for i in range(num_distinct)]
  for index in range(num_cases):
    write_case(root, index, *cases[index % num_distinct])


def write_case(root: str, index: int, image: np.ndarray, labels: np.ndarray,
               suffix: str = '.nii.gz') -> None:
  """Case `index` in the BraTS 2021 layout: `image` (*spatial, 4), z-scored inside the
  brain and 0 outside, as scanner-like intensities; `labels` 0-3 as BraTS 2021's 0, 1,
  2, 4. `suffix` '.nii' writes uncompressed files (much faster to write)."""
  brain = np.abs(image).sum(-1) > 0
  raw = np.where(brain[..., None], 400 + 100 * image, 0).astype(np.float32)
  labels = np.where(labels == 3, 4, labels).astype(np.uint8)
  case = f'BraTS2021_{index:05d}'
  os.makedirs(os.path.join(root, case))
  for channel, name in enumerate(('t1', 't1ce', 't2', 'flair')):
    nib.save(nib.Nifti1Image(raw[..., channel], np.eye(4)),
             os.path.join(root, case, f'{case}_{name}{suffix}'))
  nib.save(nib.Nifti1Image(labels, np.eye(4)), os.path.join(root, case, f'{case}_seg{suffix}'))


def config_for(root: str, cache_dir: str, image_size, batch_size: int, workers: int):
  config = lstm_unet.get_config('3d' if len(image_size) == 3 else '2d')
  config.data.root, config.data.cache_dir = root, cache_dir
  config.data.image_size = tuple(image_size)
  config.data.num_workers = workers
  config.data.preprocess_workers = 2
  config.data.num_folds, config.data.val_fraction = 0, 0.25
  config.train.batch_size = batch_size
  config.augment.enabled = True
  for key in augment.PROBABILITIES:
    config.augment[key] = 1.0
  return config


def host_throughput(config, num_batches: int) -> float:
  """Batches per second of the host stream after the first few (worker start-up)."""
  data = load_splits(config.data, ('train',))['train']
  iterator = train_iterator(make_train_batches(config, data), config.data.num_workers,
                            config.data.prefetch)
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches / (time.perf_counter() - start)


def device_time(config, repeats: int) -> tuple[float, float]:
  """(compile seconds, median seconds per batch) of the jit-compiled augmentation."""
  shape = (config.train.batch_size, *config.data.image_size)
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.standard_normal((*shape, 4), np.float32))
  targets = jax.device_put((rng.random((*shape, 3)) > 0.7).astype(np.float32))
  fn = jax.jit(lambda key, x, y: augment.augment_batch(key, x, y, config.augment))
  key = jax.random.key(0, impl='rbg')
  start = time.perf_counter()
  compiled = fn.lower(key, images, targets).compile()
  compile_seconds = time.perf_counter() - start
  jax.block_until_ready(compiled(key, images, targets))
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.fold_in(key, i), images, targets))
    times.append(time.perf_counter() - start)
  return compile_seconds, statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', type=int, default=4)
  parser.add_argument('--distinct_cases', type=int, default=2)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--device_repeats', type=int, default=3)
  args = parser.parse_args()
  absl_flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), grain {grain.__version__ if hasattr(grain, "__version__") else "?"}, '
        f'numpy {np.__version__}, python {platform.python_version()}, '
        f'{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}')
  with tempfile.TemporaryDirectory() as tmp:
    root, cache_dir = os.path.join(tmp, 'data'), os.path.join(tmp, 'cache')
    write_cases(root, args.cases, args.distinct_cases)
    start = time.perf_counter()
    load_splits(config_for(root, cache_dir, (128, 128, 128), 4, 2).data, ('train',))
    per_case = (time.perf_counter() - start) / args.cases
    print(f'preprocessing (2 processes): {per_case:.2f} s per case of {BRATS_SHAPE} x 4\n')
    print('| part | samples | workers | batches/s | samples/s |')
    print('| --- | --- | --- | --- | --- |')
    for image_size, label in (((128, 128, 128), '3D patches 4x128^3'),
                              ((240, 240), '2D slices 4x240x240')):
      for workers in (int(w) for w in args.workers.split(',')):
        config = config_for(root, cache_dir, image_size, 4, workers)
        rate = host_throughput(config, args.batches)
        print(f'| host: sample + crop + targets | {label}, batch 4 | {workers} | {rate:.1f} | '
              f'{4 * rate:.1f} |', flush=True)
      compile_seconds, seconds = device_time(config, args.device_repeats)
      print(f'| device ({jax.devices()[0].platform}): full augmentation, all on '
            f'(compile {compile_seconds:.1f} s) | {label}, batch 4 | - | {1 / seconds:.2f} | '
            f'{4 / seconds:.1f} |', flush=True)


if __name__ == '__main__':
  main()
