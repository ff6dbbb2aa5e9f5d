"""jaxseg's fused GroupNorm + activation CPU kernel (jaxseg/models/backend/fused_norm.py) against
flax's GroupNorm followed by the activation.

Values and the gradients of input, scale and bias in float32 and bfloat16, for group,
instance and layer norm, 2D and 3D, narrow and odd channel counts and more rows than one
of the kernel's blocks; whole models with either kernel; the choice of kernel.
"""

import os
import platform
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import cpu_flags
from jaxseg.errors import ConfigError
from jaxseg.models import LSTMUNet, Ops, UNet, UNetSettings
from jaxseg.models.backend import NORM_KERNELS, ffi_library, fused_norm, modules, ops_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDABLE = platform.system() == 'Linux' and shutil.which('c++') is not None
needs_kernel = pytest.mark.skipif(not fused_norm.available(), reason='kernel not built')


def _relative_error(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_the_kernel_is_built_where_it_can_be():
  """pip install builds it on Linux with a C++ compiler (as in CI): a broken build must
  fail here, not pass silently as 'XLA GroupNorm'."""
  if not BUILDABLE:
    pytest.skip('no C++ compiler or not Linux: the extension is optional here')
  assert fused_norm.available(), fused_norm.unavailable_reason()


def test_the_kernels_leaky_relu_slope_is_the_models():
  slope = fused_norm.ACTIVATIONS['leaky_relu'][1]
  assert float(modules.get_activation('leaky_relu')(jnp.float32(-1.0))) == pytest.approx(-slope)


def _reference(x, scale, bias, groups, activation):
  y = nn.GroupNorm(num_groups=groups, dtype=x.dtype).apply(
      {'params': {'scale': scale, 'bias': bias}}, x)
  return y if activation == 'none' else modules.get_activation(activation)(y)


def _check_against_flax(shape, groups, activation, dtype, tolerance, isa='auto'):
  keys = jax.random.split(jax.random.key(0), 4)
  # A mean far from 0 and unequal scales: a variance formula that cancels badly, or
  # statistics mixed up between groups or samples, shows.
  x = (3.0 + 2.0 * jax.random.normal(keys[0], shape)).astype(dtype)
  scale = 1.0 + 0.5 * jax.random.normal(keys[1], shape[-1:])
  bias = 0.3 * jax.random.normal(keys[2], shape[-1:])
  cotangent = jax.random.normal(keys[3], shape).astype(dtype)

  def value_and_grads(function, x, cotangent):
    y, vjp = jax.vjp(lambda *a: function(*a, groups, activation), x, scale, bias)
    return (y, *vjp(cotangent))
  ours = jax.jit(lambda: value_and_grads(
      lambda *a: fused_norm.group_norm(*a, isa=isa), x, cotangent))()
  # The reference in float32: bfloat16 results must be as close to it as flax's are.
  reference = jax.jit(lambda: value_and_grads(_reference, x.astype(jnp.float32),
                                              cotangent.astype(jnp.float32)))()
  for name, got, want in zip(('values', 'input', 'scale', 'bias'), ours, reference):
    assert got.shape == want.shape, name
    assert _relative_error(got, want) < tolerance, name
  assert ours[0].dtype == ours[1].dtype == dtype
  assert ours[2].dtype == ours[3].dtype == jnp.float32


@needs_kernel
@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize('activation', ['none', 'relu', 'leaky_relu'])
@pytest.mark.parametrize('shape, groups', [
    ((2, 9, 7, 12), 4),      # 2D, odd sizes, 3 channels per group
    ((1, 5, 6, 7, 6), 6),    # 3D, instance norm
    ((3, 300, 5), 1),        # layer norm; 300 rows: a full block of 256 and a part
])
def test_values_and_gradients_equal_flax(shape, groups, activation, dtype, tolerance):
  _check_against_flax(shape, groups, activation, dtype, tolerance)


@needs_kernel
def test_the_kernel_runs_at_the_best_x86_64_level_the_cpu_has():
  flags = cpu_flags()
  if platform.machine() != 'x86_64':
    assert fused_norm.supported_isa() == 'baseline'  # the only level built there
    return
  if not flags:
    pytest.skip('no /proc/cpuinfo to compare with')
  if {'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'} <= flags:
    expected = 'x86-64-v4'
  elif {'avx2', 'fma'} <= flags:
    expected = 'x86-64-v3'
  else:
    expected = 'baseline'
  assert fused_norm.supported_isa() == expected


@needs_kernel
@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize('isa', ['baseline', 'x86-64-v3', 'x86-64-v4'])
def test_every_x86_64_level_computes_the_same(isa, dtype, tolerance):
  """Each level's build of the loops (a level this CPU lacks runs as the best it has)."""
  _check_against_flax((2, 300, 3, 24), 8, 'leaky_relu', dtype, tolerance, isa)


@needs_kernel
def test_a_loss_through_two_norms_and_a_dense_layer():
  """Composed under jit, grad and a nonlinearity between the calls."""
  x = 2.0 + jax.random.normal(jax.random.key(1), (2, 6, 6, 8))
  w = jax.random.normal(jax.random.key(2), (8, 8))
  params = (jnp.full((8,), 1.5), jnp.full((8,), 0.1), jnp.full((8,), 0.7), jnp.zeros(8))

  def loss(group_norm, params):
    s1, b1, s2, b2 = params
    y = group_norm(x, s1, b1, 2, 'relu') @ w
    return jnp.sum(jnp.tanh(group_norm(y, s2, b2, 4, 'leaky_relu')) ** 2)
  ours = jax.jit(jax.value_and_grad(lambda p: loss(fused_norm.group_norm, p)))(params)
  want = jax.jit(jax.value_and_grad(lambda p: loss(_reference, p)))(params)
  for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
    assert _relative_error(got, expected) < 1e-4


@needs_kernel
@pytest.mark.parametrize('kind, activation', [('group', 'relu'), ('instance', 'leaky_relu'),
                                              ('layer', 'gelu'), ('none', 'relu')])
def test_the_norm_module_has_the_same_parameters_and_values_with_either_kernel(kind, activation):
  """gelu is not in the kernel: the module falls back to flax's GroupNorm + gelu."""
  x = 1.0 + jax.random.normal(jax.random.key(3), (2, 5, 5, 6))
  norms = {k: Ops(norm_kernel=k).norm_act(kind, num_groups=4, activation=activation)
           for k in NORM_KERNELS}
  params = norms['xla'].init(jax.random.key(4), x)
  assert (jax.tree.structure(norms['cpu'].init(jax.random.key(4), x))
          == jax.tree.structure(params))
  params = jax.tree.map(lambda p: p + 0.1 * jnp.arange(p.size).reshape(p.shape), params)
  got, want = (norms[k].apply(params, x) for k in ('cpu', 'xla'))
  assert _relative_error(got, want) < 1e-5


@needs_kernel
@pytest.mark.parametrize('model_kind, shape, dtype', [
    ('lstm_unet', (2, 16, 16, 2), 'float32'), ('unet', (1, 8, 8, 8, 2), 'bfloat16')])
def test_models_are_the_same_function_with_either_kernel(model_kind, shape, dtype):
  """The 2D LSTM-U-Net and a bfloat16 3D U-Net: logits and parameter gradients with the
  fused kernel equal those with flax's GroupNorm."""
  x = jax.random.normal(jax.random.key(5), shape)
  tolerance = 1e-4 if dtype == 'float32' else 5e-2

  def build(kernel):
    settings = UNetSettings(features=(4, 8), num_outputs=2, dtype=dtype)
    ops = Ops(norm_kernel=kernel)
    return (LSTMUNet(settings, ops, num_iterations=2, lstm_at=('bottleneck',))
            if model_kind == 'lstm_unet' else UNet(settings, ops))
  params = build('xla').init(jax.random.key(6), x)['params']

  def loss(kernel, params):
    logits = build(kernel).apply({'params': params}, x)[0].astype(jnp.float32)
    return jnp.mean(jax.nn.sigmoid(logits) ** 2), logits
  results = {kernel: jax.jit(jax.value_and_grad(lambda p, k=kernel: loss(k, p),
                                                has_aux=True))(params)
             for kernel in NORM_KERNELS}
  (_, logits), grads = results['cpu']
  (_, want_logits), want_grads = results['xla']
  assert _relative_error(logits, want_logits) < tolerance
  for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    assert _relative_error(got, expected) < 10 * tolerance


def _norm_kernel(value, backend='cpu', num_devices=1):
  compute = {'conv_library': 'xla', 'norm_kernel': value, 'conv3d': 'auto'}
  return ops_from_config(compute, backend=backend, num_devices=num_devices).norm_kernel


def test_auto_picks_the_kernel_only_on_a_single_cpu_device(monkeypatch):
  monkeypatch.setattr(fused_norm, 'available', lambda: True)
  assert _norm_kernel('auto', 'cpu', num_devices=1) == 'cpu'
  assert _norm_kernel('auto', 'cpu', num_devices=4) == 'xla'
  assert _norm_kernel('auto', 'gpu', num_devices=1) == 'xla'
  assert _norm_kernel('xla', 'cpu') == 'xla'
  with pytest.raises(ConfigError, match='compute.norm_kernel: the fused GroupNorm kernel '
                                        'cannot run on gpu'):
    _norm_kernel('cpu', 'gpu')
  monkeypatch.setattr(fused_norm, 'available', lambda: False)
  assert _norm_kernel('auto', 'cpu', num_devices=1) == 'xla'
  with pytest.raises(ConfigError, match='compute.norm_kernel: fused GroupNorm kernel requested'):
    _norm_kernel('cpu', 'cpu')
  with pytest.raises(ConfigError, match="compute.norm_kernel: unknown choice 'triton'"):
    _norm_kernel('triton', 'cpu')


def test_the_level_is_capped_like_onednns():
  """JAXSEG_MAX_CPU_ISA names the level; unset, ONEDNN_MAX_CPU_ISA's level caps it."""
  assert fused_norm.max_isa({}) == 'auto'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'AVX2'}) == 'x86-64-v3'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'avx512_core_bf16'}) == 'x86-64-v4'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'SSE41'}) == 'baseline'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'AVX'}) == 'baseline'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'ALL'}) == 'auto'
  assert fused_norm.max_isa({'ONEDNN_MAX_CPU_ISA': 'AVX2',
                             'JAXSEG_MAX_CPU_ISA': 'x86-64-v4'}) == 'x86-64-v4'
  with pytest.raises(ConfigError, match="JAXSEG_MAX_CPU_ISA='avx9'"):
    fused_norm.max_isa({'JAXSEG_MAX_CPU_ISA': 'avx9'})


def test_a_missing_extension_is_reported_not_raised(monkeypatch):
  monkeypatch.setattr(ffi_library.importlib.util, 'find_spec', lambda name: None)
  library, reason = fused_norm._load.__wrapped__()
  assert library is None and 'jaxseg._group_norm was not built' in reason


def test_no_compiler_does_not_fail_the_install(tmp_path):
  """setup.py where the C++ compiler fails: one line per extension, exit status 0."""
  env = {**os.environ, 'CC': 'false', 'CXX': 'false', 'LDSHARED': 'false -shared'}
  result = subprocess.run(
      [sys.executable, 'setup.py', '-q', 'build_ext', f'--build-lib={tmp_path / "lib"}',
       f'--build-temp={tmp_path / "temp"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  notices = [line for line in result.stderr.splitlines() if line.startswith('jaxseg:')]
  assert len(notices) == 2, result.stderr
  assert any('fused GroupNorm kernel not built' in line for line in notices), result.stderr
  assert not list((tmp_path / 'lib').rglob('*.so'))
