"""What several test modules share: tiny configs, running the command lines, restoring a
run's final state, and reading training batches of a config. Not a test module."""

import os
import subprocess
import sys

import numpy as np

from jaxseg import checkpointing, parallel
from jaxseg.data import load_splits
from jaxseg.train_state import setup_model
from jaxseg.training import make_train_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags() -> set[str]:
  """The CPU's feature flags as Linux lists them (avx2, avx512f, ...); empty elsewhere."""
  try:
    with open('/proc/cpuinfo', encoding='ascii', errors='replace') as cpuinfo:
      return {flag for line in cpuinfo if line.startswith('flags')
              for flag in line.split(':', 1)[1].split()}
  except OSError:
    return set()


def tiny(config, num_iterations=2):
  """Shrinks a config: 32x32 images, two levels, a handful of cases and steps."""
  config.data.image_size = (32, 32)
  config.data.num_train_cases = 4
  config.data.num_val_cases = 3
  config.model.features = (8, 16)
  if 'num_iterations' in config.model:
    config.model.num_iterations = num_iterations
  config.train.num_steps = 4
  config.train.batch_size = 2
  config.train.warmup_steps = 1
  config.train.log_every_steps = 2
  config.eval.every_steps = 2
  config.eval.batch_size = 2
  config.checkpoint.every_steps = 2
  return config


def batches_of(data, config, process_index=0, process_count=1):
  """The training batches train.py reads for `config`."""
  return make_train_batches(config, data, process_index, process_count)


def final_state(workdir, config):
  """(train state, validation summary) of the latest checkpoint of `workdir`."""
  checkpointer = checkpointing.Checkpointer(str(workdir), create=False)
  _, _, abstract_state = setup_model(config, load_splits(config.data, ('train',))['train'])
  restored = checkpointing.restore_train_state(checkpointer, checkpointer.latest_step(),
                                               abstract_state,
                                               parallel.replicated(parallel.make_mesh()))
  return restored['state'], restored['summary']


def flat_params(state) -> np.ndarray:
  import jax  # pylint: disable=import-outside-toplevel
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])


def run(script, *args, env=None):
  """(exit status, stdout, stderr) of `python script args...` in the repository root."""
  result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
  return result.returncode, result.stdout, result.stderr


def assert_mentions(text: str, *words) -> None:
  """Each of `words` (what a user looks for: the file, the key, the value) is in `text`;
  the rest of the wording is free to change."""
  for word in words:
    assert word in text, f'{word!r} not in {text!r}'


def assert_one_line_error(code, stderr, *words):
  """A non-zero exit, one line on stderr, no traceback, and each of `words` in it."""
  assert code != 0
  lines = [line for line in stderr.strip().splitlines() if line.strip()]
  assert len(lines) == 1, stderr
  assert 'Traceback' not in stderr
  for word in words:
    assert word in lines[0], lines[0]


# `python -c SLOW_SAVE FLAG train.py ...`: train.py with Orbax's final rename of the
# checkpoint of step 8 held up, so that a signal lands while that checkpoint is being
# saved; FLAG (a file) appears when the save is under way. Orbax has no public way to
# hold a save in flight: this patch of its internal `atomicity` module is the one
# private Orbax or JAX path that the tests touch.
SLOW_SAVE = '''
import asyncio, runpy, sys
from orbax.checkpoint.path import atomicity
flag = sys.argv[1]
original = atomicity.AtomicRenameTemporaryPath.finalize
async def slow_finalize(self, *args, **kwargs):
  if self.get_final().name == '8':
    open(flag, 'w').close()
    await asyncio.sleep(600)
  return await original(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = slow_finalize
sys.argv = sys.argv[2:]
runpy.run_path('train.py', run_name='__main__')
'''
