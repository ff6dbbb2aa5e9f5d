"""Choose the postprocessing (minimum lesion volume per region) on cross-validation:
score candidate rules on the validation predictions of a run's folds, from the
probabilities eval.py --split=val --save_probabilities saved, keep a rule only where
the BraTS ranking metric improves, and write the choice with its scores.

  python choose_postprocessing.py --workdir=runs/fold0,runs/fold1,runs/fold2 \\
      --output=runs/postprocessing.json
  python eval.py --workdir=runs/fold0,runs/fold1,runs/fold2 --data_root=/data/BraTS-Val \\
      --output_dir=runs/submission --postprocessing=runs/postprocessing.json
"""

import os
import sys

from absl import flags

from jaxseg import cli, postprocess_choice
from jaxseg.errors import WorkdirError

FLAGS = flags.FLAGS
flags.DEFINE_list('workdir', [], 'The workdirs of the folds (or one run): each one\'s '
                  'recorded validation split is scored.')
flags.DEFINE_list('probabilities', [], 'Where each fold\'s validation probabilities are, one '
                  'folder per --workdir (default: the workdirs, where eval.py --split=val '
                  '--save_probabilities writes them).')
flags.DEFINE_string('output', None, 'The postprocessing.json to write.')
flags.DEFINE_string('ranking_rules', 'auto', "The BraTS rules whose lesion-wise Dice decides: "
                    "'auto' (the data layout's) or a name, as eval.py --ranking_rules.")


def main(argv):
  cli.parse_flags(argv, __doc__)
  if not FLAGS.workdir or not FLAGS.output:
    cli.fail('give the folds\' --workdir and the --output file')
  cli.run(_choose)


def _choose():
  if os.path.isdir(FLAGS.output):
    raise WorkdirError(f'--output {FLAGS.output} is a directory; give the file to write')
  cases, regions, rules, layout_volume = postprocess_choice.validation_cases(
      FLAGS.workdir, FLAGS.probabilities, FLAGS.ranking_rules)
  choice = postprocess_choice.choose(cases, regions, rules, layout_volume)
  choice['folds'] = list(FLAGS.workdir)
  postprocess_choice.write_choice(FLAGS.output, choice)
  for region, scores in choice['scores'].items():
    line = ', '.join(f'{v}: {m:.4f}' for v, m in scores['candidates_mm3'].items())
    print(f'{region}: chosen {scores["chosen_mm3"] or "none"} (mm^3 -> mean lesion-wise '
          f'Dice: {line})')
  print(f'Wrote {FLAGS.output} ({choice["criterion"]})')


if __name__ == '__main__':
  main(sys.argv)
