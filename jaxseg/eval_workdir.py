"""eval.py's work: evaluate a training run's checkpoint (or an ensemble of runs) and
write what a user submits.

`evaluate_workdir` restores a checkpoint of each workdir, predicts the recorded split (or
every case of another directory), averages an ensemble's probabilities (ensemble.py),
removes small components if asked (postprocess.py), scores the labelled cases
(evaluation.py, and the challenge's lesion-wise metrics, challenge_metrics.py) and
writes the table, metrics.json, per_case_metrics.csv, prediction files, probabilities
and figures (`CaseOutputs`). Nothing is ever written inside a data directory.
"""

import os

import ml_collections
import numpy as np
from PIL import Image
from scipy import special

from jaxseg import (challenge_metrics, checkpointing, ensemble, evaluation, figures, parallel,
                    postprocess, postprocess_choice, predictions, ranking_metrics,
                    workdir as files)
from jaxseg.data import SegmentationData, load_splits, layouts
from jaxseg.errors import ConfigError, WorkdirError
from jaxseg.inference import SlidingWindowPredictor
from jaxseg.models import registry
from jaxseg.train_state import setup_model


def evaluate_workdir(workdir: str | list[str], *, checkpoint: str = 'best', split: str = 'val',
                     output_dir: str | None = None, data_root: str | None = None,
                     tta: bool = False, num_figures: int = 4, all_iterations: bool = False,
                     skip_bad_cases: bool = False, num_iterations: int | None = None,
                     stop_changed_below: float | None = None, save_probabilities: bool = False,
                     lesion_wise: str = 'auto', remove_lesions_below: str = '',
                     probability_dirs: list[str] = (), ranking_rules: str = 'auto',
                     postprocessing: str | None = None,
                     defaults: ml_collections.ConfigDict | None = None) -> dict | None:
  """eval.py: restores a checkpoint of a training run, predicts the recorded `split` (or
  every case under `data_root`), scores the labelled cases and writes the results.
  `defaults` (the model's config file) fills keys the run's saved config predates;
  `skip_bad_cases` lists unusable cases and goes on without them.

  Several workdirs are an ensemble (the mean of their probabilities), evaluated on
  `data_root` (each fold's validation split is another's training data).
  `probability_dirs`: folders of probabilities saved by an earlier eval.py
  --save_probabilities on the same data, each one more member of the ensemble.
  `num_iterations`: refinement iterations of the LSTM-U-Net, more (or fewer) than it
  was trained with: the same parameters serve every iteration. `stop_changed_below`:
  each case stops at the first iteration that changes at most this fraction of its
  voxels (evaluation.converged_iteration). `lesion_wise`: 'auto', 'none' or a
  challenge config (challenge_metrics.py). `remove_lesions_below`: postprocess.py.
  `ranking_rules`: 'auto', 'none' or the BraTS 2023-24 rules the leaderboard ranked by
  (ranking_metrics.py), which lead the table and metrics.json. `postprocessing`: a
  postprocessing.json chosen on cross-validation (postprocess_choice.py).
  """
  workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
  probability_dirs = list(probability_dirs)
  is_ensemble = ensemble.check_arguments(workdirs, probability_dirs, data_root, output_dir)
  configs = [files.read_config(w, defaults) for w in workdirs]
  regions = [files.read_regions(w) or regions_before_regions_json(c)
             for w, c in zip(workdirs, configs)]
  ensemble.check_members(workdirs, configs, regions)
  config = configs[0]
  trained_iterations = [set_iterations(c.model, num_iterations) for c in configs][0]
  if stop_changed_below is not None and not 0 <= stop_changed_below < 1:
    raise ConfigError(f'--stop_changed_below={stop_changed_below}: give a fraction of '
                      'voxels in [0, 1)')
  checkpointers = [_open_checkpoints(w) for w in workdirs]
  steps = [checkpointing.checkpoint_step(c, checkpoint) for c in checkpointers]
  data_config = config.data.copy_and_resolve_references()
  data_config.skip_bad_cases = skip_bad_cases or data_config.skip_bad_cases
  if data_root:
    data_config.root = data_root
    source = os.path.abspath(data_root)
    output_dir = output_dir or os.path.join(workdirs[0], f'eval_{os.path.basename(source)}')
  else:
    source = f'{split} split'
    output_dir = output_dir or workdirs[0]
  for root in (data_config.root, None if data_root else data_config.get('val_root')):
    data_dir = root and os.path.abspath(os.path.expanduser(root))
    if data_dir and os.path.commonpath([os.path.abspath(output_dir), data_dir]) == data_dir:
      raise WorkdirError(f'--output_dir {output_dir} is inside the data directory {data_dir}, '
                         'which is never written; choose another')
  files.prepare_workdir(output_dir, flag='--output_dir')  # before hours of predicting
  if data_root:
    data = load_splits(data_config, ('all',), regions=regions[0])['all']
  else:
    data = load_splits(data_config, (split,), files.read_splits(workdirs[0]),
                       regions=regions[0])[split]
  min_volumes = postprocess.parse_min_volumes(
      remove_lesions_below, data.regions, data.layout.min_lesion_voxels if data.layout else None)
  if postprocessing:
    if min_volumes:
      raise ConfigError('--postprocessing and --remove_lesions_below both remove lesions; '
                        'give one')
    min_volumes = postprocess_choice.read_choice(postprocessing, data.regions)
  rules = ranking_metrics.choose(ranking_rules, data.layout, data.regions)
  challenge = challenge_metrics.choose(lesion_wise, data.layout)
  scorer = challenge_metrics.LesionWiseScorer(challenge) if challenge else None
  mesh = parallel.make_mesh()
  # Saved probabilities first: every case and its regions are checked before predicting.
  streams = [ensemble.saved_probability_logits(folder, data) for folder in probability_dirs]
  for member, member_config, checkpointer, step in zip(workdirs, configs, checkpointers, steps):
    params = _restore_params(member, member_config, checkpointer, step, data, mesh)
    image_size = tuple(member_config.data.image_size)
    mirror_axes = tuple(range(len(image_size))) if tta else tuple(member_config.eval.mirror_axes)
    model, _, _ = setup_model(member_config, data)
    predictor = SlidingWindowPredictor.from_config(model, member_config.eval, image_size, mesh,
                                                   mirror_axes)
    streams.append(predictor.predict(params, data.images))
    print(f'{member_config.model.name}, checkpoint step {step} ({checkpoint}) of {member}, '
          f'{source}: {len(data)} cases' +
          (f', mirroring TTA over axes {mirror_axes}' if mirror_axes else ''))
  writer = CaseOutputs(output_dir, data, num_figures, all_iterations, save_probabilities)
  rows, summary = evaluation.evaluate(ensemble.mean_probability_logits(streams), data,
                                      on_case=writer, stop_changed_below=stop_changed_below,
                                      min_volumes=min_volumes)
  if writer.written:
    print(f'Wrote {writer.written} predicted segmentation(s) to {writer.predictions_dir}')
  if summary is None:
    print(f'No case of {source} has a segmentation: wrote predictions only, no metrics')
    return None
  # No paths or times: two runs with the same config and seed give identical files.
  summary.update(checkpoint_step=steps[0] if len(steps) == 1 else steps,
                 data=source if not data_root else 'data_root',
                 mirror_axes=list(range(len(config.data.image_size))) if tta
                 else list(config.eval.mirror_axes))
  if is_ensemble:
    summary['ensemble'] = [os.path.basename(os.path.normpath(w))
                           for w in workdirs + probability_dirs]
  if trained_iterations is not None:
    summary.update(num_iterations=config.model.num_iterations,
                   num_iterations_trained=trained_iterations)
  if rules:  # what the leaderboard shows comes first, in the table and in metrics.json
    ranking_rows = [row for index, path in writer.scorable()
                    for row in ranking_metrics.score_files(
                        data.case_ids[index], path,
                        challenge_metrics.reference_path(data.source[index]), rules)]
    summary = {'ranking': ranking_metrics.summarize(ranking_rows, rules), **summary}
    print(ranking_metrics.format_table(summary['ranking']))
    ranking_metrics.write_rows(os.path.join(output_dir, 'per_case_ranking_metrics.csv'),
                               ranking_rows, rules)
  print(evaluation.format_table(summary))
  print(f'{split if not data_root else "data"} {evaluation.dice_line(summary)}')
  if scorer:
    lesion_rows = [row for index, path in writer.scorable()
                   for row in scorer.score(data.case_ids[index], path,
                                           challenge_metrics.reference_path(data.source[index]))]
    summary['lesion_wise'] = challenge_metrics.summarize(lesion_rows, challenge)
    print(challenge_metrics.format_table(summary['lesion_wise']))
    challenge_metrics.write_rows(os.path.join(output_dir, 'per_case_lesion_wise.csv'),
                                 lesion_rows, challenge)
  json_path, csv_path = evaluation.write_results(output_dir, rows, summary)
  plot = os.path.join(output_dir, 'figures', 'dice_per_iteration.png')
  figures.dice_per_iteration_plot(plot, summary)
  print(f'Wrote {json_path}, {csv_path} and figures in {os.path.dirname(plot)}')
  return summary


