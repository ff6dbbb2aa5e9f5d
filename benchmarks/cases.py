"""What the framework comparisons share, with no framework imported: the cases of
compare_torch.py (which profile_step.py and host_memory.py number alike), a benchmark
case's config, its random inputs (the same in every process for the same seed), step
timing and whole-case prediction timing."""

import importlib

import numpy as np

from benchmarks import timing
from jaxseg import startup
from jaxseg.data.regions import BRATS_2023_REGIONS

# (label, config module, config variant, spatial shape, batch size); features come from
# the variant's config: (16, 32, 64, 128) for '2d', (8, 16, 32, 64) for '3d'.
CASES = [
    ('2D U-Net', 'unet', '2d', (128, 128), 8),
    ('2D LSTM-U-Net T=3', 'lstm_unet', '2d', (128, 128), 8),
    ('3D U-Net', 'unet', '3d', (64, 64, 64), 2),
    ('3D LSTM-U-Net T=3', 'lstm_unet', '3d', (64, 64, 64), 2),
    # A BraTS-like 2D training: the U-Net's brats2d width, 4 levels, batch 16.
    ('2D U-Net 32-256 (BraTS-like)', 'unet', '2d', (128, 128), 16),
]
CASE_FEATURES = {'2D U-Net 32-256 (BraTS-like)': (32, 64, 128, 256)}  # else the variant's
LARGE_CASES = [
    ('3D U-Net 128^3', 'unet', '3d', (128, 128, 128), 2),
    ('3D LSTM-U-Net T=3 128^3', 'lstm_unet', '3d', (128, 128, 128), 2),
]
ALL_CASES = CASES + LARGE_CASES  # a case's number is its index here


def prepare_process() -> None:
  """What a process of the framework comparisons does first, before it imports JAX:
  jaxseg's XLA flags and host memory as train.py sets them, but compiling afresh (compile
  times are measured), and JAX's 'rbg' PRNG, as jaxseg uses (threefry compiles slowly
  on a CPU)."""
  startup.prepare_process(compilation_cache=False)
  import jax  # pylint: disable=import-outside-toplevel  (after the flags above)
  jax.config.update('jax_default_prng_impl', 'rbg')


def make_config(name: str, variant: str, shape, batch: int, features=None):
  """configs/<name>.py:<variant> with the patch `shape`, `batch` and optional widths."""
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  config.data.image_size = tuple(shape)
  config.train.batch_size = batch
  if features:
    config.model.features = tuple(features)
  return config


def case_config(number: int):
  """(label, config) of the case `number` of ALL_CASES."""
  label, name, variant, shape, batch = ALL_CASES[number]
  return label, make_config(name, variant, shape, batch, CASE_FEATURES.get(label))


def make_inputs(config, seed: int = 0):
  """Random z-scored images and region masks, channels-last (B, *spatial, C)."""
  rng = np.random.default_rng(seed)
  batch, shape = config.train.batch_size, tuple(config.data.image_size)
  channels, regions = len(config.data.modalities), len(BRATS_2023_REGIONS)
  image = rng.standard_normal((batch, *shape, channels), dtype=np.float32)
  target = (rng.random((batch, *shape, regions)) < 0.1).astype(np.uint8)
  return image, target


def whole_case_seconds(predictor, params, images) -> tuple[float, float]:
  """(first, second) wall time of a SlidingWindowPredictor over `images`: the first
  includes compiling."""
  def predict_all():
    for _ in predictor.predict(params, images):
      pass
  first, second = timing.repeat(predict_all, 2).seconds
  return first, second
