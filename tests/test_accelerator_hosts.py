"""On a GPU or TPU host nothing CPU-specific runs: jaxseg's C++ kernels are never loaded
(or traced into a step) and the process is not restarted for huge-page malloc.

No accelerator is needed: JAX's default backend and the host's installed plugins and
device files are faked, which is all jaxseg reads to decide.
"""

import json
import os
import subprocess
import sys

from jaxseg import startup
from jaxseg.models.backend import fused_norm, onednn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh interpreter (the kernels load once per process): for each platform named,
# builds the 3D U-Net's train step with JAX's default backend reported as that platform,
# lowers it (no compiling), and says whether a kernel library was loaded so far and
# whether the step calls a kernel.
_STEP_ON = '''
import json, sys
import jax
import jax.numpy as jnp
from configs import unet
from jaxseg.data import SegmentationData
from jaxseg.data.regions import BRATS_2023_REGIONS
from jaxseg.models.backend import fused_norm, onednn
from jaxseg.train_state import setup_model
from jaxseg.train_step import make_train_step
config = unet.get_config('3d')
config.data.image_size, config.model.features = (8, 8, 8), (4, 8)
data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, tuple(config.data.modalities))
batch = {'image': jax.ShapeDtypeStruct((2, 8, 8, 8, 4), jnp.float32),
         'target': jax.ShapeDtypeStruct((2, 8, 8, 8, 3), jnp.uint8)}
cpu_backend = jax.default_backend
for platform in sys.argv[1:]:
  jax.default_backend = cpu_backend if platform == 'cpu' else (lambda: platform)
  model, _, state = setup_model(config, data)
  hlo = make_train_step(config).lower(state, batch).as_text()
  with open('/proc/self/maps') as f:
    maps = f.read()
  print(json.dumps({'ops': [model.ops.conv_library, model.ops.norm_kernel, model.ops.conv3d],
                    'load_tried': onednn._load.cache_info().currsize
                                  + fused_norm._load.cache_info().currsize,
                    'mapped': [name for name in ('_onednn', '_group_norm', 'libdnnl')
                               if name in maps],
                    'kernel_calls': hlo.count('jaxseg_')}))
'''


def _steps_on(*platforms: str) -> list[dict]:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAXSEG_XLA_DEFAULTS': '0'}
  out = subprocess.run([sys.executable, '-c', _STEP_ON, *platforms], cwd=ROOT, env=env,
                       check=True, text=True, stdout=subprocess.PIPE).stdout
  return [json.loads(line) for line in out.strip().splitlines()[-len(platforms):]]


def test_gpu_and_tpu_hosts_load_no_cpu_kernel():
  nothing_cpu = {'ops': ['xla', 'xla', 'native'], 'load_tried': 0, 'mapped': [],
                 'kernel_calls': 0}
  # The same process then reports the CPU: it does load and call the kernels, where they
  # are built, so the observations can see a kernel.
  built = onednn.available() and fused_norm.available()
  gpu, tpu, *cpu = _steps_on('gpu', 'tpu', *(['cpu'] if built else []))
  assert gpu == nothing_cpu and tpu == nothing_cpu
  if built:
    [on_cpu] = cpu
    assert on_cpu['ops'] == ['onednn', 'cpu', 'native'] and on_cpu['load_tried'] == 2
    assert {'_onednn', '_group_norm'} <= set(on_cpu['mapped']) and on_cpu['kernel_calls'] > 0


def _prepare_on_host(monkeypatch, installed, devices) -> list:
  """prepare_process for `python train.py` on a host with glibc's huge-page malloc
  available and these plugins and device files; the re-executions it asked for."""
  monkeypatch.setattr(startup, '_installed_distributions', lambda: installed)
  monkeypatch.setattr(startup, '_device_files', lambda: devices)
  monkeypatch.setattr(startup, 'current_glibc_version', lambda: (2, 39))
  monkeypatch.setattr(startup, '_thp_mode', lambda: 'always [madvise] never')
  monkeypatch.setattr(sys, 'orig_argv', ['python', 'train.py'])
  monkeypatch.setattr(sys, 'argv', ['train.py'])
  monkeypatch.setattr(sys.modules['__main__'], '__file__', '/repo/train.py', raising=False)
  restarts = []
  monkeypatch.setattr(startup.os, 'execve', lambda *args: restarts.append(args))
  environ = {'PATH': '/bin'}
  startup.prepare_process(compilation_cache=False, environ=environ)
  assert 'GLIBC_TUNABLES' not in environ  # nothing set in this process either
  return restarts


def test_gpu_and_tpu_hosts_are_not_restarted_for_huge_pages(monkeypatch):
  assert not _prepare_on_host(monkeypatch, ['jax', 'jax-cuda13-plugin', 'jax-cuda13-pjrt'],
                              ['/dev/nvidiactl', '/dev/nvidia0'])
  assert not _prepare_on_host(monkeypatch, ['jax', 'libtpu'], ['/dev/vfio/0'])
  # A CPU host with the same settings is restarted: the fakes reach the decision.
  [(_, argv, environ)] = _prepare_on_host(monkeypatch, ['jax', 'jaxlib'], ['/dev/null'])
  assert argv == ['python', 'train.py'] and environ['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