def regions_before_regions_json(config: ml_collections.ConfigDict):
  """Workdirs trained before regions.json: the glioma regions, or a 2D folder's own."""
  if config.data.root and os.path.isdir(os.path.join(os.path.expanduser(config.data.root),
                                                     'images')):
    return None
  return layouts.GLIOMA_REGIONS


def _open_checkpoints(workdir: str) -> checkpointing.Checkpointer:
  try:
    return checkpointing.Checkpointer(workdir, create=False)
  except checkpointing.CheckpointDamaged as error:
    raise checkpointing.CheckpointDamaged(
        f'{error}; move it out of checkpoints/ to evaluate the others (train.py sets it aside '
        'by itself on its next start)', error.step) from error


def _restore_params(workdir, config, checkpointer, step, data, mesh):
  _, _, abstract_state = setup_model(config, data)
  try:
    return checkpointing.restore_train_state(checkpointer, step, abstract_state,
                                             parallel.replicated(mesh))['state'].params
  except checkpointing.CheckpointDamaged as error:
    others = [s for s in checkpointer.all_steps() if s != step]
    raise checkpointing.CheckpointDamaged(
        f'{error}; other checkpoints of {workdir}: {others or "none"} (--checkpoint=STEP)',
        step) from error


def set_iterations(model_config: ml_collections.ConfigDict, num_iterations: int | None
                    ) -> int | None:
  """Sets model.num_iterations to `num_iterations` (if given); returns the number the
  model was trained with (None for a model that does not iterate)."""
  if not registry.get(model_config.name).iterates:
    if num_iterations is not None:
      raise ConfigError(f'--num_iterations: a {model_config.name} has no refinement '
                        f'iterations; models with them: {registry.iterating_models()}')
    return None
  trained = model_config.num_iterations
  if num_iterations is not None:
    if num_iterations < 1:
      raise ConfigError(f'--num_iterations={num_iterations}: need at least 1')
    model_config.num_iterations = num_iterations
  return trained


