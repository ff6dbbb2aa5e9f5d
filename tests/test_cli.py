"""The command lines: bad input gets one line naming the problem and a non-zero exit."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, assert_one_line_error, run


@pytest.mark.parametrize('override, word', [
    ('--config.model.no_such_key=1', "no such config key 'model.no_such_key'"),
    ('--config.train.num_steps=many', 'num_steps'),
    ('--config.model.name=resnet', 'model.name'),
    ('--config.model.norm=batch', 'model.norm'),
    ('--config.compute.conv3d=fast', 'compute.conv3d'),
    ('--config.model.conv3d=native', 'now \'compute.conv3d\''),
    ('--config.train.batch_size=0', 'train.batch_size'),
])
def test_bad_config_is_one_line(tmp_path, override, word):
  workdir = tmp_path / 'run'
  code, _, stderr = run('train.py', '--config=configs/lstm_unet.py', override,
                        f'--workdir={workdir}')
  assert_one_line_error(code, stderr, word)
  assert not workdir.exists()  # refused before anything is written


def test_missing_config_flag_is_one_line(tmp_path):
  code, _, stderr = run('train.py', '--config.train.num_steps=3', f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, 'config')
  code, _, stderr = run('train.py', f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, '--config must have a value')


def test_missing_config_file_or_variant_is_one_line(tmp_path):
  code, _, stderr = run('train.py', '--config=configs/nope.py', f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, 'no such config file', 'nope.py')
  code, _, stderr = run('train.py', '--config=configs/unet.py:4d', f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, "unknown config variant '4d'")


def test_eval_of_a_directory_without_a_run_is_one_line(tmp_path):
  code, _, stderr = run('eval.py', f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, 'config.json')


def test_train_then_eval_command_lines(tmp_path):
  """train.py then eval.py, as a user runs them, and a different model on the same workdir."""
  overrides = ['--config.data.image_size=(32, 32)', '--config.data.num_train_cases=4',
               '--config.data.num_val_cases=2', '--config.model.features=(8, 16)',
               '--config.model.num_iterations=2', '--config.train.num_steps=2',
               '--config.train.batch_size=2', '--config.eval.batch_size=2',
               '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2']
  code, out, stderr = run('train.py', '--config=configs/lstm_unet.py', *overrides,
                          f'--workdir={tmp_path}')
  assert code == 0, stderr
  final = [l for l in out.splitlines() if l.startswith('Final validation')][-1]
  code, out, stderr = run('eval.py', f'--workdir={tmp_path}')
  assert code == 0, stderr
  evaluated = [l for l in out.splitlines() if l.startswith('val Dice')][-1]
  assert final.split('Dice')[1] == evaluated.split('Dice')[1]
  assert (tmp_path / 'metrics.json').exists() and (tmp_path / 'per_case_metrics.csv').exists()

  checkpoints = sorted(os.listdir(tmp_path / 'checkpoints'))
  unet_overrides = [o for o in overrides if 'num_iterations' not in o]
  code, _, stderr = run('train.py', '--config=configs/unet.py', *unet_overrides,
                        f'--workdir={tmp_path}')
  assert_one_line_error(code, stderr, 'different model', 'model.name')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == checkpoints


def test_sigterm_saves_the_current_step_and_the_run_resumes_there(tmp_path):
  import signal
  import time
  from jaxseg import checkpointing
  overrides = ['--config.data.image_size=(32, 32)', '--config.data.num_train_cases=4',
               '--config.data.num_val_cases=2', '--config.model.features=(8, 16)',
               '--config.train.batch_size=2', '--config.eval.batch_size=2',
               '--config.eval.every_steps=100000', '--config.checkpoint.every_steps=100000',
               '--config.train.log_every_steps=2']
  command = [sys.executable, 'train.py', '--config=configs/unet.py', f'--workdir={tmp_path}',
             *overrides]
  process = subprocess.Popen([*command, '--config.train.num_steps=100000'], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  log = tmp_path / 'metrics.csv'
  deadline = time.time() + 300
  while time.time() < deadline and not (log.exists() and ',train,' in log.read_text()):
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, err  # not 0: the run is not finished
  assert 'SIGTERM: saved the checkpoint of step' in err
  step = checkpointing.Checkpointer(str(tmp_path), create=False).latest_step()
  assert step is not None and 0 < step < 100000
  code, out, err = run('train.py', *command[2:], f'--config.train.num_steps={step + 2}')
  assert code == 0, err
  assert f'Resuming from step {step}' in out
