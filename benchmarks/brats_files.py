"""Synthetic cases written as BraTS 2021 NIfTI files, for the benchmarks that read
cases as users' data are read (pipeline_throughput.py, inference_speed.py,
onnx_runtime.py)."""

import os

import nibabel as nib
import numpy as np

from jaxseg.data.synthetic import synthetic_case

BRATS_SHAPE = (240, 240, 155)


def write_cases(root: str, num_cases: int, num_distinct: int) -> None:
  """BraTS 2021-layout cases at full size (synthetic anatomy; distinct ones are slow to
  make)."""
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
