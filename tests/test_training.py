import json
import os
import shutil

import jax
import numpy as np
import pytest

from helpers import batches_of, tiny
from jaxseg import (checkpointing, eval_workdir, evaluation, parallel, workdir as files,
                    workdir_format)
from jaxseg.data import load_splits
from jaxseg.eval_workdir import EvalOptions
from jaxseg.inference import SlidingWindowPredictor
from jaxseg.train_state import schedule_segments, setup_model
from jaxseg.train_step import make_train_step
from jaxseg.training import train_and_evaluate


def test_tiny_model_overfits_two_images(tiny_unet_config):
  config = tiny_unet_config
  config.data.num_train_cases = 2
  config.train.num_steps = 150
  config.train.learning_rate = 1e-2
  config.train.warmup_steps = 10
  data = load_splits(config.data, ('train',))['train']
  model, init_state, _ = setup_model(config, data)
  state = init_state()
  step = make_train_step(config)
  batch = batches_of(data, config)[0]
  for _ in range(config.train.num_steps):
    state, _ = step(state, batch)
  predictor = SlidingWindowPredictor.from_config(model, config.eval, config.data.image_size,
                                                 parallel.make_mesh())
  _, summary = evaluation.evaluate(predictor.predict(state.params, data.images), data,
                                    with_hd95=False)
  assert summary['dice'] >= 0.9, summary['per_region']


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """A tiny LSTM-U-Net run: 4 steps, checkpoints at steps 2 and 4."""
  from configs import lstm_unet
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny(lstm_unet.get_config(None))
  summary = train_and_evaluate(config, workdir)
  return workdir, config, summary


def test_train_writes_checkpoints_logs_and_config(trained_workdir):
  workdir, config, summary = trained_workdir
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  assert checkpointer.latest_step() == 4
  assert checkpointer.best_step() in (2, 4)
  assert json.loads(files.read_config(workdir).to_json()) == json.loads(config.to_json())
  assert len(summary['per_iteration']) == 2
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    header, *rows = [line.strip().split(',') for line in f]
  assert header == ['step', 'split', 'name', 'value']
  assert {'loss', 'dice_iteration2', 'dice_ET'} <= {r[2] for r in rows}
  assert os.listdir(os.path.join(workdir, 'tensorboard'))


def test_eval_reproduces_the_training_dice(trained_workdir, tmp_path):
  workdir, config, train_summary = trained_workdir
  summary = eval_workdir.evaluate_workdir(workdir, EvalOptions(output_dir=str(tmp_path)))
  assert summary['dice'] == train_summary['dice']
  assert [e['dice'] for e in summary['per_iteration']] == [
      e['dice'] for e in train_summary['per_iteration']]
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert set(saved['per_region']) == {'WT', 'TC', 'ET'}
  for key in ('dice', 'jaccard', 'recall', 'precision', 'hd95'):
    assert np.isfinite(saved[key])
  with open(tmp_path / 'per_case_metrics.csv') as f:
    lines = f.read().strip().splitlines()
  assert lines[0] == 'case,iteration,region,dice,jaccard,recall,precision,hd95,convention'
  assert len(lines) - 1 == config.data.num_val_cases * 2 * 3  # cases x iterations x regions


def test_restart_resumes_from_the_latest_checkpoint(trained_workdir, capsys):
  workdir, config, _ = trained_workdir
  config = config.copy_and_resolve_references()
  config.train.num_steps = 6
  config.data.prefetch_to_device = 0  # speed only: a restart may change it
  train_and_evaluate(config, workdir)
  assert 'Resuming from step 4' in capsys.readouterr().out
  assert checkpointing.Checkpointer(workdir, create=False).latest_step() == 6


