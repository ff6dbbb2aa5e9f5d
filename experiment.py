"""Run a sweep of configs times seeds, one after another, and compare them in one table
and one figure (jaxseg/experiments.py says what a sweep file holds).

  python experiment.py --sweep=configs/sweeps/feedback.py --workdir=runs/feedback
  python experiment.py --sweep=configs/sweeps/feedback.py:2d_time --workdir=runs/feedback_time
  python experiment.py --sweep=... --workdir=... --slurm      # write a SLURM array job
  python experiment.py --sweep=... --workdir=... --run_index=3  # one run (an array task)
  python experiment.py --sweep=... --workdir=... --collect_only # results of finished runs

Finished runs are never retrained: the same command resumes a sweep. Without
--run_index, every run not yet finished is trained here, then the results are written
to the workdir: results.md, results.json and dice_per_iteration.png.
"""

import sys

from absl import flags

from jaxseg.startup import prepare_process

prepare_process()  # first: it may re-execute this command

from jaxseg import cli, experiments  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('sweep', None, 'Sweep file, path[:variant]: get_sweep(variant) gives the '
                    'arms, seeds and baseline.')
flags.mark_flag_as_required('sweep')
flags.DEFINE_string('workdir', None, 'Directory of the sweep: one workdir per run inside, and '
                    'the results.')
flags.mark_flag_as_required('workdir')
flags.DEFINE_integer('run_index', None, 'Train and evaluate only this run (0-based, in the '
                     'order of the plan); for SLURM array tasks.')
flags.DEFINE_bool('collect_only', False, 'Write the results of the runs finished so far; train '
                  'nothing.')
flags.DEFINE_bool('slurm', False, 'Write <workdir>/slurm_array.sh (one task per run) '
                  'instead of running.')


def main(argv):
  cli.parse_flags(argv, __doc__)
  cli.run(sweep)


def sweep():
  path, _, variant = FLAGS.sweep.partition(':')
  spec = experiments.load_sweep(path, variant or None)
  runs = experiments.plan(spec, FLAGS.workdir)
  for run in runs:  # every run's config is checked before the first one trains
    experiments.run_config(run)
  if FLAGS.slurm:
    command = [sys.executable, sys.argv[0], f'--sweep={FLAGS.sweep}',
               f'--workdir={FLAGS.workdir}']
    print(f'Wrote {experiments.slurm_script(runs, command, FLAGS.workdir)} '
          f'({len(runs)} tasks): sbatch it, then run this command without --slurm')
    return
  if FLAGS.collect_only:
    runs_here = []
  elif FLAGS.run_index is not None:
    if not 0 <= FLAGS.run_index < len(runs):
      cli.fail(f'--run_index={FLAGS.run_index}: the sweep has runs 0..{len(runs) - 1}')
    runs_here = [runs[FLAGS.run_index]]
  else:
    runs_here = runs
  for index, run in enumerate(runs_here):
    if experiments.is_finished(run):
      print(f'{run.arm}/seed{run.seed}: finished, skipped')
      continue
    print(f'=== {run.arm}/seed{run.seed} ({index + 1}/{len(runs_here)}) in {run.workdir}')
    experiments.execute(run)
  if FLAGS.run_index is None:
    results = experiments.collect(runs, spec.get('baseline'))
    print(experiments.markdown_table(results))
    print('Wrote ' + ', '.join(experiments.write_results(FLAGS.workdir, results)))


if __name__ == '__main__':
  main(sys.argv)
