"""benchmarks/accelerator.py: the prepared GPU/TPU check runs end to end on a CPU
(--smoke, a part of it: the whole smoke run takes minutes on 2 cores), its table says
why a measurement is missing and whether the input pipeline keeps up, and the peaks
behind MFU and the roofline estimates are the right card's."""

import os
import subprocess
import sys

import pytest

from benchmarks import accelerator, peaks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(lines, *cells) -> list[str]:
  """The cells of the one table row that starts with `cells`."""
  [row] = [line for line in lines if line.startswith('| ' + ' | '.join(cells) + ' |')]
  return [cell.strip() for cell in row.strip('|').split('|')]


def test_smoke_trains_and_predicts_a_whole_case_on_the_cpu(tmp_path):
  output = tmp_path / 'table.md'
  subprocess.run([sys.executable, 'benchmarks/accelerator.py', '--smoke', '--models=unet',
                  '--dtypes=float32', '--jobs=jax_train,inference', f'--output={output}'],
                 cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=600)
  lines = output.read_text().splitlines()
  train = _row(lines, 'JAX train', 'unet', 'float32')
  assert float(train[4]) > 0 and train[5].endswith(' ms') and 'GFLOP/step' in train[9]
  for setting in ('whole case, no TTA', 'whole case, TTA (8 mirrorings)'):
    case = _row(lines, 'inference', 'unet', 'float32', setting)
    # 40x40x32 cropped to the brain ellipsoid; windows of 16^3 overlapping by half
    assert float(case[4]) > 0 and 'cropped to' in case[9] and 'windows' in case[9]
  assert not any('not measured' in line for line in lines)
  assert not any(line.startswith(('| PyTorch', '| input pipeline')) for line in lines)


_H100 = 'NVIDIA H100 80GB HBM3'


def test_the_table_says_why_a_row_is_missing_and_whether_the_host_keeps_up():
  settings = {**accelerator.FULL, 'shape': [128, 128, 128]}
  # H100 float32 (TF32) peak 495 TFLOP/s: 123.75 TFLOP in 0.5 s is 50% of it.
  done = {'jax_train:unet:float32': ([{'model': 'unet', 'dtype': 'float32', 'device': _H100,
                                       'compile_s': 30.0, 'step_s': 0.5, 'steps': 10,
                                       'flops': 123.75e12, 'xla_gib': 20.0,
                                       'peak_gib': 21.5}], None),
          'torch:unet': ([], 'not finished within its 40 s budget'),
          'pipeline': ([{'workers': 16, 'batches_s': 1.5, 'patches_s': 3.0}], None)}
  lines = accelerator.table(done, settings, ['unet'], ['float32'],
                            ('jax_train', 'torch', 'inference', 'pipeline'))
  train = _row(lines, 'JAX train', 'unet', 'float32')
  assert train[4:9] == ['4.00', '500 ms', '50%', '21.50', '20.00']
  for label in ('AMP eager', 'AMP eager, channels-last', 'AMP torch.compile'):
    assert _row(lines, 'PyTorch train', 'unet', 'bfloat16 AMP', label)[9] == (
        'not measured: not finished within its 40 s budget')
  assert _row(lines, 'inference', 'unet', 'float32', 'whole case, no TTA')[9] == (
      'not measured: not run')
  # the step takes 2 / 0.5 s = 4 patches/s; the host delivers 3
  assert _row(lines, 'input pipeline (host)')[9].endswith('does NOT keep up')
  done['pipeline'][0][0]['patches_s'] = 4.5
  lines = accelerator.table(done, settings, ['unet'], ['float32'], ('jax_train', 'pipeline'))
  assert _row(lines, 'input pipeline (host)')[9].endswith(': keeps up')
  assert not any(line.startswith('| PyTorch') for line in lines)  # not asked for


@pytest.mark.parametrize('device_kind, name', [
    (_H100, 'H100 SXM'), ('NVIDIA H100 PCIe', 'H100 PCIe'), ('NVIDIA H200', 'H200 SXM'),
    ('NVIDIA A100-SXM4-80GB', 'A100 SXM 80 GB'), ('NVIDIA A100-SXM4-40GB', 'A100 SXM 40 GB'),
    ('TPU v5 lite', 'TPU v5e'), ('TPU v5', 'TPU v5p'), ('TPU v6 lite', 'TPU v6e')])
def test_peaks_are_the_cards_own(device_kind, name):
  assert peaks.peak_of(device_kind).name == name


def test_roofline_is_bound_by_the_slower_of_compute_and_memory():
  h100 = peaks.peak_of(_H100)  # 989 bf16 TFLOP/s, 3.35 TB/s
  assert peaks.peak_of('cpu') is None
  assert peaks.roofline_seconds(989e12, 0.0, h100, 'bfloat16') == pytest.approx(1.0)
  assert peaks.roofline_seconds(989e12, 6.7e12, h100, 'bfloat16') == pytest.approx(2.0)
  assert peaks.roofline_seconds(495e12, 0.0, h100, 'float32') == pytest.approx(1.0)
