"""Train a segmentation model.

  python train.py --config=configs/lstm_unet.py --workdir=runs/lstm_unet
  python train.py --config=configs/unet.py:3d --config.train.num_steps=1000

Restarting with the same --workdir resumes from its latest checkpoint.
"""

import sys

from absl import flags
from ml_collections import config_flags

from jaxseg import cli, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/lstm_unet.py', 'Config file (path[:variant]).',
                                lock_config=True)
flags.DEFINE_string('workdir', 'runs/default', 'Directory for checkpoints, logs and metrics.')


def main(argv):
  cli.parse_flags(argv)
  cli.run(lambda: training.train_and_evaluate(FLAGS.config, FLAGS.workdir))


if __name__ == '__main__':
  main(sys.argv)
