"""Data parallelism without an accelerator: a tiny U-Net trained (with validation and
checkpoints) on 1 CPU device, on 8 virtual CPU devices in one process, and by 4
processes of 2 devices each joined by jax.distributed over localhost, must end with the
same parameters and validation Dice, each checkpoint restored in this one process. Then
one of the 4 processes is killed mid-run (SIGKILL; the others are ended as a scheduler
would end the job), and the same 4-process command resumes and ends like the
uninterrupted run.

  python tools/multidevice_check.py      # about 3 minutes on 2 cores

Too slow for the test suite; its command and result are in BENCHMARKS.md.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False)

from configs import unet  # noqa: E402
from helpers import final_state, flat_params, tiny  # noqa: E402

NUM_STEPS = 8
# argv: workdir, coordinator address ('' for one process), number of processes, process id
_TRAIN = f'''
import sys
from jaxseg.startup import prepare_process
prepare_process(host_memory=False)
import jax
from jaxseg import parallel
workdir, address, count, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if address:
  parallel.initialize_distributed(address, count, index)
from helpers import tiny
from configs import unet
from jaxseg.training import train_and_evaluate
config = tiny(unet.get_config(None))
config.train.num_steps = {NUM_STEPS}
config.train.batch_size = config.eval.batch_size = 8  # a row per device of 8
# XLA's ops on every device count (jaxseg's CPU kernels run on one device only): the
# runs then differ only in how the batch is split and the gradient summed.
config.compute.conv_library = config.compute.norm_kernel = 'xla'
train_and_evaluate(config, workdir)
'''


def _environment(devices_per_process: int) -> dict:
  return {**os.environ, 'PYTHONPATH': os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')]),
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_process}'}


def _start(workdir: str, processes: int, devices_per_process: int) -> list[subprocess.Popen]:
  address = ''
  if processes > 1:
    with socket.socket() as s:
      s.bind(('localhost', 0))
      address = f'localhost:{s.getsockname()[1]}'
  return [subprocess.Popen([sys.executable, '-c', _TRAIN, workdir, address, str(processes),
                            str(i)], cwd=ROOT, env=_environment(devices_per_process),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
          for i in range(processes)]


def _finish(processes: list[subprocess.Popen]) -> None:
  for process in processes:
    _, err = process.communicate(timeout=900)
    if process.returncode != 0:
      raise SystemExit(f'a training process failed:\n{err[-3000:]}')


def _result(workdir: str):
  config = tiny(unet.get_config(None))
  config.train.batch_size = 8
  state, summary = final_state(workdir, config)  # restored in this one process, 1 device
  assert int(state.step) == NUM_STEPS
  return flat_params(state), summary['dice']


def _compare(name: str, reference, other) -> bool:
  (params_a, dice_a), (params_b, dice_b) = reference, other
  difference = float(np.abs(params_a - params_b).max())
  # Parameters are O(0.1-1): a different split of the batch changes the order of the
  # gradient's sums (float32 rounding, ~1e-7 relative per step), which Adam carries on.
  bound = 1e-5 * max(1.0, float(np.abs(params_a).max()))
  ok = difference < bound and abs(dice_a - dice_b) < 1e-3
  print(f'| {name} | {difference:.2e} (bound {bound:.0e}) | {dice_b:.4f} vs {dice_a:.4f} | '
        f'{"same" if ok else "DIFFERENT"} |', flush=True)
  return ok


def main() -> None:
  start = time.time()
  with tempfile.TemporaryDirectory() as tmp:
    runs = {}
    for name, processes, devices in (('1 device', 1, 1), ('8 devices, 1 process', 1, 8),
                                     ('4 processes x 2 devices', 4, 2)):
      workdir = os.path.join(tmp, name.replace(' ', '_').replace(',', ''))
      _finish(_start(workdir, processes, devices))
      runs[name] = _result(workdir)

    killed = os.path.join(tmp, 'killed')
    processes = _start(killed, 4, 2)
    first = os.path.join(killed, 'checkpoints', '4')
    while not os.path.isdir(first) and all(p.poll() is None for p in processes):
      time.sleep(0.1)
    processes[3].send_signal(signal.SIGKILL)
    time.sleep(20)  # what the others do alone; then the job is ended, as a scheduler does
    survivors = sum(p.poll() is None for p in processes)
    for process in processes:
      if process.poll() is None:
        process.kill()
      process.communicate()
    restart = _start(killed, 4, 2)
    _finish(restart)
    runs['4 processes, one killed at step 4, restarted'] = _result(killed)

  print(f'{survivors} of 3 other processes still running 20 s after the kill\n')
  print('| run | largest parameter difference to 1 device | validation Dice | verdict |')
  print('| --- | ---: | ---: | --- |')
  reference = runs['1 device']
  ok = all([_compare(name, reference, result) for name, result in runs.items()
            if name != '1 device'])
  print(f'\n{time.time() - start:.0f} s in all')
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
