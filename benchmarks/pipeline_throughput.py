"""Input pipeline throughput on BraTS-sized volumes: host part and device part.

  python benchmarks/pipeline_throughput.py           # writes a few 240x240x155 cases to a temp dir

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
import itertools
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import grain  # noqa: E402
from absl import flags as absl_flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from benchmarks.training_stream import config_for, host_throughput  # noqa: E402
from benchmarks.brats_files import BRATS_SHAPE, write_cases  # noqa: E402
from jaxseg import augment  # noqa: E402
from jaxseg.data import load_splits  # noqa: E402

def device_time(config, repeats: int) -> tuple[float, float]:
  """(compile seconds, median seconds per batch) of the jit-compiled augmentation."""
  shape = (config.train.batch_size, *config.data.image_size)
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.standard_normal((*shape, 4), np.float32))
  targets = jax.device_put((rng.random((*shape, 3)) > 0.7).astype(np.float32))
  fn = jax.jit(lambda key, x, y: augment.augment_batch(key, x, y, config.augment))
  key = jax.random.key(0, impl='rbg')
  compile_seconds, compiled = timing.once(fn.lower(key, images, targets).compile)
  jax.block_until_ready(compiled(key, images, targets))
  calls = itertools.count()  # a new key for each call
  return compile_seconds, timing.repeat(
      lambda: jax.block_until_ready(
          compiled(jax.random.fold_in(key, next(calls)), images, targets)), repeats).median


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', type=int, default=4)
  parser.add_argument('--distinct_cases', type=int, default=2)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--device_repeats', type=int, default=3)
  args = parser.parse_args()
  absl_flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

  grain_version = grain.__version__ if hasattr(grain, '__version__') else '?'
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), grain {grain_version}, '
        f'numpy {np.__version__}, python {platform.python_version()}, '
        f'{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}')
  with tempfile.TemporaryDirectory() as tmp:
    root, cache_dir = os.path.join(tmp, 'data'), os.path.join(tmp, 'cache')
    write_cases(root, args.cases, args.distinct_cases)
    seconds, _ = timing.once(lambda: load_splits(
        config_for(root, cache_dir, (128, 128, 128), 4, 2).data, ('train',)))
    per_case = seconds / args.cases
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
