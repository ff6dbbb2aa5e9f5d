"""One training run per workdir: `<workdir>/train.lock`, held while train.py trains there.

The lock file is created with O_CREAT | O_EXCL (atomic, also on NFS from v3 on) and
names its holder: host, process id, the process's start (to tell a reused process id
from the holder) and when the run started. A second run on the same workdir (the job
submitted twice, a second terminal) is refused in one line naming the holder. A lock
whose holder is gone (same host, process ended: killed, power loss) is taken over with
a note. A lock held on another host cannot be checked from here: the line says how to
free it. eval.py never takes the lock: it reads complete checkpoints only.

A job of several processes holds the lock once: process 0 takes it and tells the
others whether it got it.
"""

import contextlib
import json
import os
import socket
import sys
import time
from typing import Iterator

from jaxseg.errors import WorkdirError

LOCK_FILE = 'train.lock'


def _process_start(pid: int) -> str | None:
  """The start time of process `pid` in clock ticks since boot (Linux), or None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # Field 22; the command name (field 2) may hold spaces and ')', so count from the end.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def holder_of_this_process() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'process_start': _process_start(os.getpid()),
          'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}


def _is_gone(holder: dict) -> bool:
  """True when the holder ran on this host and its process has ended (or its id now
  belongs to a process started later)."""
  if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
    return False
  try:
    os.kill(holder['pid'], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    pass
  start = holder.get('process_start')
  return start is not None and _process_start(holder['pid']) not in (None, start)


def _read(path: str) -> dict | None:
  """The holder in the lock file; None when it is unreadable or not written yet."""
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


def _describe(holder: dict) -> str:
  return (f"process {holder.get('pid')} on host {holder.get('host')}, started "
          f"{holder.get('started')}")


def acquire(workdir: str, note=lambda line: print(f'note: {line}', file=sys.stderr)) -> str:
  """Takes the workdir's lock for this process; returns the lock file's path. Raises
  WorkdirError naming the holder when another live run holds it."""
  path = os.path.join(workdir, LOCK_FILE)
  me = holder_of_this_process()
  for _ in range(3):  # a stale lock taken over by a third run meanwhile: look again
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      if holder is None:
        raise WorkdirError(f'--workdir {workdir}: {path} exists but names no run (being '
                           'written, or damaged); if no run uses this workdir, delete it '
                           'and start again') from None
      if not _is_gone(holder):
        raise WorkdirError(f'--workdir {workdir} is in use by another training run '
                           f'({_describe(holder)}; {path}); wait for it, stop it, or choose '
                           'another --workdir; if that run is gone, delete the file') from None
      _take_over(path, holder, note)
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    return path
  raise WorkdirError(f'--workdir {workdir}: {path} keeps being taken by other runs')


def _take_over(path: str, holder: dict, note) -> None:
  """Removes the stale lock of `holder`; acquire then creates its own."""
  # Renamed away first: of two runs taking over at once, one moves the stale lock and
  # creates a fresh one, which the other, having moved it, puts back and then finds live.
  moved = f'{path}.stale-{os.getpid()}'
  try:
    os.rename(path, moved)
  except FileNotFoundError:
    return
  if _read(moved) != holder:
    with contextlib.suppress(FileExistsError):
      os.link(moved, path)
  else:
    note(f'took over {path} from {_describe(holder)}, which has ended')
  os.remove(moved)


def release(path: str) -> None:
  """Removes the lock file if it is still this process's."""
  holder = _read(path)
  if holder and holder.get('pid') == os.getpid() and holder.get('host') == socket.gethostname():
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def held(workdir: str, process_index: int = 0, process_count: int = 1) -> Iterator[None]:
  """The workdir locked for the duration of the block, and released on every way out of
  it (return, error, a signal turned into an exception). Process 0 of a job holds it;
  every process of the job raises when process 0 could not take it."""
  path, problem = None, None
  if process_index == 0:
    try:
      path = acquire(workdir)
    except WorkdirError as error:
      problem = error
  if process_count > 1:
    # pylint: disable=import-outside-toplevel  (jax: only for jobs of several processes)
    import numpy as np
    from jax.experimental import multihost_utils
    got = multihost_utils.broadcast_one_to_all(np.int32(problem is None))
    if problem is None and not int(got):
      problem = WorkdirError(f'--workdir {workdir}: process 0 of this job could not take '
                             f'{os.path.join(workdir, LOCK_FILE)} (its own line says why)')
  if problem is not None:
    raise problem
  try:
    yield
  finally:
    if path is not None:
      release(path)
