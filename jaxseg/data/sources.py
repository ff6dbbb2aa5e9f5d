"""The data sets a config describes: `load_splits(config.data)` gives a
`SegmentationData` per split from one of three sources: the embedded synthetic data (no
data.root), 2D image folders, or BraTS NIfTI volumes (preprocessed once into a cache and
memory-mapped, see cache.py). Splits are by case (splits.py). When training, every case
of data.root that neither trains nor validates (no segmentation, bad and skipped, not in
the run's recorded split) is accounted for in one printed line."""

import dataclasses
import os
from typing import Sequence

import ml_collections
import numpy as np

from jaxseg.data import brats, cache, folders, layouts, splits, synthetic
from jaxseg.data.dataset import SegmentationData
from jaxseg.data.regions import Region
from jaxseg.errors import ConfigError, DataError


def load_splits(data_config: ml_collections.ConfigDict, names=('train', 'val'),
                recorded: dict | None = None, regions: tuple[Region, ...] | None = None
                ) -> dict[str, SegmentationData]:
  """{split name: data} for `names`: 'train', 'val' (labelled cases), 'all' (every
  case of data.root, unlabelled ones included) or 'labelled' (every labelled case).
  `recorded` is a splits.json to follow instead of computing the split afresh. With
  data.val_root, data.root's labelled cases train and data.val_root's validate.

  The regions are those of the data: its layout's (layouts.py) that occur in its
  labelled cases, or a 2D folder's labels. `regions` (those a model was trained on)
  replaces them, and is refused with one line when the data has no such regions.
  """
  image_size = tuple(data_config.image_size)
  if len(image_size) not in (2, 3) or min(image_size) < 8:
    raise ConfigError(f'data.image_size: need 2 or 3 sizes of at least 8, got {image_size}')
  if data_config.get('val_root') and names != ('all',):
    return _separate_validation(data_config, names, regions)
  if not data_config.root:
    if 'all' in names:
      raise ConfigError('data.root is not set: the embedded data has no directory to '
                        'predict; give a data root')
    out = {name: _synthetic(data_config, name, image_size) for name in names}
    available = layouts.GLIOMA_REGIONS
  else:
    root = os.path.abspath(os.path.expanduser(data_config.root))
    if os.path.isdir(root) and brats.detect_layout(root) == 'folders':
      out = _folder_splits(data_config, root, image_size, names, recorded)
      available = next(iter(out.values())).regions
    else:
      out, available = _nifti_splits(data_config, root, names, recorded)
  if regions is None:
    return out
  layouts.check_regions(regions, available, data_config.root or 'the embedded data')
  return {name: dataclasses.replace(data, regions=tuple(regions)) for name, data in out.items()}


def _separate_validation(data_config, names, regions) -> dict[str, SegmentationData]:
  """data.val_root: every labelled case of data.root trains and every labelled case of
  data.val_root validates (no split); the validation data must have the training
  regions."""
  if not data_config.root:
    raise ConfigError('data.val_root is set but data.root is not: give the training '
                      'cases\' directory too')
  out = {}
  for name in ('train', 'val'):
    if name not in names and not (name == 'train' and regions is None):
      continue  # the training data decides the regions unless a model's are given
    one_root = data_config.copy_and_resolve_references()
    one_root.root = data_config.root if name == 'train' else data_config.val_root
    one_root.val_root = None
    out[name] = load_splits(one_root, ('labelled',), regions=regions)['labelled']
    regions = out[name].regions
  if 'train' in out and 'val' in out:
    shared = sorted(set(out['train'].case_ids) & set(out['val'].case_ids))
    if shared:
      raise DataError(f'data.val_root: case {shared[0]} is also in data.root ({len(shared)} '
                      'shared); a case must not both train and validate')
  return {name: out[name] for name in names}


def check_embedded_counts(data_config: ml_collections.ConfigDict,
                          splits_read: Sequence[str] = ('train', 'val')) -> None:
  """Without data.root, each split read is embedded data: it needs cases. Checked from
  the config alone, so a run is refused before its step is compiled."""
  if data_config.root or data_config.get('val_root'):
    return
  for split in splits_read:
    num_cases = data_config[f'num_{split}_cases']
    if num_cases < 1:
      raise ConfigError(f'data.root is not set and data.num_{split}_cases={num_cases}: set '
                        '--config.data.root=/path/to/data, or a number of embedded cases')


