import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxseg.startup import default_accelerator, restart_environment, script_of
from jaxseg.xla_flags import (DEFAULT_FLAGS, allocator_environment, apply_default_flags,
                              current_glibc_version, enable_compilation_cache,
                              huge_pages_environment)


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
import ctypes, os, resource, sys
from jaxseg.startup import restart_with_huge_pages
from jaxseg.xla_flags import keep_freed_host_memory
restart_with_huge_pages()
kept = keep_freed_host_memory()
# Plain malloc, as XLA:CPU allocates (numpy madvises its large arrays itself).
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 * 2**20  # as large as a train step's temporaries
def touch_and_free():
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free()
print(os.environ.get('GLIBC_TUNABLES', '-'), kept,
      resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults_of_a_fresh_block(tmp_path, huge_pages=True,
                             keep_memory=False) -> tuple[str, bool, int]:
  """(GLIBC_TUNABLES, kept, page faults of a second 256 MiB block) in a new process,
  a script (only those restart) on the CPU backend whatever the host."""
  env = {**allocator_environment(os.environ, huge_pages=huge_pages, keep_memory=keep_memory),
         'JAX_PLATFORMS': 'cpu'}
  script = tmp_path / 'reallocate.py'
  script.write_text(_REALLOCATE)
  out = subprocess.run([sys.executable, str(script)], check=True, text=True,
                       stdout=subprocess.PIPE, env=env).stdout.split()
  return out[0], out[1] == 'True', int(out[2])


def _thp_mode() -> str:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled', encoding='ascii') as f:
      return f.read()
  except OSError:
    return ''


def test_huge_pages_environment_decides_once_and_keeps_other_tunables():
  madvise = 'always [madvise] never'
  env = huge_pages_environment({'PATH': '/bin'}, (2, 36), madvise)
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  env = huge_pages_environment({'GLIBC_TUNABLES': 'glibc.pthread.rseq=0'}, (2, 39), madvise)
  assert env['GLIBC_TUNABLES'] == 'glibc.pthread.rseq=0:glibc.malloc.hugetlb=1'
  # After the restart (or the user's own choice, even 0): no second restart.
  assert huge_pages_environment(env, (2, 39), madvise) is None
  assert huge_pages_environment({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 39),
                                madvise) is None
  assert huge_pages_environment({'JAXSEG_HUGE_PAGES': '0'}, (2, 36), madvise) is None
  # Of no use: glibc before 2.35 ignores the tunable; musl; no huge pages in the kernel.
  assert huge_pages_environment({}, (2, 34), madvise) is None
  assert huge_pages_environment({}, None, madvise) is None
  assert huge_pages_environment({}, (2, 36), 'always madvise [never]') is None
  assert huge_pages_environment({}, (2, 36), '') is None
  assert huge_pages_environment({}, (2, 36), '[always] madvise never') is not None


def test_allocator_environment_lets_the_child_decide_and_keeps_other_tunables():
  parent = {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.pthread.rseq=0:glibc.malloc.hugetlb=1'}
  child = allocator_environment(parent, huge_pages=False, keep_memory=True)
  assert child == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.pthread.rseq=0',
                   'JAXSEG_HUGE_PAGES': '0', 'JAXSEG_KEEP_HOST_MEMORY': '1'}
  child = allocator_environment({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'},
                                huge_pages=True, keep_memory=False)
  assert child == {'JAXSEG_HUGE_PAGES': '1', 'JAXSEG_KEEP_HOST_MEMORY': '0'}
  # The child restarts itself with huge pages: the tunable is not inherited as decided.
  assert huge_pages_environment(child, (2, 36), 'always [madvise] never') is not None


# A CPU host running `python train.py ...`: no accelerator plugin or device, glibc with
# the tunable, the kernel's huge pages on request.
_CPU_HOST = {'orig_argv': ['python', 'train.py', '--workdir=runs/x'],
             'argv': ['train.py', '--workdir=runs/x'], 'main_file': '/repo/train.py',
             'installed': ['jax', 'jaxlib', 'numpy'], 'devices': ['/dev/null'],
             'glibc_version': (2, 39), 'thp_mode': 'always [madvise] never'}


def _restarts(environ=None, **host) -> bool:
  return restart_environment(environ or {}, **{**_CPU_HOST, **host}) is not None


def test_the_restart_is_for_the_cpu_backend_only():
  assert restart_environment({'PATH': '/bin'}, **_CPU_HOST) == {
      'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  # Named: the first of JAX_PLATFORMS is JAX's default; JAX_PLATFORM_NAME picks one.
  for platforms in ('cuda', 'tpu', 'gpu', 'rocm', 'cuda,cpu', 'TPU'):
    assert not _restarts({'JAX_PLATFORMS': platforms}), platforms
  assert _restarts({'JAX_PLATFORMS': 'cpu'}) and _restarts({'JAX_PLATFORMS': 'cpu,cuda'})
  assert not _restarts({'JAX_PLATFORM_NAME': 'gpu'})
  # Found: an accelerator's plugin and its device; either alone leaves JAX on the CPU.
  gpu_host = {'installed': ['jax', 'jax-cuda12-plugin', 'jax-cuda12-pjrt'],
              'devices': ['/dev/nvidiactl', '/dev/nvidia0']}
  assert default_accelerator({}, **gpu_host) == 'cuda' and not _restarts(**gpu_host)
  assert _restarts({'JAX_PLATFORMS': 'cpu'}, **gpu_host)
  assert _restarts({'JAX_PLATFORM_NAME': 'cpu'}, **gpu_host)
  assert _restarts(installed=['jax-cuda12-plugin'], devices=['/dev/nvidiactl'])
  assert _restarts(devices=['/dev/nvidia0', '/dev/accel0', '/dev/kfd'])
  assert not _restarts(installed=['jax_cuda13_plugin'], devices=['/dev/nvidia3'])
  assert not _restarts(installed=['jax-cuda12-plugin'], devices=['/dev/dxg'])  # WSL2
  assert not _restarts(installed=['jax-rocm60-plugin'], devices=['/dev/kfd'])
  assert default_accelerator({}, ['libtpu'], ['/dev/accel0']) == 'tpu'
  assert not _restarts(installed=['libtpu-nightly'], devices=['/dev/vfio/vfio', '/dev/vfio/0'])
  assert _restarts(installed=['libtpu'], devices=['/dev/vfio/vfio'])  # the driver, no TPU


def test_the_restart_is_for_a_script_run_as_given_only():
  """Re-executing the command reruns the same program only then."""
  assert _restarts(orig_argv=['python3', '-X', 'importtime', '-u', '-Wignore', 'train.py'],
                   argv=['train.py'])
  assert _restarts(orig_argv=['/venv/bin/python', '-W', 'ignore', '-Xdev', '/repo/eval.py'],
                   argv=['/repo/eval.py'])
  not_scripts = {
      '-c': (['python', '-c', 'import train'], ['-c'], None),
      'options and -c': (['python', '-Bc', 'import train'], ['-c'], None),
      '-m': (['python', '-m', 'pytest', 'tests'], ['/venv/pytest/__main__.py', 'tests'],
             '/venv/pytest/__main__.py'),
      'interactive': (['python'], [''], None),
      'standard input': (['python', '-'], ['-'], None),
      'a notebook': (['python', '-m', 'ipykernel_launcher', '-f', 'k.json'],
                     ['/venv/ipykernel_launcher.py', '-f', 'k.json'], None),
      'IPython': (['python', '/venv/bin/ipython'], ['/venv/bin/ipython'], None),
      'embedded': ([], [''], None),
      'a -c wrapper': (['python', '-c', 'runpy...', 'flag', 'train.py'], ['train.py'],
                       '/repo/train.py'),
  }
  for name, (orig_argv, argv, main_file) in not_scripts.items():
    assert not _restarts(orig_argv=orig_argv, argv=argv, main_file=main_file), name
  assert script_of(['python', '-X', 'importtime', 'train.py', '-c', 'x']) == 'train.py'
  assert script_of(['python', '--check-hash-based-pycs', 'always', 'x.py']) == 'x.py'
  assert script_of(['python', '-i']) is None


def test_the_restart_keeps_its_switch_and_needs_glibc_and_the_kernel():
  assert not _restarts({'JAXSEG_HUGE_PAGES': '0'})
  assert not _restarts({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})  # restarted already
  assert not _restarts(glibc_version=(2, 34)) and not _restarts(glibc_version=None)
  assert not _restarts(thp_mode='always madvise [never]') and not _restarts(thp_mode='')


_PREPARE = '''
import json, os
from jaxseg.startup import prepare_process
prepare_process(compilation_cache=False)
print(json.dumps(['glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', ''),
                  os.environ['XLA_FLAGS']]))
'''


@pytest.mark.skipif(huge_pages_environment({}, current_glibc_version(), _thp_mode()) is None,
                    reason='glibc >= 2.35 and transparent huge pages')
def test_prepare_process_restarts_a_script_on_the_cpu_and_sets_the_flags_everywhere(tmp_path):
  script = tmp_path / 'program.py'
  script.write_text(_PREPARE)
  env = {**allocator_environment(os.environ, huge_pages=True, keep_memory=False),
         'XLA_FLAGS': ''}

  def huge_pages_and_flags(*command, platforms):
    return json.loads(subprocess.run(
        [sys.executable, *command], check=True, text=True, stdout=subprocess.PIPE,
        env={**env, 'JAX_PLATFORMS': platforms}).stdout)

  flags = ' '.join(DEFAULT_FLAGS)
  assert huge_pages_and_flags(str(script), platforms='cpu') == [True, flags]
  assert huge_pages_and_flags(str(script), platforms='tpu') == [False, flags]
  assert huge_pages_and_flags('-c', _PREPARE, platforms='cpu') == [False, flags]


@pytest.mark.skipif(not sys.platform.startswith('linux') or '[never]' in _thp_mode()
                    or not _thp_mode(), reason='Linux with transparent huge pages')
def test_restart_with_huge_pages_faults_large_blocks_in_2_mib_at_a_time(tmp_path):
  """train.py's first call re-executes the command with glibc's huge-page malloc; a
  fresh 256 MiB block then faults in as 2 MiB pages, and JAXSEG_HUGE_PAGES=0 keeps
  glibc's 4 KiB pages. (Skipped where glibc is older than 2.35: nothing to restart.)"""
  tunables, _, faults = _faults_of_a_fresh_block(tmp_path)
  if tunables == '-':
    pytest.skip('glibc without the hugetlb tunable')
  assert 'glibc.malloc.hugetlb=1' in tunables
  off_tunables, _, faults_off = _faults_of_a_fresh_block(tmp_path, huge_pages=False)
  assert off_tunables == '-'
  # 256 MiB is 128 2-MiB pages or 65,536 small ones; the kernel may fall back to small
  # pages at the block's unaligned ends and where it has no free huge page.
  assert faults < 8192 and faults_off >= 65536 // 2, (faults, faults_off)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_kept_host_memory_is_opt_in_and_reuses_freed_pages(tmp_path):
  """JAXSEG_KEEP_HOST_MEMORY=1: a second block as large as the first reuses its pages;
  by default glibc maps fresh ones (faulted in again)."""
  _, kept, faults_kept = _faults_of_a_fresh_block(tmp_path, huge_pages=False,
                                                  keep_memory=True)
  _, default, faults_default = _faults_of_a_fresh_block(tmp_path, huge_pages=False)
  assert kept and not default
  assert faults_kept < 16 <= 65536 // 2 <= faults_default, (faults_kept, faults_default)
