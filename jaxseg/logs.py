"""Metric logs of a run: one long-format CSV and TensorBoard event files."""

import contextlib
import csv
import os

from tensorboardX import SummaryWriter


class MetricLogger:
  """Appends (step, split, name, value) rows to `workdir/metrics.csv` and writes the
  same scalars as TensorBoard events under `workdir/tensorboard`."""

  def __init__(self, workdir: str):
    path = os.path.join(workdir, 'metrics.csv')
    is_new = not os.path.exists(path)
    self._path, self._tensorboard_dir = path, os.path.join(workdir, 'tensorboard')
    self._file = open(path, 'a', newline='')
    self._csv = csv.writer(self._file)
    if is_new:
      self._csv.writerow(['step', 'split', 'name', 'value'])
    self._tensorboard = SummaryWriter(self._tensorboard_dir)

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    for name, value in scalars.items():
      self._csv.writerow([step, split, name, f'{value:.6g}'])
      self._tensorboard.add_scalar(f'{split}/{name}', value, step)
    with _naming(self._path):
      self._file.flush()

  def close(self) -> None:
    with _naming(self._path):
      self._file.close()
    with _naming(self._tensorboard_dir):
      self._tensorboard.close()


@contextlib.contextmanager
def _naming(path: str):
  """An OSError of a write (a full disk) names the file: the user's one-line error."""
  try:
    yield
  except OSError as error:
    if error.filename:
      raise
    raise OSError(error.errno, error.strerror, path) from error
