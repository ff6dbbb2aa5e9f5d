"""Reading one case's NIfTI files into arrays, with every check a damaged or mismatched
file needs: unreadable or truncated data, NaN or infinite voxels, shapes and affines
that differ between a case's files, label values outside the layout's. Each problem
raises `DataError` with one line naming the file.
"""

import os

import nibabel as nib
import numpy as np

from jaxseg.data.brats import CaseFiles, Layout
from jaxseg.errors import DataError


def _load(path: str) -> nib.Nifti1Image:
  try:
    return nib.load(path)
  except Exception as error:  # nibabel raises many types for damaged files
    raise DataError(f'{path}: unreadable NIfTI ({type(error).__name__}: {error})') from error


def _voxels(image: nib.Nifti1Image, path: str, dtype) -> np.ndarray:
  try:
    data = np.asarray(image.dataobj, dtype=dtype)
  except Exception as error:  # truncated gzip: EOFError, zlib.error, OSError...
    raise DataError(f'{path}: unreadable or truncated NIfTI data '
                    f'({type(error).__name__}: {error})') from error
  if dtype != np.uint8:
    bad = np.count_nonzero(~np.isfinite(data))
    if bad:
      raise DataError(f'{path}: {bad} NaN or infinite voxel(s)')
  return data


def read_case(case: CaseFiles, layout: Layout):
  """(image (*spatial, C) float32, labels (*spatial) uint8 canonical or None, reference
  NIfTI image (geometry and header of the case)) of one case, checked."""
  reference = _load(case.images[0])
  if case.channel_index:  # decathlon: one 4D file
    volume = _voxels(reference, case.images[0], np.float32)
    if volume.ndim != 4 or volume.shape[-1] <= max(case.channel_index):
      raise DataError(f'{case.images[0]}: expected a 4D volume with '
                      f'{max(case.channel_index) + 1} modalities, got shape {volume.shape}')
    image = volume[..., list(case.channel_index)]
    reference = nib.Nifti1Image(volume[..., 0], reference.affine, reference.header)
  else:
    channels = []
    for path in case.images:
      nifti = reference if path == case.images[0] else _load(path)
      _check_geometry(nifti, path, reference, case.images[0])
      channels.append(_voxels(nifti, path, np.float32))
    image = np.stack(channels, axis=-1)
  if image.ndim != 4:
    raise DataError(f'{case.images[0]}: expected a 3D volume, got shape {image.shape[:-1]}')
  labels = None
  if case.seg:
    nifti = _load(case.seg)
    _check_geometry(nifti, case.seg, reference, case.images[0])
    raw = _voxels(nifti, case.seg, np.float32)
    values = np.unique(raw)
    unknown = [v for v in values.tolist() if v not in layout.to_canonical]
    if unknown:
      raise DataError(f'{case.seg}: label value(s) {_short(unknown)} are not labels of the '
                      f'{layout.name} layout {sorted(layout.to_canonical)}')
    lookup = np.zeros(int(values.max()) + 1, np.uint8)
    for own, canonical in layout.to_canonical.items():
      if own < len(lookup):
        lookup[own] = canonical
    labels = lookup[raw.astype(np.int64)]
  return image, labels, reference


def _check_geometry(nifti, path: str, reference, reference_path: str) -> None:
  shape, expected = nifti.shape[:3], reference.shape[:3]
  if shape != expected or len(nifti.shape) != 3:
    raise DataError(f'{path}: shape {nifti.shape} differs from {expected} of '
                    f'{os.path.basename(reference_path)}')
  if not np.allclose(nifti.affine, reference.affine, atol=1e-3):
    raise DataError(f'{path}: affine (voxel-to-world orientation) differs from that of '
                    f'{os.path.basename(reference_path)}')


def _short(values: list) -> str:
  text = ', '.join(f'{v:g}' for v in values[:5])
  return text + (', ...' if len(values) > 5 else '')