def test_restart_with_another_model_is_refused(trained_workdir, tiny_unet_config):
  workdir, _, _ = trained_workdir
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(files.WorkdirError, match='different model'):
    train_and_evaluate(tiny_unet_config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before


def test_same_config_and_seed_give_identical_metrics(trained_workdir, tmp_path):
  _, config, summary = trained_workdir
  assert train_and_evaluate(config, str(tmp_path)) == summary


def _as_written_by_version_0(workdir, conv_library='xla'):
  """Rewrites a workdir as jaxseg wrote it before workdir format versions: no
  format_version, compute.* as model.*, no regions.json, checkpoints without their
  schedule and training time."""
  path = os.path.join(workdir, files.CONFIG_FILE)
  with open(path) as f:
    saved = json.load(f)
  del saved[workdir_format.KEY]
  compute = saved.pop('compute')
  saved['model'].update(compute, conv_library=conv_library)
  with open(path, 'w') as f:
    json.dump(saved, f)
  os.remove(os.path.join(workdir, files.REGIONS_FILE))
  for step in checkpointing.Checkpointer(workdir, create=False).all_steps():
    shutil.rmtree(os.path.join(workdir, 'checkpoints', str(step), 'schedule'))


def test_a_version_0_workdir_evaluates_and_resumes(trained_workdir, tmp_path, capsys):
  """eval.py reads model.conv_library as compute.conv_library (the glioma regions, without
  regions.json), and a restart resumes on the schedule of its config.json, then writes
  the current version."""
  workdir, config, train_summary = trained_workdir
  _as_written_by_version_0(workdir)
  saved = files.read_saved(workdir)
  assert saved.config.compute.conv_library == 'xla' and 'conv_library' not in saved.config.model
  assert [r.name for r in saved.regions] == ['WT', 'TC', 'ET']
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  _, _, abstract = setup_model(config, load_splits(config.data, ('train',))['train'])
  restored = checkpointing.restore_train_state(checkpointer, checkpointer.latest_step(), abstract,
                                               parallel.replicated(parallel.make_mesh()))
  assert restored['schedule'] == schedule_segments(saved.config.train)
  assert restored['seconds_used'] == 0.0
  summary = eval_workdir.evaluate_workdir(workdir, EvalOptions(output_dir=str(tmp_path)))
  assert np.isclose(summary['dice'], train_summary['dice'], atol=1e-3)
  assert 'read as compute.*' in capsys.readouterr().out
  config = config.copy_and_resolve_references()
  config.train.num_steps = 8
  train_and_evaluate(config, workdir)
  assert checkpointing.Checkpointer(workdir, create=False).latest_step() == 8
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    rewritten = json.load(f)
  assert rewritten[workdir_format.KEY] == workdir_format.VERSION and 'compute' in rewritten
  assert files.read_saved(workdir).notes == ()


def test_config_of_an_older_run_gets_new_keys_from_the_defaults(tmp_path, tiny_lstm_config):
  saved = json.loads(tiny_lstm_config.to_json())
  del saved['eval']['mirror_axes']  # a run saved before this key existed
  saved['train']['num_steps'] = 123
  (tmp_path / files.CONFIG_FILE).write_text(json.dumps(saved))
  config = files.read_config(str(tmp_path))
  assert tuple(config.eval.mirror_axes) == ()
  assert config.train.num_steps == 123 and tuple(config.model.features) == (8, 16)


def test_microbatches_accumulate_the_same_gradient(tiny_unet_config):
  """With the per-sample cross-entropy alone (the Dice term pools over a batch), two
  micro-batches of 2 give the update of one batch of 4."""
  config = tiny_unet_config
  config.train.batch_size = 4
  data = load_splits(config.data, ('train',))['train']
  config.loss.dice_weight = 0.0
  _, init_state, _ = setup_model(config, data)
  batch = batches_of(data, config)[0]
  states = []
  for k in (1, 2):
    config.train.microbatches = k
    states.append(make_train_step(config)(init_state(), batch))
  (one, metrics_one), (two, metrics_two) = states
  assert float(metrics_one['loss']) == pytest.approx(float(metrics_two['loss']), rel=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # Adam's first step hardly depends on the gradient's scale: compare the norm too.
  assert float(metrics_one['grad_norm']) == pytest.approx(float(metrics_two['grad_norm']),
                                                          rel=1e-4)
  assert float(metrics_one['grad_norm']) > 0


def test_train_step_compiles_once(tiny_lstm_config):
  """Steps after the first reuse the compiled program: no shape or type drift. The
  model is traced once per compilation, so its calls while tracing count them."""
  config = tiny_lstm_config
  data = load_splits(config.data, ('train',))['train']
  model, init_state, _ = setup_model(config, data)
  traces = []

  def counted_apply(*args, **kwargs):
    traces.append(1)
    return model.apply(*args, **kwargs)
  mesh = parallel.make_mesh()
  state = jax.device_put(init_state(), parallel.replicated(mesh)).replace(apply_fn=counted_apply)
  step = make_train_step(config)
  batches = batches_of(data, config)
  for s in range(4):
    state, _ = step(state, parallel.shard_batch(batches[s], mesh))
  assert int(state.step) == 4
  assert len(traces) == 1
