"""Train a segmentation model.

  python train.py --config=configs/lstm_unet.py --workdir=runs/lstm_unet
  python train.py --config=configs/unet.py:3d --config.train.num_steps=1000

Restarting with the same --workdir resumes from its latest checkpoint. Exit status: 0
when train.num_steps are done, 2 for bad input (one line on stderr), 143 after SIGTERM
(saved) and 130 after Ctrl-C (not saved: the last complete checkpoint resumes).
"""

import sys

from absl import flags

from jaxseg.startup import prepare_process

prepare_process()  # first: it may re-execute this command

from ml_collections import config_flags
from jaxseg import cli, parallel, training

FLAGS = flags.FLAGS
# No default file: ml_collections would parse --config.x=y overrides against it while the
# flag is defined, before our one-line error handling exists.
config_flags.DEFINE_config_file('config', None, 'Config file, path[:variant], e.g. '
                                'configs/lstm_unet.py or configs/unet.py:3d.', lock_config=True)
flags.mark_flag_as_required('config')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and metrics '
                    '(default: runs/<model.name>).')
# Several processes (hosts): JAX detects SLURM (srun), TPU pods and Open MPI by itself;
# elsewhere give all three.
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process '
                    'jobs that JAX does not detect.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of the job.')
flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')


def main(argv):
  cli.parse_flags(argv, __doc__)
  if FLAGS.workdir is not None and not FLAGS.workdir.strip():
    cli.fail('--workdir is empty; give a directory, or leave the flag out for '
             f'runs/{FLAGS.config.model.name}')
  workdir = FLAGS.workdir or f'runs/{FLAGS.config.model.name}'

  def train():
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    training.train_and_evaluate(FLAGS.config, workdir)
  cli.run(train)


if __name__ == '__main__':
  main(sys.argv)
