"""benchmarks/memory.py: the rows it compiles, and a TPU target compiled with XLA's ops
even on a host whose CPU kernels are built."""

import types

from benchmarks import memory
from jaxseg.models.backend import fused_norm, onednn


def test_a_tpu_target_is_compiled_with_xlas_ops_on_any_host(monkeypatch):
  monkeypatch.setattr(onednn, 'available', lambda: True)
  monkeypatch.setattr(fused_norm, 'available', lambda: True)
  tpu, cpu = types.SimpleNamespace(platform='tpu'), types.SimpleNamespace(platform='cpu')
  config = memory.row_config('lstm_unet', 'brats3d', 'levels', 2, 'bfloat16',
                             memory.target_ops(tpu, 'auto'))
  assert dict(config.compute) == {'conv_library': 'xla', 'norm_kernel': 'xla',
                                  'conv3d': 'native'}
  assert (config.model.remat_levels, config.model.remat, config.train.microbatches,
          config.model.dtype) == (True, False, 2, 'bfloat16')
  # The host itself, compiled for, keeps its kernels.
  ops = memory.target_ops(cpu, 'auto')
  assert (ops.conv_library, ops.norm_kernel) == ('onednn', 'cpu')


def test_first_fit_tries_the_cheapest_change_first():
  assert memory.planned_rows('unet', None, '1,2', first_fit=True) == [
      ('none', 1), ('levels', 1), ('none', 2), ('levels', 2)]
  assert memory.planned_rows('lstm_unet', None, '1,2', first_fit=False) == [
      ('none', 1), ('iterations', 1), ('levels', 1), ('none', 2), ('levels', 2)]
  assert memory.planned_rows('unet', 'levels:4', '1,2', first_fit=True) == [('levels', 4)]
