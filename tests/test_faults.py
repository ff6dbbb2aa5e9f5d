"""Fault injection through the real command lines: damaged checkpoints, Ctrl-C during a
save, a full disk, mixed data, --help, broken config files, damaged workdir files and
an extended schedule. Each fault ends in one line on stderr (no traceback) and a
non-zero exit, and nothing that existed before is changed or lost."""

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import nifti_fixtures
from helpers import ROOT, SLOW_SAVE, assert_one_line_error, final_state, run
from jaxseg import checkpointing, parallel, resume, workdir as files
from jaxseg.data import load_splits
from jaxseg.train_state import learning_rate_schedule, setup_model

# A tiny LSTM-U-Net with a checkpoint every 4 steps; every step is logged.
OVERRIDES = ['--config.data.image_size=(32, 32)', '--config.data.num_train_cases=4',
             '--config.data.num_val_cases=2', '--config.model.features=(8, 16)',
             '--config.model.num_iterations=2', '--config.train.batch_size=2',
             '--config.train.warmup_steps=2', '--config.eval.batch_size=2',
             '--config.eval.every_steps=4', '--config.checkpoint.every_steps=4',
             '--config.train.log_every_steps=1']
TRAIN = ['train.py', '--config=configs/lstm_unet.py', *OVERRIDES]


def _tree_digest(root) -> dict[str, str]:
  """{relative path: sha256} of every file under `root`."""
  out = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir trained for 8 steps: checkpoints 4 and 8."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  code, _, err = run(*TRAIN, '--config.train.num_steps=8', f'--workdir={workdir}')
  assert code == 0, err
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '8']
  return workdir


def _copy(trained, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _largest_array_file(step_dir) -> str:
  """The biggest array data file of a checkpoint: one that restoring certainly reads."""
  paths = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(step_dir, 'state'))
           for n in names if os.sep + 'd' + os.sep in os.path.join(d, n)]
  return max(paths, key=os.path.getsize)


def _damage(path: str, how: str) -> None:
  if how == 'deleted':
    os.remove(path)
  elif how == 'truncated':
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  else:  # overwritten
    with open(path, 'wb') as f:
      f.write(np.random.default_rng(0).bytes(max(os.path.getsize(path), 64)))


# Several of a checkpoint's files (array data, the tree's metadata, the OCDBT manifest,
# the validation summary, the ranking metric), each damaged in three ways.
FILES = {'array data': None, 'tree metadata': 'state/_METADATA',
         'array index': 'state/manifest.ocdbt', 'summary': 'summary/metadata',
         'metrics': 'metrics/metrics'}
DAMAGES = ('truncated', 'deleted', 'overwritten')


def _file_of(workdir, step, which) -> str:
  step_dir = os.path.join(workdir, 'checkpoints', str(step))
  return _largest_array_file(step_dir) if FILES[which] is None else os.path.join(
      step_dir, FILES[which])


def _newest_restorable_step(workdir) -> int | None:
  """The step a restart of `workdir` resumes from (in-process, without training)."""
  config = files.read_config(str(workdir))
  _, _, abstract = setup_model(config, load_splits(config.data, ('train',))['train'])
  restored = resume.restore_newest(checkpointing.Checkpointer(str(workdir)), abstract,
                                   parallel.replicated(parallel.make_mesh()), print)
  return None if restored is None else int(restored['state'].step)


