"""Data sets and the training input pipeline.

`load_splits(config.data)` gives a `SegmentationData` per split from one of three
sources: the embedded synthetic data (no data.root), 2D image folders, or BraTS NIfTI
volumes (preprocessed once into a cache and memory-mapped, see cache.py).

Training batches come from a grain `MapDataset` whose element `s` is this process's
share of the global batch of step `s`: a pure function of (seed, step, process), so a
resumed run sees the same sample stream. `train_iterator` reads it ahead with worker
processes; its position is saved with every checkpoint.
"""

import dataclasses
import os
from typing import Sequence

import grain
from absl import flags
import ml_collections
import numpy as np

from jaxseg.data import brats, cache, folders, sampling, splits, synthetic
from jaxseg.data.regions import BRATS_2023_REGIONS, Region, region_masks


@dataclasses.dataclass(frozen=True)
class SegmentationData:
  images: Sequence[np.ndarray]        # per case (*spatial, C) float32, z-scored
  labels: Sequence[np.ndarray | None]  # per case (*spatial) uint8 label map; None: unlabelled
  case_ids: tuple[str, ...]
  spacings: tuple[tuple[float, ...], ...]  # per case, mm per voxel along each axis
  regions: tuple[Region, ...]
  channels: tuple[str, ...]
  foreground: Sequence[np.ndarray] | None = None  # per case [label, *index] rows
  source: Sequence[dict] | None = None  # per case geometry of cached NIfTI (cache meta)
  origin: str = 'synthetic'           # 'synthetic', 'folders' or 'nifti'

  def __len__(self):
    return len(self.case_ids)


class _CachedArrays(Sequence):
  """Per-case arrays of preprocessed cases, memory-mapped on access (picklable: paths)."""

  def __init__(self, cases: list[cache.CachedCase], name: str, channel_index=None):
    self._cases, self._name, self._channel_index = cases, name, channel_index

  def __len__(self):
    return len(self._cases)

  def __getitem__(self, index):
    if self._name != 'image' and not self._cases[index].labelled:
      return None
    array = self._cases[index].array(self._name)
    if self._channel_index is not None and self._channel_index != tuple(range(array.shape[-1])):
      array = array[..., list(self._channel_index)]
    return array


def load_splits(data_config: ml_collections.ConfigDict, names=('train', 'val'),
                recorded: dict | None = None) -> dict[str, SegmentationData]:
  """{split name: data} for `names`: 'train', 'val' (labelled cases), or 'all' (every
  case of data.root, unlabelled ones included). `recorded` is a splits.json to follow
  instead of computing the split afresh."""
  image_size = tuple(data_config.image_size)
  if len(image_size) not in (2, 3) or min(image_size) < 8:
    raise ValueError(f'data.image_size: need 2 or 3 sizes of at least 8, got {image_size}')
  if not data_config.root:
    if 'all' in names:
      raise ValueError('the embedded data has no directory to predict; give a data root')
    return {name: _synthetic(data_config, name, image_size) for name in names}
  root = os.path.abspath(os.path.expanduser(data_config.root))
  if os.path.isdir(root) and brats.detect_layout(root) == 'folders':
    return _folder_splits(data_config, root, image_size, names, recorded)
  return _nifti_splits(data_config, root, names, recorded)


def _synthetic(data_config, split: str, image_size) -> SegmentationData:
  num_cases = {'train': data_config.num_train_cases, 'val': data_config.num_val_cases}[split]
  if num_cases < 1:
    raise ValueError(f'data.root is not set and data.num_{split}_cases={num_cases}: set '
                     '--config.data.root=/path/to/data, or a number of embedded cases')
  images, labels, case_ids = synthetic.synthetic_split(image_size, data_config.seed, split,
                                                       num_cases)
  return SegmentationData(images, labels, tuple(case_ids), ((1.0,) * len(image_size),) * num_cases,
                          BRATS_2023_REGIONS, synthetic.CHANNELS)


