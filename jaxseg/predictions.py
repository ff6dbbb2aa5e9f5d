"""Predicted segmentations and probabilities as files, in the original geometry of
each case.

A prediction of a preprocessed case (cropped to the brain, canonical labels) is put
back where it came from: un-cropped into the original shape, labels mapped to the
values of the case's layout (BraTS 2021: 1, 2, 4; BraTS 2023: 1, 2, 3; decathlon: as
its dataset.json), with the affine and header of the case's first image. The file is
`<case id>.nii.gz`, the naming of BraTS submissions. Probabilities (`probabilities/<case id>.npz`,
as nnU-Net's --save_probabilities) hold 'probabilities', float16 (R, *original shape)
with zeros outside the cropped brain, and 'regions', the region names.
"""

import os

import nibabel as nib
import numpy as np


def original_labels(canonical: np.ndarray, meta: dict) -> np.ndarray:
  """Canonical label map (*cropped) of a cached case -> its labels in the original
  geometry and the layout's own label values."""
  lookup = np.zeros(int(canonical.max(initial=0)) + 1, np.uint8)
  for own, label in meta['label_mapping']:
    if label < len(lookup):
      lookup[label] = own
  full = np.zeros(meta['original_shape'], np.uint8)
  crop = tuple(slice(a, b) for a, b in zip(meta['crop_start'], meta['crop_stop']))
  full[crop] = lookup[canonical]
  return full


def write_nifti(path: str, labels: np.ndarray, meta: dict) -> None:
  """Saves `labels` with the affine and header of the case's first source image."""
  reference = nib.load(meta['images'][0])
  header = reference.header.copy()
  header.set_data_dtype(np.uint8)
  header.set_slope_inter(1.0, 0.0)
  image = nib.Nifti1Image(labels, reference.affine, header)  # the shape comes from labels
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  nib.save(image, path)


def original_probabilities(probabilities: np.ndarray, meta: dict) -> np.ndarray:
  """(*cropped, R) probabilities of a cached case -> (R, *original shape) float16."""
  full = np.zeros((probabilities.shape[-1], *meta['original_shape']), np.float16)
  crop = tuple(slice(a, b) for a, b in zip(meta['crop_start'], meta['crop_stop']))
  full[(slice(None), *crop)] = np.moveaxis(probabilities, -1, 0)
  return full


def cropped_probabilities(full: np.ndarray, meta: dict) -> np.ndarray:
  """The inverse of `original_probabilities`: (R, *original shape) -> (*cropped, R)."""
  crop = tuple(slice(a, b) for a, b in zip(meta['crop_start'], meta['crop_stop']))
  return np.moveaxis(full[(slice(None), *crop)], 0, -1)


def write_probabilities(path: str, probabilities: np.ndarray, region_names) -> None:
  """Saves (R, *spatial) probabilities as float16 with the region names (no pickle)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  np.savez_compressed(path, probabilities=probabilities.astype(np.float16),
                      regions=np.array(list(region_names), dtype=str))
