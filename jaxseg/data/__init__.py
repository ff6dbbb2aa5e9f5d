"""Data: where cases come from and how training windows reach the train step.

  dataset.py         SegmentationData, the cases of one split
  sources.py         load_splits(config.data): embedded, 2D folders or BraTS NIfTI
  synthetic.py       the embedded BraTS-like data
  folders.py         2D images/ and masks/ folders
  layouts.py         the BraTS layouts as one table: labels, regions, challenge
  brats.py           BraTS NIfTI case discovery and layout detection
  nifti_case.py      reading one case's NIfTI files, with their checks
  cache.py           the preprocessing cache of NIfTI cases
  regions.py         labels -> regions (WT, TC, ET, RC, ...)
  splits.py          train / validation splits by case
  sampling.py        training windows cut from a case
  input_pipeline.py  the grain pipeline of training batches
"""

import importlib

# Imported on first use, so that the numpy-only modules of this package (brats,
# nifti_case, preprocessing, regions, layouts, sampling) load without JAX or grain: the
# ONNX Runtime predictor (jaxseg/onnx_predict.py) runs on them alone.
_EXPORTS = {'SegmentationData': 'dataset', 'train_batches': 'input_pipeline',
            'train_iterator': 'input_pipeline', 'case_ids_by_split': 'sources',
            'load_splits': 'sources'}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
