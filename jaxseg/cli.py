"""Shared command-line plumbing of train.py and eval.py: one-line errors, no tracebacks.

Set JAXSEG_TRACEBACK=1 to see the full traceback of an error instead.
"""

import os
import sys
from typing import Callable

from absl import flags

from jaxseg.checkpointing import CheckpointError

# Errors that come from what the user handed over (config values, files, workdirs).
USER_ERRORS = (CheckpointError, ValueError, OSError)


def fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config-file and override errors reduced to one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(_first_line(error))
  except (AttributeError, KeyError, TypeError, ValueError, SyntaxError) as error:
    # ml_collections raises these for unknown keys and mistyped --config.x=y values.
    fail(f'bad --config: {_first_line(error)}')
  return []


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
