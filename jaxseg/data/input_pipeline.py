"""The training input pipeline: a grain `MapDataset` of training batches and the
iterator that reads it ahead.

Element `s` of `train_batches(...)` is this process's share of the global batch of
step `s`: a pure function of (seed, step, process), so a resumed run sees the same
sample stream. `train_iterator` reads it ahead with threads or worker processes; its
position is saved with every checkpoint.
"""

from typing import Sequence

import grain
from absl import flags
import ml_collections
import numpy as np

from jaxseg.data import sampling, sources
from jaxseg.data.dataset import SegmentationData
from jaxseg.data.regions import region_masks
from jaxseg.errors import ConfigError


class _SampleWindow:
  """Case index -> one random training window {'image', 'target'} (picklable)."""

  def __init__(self, data: SegmentationData, patch, foreground_probability: float):
    self.data, self.patch, self.foreground_probability = data, patch, foreground_probability

  def __call__(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    foreground = self.data.foreground[index] if self.data.foreground is not None else None
    image, labels = sampling.sample_window(rng, self.data.images[index], self.data.labels[index],
                                           foreground, self.patch, self.foreground_probability)
    return {'image': image.astype(np.float32),
            'target': region_masks(labels, self.data.regions).astype(np.uint8)}


def train_batches(data: SegmentationData, *, batch_size: int, window_size: Sequence[int],
                  foreground_fraction: float, seed: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """Endless batches; element `s` is this process's part of the global batch (of
  `batch_size` windows of `window_size`) of training step s.

  Cases are visited in a new random order (from `seed`) every epoch; each visit cuts a
  random window (see sampling.py), a share `foreground_fraction` of them centred on
  tumour, so a case gives different patches on each visit.
  """
  if batch_size % process_count:
    raise ConfigError(f'train.batch_size={batch_size} does not divide over {process_count} '
                      'processes')
  sample = _SampleWindow(data, tuple(window_size), foreground_fraction)
  # 'Endless': 2^40 samples. grain's unbounded repeat(None) overflows len() after a
  # batch of 1 (one row per process), so the count is finite.
  num_epochs = 2**40 // len(data) + 1
  samples = (grain.MapDataset.range(len(data)).seed(seed).shuffle()
             .repeat(num_epochs).random_map(sample))
  return samples.batch(batch_size // process_count)[process_index::process_count]


def check_config(data_config: ml_collections.ConfigDict) -> None:
  """The `config.data` keys of the input pipeline."""
  if data_config.num_workers < 0 or data_config.prefetch < 1:
    raise ConfigError(f'data.num_workers must be >= 0 and data.prefetch >= 1, got '
                      f'{data_config.num_workers} and {data_config.prefetch}')
  if not 0 <= data_config.foreground_fraction <= 1:
    raise ConfigError('data.foreground_fraction must be in [0, 1], got '
                      f'{data_config.foreground_fraction}')
  sources.check_embedded_counts(data_config)


def train_iterator(batches: grain.MapDataset, num_workers: int, prefetch: int,
                   state: dict | None = None) -> grain.DatasetIterator:
  """Reads `batches` ahead in `num_workers` processes (0: threads of this process);
  `state` (from `iterator.get_state()`, saved with a checkpoint) resumes a stream."""
  stream = batches.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # global state: the caller's to set, not ours
      raise RuntimeError('data.num_workers > 0: grain\'s worker processes read absl flags; '
                         'parse them first (absl.app.run, or absl.flags.FLAGS.mark_as_parsed())')
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  iterator = iter(stream)
  if state is not None:
    iterator.set_state(state)
  return iterator
