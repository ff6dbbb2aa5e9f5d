"""Data sets and batch streams.

A `SegmentationData` holds one split in memory: images (N, *spatial, C) z-scored per
channel, label maps (N, *spatial), and the regions that are trained and scored.
Training batches come from a grain `MapDataset` indexed by step, so the batch of a
step is a pure function of (seed, step): a resumed run sees the same stream.
"""

import dataclasses
import os
from typing import Iterator

import grain
import ml_collections
import numpy as np

from jaxseg.data import folders, synthetic
from jaxseg.data.regions import BRATS_2023_REGIONS, Region, region_masks


@dataclasses.dataclass(frozen=True)
class SegmentationData:
  images: np.ndarray          # (N, *spatial, C) float32
  labels: np.ndarray          # (N, *spatial) uint8 label map
  case_ids: tuple[str, ...]
  spacing: tuple[float, ...]  # mm per voxel along each spatial axis
  regions: tuple[Region, ...]
  channels: tuple[str, ...]

  def __len__(self):
    return len(self.case_ids)

  @property
  def spatial_shape(self) -> tuple[int, ...]:
    return self.images.shape[1:-1]


def load_split(data_config: ml_collections.ConfigDict, split: str) -> SegmentationData:
  """The `split` ('train' or 'val') of the data set described by `config.data`."""
  shape = tuple(data_config.image_size)
  if len(shape) not in (2, 3) or min(shape) < 8:
    raise ValueError(f'data.image_size: need 2 or 3 sizes of at least 8, got {shape}')
  if data_config.root:
    return _load_folder_split(data_config, split, shape)
  num_cases = {'train': data_config.num_train_cases, 'val': data_config.num_val_cases}[split]
  if num_cases < 1:
    raise ValueError(f'data.num_{split}_cases must be at least 1, got {num_cases}')
  images, labels, case_ids = synthetic.synthetic_split(shape, data_config.seed, split, num_cases)
  return SegmentationData(images, labels, tuple(case_ids), (1.0,) * len(shape),
                          BRATS_2023_REGIONS, synthetic.CHANNELS)


def _load_folder_split(data_config, split: str, shape) -> SegmentationData:
  root = os.path.expanduser(data_config.root)
  if not os.path.isdir(root):
    raise ValueError(f'data.root: {root} is not a directory')
  if not os.path.isdir(os.path.join(root, 'images')):
    raise ValueError(f'data.root: {root} has no images/ folder; 2D image folders '
                     '(images/ and masks/) are supported, BraTS NIfTI layouts not yet')
  if len(shape) != 2:
    raise ValueError(f'data.image_size: 2D image folders need 2 sizes, got {shape}')
  images, labels, case_ids, regions = folders.load_image_folder(root, shape)
  keep = folders.split_cases(case_ids, split, data_config.val_fraction, data_config.seed)
  channels = ('gray',) if images.shape[-1] == 1 else ('red', 'green', 'blue')
  return SegmentationData(images[keep], labels[keep], tuple(case_ids[i] for i in keep),
                          (1.0, 1.0), regions, channels)


def _to_batch(data: SegmentationData, indices) -> dict[str, np.ndarray]:
  indices = np.asarray(indices)
  return {'image': data.images[indices],
          'target': region_masks(data.labels[indices], data.regions).astype(np.float32)}


def train_batches(data: SegmentationData, batch_size: int, seed: int) -> grain.MapDataset:
  """Endless shuffled batches; element `step` is the batch of that training step.

  Every epoch is reshuffled; batches run across epoch boundaries.
  """
  return (grain.MapDataset.range(len(data)).seed(seed).shuffle().repeat(None)
          .batch(batch_size).map(lambda indices: _to_batch(data, indices)))


def eval_batches(data: SegmentationData, batch_size: int) -> Iterator[tuple[dict, int]]:
  """Batches in case order, each padded to `batch_size` so that one compiled step
  serves all; yields (batch, number of real cases in it)."""
  for start in range(0, len(data), batch_size):
    indices = np.arange(start, min(start + batch_size, len(data)))
    padded = np.concatenate([indices, np.full(batch_size - len(indices), indices[-1])])
    yield _to_batch(data, padded), len(indices)