class CaseOutputs:
  """on_case callback of `evaluate`: prediction files and figures of each case.

  NIfTI cases get `<case>.nii.gz` in their original geometry (predictions.py); 2D image
  folders get `<case>.png` masks at the model's resolution; the first `num_figures`
  cases get a PNG figure of every refinement iteration.
  """

  def __init__(self, output_dir: str, data: SegmentationData, num_figures: int,
               all_iterations: bool, save_probabilities: bool = False):
    self.data, self.num_figures, self.all_iterations = data, num_figures, all_iterations
    self.save_probabilities = save_probabilities
    # predictions/ holds the label maps only: the folder a challenge submission uploads.
    self.predictions_dir = os.path.join(output_dir, 'predictions')
    self.probabilities_dir = os.path.join(output_dir, 'probabilities')
    self.iterations_dir = os.path.join(output_dir, 'iterations')
    self.figures_dir = os.path.join(output_dir, 'figures')
    self.written = 0
    self._nifti_files = {}  # case index -> written prediction

  def scorable(self) -> list[tuple[int, str]]:
    """(case index, prediction file) of the labelled NIfTI cases written."""
    return [(index, path) for index, path in self._nifti_files.items()
            if self.data.labels[index] is not None]

  def __call__(self, index: int, labels: np.ndarray, logits: np.ndarray) -> None:
    """labels: (T, *spatial) predicted label maps of case `index`, one per iteration;
    logits (*spatial, R): those of the last."""
    data, case_id = self.data, self.data.case_ids[index]
    region_names = [r.name for r in data.regions]
    if data.origin == 'nifti':  # back into the original geometry
      meta = data.source[index]
      last = predictions.original_labels(labels[-1], meta)
      path = os.path.join(self.predictions_dir, f'{case_id}.nii.gz')
      predictions.write_nifti(path, last, meta)
      self._nifti_files[index] = path
      if self.save_probabilities:
        predictions.write_probabilities(
            os.path.join(self.probabilities_dir, f'{case_id}.npz'),
            predictions.original_probabilities(special.expit(logits), meta), region_names)
      if self.all_iterations:
        for t in range(len(labels) - 1):
          path = os.path.join(self.iterations_dir, f'{case_id}_iteration{t + 1}.nii.gz')
          predictions.write_nifti(path, predictions.original_labels(labels[t], meta), meta)
      self.written += 1
    elif data.origin == 'folders':
      scale = 255 if len(data.regions) == 1 else 1  # 0/255 masks as the input's, else labels
      os.makedirs(self.predictions_dir, exist_ok=True)
      Image.fromarray((labels[-1] * scale).astype(np.uint8)).save(
          os.path.join(self.predictions_dir, f'{case_id}.png'))
      if self.save_probabilities:
        predictions.write_probabilities(os.path.join(self.probabilities_dir, f'{case_id}.npz'),
                                        np.moveaxis(special.expit(logits), -1, 0), region_names)
      self.written += 1
    if index < self.num_figures:
      channel = data.channels.index('flair') if 'flair' in data.channels else 0
      truth = None if data.labels[index] is None else np.asarray(data.labels[index])
      figures.case_figure(os.path.join(self.figures_dir, f'{case_id}.png'), case_id,
                          np.asarray(data.images[index]), channel, data.channels[channel],
                          truth, labels)
