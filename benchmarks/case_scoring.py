"""Time to score and write one BraTS-sized case (240 x 240 x 155) after prediction.

  python benchmarks/case_scoring.py              # needs pip install -e '.[brats]'
  python benchmarks/case_scoring.py --repeats=5

What eval.py does with a case once the model's logits are there, stage by stage, on a
synthetic 2024-25 glioma case (labels 1-4, 1 mm voxels): the label map from the region
logits, small-component removal (--remove_lesions_below=challenge), the voxel-wise
metrics of four regions with HD95 (evaluation.evaluate), the prediction and the
probabilities written (predictions.py), and the organisers' lesion-wise metrics of the
written file (challenge_metrics.LesionWiseScorer, config 'gli'). The prediction is the
truth shifted by two voxels, with one lesion missed and a few false-positive specks, so
that matching has work to do. Prediction itself is benchmarks/inference_speed.py's.
Prints the median of --repeats runs per stage, in seconds.
"""

import argparse
import os
import platform
import sys
import tempfile
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage, special  # noqa: E402

from benchmarks import timing  # noqa: E402
from jaxseg import challenge_metrics, evaluation, postprocess, predictions  # noqa: E402
from jaxseg.data import SegmentationData, layouts  # noqa: E402
from jaxseg.data.regions import labels_from_regions, region_masks  # noqa: E402
from jaxseg.data.synthetic import synthetic_case  # noqa: E402

SHAPE = (240, 240, 155)
CASE_ID = 'BraTS-GLI-00000-000'


def make_case(seed: int = 0):
  """(truth label map, prediction logits (1, *SHAPE, 4)) of one synthetic case."""
  _, truth = synthetic_case(SHAPE, seed, 'train', 0)
  truth = truth.astype(np.uint8)
  truth[150:170, 60:80, 40:55] = 4   # a resection cavity
  truth[60:66, 170:176, 100:106] = 1  # a small second lesion, to be missed
  regions = layouts.GLIOMA_RC_REGIONS
  predicted = np.roll(region_masks(truth, regions), 2, axis=0)
  predicted[60:66, 170:176, 100:106] = False
  rng = np.random.default_rng(seed)
  for corner in rng.integers(20, 130, size=(6, 3)):  # false-positive specks of WT
    predicted[tuple(slice(c, c + 3) for c in corner) + (0,)] = True
  predicted[..., 1] &= predicted[..., 0]
  predicted[..., 2] &= predicted[..., 1]
  logits = np.where(predicted, 3.0, -3.0).astype(np.float32)
  # Smooth the borders so that the probabilities are not all 0.05 / 0.95.
  logits = ndimage.uniform_filter(logits, size=(3, 3, 3, 1))
  return truth, logits[None], regions


def median_and_result(function, repeats: int) -> tuple[float, object]:
  """(median seconds, the last result) of `repeats` calls of function()."""
  timings = timing.repeat(function, repeats)
  return timings.median, timings.result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  if not challenge_metrics.installed():
    sys.exit(f'benchmarks/case_scoring.py: needs {challenge_metrics.INSTALL_HINT}')
  truth, logits, regions = make_case()
  data = SegmentationData([None], [truth], (CASE_ID,), ((1.0, 1.0, 1.0),), regions,
                          ('t1n', 't1c', 't2w', 't2f'))
  layout = layouts.LAYOUTS['brats-gli']
  min_volumes = postprocess.parse_min_volumes('challenge', regions, layout.min_lesion_voxels)
  scorer = challenge_metrics.LesionWiseScorer(layout.challenge)
  stages = {}
  with tempfile.TemporaryDirectory() as tmp:
    reference = os.path.join(tmp, 'reference.nii.gz')
    nib.save(nib.Nifti1Image(truth, np.eye(4)), reference)
    meta = {'images': [reference], 'original_shape': SHAPE, 'crop_start': (0, 0, 0),
            'crop_stop': SHAPE, 'label_mapping': [[v, v] for v in range(5)]}
    stages['label map from logits'], labels = median_and_result(
        lambda: labels_from_regions(logits[0] > 0, regions), args.repeats)
    stages['small-component removal (challenge thresholds)'], _ = median_and_result(
        lambda: postprocess.remove_small_components(region_masks(labels, regions), regions,
                                                    min_volumes, (1.0, 1.0, 1.0)), args.repeats)
    stages['voxel-wise metrics, 4 regions with HD95 (evaluate)'], _ = median_and_result(
        lambda: evaluation.evaluate(iter([(0, logits)]), data), args.repeats)
    path = os.path.join(tmp, 'predictions', f'{CASE_ID}.nii.gz')
    stages['prediction written (NIfTI, uint8)'], _ = median_and_result(
        lambda: predictions.write_nifti(path, predictions.original_labels(labels, meta), meta),
        args.repeats)
    stages['probabilities written (float16 .npz)'], _ = median_and_result(
        lambda: predictions.write_probabilities(
            os.path.join(tmp, 'probabilities', f'{CASE_ID}.npz'),
            predictions.original_probabilities(special.expit(logits[0]), meta),
            [r.name for r in regions]), args.repeats)
    stages["lesion-wise metrics, brats-evaluation 'gli'"], rows = median_and_result(
        lambda: scorer.score(CASE_ID, path, reference), args.repeats)
  versions = ', '.join(f'{name} {metadata.version(name)}'
                       for name in ('numpy', 'scipy', 'brats-evaluation', 'panoptica'))
  print(f'One case {SHAPE}, median of {args.repeats}; '
        f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'Python {platform.python_version()}, {versions}')
  print('| stage | seconds |\n| --- | ---: |')
  for name, seconds in stages.items():
    print(f'| {name} | {seconds:.2f} |')
  print(f'| **total** | **{sum(stages.values()):.2f}** |')
  wt = next(r for r in rows if r['region'].lower() == 'wt')
  print(f"(lesion-wise WT: TP {wt['tp']:.0f}, FP {wt['fp']:.0f}, FN {wt['fn']:.0f}, "
        f"lesion-wise Dice {wt['lesionwise_dsc']:.3f}, global Dice {wt['global_dsc']:.3f})")


if __name__ == '__main__':
  main()
