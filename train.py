"""Train a segmentation model.

  python train.py --config=configs/lstm_unet.py --workdir=runs/lstm_unet
  python train.py --config=configs/unet.py:3d --config.train.num_steps=1000

Restarting with the same --workdir resumes from its latest checkpoint.
"""

import sys

from absl import flags

from jaxseg.xla_flags import apply_default_flags

apply_default_flags()  # before JAX starts its backend

from ml_collections import config_flags
from jaxseg import cli, training

FLAGS = flags.FLAGS
# No default file: ml_collections would parse --config.x=y overrides against it while the
# flag is defined, before our one-line error handling exists.
config_flags.DEFINE_config_file('config', None, 'Config file, path[:variant], e.g. '
                                'configs/lstm_unet.py or configs/unet.py:3d.', lock_config=True)
flags.mark_flag_as_required('config')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and metrics '
                    '(default: runs/<model.name>).')


def main(argv):
  cli.parse_flags(argv)
  workdir = FLAGS.workdir or f'runs/{FLAGS.config.model.name}'
  cli.run(lambda: training.train_and_evaluate(FLAGS.config, workdir))


if __name__ == '__main__':
  main(sys.argv)
