"""Small BraTS-layout data sets in NIfTI, written from the embedded synthetic cases."""

import json
import os

import nibabel as nib
import numpy as np

from jaxseg.data.layouts import SUBCHALLENGE_PREFIXES
from jaxseg.data.synthetic import synthetic_case

SHAPE = (24, 20, 16)
SPACING = (1.0, 1.2, 1.5)
# The synthetic cases' labels (1 necrotic core, 2 oedema, 3 enhancing) -> each layout's
# own values; BraTS-PED 2024-25 numbers them 2 non-enhancing, 4 oedema, 1 enhancing.
GLIOMA = {1: 1, 2: 2, 3: 3}
LAYOUT_LABELS = {'brats2021': {1: 1, 2: 2, 3: 4}, 'decathlon': {1: 2, 2: 1, 3: 3},
                 'brats-ped': {1: 2, 2: 4, 3: 1}}
# Case-id prefixes of the BraTS 2023+ naming ('brats2023': a prefix of no sub-challenge).
PREFIXES = {**{layout: prefix for prefix, layout in SUBCHALLENGE_PREFIXES.items()},
            'brats2023': 'BraTS-XYZ-'}
DECATHLON_JSON = {
    'name': 'BRATS', 'tensorImageSize': '4D',
    'modality': {'0': 'FLAIR', '1': 'T1w', '2': 't1gd', '3': 'T2w'},
    'labels': {'0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
               '3': 'enhancing tumour'}}


def affine(spacing=SPACING) -> np.ndarray:
  matrix = np.diag([*spacing, 1.0])
  matrix[:3, 3] = (-10.0, 5.0, 2.0)
  return matrix


def case_arrays(index: int, shape=SHAPE):
  """(MRI-like channels t1, t1ce, t2, flair (*shape, 4) with a zero background, canonical
  labels) of synthetic case `index`, placed in a larger field of view (to be cropped)."""
  image, labels = synthetic_case(shape, seed=0, split='train', index=index)
  brain = np.abs(image).sum(-1) > 0
  raw = np.where(brain[..., None], 400 + 100 * image, 0).astype(np.float32)
  return raw, labels


def save(array: np.ndarray, path: str, matrix=None, dtype=np.float32) -> str:
  nib.save(nib.Nifti1Image(array.astype(dtype), affine() if matrix is None else matrix), path)
  return path


def make_dataset(root: str, layout: str, num_cases: int = 4, num_unlabelled: int = 0,
                 extra_label: int | None = None, first_index: int = 0) -> list[str]:
  """Writes a data set of `layout` under `root`; returns the case ids. `extra_label`:
  a label value (4, a resection cavity, say) painted as a small cube away from the
  tumour of every labelled case. Case numbers start at `first_index`."""
  os.makedirs(root, exist_ok=True)
  ids = []
  mapping = LAYOUT_LABELS.get(layout, GLIOMA)
  for index in range(first_index, first_index + num_cases + num_unlabelled):
    raw, labels = case_arrays(index)
    own = np.zeros_like(labels)
    for canonical, value in mapping.items():
      own[labels == canonical] = value
    if extra_label is not None:
      own[1:4, 1:4, 1:4] = extra_label
    labelled = index < first_index + num_cases
    if layout == 'decathlon':
      case_id = f'BRATS_{index + 1:03d}'
      folder = 'imagesTr' if labelled else 'imagesTs'
      os.makedirs(os.path.join(root, folder), exist_ok=True)
      # dataset.json order: FLAIR, T1w, t1gd, T2w
      save(raw[..., [3, 0, 1, 2]], os.path.join(root, folder, f'{case_id}.nii.gz'))
      if labelled:
        os.makedirs(os.path.join(root, 'labelsTr'), exist_ok=True)
        save(own, os.path.join(root, 'labelsTr', f'{case_id}.nii.gz'), dtype=np.uint8)
    else:
      case_id = (f'BraTS2021_{index:05d}' if layout == 'brats2021'
                 else f'{PREFIXES[layout]}{index:05d}-000')
      sep, names = (('_', ('t1', 't1ce', 't2', 'flair')) if layout == 'brats2021'
                    else ('-', ('t1n', 't1c', 't2w', 't2f')))
      folder = os.path.join(root, case_id)
      os.makedirs(folder, exist_ok=True)
      for channel, name in enumerate(names):
        save(raw[..., channel], os.path.join(folder, f'{case_id}{sep}{name}.nii.gz'))
      if labelled:
        save(own, os.path.join(folder, f'{case_id}{sep}seg.nii.gz'), dtype=np.uint8)
    ids.append(case_id)
  if layout == 'decathlon':
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
      json.dump(DECATHLON_JSON, f)
  return ids


def snapshot(root: str) -> dict[str, tuple[int, int]]:
  """Every file under `root` with its size and modification time."""
  files = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      files[path] = (os.stat(path).st_size, os.stat(path).st_mtime_ns)
  return files
