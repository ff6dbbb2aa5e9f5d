"""Evaluate a trained model: Dice, Jaccard, recall, precision and HD95 per region and
refinement iteration, written to <workdir>/metrics.json and per_case_metrics.csv, with
predicted segmentations (NIfTI in the original geometry) and figures.

  python eval.py --workdir=runs/lstm_unet
  python eval.py --workdir=runs/lstm_unet --checkpoint=latest --split=train
  python eval.py --workdir=runs/brats3d --data_root=/data/BraTS2023-Validation --tta
  python eval.py --workdir=runs/lstm_unet --num_iterations=8 --stop_changed_below=0.001
  python eval.py --workdir=runs/fold0,runs/fold1,runs/fold2 --data_root=/data/BraTS-Val \
      --output_dir=runs/submission --remove_lesions_below=challenge --save_probabilities
  python eval.py --workdir=runs/fold0 --probabilities=runs/fold1_val,runs/fold2_val \
      --data_root=/data/BraTS-Val --output_dir=runs/submission
"""

import sys

from absl import flags

from jaxseg.startup import prepare_process

prepare_process()  # first: it may re-execute this command

from jaxseg import cli, eval_workdir

FLAGS = flags.FLAGS
flags.DEFINE_list('workdir', ['runs/lstm_unet'], 'Workdir of a training run; several, '
                  'comma-separated, are an ensemble (the mean of their probabilities).')
flags.DEFINE_list('probabilities', [], 'Folders of probabilities saved by eval.py '
                  '--save_probabilities on the same --data_root (folds predicted elsewhere): '
                  'more members of the ensemble.')
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
flags.DEFINE_bool('save_probabilities', False, 'Also write each case\'s per-region '
                  'probabilities (probabilities/<case>.npz, float16, original geometry).')
flags.DEFINE_string('lesion_wise', 'auto', "The BraTS challenge's lesion-wise metrics, by the "
                    "organisers' brats-evaluation package: 'auto' (the data layout's challenge, "
                    "when installed), 'none', or a config: gli, mets, ped, MenRT, MenPre, GoAT.")
flags.DEFINE_string('remove_lesions_below', '', "Remove predicted connected components smaller "
                    "than this (mm^3) from the written predictions and the metrics: 'challenge' "
                    "(the challenge's lesion threshold), 50, or per region ET=50,TC=20.")
flags.DEFINE_string('ranking_rules', 'auto', "The penalised lesion-wise metrics BraTS 2023-24 "
                    "ranked by, computed by jaxseg: 'auto' (the data layout's), 'none', or "
                    "gli-2023, ssa-2023, men-2023, ped-2023, met-2023, men-2024, gli-2024.")
flags.DEFINE_string('postprocessing', None, 'A postprocessing.json chosen on cross-validation '
                    '(choose_postprocessing.py): its minimum lesion volumes per region.')
flags.DEFINE_bool('all_iterations', False, 'Also write the NIfTI prediction of every earlier '
                  'refinement iteration.')


def main(argv):
  cli.parse_flags(argv, __doc__)
  if not FLAGS.workdir:
    cli.fail('--workdir is empty; give the workdir of a training run')
  cli.run(lambda: eval_workdir.evaluate_workdir(FLAGS.workdir, eval_workdir.EvalOptions(
      checkpoint=FLAGS.checkpoint, split=FLAGS.split, output_dir=FLAGS.output_dir,
      data_root=FLAGS.data_root, tta=FLAGS.tta, num_figures=FLAGS.num_figures,
      all_iterations=FLAGS.all_iterations, skip_bad_cases=FLAGS.skip_bad_cases,
      num_iterations=FLAGS.num_iterations, stop_changed_below=FLAGS.stop_changed_below,
      save_probabilities=FLAGS.save_probabilities, lesion_wise=FLAGS.lesion_wise,
      remove_lesions_below=FLAGS.remove_lesions_below, probability_dirs=FLAGS.probabilities,
      ranking_rules=FLAGS.ranking_rules, postprocessing=FLAGS.postprocessing)))


if __name__ == '__main__':
  main(sys.argv)
