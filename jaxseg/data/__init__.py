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

from jaxseg.data.dataset import SegmentationData
from jaxseg.data.input_pipeline import train_batches, train_iterator
from jaxseg.data.sources import case_ids_by_split, load_splits

__all__ = ['SegmentationData', 'case_ids_by_split', 'load_splits', 'train_batches',
           'train_iterator']
