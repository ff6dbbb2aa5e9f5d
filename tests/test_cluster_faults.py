"""What cluster users hit first, through the train.py and eval.py command lines: a train
step too big for the memory, two runs on one workdir, and pre-emption (SIGTERM, Ctrl-C)
while the NIfTI cases are being preprocessed. Each ends in one line and its exit status,
and leaves no process or lock behind."""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

import nifti_fixtures
from configs import unet
from helpers import ROOT, assert_one_line_error, run
from jaxseg import out_of_memory, workdir_lock
from jaxseg.errors import WorkdirError

GIB = 2**30
# A small 3D U-Net whose train step needs about 12 GiB (XLA's memory analysis) at 96^3,
# batch 32, and compiles in seconds: twice the address-space cap below, so that it is
# refused whatever JAX itself takes of the cap on a given machine.
BIG_STEP = ['train.py', '--config=configs/unet.py:3d', '--config.model.features=(8, 16)',
            '--config.data.image_size=(96, 96, 96)', '--config.train.batch_size=32',
            '--config.data.num_train_cases=1', '--config.data.num_val_cases=1']
TINY = ['train.py', '--config=configs/lstm_unet.py', '--config.data.image_size=(32, 32)',
        '--config.data.num_train_cases=4', '--config.data.num_val_cases=2',
        '--config.model.features=(8, 16)', '--config.model.num_iterations=2',
        '--config.train.batch_size=2', '--config.train.warmup_steps=2',
        '--config.eval.batch_size=2', '--config.eval.every_steps=4',
        '--config.checkpoint.every_steps=4', '--config.train.log_every_steps=4']


def _gib_figures(line: str) -> list[float]:
  return [float(x) for x in re.findall(r'([\d.]+) GiB', line)]


def test_a_step_too_big_for_the_memory_is_refused_before_the_data_is_read(tmp_path):
  root, cache, workdir = tmp_path / 'data', tmp_path / 'cache', tmp_path / 'run'
  nifti_fixtures.make_dataset(str(root), 'brats2021', num_cases=2)
  cap = 6 * GIB
  result = subprocess.run(
      [sys.executable, *BIG_STEP, f'--config.data.root={root}',
       f'--config.data.cache_dir={cache}', f'--workdir={workdir}'], cwd=ROOT,
      capture_output=True, text=True, timeout=600,
      preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
  assert_one_line_error(result.returncode, result.stderr, 'out of memory',
                        'train.batch_size (now 32)', 'data.image_size (now (96, 96, 96))',
                        'model.remat_levels=True', 'train.microbatches=2',
                        'model.dtype=bfloat16', 'ulimit -v')
  assert result.returncode == 2
  needed, has = _gib_figures(result.stderr)
  # The batch alone (32 x 96^3 x 4 float32 images and 3 uint8 targets) is 0.5 GiB.
  assert needed > has and needed > 32 * 96**3 * (4 * 4 + 3) / GIB and has < cap / GIB
  assert not cache.exists() and not workdir.exists()  # nothing preprocessed or written


@pytest.mark.parametrize('message, asked, needed', [
    ('RESOURCE_EXHAUSTED: Out of memory allocating 61961202368 bytes.', 61961202368, 2 * GIB),
    ('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1,073,741,824 bytes.',
     GIB, 2 * GIB),
    ('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space '
     'hbm. Used 49.60G of 15.75G hbm. Exceeded hbm capacity by 33.85G.', None, 49.6 * GIB),
])
def test_out_of_memory_errors_of_each_platform_become_one_line(message, asked, needed):
  """XLA's words on CPU, GPU and TPU: the size asked for, what the step needs (the
  analysis passed in, or the TPU compiler's own figure) and the switches."""
  config = unet.get_config('3d')
  with pytest.raises(out_of_memory.OutOfMemory) as error:
    with out_of_memory.explained(config, 2 * GIB):
      raise jax.errors.JaxRuntimeError(message)
  line = str(error.value)
  assert '\n' not in line and 'train.batch_size (now 2)' in line
  figures = _gib_figures(line)
  if asked is not None:
    assert figures[0] == pytest.approx(asked / GIB, abs=0.005)
  assert f'needs {needed / GIB:.2f} GiB' in line


def test_other_runtime_errors_keep_their_traceback():
  with pytest.raises(jax.errors.JaxRuntimeError):
    with out_of_memory.explained(unet.get_config('3d'), None):
      raise jax.errors.JaxRuntimeError('INTERNAL: something else')


def _lock(path, holder: dict) -> None:
  path.write_text(json.dumps(holder))


def _ended_pid() -> int:
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def test_the_lock_refuses_a_live_holder_and_takes_over_an_ended_one(tmp_path):
  path = tmp_path / workdir_lock.LOCK_FILE
  me = workdir_lock.holder_of_this_process()
  _lock(path, me)
  with pytest.raises(WorkdirError, match=f'process {os.getpid()} on host {me["host"]}'):
    workdir_lock.acquire(str(tmp_path))
  # The same process id started at another time: the id was reused, the holder is gone.
  _lock(path, {**me, 'process_start': '1'})
  notes = []
  assert workdir_lock.acquire(str(tmp_path), notes.append) == str(path)
  assert len(notes) == 1 and 'took over' in notes[0]
  assert json.loads(path.read_text())['process_start'] == me['process_start']
  workdir_lock.release(str(path))
  assert not path.exists()
  _lock(path, {'host': me['host'], 'pid': _ended_pid(), 'started': 'earlier'})  # killed
  assert workdir_lock.acquire(str(tmp_path), notes.append) == str(path)
  assert len(notes) == 2 and str(path) in notes[1]
  workdir_lock.release(str(path))
  _lock(path, {**me, 'host': 'another-host'})  # cannot be checked from here: refused
  with pytest.raises(WorkdirError, match='another-host'):
    workdir_lock.acquire(str(tmp_path))
  path.write_text('')  # created, not written yet
  with pytest.raises(WorkdirError, match='names no run'):
    workdir_lock.acquire(str(tmp_path))


def _wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None and not predicate():
    time.sleep(0.05)
  assert process.poll() is None and predicate(), 'the run ended or hung before that'


def test_a_second_run_on_a_busy_workdir_is_refused_and_eval_still_reads_it(tmp_path):
  workdir, checkpoints = tmp_path / 'run', tmp_path / 'run' / 'checkpoints'
  lock = workdir / workdir_lock.LOCK_FILE
  first = subprocess.Popen([sys.executable, *TINY, '--config.train.num_steps=10000',
                            f'--workdir={workdir}'], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: checkpoints.is_dir() and any(map(str.isdigit, os.listdir(checkpoints))),
              first)
    first.send_signal(signal.SIGSTOP)  # holds the workdir without taking the CPU
    code, _, err = run(*TINY, '--config.train.num_steps=10000', f'--workdir={workdir}')
    assert_one_line_error(code, err, f'process {first.pid} on host {socket.gethostname()}',
                          str(lock))
    assert code == 2
    code, out, err = run('eval.py', f'--workdir={workdir}', '--checkpoint=latest')
    assert code == 0 and 'Dice' in out, err
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)  # stopped, its progress bar stays in the pipe
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert not lock.exists()  # released on pre-emption


