"""Evaluate a trained model: Dice, Jaccard, recall, precision and HD95 per region and
refinement iteration, written to <workdir>/metrics.json and per_case_metrics.csv.

  python eval.py --workdir=runs/lstm_unet
  python eval.py --workdir=runs/lstm_unet --checkpoint=latest --split=train
"""

import sys

from absl import flags

from jaxseg.xla_flags import apply_default_flags

apply_default_flags()  # before JAX starts its backend

from jaxseg import cli, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/lstm_unet', 'Workdir of a training run.')
flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
flags.DEFINE_enum('split', 'val', ['train', 'val'], 'Data split to evaluate.')
flags.DEFINE_string('output_dir', None, 'Where to write the results (default: the workdir).')


def main(argv):
  cli.parse_flags(argv)
  cli.run(lambda: evaluation.evaluate_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split,
                                                FLAGS.output_dir or FLAGS.workdir))


if __name__ == '__main__':
  main(sys.argv)
