import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxseg.xla_flags import DEFAULT_FLAGS, apply_default_flags, enable_compilation_cache


def test_defaults_are_added_but_never_override_the_user():
  env = {}
  assert apply_default_flags(env).split() == list(DEFAULT_FLAGS)
  name = DEFAULT_FLAGS[0].split('=')[0]
  env = {'XLA_FLAGS': f'{name}=LIBRARY_FUSION_TYPE_NONE --xla_dump_to=/tmp/x'}
  assert apply_default_flags(env) == f'{name}=LIBRARY_FUSION_TYPE_NONE --xla_dump_to=/tmp/x'
  env = {'JAXSEG_XLA_DEFAULTS': '0'}
  assert apply_default_flags(env) == ''


_GRADIENT = '''
import sys, jax, jax.numpy as jnp, numpy as np
from jaxseg.models import UNet, UNetSettings
x = jax.random.normal(jax.random.key(0), (2, 16, 16, 4))
model = UNet(UNetSettings(features=(8, 16), num_outputs=3))
params = jax.jit(model.init)(jax.random.key(1), x)['params']
grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x)[0] ** 2)))(params)
np.save(sys.argv[1], np.concatenate([g.ravel() for g in jax.tree.leaves(grads)]))
'''


def test_default_flags_keep_the_numerics(tmp_path):
  """A U-Net gradient with the default XLA flags equals the one without (float32)."""
  results = {}
  for defaults in ('1', '0'):
    env = {**os.environ, 'JAXSEG_XLA_DEFAULTS': defaults, 'XLA_FLAGS': ''}
    script = 'from jaxseg.xla_flags import apply_default_flags; apply_default_flags()\n' + _GRADIENT
    path = tmp_path / f'{defaults}.npy'
    subprocess.run([sys.executable, '-c', script, str(path)], env=env, check=True)
    results[defaults] = np.load(path)
  # Equal up to float32 summation order: relative error of the whole gradient ~1e-7.
  relative_error = np.linalg.norm(results['1'] - results['0']) / np.linalg.norm(results['0'])
  assert relative_error < 1e-5


def test_compilation_cache_is_written_then_reused_with_the_same_results(tmp_path):
  """The first run stores its compiled programs under $JAXSEG_CACHE_DIR/xla, the second
  loads them (no new entries) and computes bitwise the same gradient."""
  env = {**os.environ, 'JAXSEG_CACHE_DIR': str(tmp_path / 'cache'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}  # cache even quick compiles
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  script = ('from jaxseg.xla_flags import apply_default_flags, enable_compilation_cache\n'
            'apply_default_flags(); enable_compilation_cache()\n'
            'import sys, jax, jax.numpy as jnp, numpy as np\n'
            'x = jnp.linspace(0.0, 1.0, 64 * 64).reshape(64, 64)\n'
            'np.save(sys.argv[1], jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x @ x))))(x))\n')
  entries = []
  for run in range(2):
    subprocess.run([sys.executable, '-c', script, str(tmp_path / f'{run}.npy')], env=env,
                   check=True)
    entries.append(sorted(os.listdir(tmp_path / 'cache' / 'xla')))
  assert any('jit' in name for name in entries[0])
  assert entries[1] == entries[0]
  np.testing.assert_array_equal(np.load(tmp_path / '1.npy'), np.load(tmp_path / '0.npy'))


def test_compilation_cache_can_be_turned_off_and_survives_an_unwritable_directory(
    tmp_path, capsys):
  assert enable_compilation_cache({'JAXSEG_COMPILATION_CACHE': '0'}) is None
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  assert enable_compilation_cache({'JAXSEG_CACHE_DIR': str(blocker)}) is None
  assert capsys.readouterr().err.count('\n') == 1  # one line, no traceback
  try:
    directory = enable_compilation_cache({'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax')})
    assert directory == str(tmp_path / 'jax') and os.path.isdir(directory)
    assert jax.config.jax_compilation_cache_dir == directory
  finally:
    jax.config.update('jax_compilation_cache_dir', None)  # not for the other tests


_REALLOCATE = '''
import resource, sys
import numpy as np
from jaxseg.xla_flags import keep_freed_host_memory
applied = keep_freed_host_memory()
size = 256 * 2**20  # as large as a train step's temporaries
np.ones(size, np.uint8)  # allocated, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(size, np.uint8)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_freed_host_memory_is_reused_without_page_faults():
  """With keep_freed_host_memory, a second block as large as the first reuses its
  pages; with JAXSEG_KEEP_HOST_MEMORY=0, glibc maps fresh ones (faulted in again)."""
  faults = {}
  for keep in ('1', '0'):
    out = subprocess.run([sys.executable, '-c', _REALLOCATE], check=True, text=True,
                         stdout=subprocess.PIPE,
                         env={**os.environ, 'JAXSEG_KEEP_HOST_MEMORY': keep}).stdout.split()
    assert out[0] == str(keep == '1')
    faults[keep] = int(out[1])
  # 256 MiB is 128 2-MiB huge pages or 65,536 small ones when faulted in afresh.
  assert faults['1'] < 16 <= 128 <= faults['0'], faults