def _synthetic(data_config, split: str, image_size) -> SegmentationData:
  check_embedded_counts(data_config, (split,))
  num_cases = data_config[f'num_{split}_cases']
  images, labels, case_ids = synthetic.synthetic_split(image_size, data_config.seed, split,
                                                       num_cases)
  return SegmentationData(images, labels, tuple(case_ids), ((1.0,) * len(image_size),) * num_cases,
                          layouts.GLIOMA_REGIONS, synthetic.CHANNELS)


def _folder_splits(data_config, root, image_size, names, recorded):
  if len(image_size) != 2:
    raise ConfigError(f'data.image_size: 2D image folders need 2 sizes, got {image_size}')
  images, labels, case_ids, regions = folders.load_image_folder(root, image_size)
  channels = ('gray',) if images.shape[-1] == 1 else ('red', 'green', 'blue')
  ids = {'all': case_ids, 'labelled': case_ids}  # every image of a folder has its mask
  if names not in (('all',), ('labelled',)):
    ids.update(splits.choose_split(case_ids, data_config, recorded))
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
      raise ConfigError(f'data.modalities: unknown modality {name!r}; choose from '
                        f'{", ".join(brats.CHANNELS)}')
    channel_index.append(brats.CHANNELS.index(name))
  workers = data_config.preprocess_workers
  if (workers or 0) < 0:
    raise ConfigError(f'data.preprocess_workers must be >= 0, got {workers}')
  layout, cases, skipped = cache.prepare(root, data_config.cache_dir,
                                    os.cpu_count() if workers is None else workers,
                                    data_config.skip_bad_cases)
  by_id = {case.case_id: case for case in cases}
  labelled = [case.case_id for case in cases if case.labelled]
  if names == ('all',):
    ids = {'all': list(by_id)}
  elif not labelled:
    raise DataError(f'{root}: no case has a segmentation to train or validate on')
  elif names == ('labelled',):
    ids = {'labelled': labelled}
  else:
    ids = {**splits.choose_split(labelled, data_config, recorded), 'all': list(by_id)}
    if 'train' in names and (line := _unused_line(root, cases, skipped, ids)):
      print(line)
  present = set()
  for case in cases:
    if case.labelled:
      present.update(np.unique(case.array('foreground')[:, 0]).tolist())
  regions = layouts.regions_present(layout, present)
  out = {}
  for name in names:
    chosen = [by_id[c] for c in ids[name]]
    metas = [case.meta for case in chosen]
    out[name] = SegmentationData(
        _CachedArrays(chosen, 'image', tuple(channel_index)), _CachedArrays(chosen, 'labels'),
        tuple(ids[name]), tuple(tuple(m['spacing']) for m in metas), regions or layout.regions,
        tuple(data_config.modalities), _CachedArrays(chosen, 'foreground'), tuple(metas),
        origin='nifti', layout=layout)
  return out, layout.regions


def _unused_line(root: str, cases: list[cache.CachedCase], skipped: list[tuple[str, str]],
                 ids: dict[str, list[str]]) -> str | None:
  """The line that accounts for every case of `root` in neither training nor validation
  (so the counts train.py prints add up), or None when every case is used."""
  used = set(ids['train']) | set(ids['val'])
  unlabelled = [c.case_id for c in cases if not c.labelled]
  unsplit = [c.case_id for c in cases if c.labelled and c.case_id not in used]
  parts = [f'{len(found)} {why} ({_some(found)})' for found, why in (
      (unlabelled, 'without a segmentation'), ([c for c, _ in skipped], 'bad, skipped'),
      (unsplit, "not in the run's recorded split (splits.json)")) if found]
  if not parts:
    return None
  return (f'{root}: {len(used)} of {len(cases) + len(skipped)} case(s) train or validate; '
          f'not trained on: {"; ".join(parts)}')


def _some(case_ids: list[str], limit: int = 3) -> str:
  return ', '.join(case_ids[:limit]) + (', ...' if len(case_ids) > limit else '')


def case_ids_by_split(data: dict[str, SegmentationData]) -> dict[str, list[str]]:
  """The case ids of each split, as recorded in splits.json."""
  return {name: list(split.case_ids) for name, split in data.items()}


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
