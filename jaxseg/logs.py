"""Metric logs of a run: one long-format CSV and TensorBoard event files."""

import csv
import os

from tensorboardX import SummaryWriter


class MetricLogger:
  """Appends (step, split, name, value) rows to `workdir/metrics.csv` and writes the
  same scalars as TensorBoard events under `workdir/tensorboard`."""

  def __init__(self, workdir: str):
    path = os.path.join(workdir, 'metrics.csv')
    is_new = not os.path.exists(path)
    self._file = open(path, 'a', newline='')
    self._csv = csv.writer(self._file)
    if is_new:
      self._csv.writerow(['step', 'split', 'name', 'value'])
    self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    for name, value in scalars.items():
      self._csv.writerow([step, split, name, f'{value:.6g}'])
      self._tensorboard.add_scalar(f'{split}/{name}', value, step)
    self._file.flush()

  def close(self) -> None:
    self._file.close()
    self._tensorboard.close()
