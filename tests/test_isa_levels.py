"""The kernel tests again at every x86-64 level below this CPU's own.

oneDNN and the fused GroupNorm pick their code by the CPU's instruction set at run time,
so a machine with AVX-512 would never run the AVX2 and SSE paths of most laptops. Both
can be capped per process (ONEDNN_MAX_CPU_ISA, which the GroupNorm follows): each level
below this CPU's runs kernel tests in a child pytest. AVX2 runs them all (values and
gradients against XLA's ops, the shape fuzz, train.py's 3D LSTM-U-Net step, eval.py's
bfloat16 prediction); SSE41 runs the shape fuzz.
This CPU's own level is the rest of the suite.
"""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, cpu_flags
from jaxseg.models.backend import fused_norm, onednn

# oneDNN's name of a level -> the CPU flags it needs (Linux /proc/cpuinfo names).
LEVELS = {'AVX2': {'avx2', 'fma'}, 'SSE41': {'sse4_1'}}
AVX512 = {'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'}
KERNEL_TESTS = ['tests/test_onednn.py', 'tests/test_fused_norm.py', 'tests/test_kernel_fuzz.py']
# Left out at the capped levels: what does not depend on the level (builds of the
# extensions, the choice of kernels) and the whole-model comparisons, which train.py's
# step and eval.py's prediction (test_onednn.py) cover there.
NOT_LEVEL_DEPENDENT = ('not build and not install and not auto and not missing '
                       'and not models_are_the_same')


def levels_below_this_cpu(flags: set[str], cap: str = '') -> list[str]:
  """The capped levels worth running here: those this CPU has, below its best or below
  the level this suite already runs at (ONEDNN_MAX_CPU_ISA=`cap`)."""
  order = ['AVX512', 'AVX2', 'SSE41']
  best = 'AVX512' if AVX512 <= flags else 'AVX2' if LEVELS['AVX2'] <= flags else 'SSE41'
  cap = next((level for level in order if cap.upper().startswith(level)), 'AVX512')
  own = max(best, cap, key=order.index)
  return [level for level in order[order.index(own) + 1:] if LEVELS[level] <= flags]


def test_levels_below_this_cpu():
  every = AVX512 | LEVELS['AVX2'] | LEVELS['SSE41']
  assert levels_below_this_cpu(every) == ['AVX2', 'SSE41']
  assert levels_below_this_cpu(every, 'AVX512_CORE_BF16') == ['AVX2', 'SSE41']
  assert levels_below_this_cpu(every, 'AVX2') == ['SSE41']
  assert levels_below_this_cpu(every, 'SSE41') == []
  assert levels_below_this_cpu(LEVELS['AVX2'] | LEVELS['SSE41']) == ['SSE41']
  assert levels_below_this_cpu(LEVELS['SSE41']) == []


def _kernel_tests_at(level: str, also_leave_out: str = '',
                     files: list[str] = KERNEL_TESTS) -> None:
  if level not in levels_below_this_cpu(cpu_flags(), os.environ.get('ONEDNN_MAX_CPU_ISA', '')):
    pytest.skip(f'{level} is not below the level this suite runs at on this CPU')
  env = {**os.environ, 'ONEDNN_MAX_CPU_ISA': level}
  env.pop('JAXSEG_MAX_CPU_ISA', None)
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p', 'no:cacheprovider',
       '-k', NOT_LEVEL_DEPENDENT + also_leave_out, *files],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ''
  assert result.returncode == 0, (f'at {level}: {summary}\n{result.stdout[-4000:]}'
                                  f'{result.stderr[-2000:]}')
  assert 'passed' in summary and 'failed' not in summary, summary


needs_kernels = pytest.mark.skipif(not (onednn.available() and fused_norm.available()),
                                   reason='the CPU kernels are not built')


# One class per level: pytest-xdist (--dist loadscope) runs them in parallel.
@needs_kernels
class TestAtAVX2:
  def test_the_kernel_tests_pass(self):
    # train.py's 3D LSTM-U-Net step in float32, the default path; bfloat16 convolutions
    # are covered by the values, gradients and fuzz, and by eval.py's bfloat16 prediction.
    _kernel_tests_at('AVX2', ' and not (train_py and bfloat16)')


@needs_kernels
class TestAtSSE41:
  def test_the_kernel_tests_pass(self):
    # The shape fuzz only (every layer of the models, both gradients, concurrent calls):
    # JAX itself needs AVX, so this level is reached only by CPUs with AVX and without
    # AVX2; the rest of the kernel tests run at AVX2, the level of most laptops.
    _kernel_tests_at('SSE41', files=['tests/test_kernel_fuzz.py'])
