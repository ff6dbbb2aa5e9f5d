"""Training batches placed on the devices ahead of the steps that take them:
`data.prefetch_to_device` batches deep.

A thread draws batches from the host iterator (input_pipeline.train_iterator) and
starts their host-to-device copies (`place`, parallel.shard_batch), so that the copy,
and any wait on the host pipeline, overlaps the steps before them, and a pause of the
loop (logging, validation) fills the queue instead of leaving the devices to wait
after it. JAX's asynchronous dispatch alone overlaps only while the loop does not wait
on the device.

The host iterator runs ahead of the steps, so its own state is not where a resumed run
must start: each batch travels with the iterator's state after it, and `get_state()`
is that of the last batch handed out, the position a checkpoint of the step that took
it saves. Depth 0 places each batch when it is asked for, in the caller's thread.
"""

import queue
import threading
from typing import Any, Callable, Iterator

import ml_collections

from jaxseg.errors import ConfigError


def check_config(data_config: ml_collections.ConfigDict) -> None:
  depth = data_config.prefetch_to_device
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
    raise ConfigError(f'data.prefetch_to_device must be a whole number >= 0 (0: off), '
                      f'got {depth!r}')


class DevicePrefetch:
  """Iterator over `place(batch)` of `host`'s batches, placed ahead: `depth` wait in
  a queue while the thread draws and places the one after them.

  `host` is an iterator with get_state() (a grain DatasetIterator). `close()` ends the
  thread; use the object as a context manager. An error raised by the host iterator
  or by `place` is raised by the `next` that would have returned that batch.
  """

  _POLL_SECONDS = 0.1  # how often a thread blocked on a full queue looks for close()

  def __init__(self, host: Iterator, place: Callable[[Any], Any], depth: int):
    self._host, self._place, self._depth = host, place, depth
    self._error = None
    if depth > 0:
      self._state = host.get_state()
      self._queue = queue.Queue(maxsize=depth)
      self._closed = threading.Event()
      self._thread = threading.Thread(target=self._fill, name='device-prefetch', daemon=True)
      self._thread.start()

  def _fill(self) -> None:
    """The thread: (placed batch, state after it) into the queue, or the error that
    ended the stream."""
    while not self._closed.is_set():
      try:
        item = (self._place(next(self._host)), self._host.get_state(), None)
      except BaseException as error:  # pylint: disable=broad-except  (handed to the caller)
        item = (None, None, error)
      while not self._closed.is_set():
        try:
          self._queue.put(item, timeout=self._POLL_SECONDS)
          break
        except queue.Full:
          continue
      if item[2] is not None:
        return

  def __iter__(self):
    return self

  def __next__(self):
    if self._error is not None:
      raise self._error
    if self._depth == 0:
      return self._place(next(self._host))
    batch, state, error = self._queue.get()
    if error is not None:
      self._error = error
      raise error
    self._state = state
    return batch

  def get_state(self) -> dict:
    """The host iterator's state after the last batch handed out: where a resumed
    stream starts again (input_pipeline.train_iterator's `state`)."""
    return self._host.get_state() if self._depth == 0 else self._state

  def close(self) -> None:
    """Ends the thread (after the batch it is drawing, if any); batches placed ahead
    are dropped."""
    if self._depth == 0 or self._closed.is_set():
      return
    self._closed.set()
    self._thread.join()
    while not self._queue.empty():
      self._queue.get_nowait()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
