"""Predict a BraTS case with a model exported by `export.py --format=onnx`, without JAX:
ONNX Runtime, numpy and nibabel only.

  python -m jaxseg.onnx_predict --model model.onnx --input BraTS-GLI-00001-000 \\
      --output BraTS-GLI-00001-000.nii.gz [--tta] [--batch_size 4]

What eval.py does around the model, with the same code (no copy of it): the case's
modalities are read in the order of the model's JSON (`<model>.json`), cropped to the
brain and z-scored (data/preprocessing.py), covered by Gaussian-weighted sliding
windows whose logits are averaged (sliding_window.py), optionally mirrored, turned into
a label map by the regions, and written in the case's original geometry with the label
values of its layout (predictions.py). Bad input (a missing file, a modality the model
needs and the case lacks) is one line on stderr and exit status 2.
"""

import argparse
import json
import os
import sys

import numpy as np

from jaxseg import predictions, sliding_window
from jaxseg.data import brats, layouts, nifti_case, preprocessing
from jaxseg.data.regions import Region, labels_from_regions
from jaxseg.errors import ConfigError, DataError, UserError

INPUT_NAME = 'image'
OUTPUT_NAMES = ('probabilities', 'logits')
SIDECAR_SUFFIX = '.json'  # <model file>.json
_SIDECAR_KEYS = ('window_size', 'modalities', 'regions', 'sliding_window')


def read_sidecar(model_path: str) -> dict:
  """The JSON export.py wrote beside `model_path`, checked for the keys used here."""
  path = model_path + SIDECAR_SUFFIX
  try:
    with open(path) as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise ConfigError(f'{path}: not found; export.py writes it beside the model') from None
  except (OSError, ValueError) as error:
    raise ConfigError(f'{path}: not readable JSON ({error})') from None
  missing = [key for key in _SIDECAR_KEYS if not isinstance(spec, dict) or key not in spec]
  if missing:
    raise ConfigError(f'{path}: lacks {", ".join(missing)}; export the model again')
  return spec


class OnnxPredictor:
  """An exported model in an ONNX Runtime session, with its JSON's settings."""

  def __init__(self, model_path: str, batch_size: int | None = None):
    if not os.path.isfile(model_path):
      raise ConfigError(f'--model {model_path}: no such file')
    self.spec = read_sidecar(model_path)
    try:
      import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ConfigError("onnxruntime is not installed: pip install onnxruntime "
                        "(or jaxseg's extra: pip install 'jaxseg[onnx]')") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only, not notes on the graph's initialisers
    self.session = onnxruntime.InferenceSession(
        model_path, options, providers=onnxruntime.get_available_providers())
    self.window_size = tuple(self.spec['window_size'])
    self.modalities = tuple(self.spec['modalities'])
    self.regions = tuple(Region(r['name'], tuple(r['labels'])) for r in self.spec['regions'])
    self.batch_size = batch_size or self.spec['sliding_window'].get('batch_size', 2)
    if self.batch_size < 1:
      raise ConfigError(f'--batch_size {self.batch_size}: need at least 1')

  def window_logits(self, windows: np.ndarray) -> np.ndarray:
    """(B, *window, C) -> logits (1, B, *window, R): one iteration, as the model's last."""
    logits = self.session.run([OUTPUT_NAMES[1]], {INPUT_NAME: windows.astype(np.float32)})[0]
    return logits[None]

  def volume_logits(self, volume: np.ndarray, mirror_axes=()) -> np.ndarray:
    """Normalised (*spatial, C) -> averaged logits (*spatial, R)."""
    run = sliding_window.mirrored(self.window_logits, mirror_axes)
    overlap = float(self.spec['sliding_window']['overlap'])
    [(_, logits)] = sliding_window.predict_cases([volume], run, self.window_size,
                                                 self.batch_size, overlap)
    return logits[-1]

  def predict_case(self, case_dir: str, tta: bool = False) -> tuple[np.ndarray, dict]:
    """(label map in the case's original geometry and its layout's values, the geometry
    `predictions.write_nifti` needs) of one BraTS case folder."""
    layout, case = brats.case_folder(case_dir, self.modalities)
    layouts.check_regions(self.regions, layout.regions, case_dir)
    image, _, reference = nifti_case.read_case(case, layout)
    try:
      box = preprocessing.brain_crop(image)
    except DataError as error:
      raise DataError(f'{case.images[0]}: {error}') from None
    volume = preprocessing.normalise(image[box])
    axes = range(len(self.window_size)) if tta else self.spec['sliding_window']['mirror_axes']
    logits = self.volume_logits(volume, tuple(axes))
    labels = labels_from_regions(logits > 0, self.regions)
    meta = {'images': list(case.images), 'original_shape': list(reference.shape[:3]),
            'crop_start': [s.start for s in box], 'crop_stop': [s.stop for s in box],
            'label_mapping': [[own, c] for own, c in layout.to_canonical.items()]}
    return predictions.original_labels(labels, meta), meta


def predict_to_file(model: str, case_dir: str, output: str, tta: bool = False,
                    batch_size: int | None = None) -> None:
  """The command: predicts `case_dir` and writes the label map to `output`."""
  case_dir = os.path.abspath(case_dir)
  target = os.path.abspath(output)
  if os.path.commonpath([target, case_dir]) == case_dir:
    raise DataError(f'--output {output} is inside the case folder {case_dir}, which is never '
                    'written; choose another')
  if not target.endswith(('.nii.gz', '.nii')):
    raise ConfigError(f'--output {output}: give a .nii.gz (or .nii) file name')
  labels, meta = OnnxPredictor(model, batch_size).predict_case(case_dir, tta)
  predictions.write_nifti(target, labels, meta)
  print(f'Wrote {output}: {np.count_nonzero(labels)} tumour voxel(s) of {labels.size}')


class _OneLineParser(argparse.ArgumentParser):
  def error(self, message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> None:
  parser = _OneLineParser(prog='python -m jaxseg.onnx_predict',
                          description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', required=True, help='the .onnx file of export.py')
  parser.add_argument('--input', required=True, help='a BraTS case folder')
  parser.add_argument('--output', required=True, help='the label map to write (.nii.gz)')
  parser.add_argument('--tta', action='store_true',
                      help='average over mirrorings along every spatial axis')
  parser.add_argument('--batch_size', type=int, default=None,
                      help="windows per ONNX Runtime call (default: the run's eval.batch_size)")
  args = parser.parse_args(argv)
  try:
    predict_to_file(args.model, args.input, args.output, args.tta, args.batch_size)
  except (UserError, OSError) as error:
    if isinstance(error, OSError) and not error.filename:
      raise  # not about a file of the user's: a bug keeps its traceback
    message = (f'{error.filename}: {error.strerror}' if isinstance(error, OSError)
               else str(error).splitlines()[0])
    print(f'error: {message}', file=sys.stderr)
    sys.exit(getattr(error, 'exit_status', 2))


if __name__ == '__main__':
  main()
