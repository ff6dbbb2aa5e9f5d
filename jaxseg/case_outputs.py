"""The files eval.py writes for each case as it is predicted (`CaseOutputs`): the
prediction a challenge submission uploads, probabilities, earlier iterations and
figures."""

import os

import numpy as np
from PIL import Image
from scipy import special

from jaxseg import figures, predictions
from jaxseg.data import SegmentationData


class CaseOutputs:
  """on_case callback of `evaluate`: prediction files and figures of each case.

  NIfTI cases get `<case>.nii.gz` in their original geometry (predictions.py); 2D image
  folders get `<case>.png` masks at the model's resolution; the first `num_figures`
  cases get a PNG figure of every refinement iteration.
  """

  def __init__(self, output_dir: str, data: SegmentationData, num_figures: int,
               all_iterations: bool, save_probabilities: bool = False):
    self.data, self.num_figures, self.all_iterations = data, num_figures, all_iterations
    self.save_probabilities = save_probabilities
    # predictions/ holds the label maps only: the folder a challenge submission uploads.
    self.predictions_dir = os.path.join(output_dir, 'predictions')
    self.probabilities_dir = os.path.join(output_dir, 'probabilities')
    self.iterations_dir = os.path.join(output_dir, 'iterations')
    self.figures_dir = os.path.join(output_dir, 'figures')
    self.written = 0
    self._nifti_files = {}  # case index -> written prediction

  def scorable(self) -> list[tuple[int, str]]:
    """(case index, prediction file) of the labelled NIfTI cases written."""
    return [(index, path) for index, path in self._nifti_files.items()
            if self.data.labels[index] is not None]

  def __call__(self, index: int, labels: np.ndarray, logits: np.ndarray) -> None:
    """labels: (T, *spatial) predicted label maps of case `index`, one per iteration;
    logits (*spatial, R): those of the last."""
    data, case_id = self.data, self.data.case_ids[index]
    region_names = [r.name for r in data.regions]
    if data.origin == 'nifti':  # back into the original geometry
      meta = data.source[index]
      last = predictions.original_labels(labels[-1], meta)
      path = os.path.join(self.predictions_dir, f'{case_id}.nii.gz')
      predictions.write_nifti(path, last, meta)
      self._nifti_files[index] = path
      if self.save_probabilities:
        predictions.write_probabilities(
            os.path.join(self.probabilities_dir, f'{case_id}.npz'),
            predictions.original_probabilities(special.expit(logits), meta), region_names)
      if self.all_iterations:
        for t in range(len(labels) - 1):
          path = os.path.join(self.iterations_dir, f'{case_id}_iteration{t + 1}.nii.gz')
          predictions.write_nifti(path, predictions.original_labels(labels[t], meta), meta)
      self.written += 1
    elif data.origin == 'folders':
      scale = 255 if len(data.regions) == 1 else 1  # 0/255 masks as the input's, else labels
      os.makedirs(self.predictions_dir, exist_ok=True)
      Image.fromarray((labels[-1] * scale).astype(np.uint8)).save(
          os.path.join(self.predictions_dir, f'{case_id}.png'))
      if self.save_probabilities:
        predictions.write_probabilities(os.path.join(self.probabilities_dir, f'{case_id}.npz'),
                                        np.moveaxis(special.expit(logits), -1, 0), region_names)
      self.written += 1
    if index < self.num_figures:
      channel = data.channels.index('flair') if 'flair' in data.channels else 0
      truth = None if data.labels[index] is None else np.asarray(data.labels[index])
      figures.case_figure(os.path.join(self.figures_dir, f'{case_id}.png'), case_id,
                          np.asarray(data.images[index]), channel, data.channels[channel],
                          truth, labels)
