"""SIGTERM (what SLURM and TPU pre-emption send) as a request to checkpoint and stop."""

import signal
import threading


class SigtermRequest:
  """Context manager; `requested` turns True when the process receives SIGTERM.

  The training loop polls it after every step, saves a checkpoint of that step and
  returns, so a pre-empted job resumes exactly there when started again.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals need the main thread
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
