"""Data parallelism: the same global batches on 2 devices give the same training as on 1."""

import os
import socket
import subprocess
import sys

import numpy as np

from helpers import ROOT, final_state, flat_params

_TRAIN = '''
import sys
from jaxseg.xla_flags import apply_default_flags
apply_default_flags()
import jax
from helpers import tiny
from configs import unet
from jaxseg.training import train_and_evaluate
assert jax.device_count() == int(sys.argv[2]), jax.devices()
config = tiny(unet.get_config(None))
# XLA's ops on every device count ('auto' would pick jaxseg's CPU kernels on one device
# only): the runs then differ only in how the batch is split. With the kernels, Adam
# turns rounding-level differences of near-zero gradients into full-size updates.
config.compute.conv_library = config.compute.norm_kernel = 'xla'
train_and_evaluate(config, sys.argv[1])
'''


def _train(workdir, num_devices):
  env = {**os.environ,
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={num_devices}',
         'PYTHONPATH': os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')])}
  subprocess.run([sys.executable, '-c', _TRAIN, str(workdir), str(num_devices)], cwd=ROOT,
                 env=env, check=True, capture_output=True)


def _final_params(workdir, config):
  state, summary = final_state(workdir, config)
  return flat_params(state), summary


_TRAIN_PROCESS = '''
import sys
from jaxseg.xla_flags import apply_default_flags
apply_default_flags()
import jax
from jaxseg import parallel
parallel.initialize_distributed(sys.argv[2], 2, int(sys.argv[3]))
from helpers import tiny
from configs import unet
from jaxseg.training import train_and_evaluate
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 2, 1)
config = tiny(unet.get_config(None))
# XLA's ops on every device count ('auto' would pick jaxseg's CPU kernels on one device
# only): the runs then differ only in how the batch is split. With the kernels, Adam
# turns rounding-level differences of near-zero gradients into full-size updates.
config.compute.conv_library = config.compute.norm_kernel = 'xla'
train_and_evaluate(config, sys.argv[1])
'''


def _train_two_processes(workdir):
  """Two processes of one CPU device each, joined by jax.distributed on localhost."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
         'PYTHONPATH': os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')])}
  processes = [subprocess.Popen([sys.executable, '-c', _TRAIN_PROCESS, str(workdir),
                                 f'localhost:{port}', str(i)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
  for process in processes:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def _close(a, b):
  (params_a, summary_a), (params_b, summary_b) = a, b
  assert np.abs(params_a - params_b).max() < 1e-5 * max(1.0, np.abs(params_a).max())
  # Thresholded masks may flip a pixel on float32 summation-order differences.
  assert abs(summary_a['dice'] - summary_b['dice']) < 1e-3


def test_two_devices_and_two_processes_train_like_one(tmp_path, tiny_unet_config):
  results = {}
  for num_devices in (1, 2):
    _train(tmp_path / str(num_devices), num_devices)
    results[num_devices] = _final_params(tmp_path / str(num_devices), tiny_unet_config)
  _close(results[1], results[2])
  # The checkpoint that two processes wrote together restores in this one process.
  _train_two_processes(tmp_path / 'processes')
  _close(results[2], _final_params(tmp_path / 'processes', tiny_unet_config))
