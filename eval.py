"""Evaluate a trained model: Dice, Jaccard, recall, precision and HD95 per region and
refinement iteration, written to <workdir>/metrics.json and per_case_metrics.csv, with
predicted segmentations (NIfTI in the original geometry) and figures.

  python eval.py --workdir=runs/lstm_unet
  python eval.py --workdir=runs/lstm_unet --checkpoint=latest --split=train
  python eval.py --workdir=runs/brats3d --data_root=/data/BraTS2023-Validation --tta
  python eval.py --workdir=runs/lstm_unet --num_iterations=8 --stop_changed_below=0.001
"""

import importlib
import sys

from absl import flags

from jaxseg.xla_flags import apply_default_flags, enable_compilation_cache

apply_default_flags()  # before JAX starts its backend
enable_compilation_cache()

from jaxseg import cli, eval_workdir, workdir as workdir_files

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/lstm_unet', 'Workdir of a training run.')
flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
flags.DEFINE_enum('split', 'val', ['train', 'val'], 'Data split to evaluate.')
flags.DEFINE_string('output_dir', None, 'Where to write the results (default: the workdir, '
                    'or <workdir>/eval_<name of --data_root>).')
flags.DEFINE_string('data_root', None, 'Predict (and, where segmentations exist, score) every '
                    'case of this directory instead of the recorded split.')
flags.DEFINE_bool('tta', False, 'Test-time augmentation: average over mirrorings along every '
                  'spatial axis (default: the config\'s eval.mirror_axes).')
flags.DEFINE_integer('num_figures', 4, 'Cases drawn as PNG figures.')
flags.DEFINE_bool('skip_bad_cases', False, 'List cases that cannot be read and evaluate the '
                  'others, instead of stopping at the first.')
flags.DEFINE_integer('num_iterations', None, 'LSTM-U-Net: refinement iterations to run, '
                     'also more than trained with (default: as trained).')
flags.DEFINE_float('stop_changed_below', None, 'LSTM-U-Net: stop each case at the first '
                   'iteration that changes at most this fraction of its voxels (e.g. 0.001).')
flags.DEFINE_bool('all_iterations', False, 'Also write the NIfTI prediction of every earlier '
                  'refinement iteration.')


def main(argv):
  cli.parse_flags(argv, __doc__)
  cli.run(lambda: eval_workdir.evaluate_workdir(
      FLAGS.workdir, checkpoint=FLAGS.checkpoint, split=FLAGS.split,
      output_dir=FLAGS.output_dir, data_root=FLAGS.data_root, tta=FLAGS.tta,
      num_figures=FLAGS.num_figures, all_iterations=FLAGS.all_iterations,
      skip_bad_cases=FLAGS.skip_bad_cases, num_iterations=FLAGS.num_iterations,
      stop_changed_below=FLAGS.stop_changed_below,
      defaults=_defaults(FLAGS.workdir)))


def _defaults(workdir: str):
  """The current config file of the workdir's model: values for keys added since."""
  name = workdir_files.saved_model_name(workdir)
  if name not in ('unet', 'lstm_unet'):
    return None
  return importlib.import_module(f'configs.{name}').get_config(None)


if __name__ == '__main__':
  main(sys.argv)
