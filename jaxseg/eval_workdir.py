"""eval.py's work: evaluate a training run's checkpoint (or an ensemble of runs) and
write what a user submits, in three steps:

  restore the members  members.py: each workdir's config, regions, checkpoint and
                       parameters
  predict              `predict`: every case's probabilities by each member (and
                       probabilities saved earlier, ensemble.py), averaged
  score and write      `score_and_write`: label maps (small components removed if asked,
                       postprocess.py), the metrics (evaluation.py; the challenge's
                       ranking_metrics.py and challenge_metrics.py), the table,
                       metrics.json, per_case_metrics.csv, and each case's files
                       (case_outputs.py)

`EvalOptions` holds what eval.py's flags choose. Nothing is ever written inside a data
directory.
"""

import dataclasses
import os
from typing import Iterator

import numpy as np

from jaxseg import (challenge_metrics, ensemble, evaluation, figures, parallel, postprocess,
                    postprocess_choice, ranking_metrics, workdir as files)
from jaxseg.case_outputs import CaseOutputs
from jaxseg.data import SegmentationData, load_splits
from jaxseg.errors import ConfigError, WorkdirError
from jaxseg.inference import SlidingWindowPredictor
from jaxseg.members import Member, read_members


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What to evaluate and write; eval.py's flags of the same names (eval.py --help).

  `split` (of the recorded splits), or every case under `data_root`; several workdirs
  are an ensemble (the mean of their probabilities), evaluated on `data_root` (each
  fold's validation split is another's training data). `probability_dirs`: folders of
  probabilities saved by an earlier eval.py --save_probabilities on the same data, each
  one more member of the ensemble. `num_iterations`: refinement iterations of the
  LSTM-U-Net, more (or fewer) than trained. `stop_changed_below`: each case stops at
  the first iteration that changes at most this fraction of its voxels
  (evaluation.converged_iteration). `lesion_wise`: 'auto', 'none' or a challenge config
  (challenge_metrics.py). `remove_lesions_below`: postprocess.py. `ranking_rules`:
  'auto', 'none' or the BraTS 2023-24 rules the leaderboard ranked by
  (ranking_metrics.py), which lead the table and metrics.json. `postprocessing`: a
  postprocessing.json chosen on cross-validation (postprocess_choice.py).
  `skip_bad_cases` lists unusable cases and goes on without them.
  """
  checkpoint: str = 'best'
  split: str = 'val'
  output_dir: str | None = None
  data_root: str | None = None
  tta: bool = False
  num_figures: int = 4
  all_iterations: bool = False
  skip_bad_cases: bool = False
  num_iterations: int | None = None
  stop_changed_below: float | None = None
  save_probabilities: bool = False
  lesion_wise: str = 'auto'
  remove_lesions_below: str = ''
  probability_dirs: tuple[str, ...] = ()
  ranking_rules: str = 'auto'
  postprocessing: str | None = None

  def __post_init__(self):
    object.__setattr__(self, 'probability_dirs', tuple(self.probability_dirs))
    if self.stop_changed_below is not None and not 0 <= self.stop_changed_below < 1:
      raise ConfigError(f'--stop_changed_below={self.stop_changed_below}: give a fraction '
                        'of voxels in [0, 1)')


@dataclasses.dataclass(frozen=True)
class _Target:
  """The cases evaluated, where the results go, and how they are scored."""
  data: SegmentationData
  output_dir: str
  source: str  # 'val split' or the data directory
  min_volumes: dict | None  # postprocess.py
  rules: object  # ranking_metrics.choose
  scorer: challenge_metrics.LesionWiseScorer | None  # the challenge's lesion-wise metrics


def evaluate_workdir(workdir: str | list[str], options: EvalOptions = EvalOptions()
                     ) -> dict | None:
  """eval.py: restores a checkpoint of each workdir, predicts the cases `options` name,
  scores the labelled ones and writes the results; returns the summary (None when no
  case is labelled)."""
  workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
  ensemble.check_arguments(workdirs, list(options.probability_dirs), options.data_root,
                           options.output_dir)
  members = read_members(workdirs, options.checkpoint, options.num_iterations)
  target = _target(members[0], options)  # every flag checked before hours of predicting
  return score_and_write(predict(members, target.data, options, target.source),
                         target, members, options)


def _target(first: Member, options: EvalOptions) -> _Target:
  data_config = first.config.data.copy_and_resolve_references()
  data_config.skip_bad_cases = options.skip_bad_cases or data_config.skip_bad_cases
  if options.data_root:
    data_config.root = options.data_root
    source = os.path.abspath(options.data_root)
    output_dir = options.output_dir or os.path.join(first.workdir,
                                                    f'eval_{os.path.basename(source)}')
  else:
    source = f'{options.split} split'
    output_dir = options.output_dir or first.workdir
  for root in (data_config.root, None if options.data_root else data_config.get('val_root')):
    data_dir = root and os.path.abspath(os.path.expanduser(root))
    if data_dir and os.path.commonpath([os.path.abspath(output_dir), data_dir]) == data_dir:
      raise WorkdirError(f'--output_dir {output_dir} is inside the data directory {data_dir}, '
                         'which is never written; choose another')
  files.prepare_workdir(output_dir, flag='--output_dir')  # before hours of predicting
  if options.data_root:
    data = load_splits(data_config, ('all',), regions=first.regions)['all']
  else:
    data = load_splits(data_config, (options.split,), files.read_splits(first.workdir),
                       regions=first.regions)[options.split]
  min_volumes = postprocess.parse_min_volumes(
      options.remove_lesions_below, data.regions,
      data.layout.min_lesion_voxels if data.layout else None)
  if options.postprocessing:
    if min_volumes:
      raise ConfigError('--postprocessing and --remove_lesions_below both remove lesions; '
                        'give one')
    min_volumes = postprocess_choice.read_choice(options.postprocessing, data.regions)
  rules = ranking_metrics.choose(options.ranking_rules, data.layout, data.regions)
  challenge = challenge_metrics.choose(options.lesion_wise, data.layout)
  return _Target(data, output_dir, source, min_volumes, rules,
                 challenge_metrics.LesionWiseScorer(challenge) if challenge else None)


def predict(members: list[Member], data: SegmentationData, options: EvalOptions,
            source: str = 'data') -> Iterator[tuple[int, np.ndarray]]:
  """(case index, logits (T, *spatial, R)) of every case of `data`, whose sigmoid is the
  mean of the members' and of the probabilities saved in `options.probability_dirs`.
  Parameters are restored now; cases are predicted as they are read."""
  mesh = parallel.make_mesh()
  # Saved probabilities first: every case and its regions are checked before predicting.
  streams = [ensemble.saved_probability_logits(folder, data)
             for folder in options.probability_dirs]
  for member in members:
    model, params = member.restore(data, mesh)
    image_size = tuple(member.config.data.image_size)
    mirror_axes = (tuple(range(len(image_size))) if options.tta
                   else tuple(member.config.eval.mirror_axes))
    predictor = SlidingWindowPredictor.from_config(model, member.config.eval, image_size, mesh,
                                                   mirror_axes)
    streams.append(predictor.predict(params, data.images))
    print(f'{member.config.model.name}, checkpoint step {member.step} ({options.checkpoint}) '
          f'of {member.workdir}, {source}: {len(data)} cases' +
          (f', mirroring TTA over axes {mirror_axes}' if mirror_axes else ''))
  return ensemble.mean_probability_logits(streams)


def score_and_write(case_logits: Iterator[tuple[int, np.ndarray]], target: _Target,
                    members: list[Member], options: EvalOptions) -> dict | None:
  """Scores every case of `case_logits` and writes its files as it comes; then the
  table, metrics.json, per_case_metrics.csv and the challenge's metrics. Returns the
  summary, None when no case is labelled."""
  data, output_dir, source = target.data, target.output_dir, target.source
  writer = CaseOutputs(output_dir, data, options.num_figures, options.all_iterations,
                       options.save_probabilities)
  rows, summary = evaluation.evaluate(case_logits, data, on_case=writer,
                                      stop_changed_below=options.stop_changed_below,
                                      min_volumes=target.min_volumes)
  if writer.written:
    print(f'Wrote {writer.written} predicted segmentation(s) to {writer.predictions_dir}')
  if summary is None:
    print(f'No case of {source} has a segmentation: wrote predictions only, no metrics')
    return None
  # No paths or times: two runs with the same config and seed give identical files.
  config, steps = members[0].config, [member.step for member in members]
  summary.update(checkpoint_step=steps[0] if len(steps) == 1 else steps,
                 data=source if not options.data_root else 'data_root',
                 mirror_axes=list(range(len(config.data.image_size))) if options.tta
                 else list(config.eval.mirror_axes))
  names = [member.workdir for member in members] + list(options.probability_dirs)
  if len(names) > 1:
    summary['ensemble'] = [os.path.basename(os.path.normpath(name)) for name in names]
  if members[0].trained_iterations is not None:
    summary.update(num_iterations=config.model.num_iterations,
                   num_iterations_trained=members[0].trained_iterations)
  if target.rules:  # what the leaderboard shows comes first, in the table and metrics.json
    ranking_rows = [row for index, path in writer.scorable()
                    for row in ranking_metrics.score_files(
                        data.case_ids[index], path,
                        challenge_metrics.reference_path(data.source[index]), target.rules)]
    summary = {'ranking': ranking_metrics.summarize(ranking_rows, target.rules), **summary}
    print(ranking_metrics.format_table(summary['ranking']))
    ranking_metrics.write_rows(os.path.join(output_dir, 'per_case_ranking_metrics.csv'),
                               ranking_rows, target.rules)
  print(evaluation.format_table(summary))
  print(f'{options.split if not options.data_root else "data"} {evaluation.dice_line(summary)}')
  if target.scorer:
    lesion_rows = [row for index, path in writer.scorable()
                   for row in target.scorer.score(data.case_ids[index], path,
                                           challenge_metrics.reference_path(data.source[index]))]
    summary['lesion_wise'] = challenge_metrics.summarize(lesion_rows, target.scorer.challenge)
    print(challenge_metrics.format_table(summary['lesion_wise']))
    challenge_metrics.write_rows(os.path.join(output_dir, 'per_case_lesion_wise.csv'),
                                 lesion_rows, target.scorer.challenge)
  json_path, csv_path = evaluation.write_results(output_dir, rows, summary)
  plot = os.path.join(output_dir, 'figures', 'dice_per_iteration.png')
  figures.dice_per_iteration_plot(plot, summary)
  print(f'Wrote {json_path}, {csv_path} and figures in {os.path.dirname(plot)}')
  return summary
