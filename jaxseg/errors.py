"""Errors that come from what the user handed over: config values, data, checkpoints,
workdirs, and stops that the user (or the scheduler) asked for.

Each is raised where the input is checked, with a one-line message that names the
thing (the file, the key, the step) and the problem. train.py and eval.py print that
line and exit with the error's `exit_status`; any other exception is a bug in jaxseg
and keeps its traceback (cli.py).

ConfigError and DataError are also ValueErrors, so library callers that catch
ValueError for bad values keep working.
"""


class UserError(Exception):
  """A problem with the user's input or environment; the message is one line."""
  exit_status = 2


class ConfigError(UserError, ValueError):
  """A config value, config file or command-line flag that cannot be used."""


class DataError(UserError, ValueError):
  """A data directory or file that cannot be used; the message names the file."""


class CheckpointError(UserError):
  """A checkpoint that is missing, damaged or of another model; names its directory."""


class WorkdirError(UserError):
  """A workdir, output directory or file in it that cannot be used as it is."""


class NonFiniteError(UserError, ValueError):
  """A non-finite loss or gradient stopped training; the message names the step."""


class Stopped(UserError):
  """A run stopped on a signal; the message says where it can resume from.

  Exit status 128 + the signal number, as a shell reports a process ended by that
  signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM. Not 0, so a wrapper (`train.py &&
  eval.py`, a requeue loop) does not mistake a stopped run for a finished one.
  """

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_status = 128 + signal_number
