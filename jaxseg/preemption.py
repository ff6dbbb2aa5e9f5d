"""SIGTERM (what SLURM and TPU pre-emption send): during training a request to checkpoint
and stop (SigtermRequest), before it a stop at once (StopOnSigterm)."""

import signal
import threading

from jaxseg.errors import Stopped


class _SigtermHandler:
  """Context manager installing `_handle` for SIGTERM, the previous handler restored on
  exit; signals can only be handled in the main thread, elsewhere it does nothing."""

  def __init__(self):
    self._previous = None

  def _handle(self, signum, frame):
    raise NotImplementedError

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class SigtermRequest(_SigtermHandler):
  """`requested` turns True when the process receives SIGTERM.

  The training loop polls it after every step, saves a checkpoint of that step and
  returns, so a pre-empted job resumes exactly there when started again.
  """

  def __init__(self):
    super().__init__()
    self.requested = False

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


class StopOnSigterm(_SigtermHandler):
  """SIGTERM raises `Stopped(message)` at once: for start-up, preprocessing and
  compiling, where there is nothing to save. The exception unwinds through every
  `finally`, so worker processes are ended and the workdir's lock is released, as for
  Ctrl-C; a SigtermRequest nested inside defers SIGTERM while training."""

  def __init__(self, message: str):
    super().__init__()
    self.message = message

  def _handle(self, signum, frame):
    del frame
    raise Stopped(self.message, signum)