def _split_ids(data_config, case_ids, recorded) -> dict[str, list[str]]:
  if recorded is None:
    return splits.split_case_ids(case_ids, data_config)
  unknown = sorted(set(recorded['train'] + recorded['val']) - set(case_ids))
  if unknown:
    raise ValueError(f'data.root: case {unknown[0]} of the recorded split is missing')
  return recorded


def _folder_splits(data_config, root, image_size, names, recorded):
  if len(image_size) != 2:
    raise ValueError(f'data.image_size: 2D image folders need 2 sizes, got {image_size}')
  images, labels, case_ids, regions = folders.load_image_folder(root, image_size)
  channels = ('gray',) if images.shape[-1] == 1 else ('red', 'green', 'blue')
  ids = {'all': case_ids}
  if names != ('all',):
    ids.update(_split_ids(data_config, case_ids, recorded))
  out = {}
  for name in names:
    keep = np.array([case_ids.index(c) for c in ids[name]], int)
    out[name] = SegmentationData(images[keep], labels[keep], tuple(ids[name]),
                                 ((1.0, 1.0),) * len(keep), regions, channels, origin='folders')
  return out


def _nifti_splits(data_config, root, names, recorded):
  channel_index = []
  for name in data_config.modalities:
    if name not in brats.CHANNELS:
      raise ValueError(f'data.modalities: unknown modality {name!r}; choose from '
                       f'{", ".join(brats.CHANNELS)}')
    channel_index.append(brats.CHANNELS.index(name))
  workers = data_config.preprocess_workers
  _, cases = cache.prepare(root, data_config.cache_dir,
                           os.cpu_count() if workers is None else workers,
                           data_config.skip_bad_cases)
  by_id = {case.case_id: case for case in cases}
  labelled = [case.case_id for case in cases if case.labelled]
  if names == ('all',):
    ids = {'all': list(by_id)}
  elif not labelled:
    raise brats.DataError(f'data.root: {root}: no case has a segmentation to train on')
  else:
    ids = {**_split_ids(data_config, labelled, recorded), 'all': list(by_id)}
  out = {}
  for name in names:
    chosen = [by_id[c] for c in ids[name]]
    metas = [case.meta for case in chosen]
    out[name] = SegmentationData(
        _CachedArrays(chosen, 'image', tuple(channel_index)), _CachedArrays(chosen, 'labels'),
        tuple(ids[name]), tuple(tuple(m['spacing']) for m in metas), BRATS_2023_REGIONS,
        tuple(data_config.modalities), _CachedArrays(chosen, 'foreground'), tuple(metas),
        origin='nifti')
  return out


def split_ids(data: dict[str, SegmentationData]) -> dict[str, list[str]]:
  """The case ids of each split, as recorded in splits.json."""
  return {name: list(split.case_ids) for name, split in data.items()}


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


def train_batches(data: SegmentationData, config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Endless batches; element `s` is this process's part of the batch of training step s.

  Cases are visited in a new random order every epoch; each visit cuts a random window
  (see sampling.py), so a case gives different patches on each visit.
  """
  batch_size = config.train.batch_size
  if batch_size % process_count:
    raise ValueError(f'train.batch_size={batch_size} does not divide over {process_count} '
                     'processes')
  sample = _SampleWindow(data, tuple(config.data.image_size), config.data.foreground_fraction)
  # 'Endless': 2^40 samples. grain's unbounded repeat(None) overflows len() after a
  # batch of 1 (one row per process), so the count is finite.
  num_epochs = 2**40 // len(data) + 1
  samples = (grain.MapDataset.range(len(data)).seed(config.train.seed).shuffle()
             .repeat(num_epochs).random_map(sample))
  return samples.batch(batch_size // process_count)[process_index::process_count]


def train_iterator(batches: grain.MapDataset, num_workers: int, prefetch: int,
                   state: dict | None = None) -> grain.DatasetIterator:
  """Reads `batches` ahead in `num_workers` processes (0: threads of this process);
  `state` (from `iterator.get_state()`, saved with a checkpoint) resumes a stream."""
  stream = batches.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (notebooks, scripts)
      flags.FLAGS.mark_as_parsed()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  iterator = iter(stream)
  if state is not None:
    iterator.set_state(state)
  return iterator