def _children(pid: int) -> set[int]:
  """Every descendant of process `pid` (from /proc)."""
  parents = {}
  for name in os.listdir('/proc'):
    if name.isdigit():
      try:
        with open(f'/proc/{name}/stat') as f:
          parents[int(name)] = int(f.read().rsplit(')', 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
  found, frontier = set(), {pid}
  while frontier:
    frontier = {child for child, parent in parents.items() if parent in frontier} - found
    found |= frontier
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


@pytest.mark.parametrize('signum', [signal.SIGTERM])  # Ctrl-C: checked by hand (README)
def test_a_stop_while_preprocessing_ends_every_process(tmp_path, signum):
  root, cache = tmp_path / 'data', tmp_path / 'cache'
  nifti_fixtures.make_dataset(str(root), 'brats2021', num_cases=24)
  process = subprocess.Popen(
      [sys.executable, 'train.py', '--config=configs/unet.py:3d',
       '--config.model.features=(8, 16)', '--config.data.image_size=(16, 16, 16)',
       f'--config.data.root={root}', f'--config.data.cache_dir={cache}',
       '--config.data.preprocess_workers=2', f'--workdir={tmp_path / "run"}'], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  started = set()
  try:
    # Both workers and the resource tracker are up: preprocessing has begun.
    _wait_for(lambda: len(started.update(_children(process.pid)) or started) >= 3, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  deadline = time.time() + 10  # the resource tracker ends once its last user has
  while time.time() < deadline and any(map(_alive, started)):
    time.sleep(0.1)
  assert not [pid for pid in started if _alive(pid)]
  err = re.sub(r'preprocess:[^\n]*?case/s\]', '', err)  # progress bars
  assert_one_line_error(process.returncode, err,
                        'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C')
  assert process.returncode == 128 + signum
  entries = os.listdir(cache / 'cases') if (cache / 'cases').exists() else []
  assert len(entries) < 24 and not [e for e in entries if e.startswith('.partial-')]