@pytest.mark.parametrize('which', FILES)
@pytest.mark.parametrize('how', DAMAGES)
def test_every_damage_is_detected_and_training_falls_back(trained, tmp_path, which, how):
  """In-process, for speed: each damage of the latest checkpoint is either harmless (the
  state restored equals the undamaged one) or the checkpoint is set aside, untouched,
  and the one before it restored."""
  workdir = _copy(trained, tmp_path)
  config = files.read_config(str(workdir))
  _, _, abstract = setup_model(config, load_splits(config.data, ('train',))['train'])
  sharding = parallel.replicated(parallel.make_mesh())
  expected, _ = final_state(trained, config)
  _damage(_file_of(workdir, 8, which), how)
  damaged_files = _tree_digest(workdir / 'checkpoints' / '8')
  warnings = []
  checkpointer = resume.open_for_training(str(workdir), warnings.append)
  restored = resume.restore_newest(checkpointer, abstract, sharding, warnings.append)
  step = int(restored['state'].step)
  if step == 8:  # Orbax did not need the damaged file (e.g. metrics: only for ranking)
    assert not warnings
    for a, b in zip(jax.tree.leaves(expected.params), jax.tree.leaves(restored['state'].params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    return
  assert step == 4 and len(warnings) == 1
  assert 'checkpoints/8' in warnings[0] and 'damaged_checkpoints/8' in warnings[0]
  assert _tree_digest(workdir / resume.DAMAGED_DIR / '8') == damaged_files  # kept as is
  assert checkpointer.all_steps() == [4]


def test_setting_aside_twice_keeps_one_copy(tmp_path):
  """Every process of a job on a shared disk sets the same damaged checkpoint aside."""
  (tmp_path / 'checkpoints' / '8').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '8' / 'x').write_text('kept')
  first = resume.set_aside(str(tmp_path), 8)
  assert resume.set_aside(str(tmp_path), 8) == first
  assert os.listdir(tmp_path / resume.DAMAGED_DIR) == ['8']
  assert (tmp_path / resume.DAMAGED_DIR / '8' / 'x').read_text() == 'kept'


@pytest.mark.parametrize('which, how', [('array data', 'truncated'),
                                        ('tree metadata', 'overwritten'),
                                        ('summary', 'deleted')])
def test_eval_of_a_damaged_checkpoint_is_one_line_and_changes_nothing(
    trained, tmp_path, which, how):
  workdir = _copy(trained, tmp_path)
  _damage(_file_of(workdir, 8, which), how)
  before = _tree_digest(workdir)
  code, _, err = run('eval.py', f'--workdir={workdir}', '--checkpoint=latest')
  assert_one_line_error(code, err, 'checkpoints/8', '--checkpoint')
  assert 'does not fit' not in err  # damage, not another model
  assert _tree_digest(workdir) == before


def test_restart_falls_back_past_a_damaged_checkpoint(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _damage(_file_of(workdir, 8, 'array data'), 'overwritten')
  damaged = _tree_digest(workdir / 'checkpoints' / '8')
  kept = _tree_digest(workdir / 'checkpoints' / '4')
  code, out, err = run(*TRAIN, '--config.train.num_steps=8', f'--workdir={workdir}')
  assert code == 0, err
  warnings = [line for line in err.splitlines() if line.startswith('warning:')]
  assert len(warnings) == 1 and 'checkpoints/8' in warnings[0], err
  assert 'Traceback' not in err
  assert 'Resuming from step 4' in out
  assert _tree_digest(workdir / resume.DAMAGED_DIR / '8') == damaged
  assert _tree_digest(workdir / 'checkpoints' / '4') == kept
  assert checkpointing.Checkpointer(str(workdir), create=False).latest_step() == 8


def test_ctrl_c_during_a_save_is_one_line_and_resumes_from_the_last_complete(tmp_path):
  workdir, flag = tmp_path / 'run', tmp_path / 'saving'
  process = subprocess.Popen(
      [sys.executable, '-c', SLOW_SAVE, str(flag), *TRAIN, '--config.train.num_steps=40',
       f'--workdir={workdir}'], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  # The limits stop a hang; they are generous because a loaded 2-core machine is slow.
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None and not flag.exists():
    time.sleep(0.05)
  if not flag.exists():
    process.kill()
  assert flag.exists(), process.communicate()[1]
  time.sleep(0.5)
  process.send_signal(signal.SIGINT)
  try:
    _, err = process.communicate(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
  lines = [line for line in err.splitlines() if line.strip() and 'train:' not in line]
  assert process.returncode == 128 + signal.SIGINT, err
  assert lines == [lines[-1]] and 'step 4' in lines[-1] and 'Traceback' not in err, err
  assert _newest_restorable_step(workdir) == 4  # the half-written step 8 is ignored


# train.py whose disk is full from the save of step 8 on: the file-size limit makes the
# OS refuse every write past 1000 bytes (EFBIG), in Orbax's TensorStore and in Python.
_FULL_DISK = '''
import resource, runpy, signal, sys
from jaxseg import checkpointing
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
original = checkpointing.Checkpointer.save
def save(self, step, *args, **kwargs):
  if step == 8:
    self._manager.wait_until_finished()  # step 4 complete, then the disk fills up
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
  return original(self, step, *args, **kwargs)
checkpointing.Checkpointer.save = save
sys.argv = sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')
'''


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
  workdir = tmp_path / 'run'
  code, _, err = run('-c', _FULL_DISK, *TRAIN, '--config.train.num_steps=12',
                     f'--workdir={workdir}')
  err = '\n'.join(line for line in err.splitlines() if 'train:' not in line)
  assert_one_line_error(code, err, str(workdir))  # the file or checkpoint not written
  assert checkpointing.Checkpointer(str(workdir), create=False).latest_step() == 4
  assert _newest_restorable_step(workdir) == 4


def test_a_mix_of_brats_layouts_is_one_line_and_the_data_untouched(tmp_path):
  root = tmp_path / 'data'
  nifti_fixtures.make_dataset(str(root / 'a'), 'brats2021', num_cases=1)
  nifti_fixtures.make_dataset(str(root / 'b'), 'brats-gli', num_cases=1)
  for part in ('a', 'b'):
    for name in os.listdir(root / part):
      shutil.move(str(root / part / name), str(root / name))
    os.rmdir(root / part)
  before = _tree_digest(root)
  code, _, err = run('train.py', '--config=configs/unet.py:3d', f'--config.data.root={root}',
                     f'--config.data.cache_dir={tmp_path / "cache"}',
                     f'--workdir={tmp_path / "run"}')
  assert_one_line_error(code, err, 'BraTS2021_', 'BraTS-GLI-')
  assert _tree_digest(root) == before


def test_eval_names_its_own_skip_flag_and_accepts_it(trained, tmp_path):
  root, output = tmp_path / 'data', tmp_path / 'out'
  nifti_fixtures.make_dataset(str(root), 'brats-gli', num_cases=2)
  bad, good = sorted(os.listdir(root))
  os.remove(root / bad / f'{bad}-t2w.nii.gz')
  before = _tree_digest(root)
  command = ['eval.py', f'--workdir={trained}', f'--data_root={root}',
             f'--output_dir={output}', '--num_figures=0']
  code, _, err = run(*command)
  assert_one_line_error(code, err, bad, 'eval.py --skip_bad_cases')
  code, out, err = run(*command, '--skip_bad_cases')
  assert code == 0, err
  assert bad in err and 'Traceback' not in err
  assert os.listdir(output / 'predictions') == [f'{good}.nii.gz']
  assert _tree_digest(root) == before


@pytest.mark.parametrize('script, flag', [('train.py', '--help'), ('train.py', '-h'),
                                          ('eval.py', '--helpfull')])
def test_help_lists_the_flags(script, flag):
  code, out, err = run(script, flag)
  assert code == 0, err
  assert '--workdir' in out and 'Traceback' not in err
  if script == 'train.py':
    assert '--config' in out and 'Config keys' in out


@pytest.mark.parametrize('body, words', [
    ('def get_config(variant=None):\n  return undefined_name\n',
     ['line 2', 'NameError', 'undefined_name']),
    ('import ml_collections\nCONFIG = 1\n', ['get_config']),
])
def test_a_broken_config_file_is_one_line(tmp_path, body, words):
  path = tmp_path / 'my_config.py'
  path.write_text(body)
  code, _, err = run('train.py', f'--config={path}', f'--workdir={tmp_path / "run"}')
  assert_one_line_error(code, err, 'my_config.py', *words)
  assert not (tmp_path / 'run').exists()


def test_an_unknown_key_names_its_full_path(tmp_path):
  code, _, err = run('train.py', '--config=configs/unet.py', '--config.train.nnum_steps=3',
                     f'--workdir={tmp_path}')
  assert_one_line_error(code, err, "'train.nnum_steps'", "'train.num_steps'")
  assert '\\n' not in err


@pytest.mark.parametrize('name', ['config.json', 'splits.json'])
def test_invalid_json_in_the_workdir_names_the_file(trained, tmp_path, name):
  workdir = _copy(trained, tmp_path)
  (workdir / name).write_text('{"model": \n')
  before = _tree_digest(workdir)
  code, _, err = run('eval.py', f'--workdir={workdir}')
  assert_one_line_error(code, err, name, 'JSON')
  assert _tree_digest(workdir) == before


def test_output_dir_under_a_file_is_refused_before_predicting(trained, tmp_path):
  (tmp_path / 'file').write_text('x')
  code, out, err = run('eval.py', f'--workdir={trained}',
                       f'--output_dir={tmp_path / "file" / "out"}')
  assert_one_line_error(code, err, '--output_dir', 'file')
  assert 'Dice' not in out


def test_empty_workdir_flag_is_refused(tmp_path):
  code, _, err = run('train.py', '--config=configs/unet.py', '--workdir=')
  assert_one_line_error(code, err, '--workdir')


def _learning_rates(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return {int(r['step']): float(r['value']) for r in csv.DictReader(f)
            if r['split'] == 'train' and r['name'] == 'learning_rate'}


def test_extending_a_finished_run_continues_the_learning_rate_without_a_jump(
    trained, tmp_path):
  """8 steps, then extended to 16: steps 1-8 follow the 8-step schedule, steps 9-16 go
  on from its last rate by a cosine to the floor, as the README says."""
  workdir = _copy(trained, tmp_path)
  code, _, err = run(*TRAIN, '--config.train.num_steps=16', f'--workdir={workdir}')
  assert code == 0, err
  rates = _learning_rates(workdir)
  config = files.read_config(str(workdir))
  config.train.num_steps = 8
  original = learning_rate_schedule(config.train)
  for step in range(1, 9):
    np.testing.assert_allclose(rates[step], float(original(step - 1)), rtol=1e-5)
  floor, last = 0.01 * config.train.learning_rate, float(original(8))
  for step in range(9, 17):  # cosine from the rate of step 9 in the 8-step run to the floor
    expected = floor + (last - floor) * 0.5 * (1 + np.cos(np.pi * (step - 9) / 8))
    np.testing.assert_allclose(rates[step], expected, rtol=1e-5)
  stretched = learning_rate_schedule(files.read_config(str(workdir)).train)  # the old way
  assert float(stretched(8)) > 10 * rates[9]  # what the fix avoids: a jump back up
