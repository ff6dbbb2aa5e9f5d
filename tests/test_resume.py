"""Pre-emption safety: kills, kills during a save, non-finite losses, start-up checks,
determinism."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, SLOW_SAVE, assert_mentions, assert_one_line_error, final_state, run
from jaxseg import checkpointing, errors, eval_workdir, evaluation, training, workdir as files
from jaxseg.training import make_train_batches

# A tiny LSTM-U-Net run with a checkpoint every 4 steps.
OVERRIDES = ['--config.data.image_size=(32, 32)', '--config.data.num_train_cases=4',
             '--config.data.num_val_cases=2', '--config.model.features=(8, 16)',
             '--config.model.num_iterations=2', '--config.train.batch_size=2',
             '--config.train.warmup_steps=2', '--config.eval.batch_size=2',
             '--config.eval.every_steps=4', '--config.checkpoint.every_steps=4',
             '--config.train.log_every_steps=4', '--config.train.num_steps=40']
TRAIN = ['train.py', '--config=configs/lstm_unet.py', *OVERRIDES]


def _wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None and not predicate():
    time.sleep(0.05)
  assert process.poll() is None, 'the run ended before it could be killed'
  assert predicate()


def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path):
  code, _, err = run(*TRAIN, f'--workdir={tmp_path / "whole"}')
  assert code == 0, err

  workdir = tmp_path / 'killed'
  process = subprocess.Popen([sys.executable, *TRAIN, f'--workdir={workdir}'], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for(lambda: (workdir / 'checkpoints' / '4').is_dir(), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  resumed_from = checkpointing.Checkpointer(str(workdir), create=False).latest_step()
  assert 4 <= resumed_from < 40
  code, out, err = run(*TRAIN, f'--workdir={workdir}')
  assert code == 0, err
  assert f'Resuming from step {resumed_from}' in out

  config = files.read_config(str(workdir))
  whole, whole_summary = final_state(tmp_path / 'whole', config)
  killed, killed_summary = final_state(workdir, config)
  assert int(killed.step) == int(whole.step) == 40
  for a, b in zip(jax.tree.leaves((whole.params, whole.opt_state)),
                  jax.tree.leaves((killed.params, killed.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise, on CPU
  assert killed_summary == whole_summary


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
  workdir, flag = tmp_path / 'run', tmp_path / 'saving'
  process = subprocess.Popen(
      [sys.executable, '-c', SLOW_SAVE, str(flag), *TRAIN, f'--workdir={workdir}'], cwd=ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for(flag.exists, process)
  time.sleep(0.5)
  process.send_signal(signal.SIGKILL)
  process.wait()
  leftovers = [n for n in os.listdir(workdir / 'checkpoints') if n.startswith('8')]
  assert leftovers and not (workdir / 'checkpoints' / '8').exists()  # step 8 half-written
  code, out, err = run(*TRAIN, f'--workdir={workdir}')
  assert code == 0, err
  assert 'Resuming from step 4' in out
  assert checkpointing.Checkpointer(str(workdir), create=False).latest_step() == 40


def _poisoned_batches(step_index):
  """train_and_evaluate's `batches`: those of train.py, the image NaN at `step_index`
  (0-based)."""
  def batches(*args):
    def maybe_nan(index, batch):
      if index == step_index:
        batch = {**batch, 'image': np.full_like(batch['image'], np.nan)}
      return batch
    return make_train_batches(*args).map_with_index(maybe_nan)
  return batches


def test_nan_stops_the_run_naming_the_step_and_keeps_the_good_checkpoint(
    tmp_path, tiny_lstm_config):
  config = tiny_lstm_config
  config.train.num_steps = 10
  with pytest.raises(errors.NonFiniteError) as error:
    training.train_and_evaluate(config, str(tmp_path),
                                batches=_poisoned_batches(5))  # the 6th step
  assert_mentions(str(error.value), 'step 6', 'non-finite', 'step 4')  # bad step, kept one
  checkpointer = checkpointing.Checkpointer(str(tmp_path), create=False)
  assert checkpointer.latest_step() == 4
  state, _ = final_state(tmp_path, config)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_nan_update_is_skipped_when_configured(tmp_path, tiny_lstm_config, capsys):
  config = tiny_lstm_config
  config.train.num_steps = 6
  config.train.on_nonfinite = 'skip'
  training.train_and_evaluate(config, str(tmp_path), batches=_poisoned_batches(2))
  captured = capsys.readouterr()
  assert_mentions(captured.out, 'non-finite', 'step(s) [3]', 'skipped')
  state, _ = final_state(tmp_path, config)
  assert int(state.step) == 6
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_unwritable_workdir_is_one_line_before_compiling(tmp_path):
  (tmp_path / 'file').write_text('not a directory')
  code, out, err = run(*TRAIN, f'--workdir={tmp_path / "file" / "run"}')
  assert_one_line_error(code, err, 'cannot be created or written')
  assert 'parameters' not in out  # stopped before the model was built


def test_full_disk_is_refused_before_compiling(tmp_path, monkeypatch, tiny_lstm_config):
  real = files.shutil.disk_usage
  monkeypatch.setattr(files.shutil, 'disk_usage',
                      lambda path: real(path)._replace(free=10 * 2**20))
  with pytest.raises(files.WorkdirError) as error:
    training.train_and_evaluate(tiny_lstm_config, str(tmp_path / 'run'))
  assert_mentions(str(error.value), str(tmp_path / 'run'), '10 MiB free')
  assert not (tmp_path / 'run' / 'checkpoints' / '2').exists()


def test_two_runs_with_the_same_seed_write_identical_metrics(tmp_path, tiny_lstm_config):
  files = []
  for name in ('a', 'b'):
    workdir = str(tmp_path / name)
    training.train_and_evaluate(tiny_lstm_config, workdir)
    eval_workdir.evaluate_workdir(workdir, eval_workdir.EvalOptions(num_figures=0))
    with open(os.path.join(workdir, 'metrics.json'), 'rb') as f:
      files.append(f.read())
    with open(os.path.join(workdir, 'per_case_metrics.csv'), 'rb') as f:
      files.append(f.read())
  assert files[0] == files[2] and files[1] == files[3]


def test_sigterm_during_a_validation_still_saves_before_stopping(
    tmp_path, tiny_lstm_config):
  """A SIGTERM that lands while a step is validated (a blocking, seconds-long moment)
  must lead to a saved checkpoint, never to a stop without one."""
  config = tiny_lstm_config
  config.train.num_steps = 50
  config.checkpoint.every_steps = 100
  config.eval.every_steps = 2

  def evaluate_then_sigterm(*args, **kwargs):
    result = evaluation.evaluate(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return result
  with pytest.raises(errors.Stopped) as stopped:
    training.train_and_evaluate(config, str(tmp_path), evaluate=evaluate_then_sigterm)
  assert checkpointing.Checkpointer(str(tmp_path), create=False).latest_step() == 3
  assert 'SIGTERM: saved the checkpoint of step 3' in str(stopped.value)
  assert stopped.value.exit_status == 128 + signal.SIGTERM
