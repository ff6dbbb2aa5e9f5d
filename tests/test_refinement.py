"""Refinement past T at inference, and stopping each case when its prediction has
converged: the same nn.scan model with more iterations, the same parameters."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import run, tiny
from jaxseg import errors, evaluation, members, training
from jaxseg.models import build_model


def _model(config, num_iterations, unroll=True):
  model_config = config.model.copy_and_resolve_references()
  model_config.num_iterations, model_config.unroll = num_iterations, unroll
  return build_model(model_config, num_outputs=3)


def test_more_iterations_extend_the_same_function(tiny_lstm_config):
  """Iterations 1..T of a model run for T + 2 are those of the model as trained (same
  parameters, no T axis); iteration T + k is what the scan computes, rolled or not.
  T = 1, trained without the scan (models/lstm_unet.py), is the hardest case."""
  config, trained_with = tiny_lstm_config, 1
  x = jax.random.normal(jax.random.key(0, impl='rbg'), (2, 16, 16, 4))
  trained = _model(config, trained_with)
  params = jax.jit(trained.init)(jax.random.key(1, impl='rbg'), x)['params']
  longer, rolled = _model(config, trained_with + 2), _model(config, trained_with + 2, False)
  assert jax.tree.structure(jax.eval_shape(longer.init, jax.random.key(1, impl='rbg'), x)[
      'params']) == jax.tree.structure(params)
  logits = jax.jit(trained.apply)({'params': params}, x)[0]
  extended = jax.jit(longer.apply)({'params': params}, x)[0]
  assert extended.shape[0] == trained_with + 2
  np.testing.assert_allclose(extended[:trained_with], logits, atol=1e-5)
  np.testing.assert_allclose(jax.jit(rolled.apply)({'params': params}, x)[0], extended,
                             atol=1e-4)
  assert float(jnp.abs(extended[-1] - extended[-2]).max()) > 0  # it really iterated


def test_converged_iteration_on_constructed_label_maps():
  rng = np.random.default_rng(0)
  first = rng.integers(0, 4, (40, 50))
  second = first.copy()
  second[:4] = (second[:4] + 1) % 4             # 10% of the voxels change
  third = second.copy()
  third[0, :1] = (third[0, :1] + 1) % 4          # 1 voxel of 2000 changes
  labels = np.stack([first, second, third, third])
  assert evaluation.converged_iteration(labels, 0.001) == 3
  assert evaluation.converged_iteration(labels, 0.2) == 2
  assert evaluation.converged_iteration(labels, 0.0) == 4     # no change at all from 3 to 4
  assert evaluation.converged_iteration(labels, None) == 4    # stopping off: all iterations
  assert evaluation.converged_iteration(labels[:3], 0.0) == 3  # never converged: the last


@pytest.fixture(scope='module')
def lstm_workdir(tmp_path_factory):
  """A tiny LSTM-U-Net trained with T = 2."""
  from configs import lstm_unet
  workdir = str(tmp_path_factory.mktemp('lstm'))
  training.train_and_evaluate(tiny(lstm_unet.get_config(None)), workdir)
  return workdir


def test_eval_runs_past_t_and_reports_where_each_case_stopped(lstm_workdir, tmp_path):
  output = tmp_path / 'out'
  code, out, err = run('eval.py', f'--workdir={lstm_workdir}', '--num_iterations=4',
                       '--stop_changed_below=0.5', f'--output_dir={output}',
                       '--num_figures=0')
  assert code == 0, err
  with open(output / 'metrics.json') as f:
    summary = json.load(f)
  with open(output / 'per_case_metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [it['iteration'] for it in summary['per_iteration']] == [1, 2, 3, 4]
  assert (summary['num_iterations'], summary['num_iterations_trained']) == (4, 2)
  stops = summary['iterations_used']
  assert set(stops) == {r['case'] for r in rows} and all(2 <= t <= 4 for t in stops.values())
  # The reported metrics are those of each case's stopping iteration.
  stopped = [float(r['dice']) for r in rows if int(r['iteration']) == stops[r['case']]]
  assert summary['dice'] == pytest.approx(np.mean(stopped), abs=1e-9)
  assert 'stopped at iteration' in out


def test_iterations_are_an_lstm_unet_option(tiny_unet_config, tiny_lstm_config):
  with pytest.raises(errors.ConfigError, match='--num_iterations'):
    members.set_iterations(tiny_unet_config.model, 4)
  with pytest.raises(errors.ConfigError, match='--num_iterations=0'):
    members.set_iterations(tiny_lstm_config.model, 0)
  assert members.set_iterations(tiny_lstm_config.model, 5) == 2
  assert tiny_lstm_config.model.num_iterations == 5
