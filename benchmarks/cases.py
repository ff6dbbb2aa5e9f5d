"""What the framework comparisons share, with no framework imported: a benchmark case's
config, its random inputs (the same in every process for the same seed), step timing and
whole-case prediction timing.
compare_torch.py, accelerator.py and the benchmarks built on them import these."""

import importlib
import statistics
import time

import numpy as np

from jaxseg.data.regions import BRATS_2023_REGIONS


def make_config(name: str, variant: str, shape, batch: int, features=None):
  """configs/<name>.py:<variant> with the patch `shape`, `batch` and optional widths."""
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  config.data.image_size = tuple(shape)
  config.train.batch_size = batch
  if features:
    config.model.features = tuple(features)
  return config


def make_inputs(config, seed: int = 0):
  """Random z-scored images and region masks, channels-last (B, *spatial, C)."""
  rng = np.random.default_rng(seed)
  batch, shape = config.train.batch_size, tuple(config.data.image_size)
  channels, regions = len(config.data.modalities), len(BRATS_2023_REGIONS)
  image = rng.standard_normal((batch, *shape, channels), dtype=np.float32)
  target = (rng.random((batch, *shape, regions)) < 0.1).astype(np.uint8)
  return image, target


def time_steps(run, steps: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of the `steps` calls after it)."""
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def whole_case_seconds(predictor, params, images) -> tuple[float, float]:
  """(first, second) wall time of a SlidingWindowPredictor over `images`: the first
  includes compiling."""
  times = []
  for _ in range(2):
    start = time.perf_counter()
    for _ in predictor.predict(params, images):
      pass
    times.append(time.perf_counter() - start)
  return times[0], times[1]
