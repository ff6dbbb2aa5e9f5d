"""Shared command-line plumbing of train.py and eval.py: one-line errors, no tracebacks.

Set JAXSEG_TRACEBACK=1 to see the full traceback of an error instead.
"""

import importlib.util
import os
import sys
from typing import Callable

from absl import flags

from jaxseg.checkpointing import CheckpointError
from jaxseg.workdir import WorkdirError

# Errors that come from what the user handed over (config values, files, workdirs).
USER_ERRORS = (CheckpointError, WorkdirError, ValueError, OSError)


def fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config-file and override errors reduced to one line."""
  try:
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      flags.FLAGS.config.keys()  # a config that failed to load raises only when used
    return remaining
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, SyntaxError,
          OSError) as error:
    # ml_collections raises these for unknown keys and mistyped --config.x=y values.
    if 'config file' in str(error):
      fail(_config_file_problem(argv))
    if isinstance(error, flags.Error):
      fail(_first_line(error))
    if isinstance(error, (AttributeError, KeyError)):
      fail(f'bad --config: no such config key {_first_line(error).strip(chr(34))}')
    fail(f'bad --config: {_first_line(error)}')
  return []


def _config_file_problem(argv: list[str]) -> str:
  """ml_collections hides why a config file failed to load; find out again."""
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    return f'--config={spec}: no such config file {path!r}'
  try:
    module_spec = importlib.util.spec_from_file_location('user_config', path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, os.getcwd())
    module_spec.loader.exec_module(module)
    module.get_config(*([variant] if variant else []))
  except Exception as error:  # anything a config file can raise  # pylint: disable=broad-except
    return f'--config={spec}: {_first_line(error)}'
  return f'--config={spec}: could not be loaded'


def run(function: Callable[[], object]) -> None:
  """Runs `function`, turning user errors and Ctrl-C into one line and exit status 2."""
  try:
    function()
  except USER_ERRORS as error:
    if os.environ.get('JAXSEG_TRACEBACK'):
      raise
    fail(_first_line(error))
  except KeyboardInterrupt:
    fail('interrupted; the checkpoints in the workdir are intact, rerun the command to resume')


def _first_line(error: Exception) -> str:
  text = str(error).strip() or type(error).__name__
  return text.splitlines()[0]
