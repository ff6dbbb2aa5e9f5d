"""jaxseg's oneDNN convolutions (jaxseg/models/backend/onednn.py) against XLA's.

Values and both gradients of single convolutions in float32 and bfloat16, whole models
with either library, the choice of library, and an install that cannot build the
extension.
"""

import glob
import os
import platform
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lstm_unet, unet
from helpers import cpu_flags, tiny
from jaxseg import inference, parallel
from jaxseg.data import load_splits
from jaxseg.train_state import setup_model
from jaxseg.train_step import make_train_step
from jaxseg.training import make_train_batches
from jaxseg.errors import ConfigError
from jaxseg.models import LSTMUNet, Ops, UNet, UNetSettings
from jaxseg.models.backend import ffi_library, onednn, ops_from_config, xla

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDABLE = (platform.system() == 'Linux' and platform.machine() == 'x86_64'
             and shutil.which('c++') is not None)
needs_onednn = pytest.mark.skipif(not onednn.available(), reason='oneDNN extension not built')


def _xla_conv(x, kernel):
  return xla.conv(x, kernel)


def _relative_error(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / np.abs(b).max())


def test_the_extension_is_built_where_it_can_be():
  """pip install builds it on Linux x86-64 with a C++ compiler (as in CI): a broken
  build must fail here, not pass silently as 'XLA convolutions'."""
  if not BUILDABLE:
    pytest.skip('no C++ compiler or not Linux x86-64: the extension is optional here')
  assert onednn.available(), onednn.unavailable_reason()


@needs_onednn
@pytest.mark.parametrize('dtype, tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize('x_shape, kernel_shape', [
    ((2, 9, 7, 5), (3, 3, 5, 6)),     # odd sizes, channels not a multiple of the SIMD width
    ((3, 8, 8, 16), (1, 1, 16, 4)),   # 1x1
    ((1, 6, 10, 3), (5, 5, 3, 8)),    # wider kernel
    ((2, 6, 6, 4), (2, 2, 4, 4)),     # even kernel: 'SAME' pads one more after than before
    ((2, 5, 7, 6, 3), (3, 3, 3, 3, 4)),  # 3D, odd sizes
    ((1, 4, 6, 5, 8), (3, 1, 2, 8, 5)),  # 3D, unequal and even kernel sizes
])
def test_values_and_gradients_equal_xlas(x_shape, kernel_shape, dtype, tolerance):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], x_shape).astype(dtype)
  kernel = (0.3 * jax.random.normal(keys[1], kernel_shape)).astype(dtype)
  cotangent = jax.random.normal(keys[2], x_shape[:-1] + kernel_shape[-1:]).astype(dtype)

  def value_and_grads(conv):
    y, vjp = jax.vjp(conv, x, kernel)
    return (y, *vjp(cotangent))
  # The models' entry point: bfloat16 in bfloat16 where the CPU (as capped) has the
  # units, else through float32 (tests/test_isa_levels.py runs this at the caps).
  ours = jax.jit(lambda: value_and_grads(onednn.convolve))()
  # The reference in float32: bfloat16 results must be as close to it as XLA's are.
  reference = jax.jit(lambda: value_and_grads(_xla_conv))()
  for name, got, want in zip(('values', 'input gradient', 'kernel gradient'), ours, reference):
    assert got.dtype == dtype and got.shape == want.shape, name
    assert _relative_error(got, want) < tolerance, name


@needs_onednn
def test_bfloat16_convolutions_are_found_where_the_cpu_has_them():
  """oneDNN's bfloat16 convolutions need AVX-512 BF16 (or AMX) and no cap below them."""
  flags = cpu_flags()
  if not flags:
    pytest.skip('no /proc/cpuinfo to compare with')
  cap = os.environ.get('ONEDNN_MAX_CPU_ISA', 'ALL').upper()
  capped_below = cap.startswith(('SSE', 'AVX2')) or cap in ('AVX', 'AVX512_CORE',
                                                           'AVX512_CORE_VNNI')
  has_units = bool({'avx512_bf16', 'amx_bf16'} & flags)
  assert onednn.supports_bfloat16() == (has_units and not capped_below)


@needs_onednn
def test_jit_grad_of_a_loss_through_two_convolutions():
  """Composed: the second convolution's input gradient feeds the first one's."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  k1 = 0.3 * jax.random.normal(jax.random.key(2), (3, 3, 3, 8))
  k2 = 0.3 * jax.random.normal(jax.random.key(3), (3, 3, 8, 2))

  def loss(conv, k1, k2):
    return jnp.sum(jnp.tanh(conv(jax.nn.relu(conv(x, k1)), k2)) ** 2)
  ours = jax.jit(jax.value_and_grad(lambda *k: loss(onednn.conv, *k), (0, 1)))(k1, k2)
  want = jax.jit(jax.value_and_grad(lambda *k: loss(_xla_conv, *k), (0, 1)))(k1, k2)
  for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
    assert _relative_error(got, expected) < 1e-5


@needs_onednn
@pytest.mark.parametrize('model_kind, shape, conv3d', [
    ('lstm_unet', (2, 16, 16, 2), 'native'),
    ('unet', (1, 8, 8, 8, 2), 'depth_folded'),
    ('lstm_unet', (1, 8, 8, 8, 2), 'native')])
def test_models_are_the_same_function_with_either_library(model_kind, shape, conv3d):
  """The 2D LSTM-U-Net (ConvLSTM gates, feedback), the depth-folded 3D U-Net (2D
  convolutions of either library) and the 3D LSTM-U-Net with native 3D convolutions:
  logits and parameter gradients with oneDNN's convolutions equal XLA's."""
  x = jax.random.normal(jax.random.key(4), shape)

  def build(library):
    settings = UNetSettings(features=(4, 8), num_outputs=2)
    ops = Ops(conv_library=library, conv3d=conv3d)
    return (LSTMUNet(settings, ops, num_iterations=2, lstm_at=('bottleneck',))
            if model_kind == 'lstm_unet' else UNet(settings, ops))
  params = build('xla').init(jax.random.key(5), x)['params']

  def loss(library, params):
    logits = build(library).apply({'params': params}, x)[0]
    return jnp.mean(jax.nn.sigmoid(logits) ** 2), logits
  results = {library: jax.jit(jax.value_and_grad(lambda p, lib=library: loss(lib, p),
                                                 has_aux=True))(params)
             for library in ('xla', 'onednn')}
  (_, logits), grads = results['onednn']
  (_, want_logits), want_grads = results['xla']
  assert _relative_error(logits, want_logits) < 1e-5
  for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    assert _relative_error(got, expected) < 1e-4


def _first_losses(config, steps=3):
  data = load_splits(config.data, ('train',))['train']
  _, init_state, _ = setup_model(config, data)
  state, step, batches = init_state(), make_train_step(config), make_train_batches(config, data)
  losses = []
  for i in range(steps):
    state, metrics = step(state, batches[i])
    losses.append(float(metrics['loss']))
  return losses


@needs_onednn
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_train_py_3d_lstm_unet_step_with_onednn_equals_xlas(dtype):
  """train.py's step of the 3D LSTM-U-Net with augmentation (its default CPU path, where
  XLA:CPU runs the custom calls on several threads at once): the losses of three steps
  with oneDNN and the fused norm equal those with XLA's ops, float32 and bfloat16."""
  def config(library):
    c = tiny(lstm_unet.get_config('3d'))
    c.data.image_size, c.model.features, c.model.dtype = (16, 16, 16), (4, 8), dtype
    c.augment.enabled = True
    c.compute.conv_library = library
    c.compute.norm_kernel = 'cpu' if library == 'onednn' else 'xla'
    c.compute.conv3d = 'native'
    return c
  ours, want = _first_losses(config('onednn')), _first_losses(config('xla'))
  assert all(np.isfinite(ours))
  np.testing.assert_allclose(ours, want, rtol=1e-4 if dtype == 'float32' else 3e-2)


@needs_onednn
def test_eval_py_prediction_in_bfloat16_with_onednn_equals_xlas():
  """eval.py's whole-case prediction (sliding windows, mirroring) of a bfloat16 3D
  LSTM-U-Net: oneDNN's (float32 between conversions where the CPU has no bfloat16
  units) and XLA's logits agree to bfloat16 rounding."""
  config = tiny(lstm_unet.get_config('3d'))
  config.data.image_size, config.model.features = (16, 16, 16), (4, 8)
  config.model.dtype = 'bfloat16'
  config.eval.mirror_axes = (0, 1, 2)
  case = np.asarray(jax.random.normal(jax.random.key(9), (20, 18, 16, 4)))
  logits = {}
  for library in ('onednn', 'xla'):
    config.compute.conv_library = library
    config.compute.norm_kernel = 'cpu' if library == 'onednn' else 'xla'
    data = load_splits(config.data, ('train',))['train']
    model, init_state, _ = setup_model(config, data)
    params = init_state().params
    predictor = inference.SlidingWindowPredictor.from_config(
        model, config.eval, config.data.image_size, parallel.make_mesh())
    [(_, logits[library])] = list(predictor.predict(params, [case]))
  assert logits['onednn'].shape == (2, 20, 18, 16, 3) and np.isfinite(logits['onednn']).all()
  assert _relative_error(logits['onednn'], logits['xla']) < 3e-2


def _conv_library(value, backend='cpu', num_devices=1):
  compute = {'conv_library': value, 'norm_kernel': 'xla', 'conv3d': 'auto'}
  return ops_from_config(compute, backend=backend, num_devices=num_devices).conv_library


def test_auto_picks_onednn_only_on_a_single_cpu_device(monkeypatch):
  monkeypatch.setattr(onednn, 'available', lambda: True)
  assert _conv_library('auto', 'cpu', num_devices=1) == 'onednn'
  assert _conv_library('auto', 'cpu', num_devices=2) == 'xla'
  assert _conv_library('auto', 'gpu', num_devices=1) == 'xla'
  assert _conv_library('xla', 'cpu', num_devices=1) == 'xla'
  with pytest.raises(ConfigError, match="compute.conv_library: the oneDNN convolutions "
                     "cannot run on gpu"):
    _conv_library('onednn', 'gpu')
  monkeypatch.setattr(onednn, 'available', lambda: False)
  assert _conv_library('auto', 'cpu', num_devices=1) == 'xla'
  with pytest.raises(ConfigError, match="compute.conv_library: oneDNN convolutions requested"):
    _conv_library('onednn', 'cpu')
  with pytest.raises(ConfigError, match="compute.conv_library: unknown choice 'mkl'"):
    _conv_library('mkl', 'cpu')


@pytest.mark.parametrize('built', [True, False])
def test_config_auto_takes_native_3d_convolutions_with_onednn(monkeypatch, built):
  """compute.conv3d = compute.conv_library = 'auto' on one CPU device: oneDNN's native 3D
  convolutions where the extension is built, else XLA's 2D ones with folded depth."""
  monkeypatch.setattr(onednn, 'available', lambda: built)
  compute = unet.get_config('3d').compute
  ops = ops_from_config(compute, backend='cpu', num_devices=1)
  assert (ops.conv_library, ops.conv3d) == (
      ('onednn', 'native') if built else ('xla', 'depth_folded'))


def test_a_missing_extension_is_reported_not_raised(monkeypatch):
  monkeypatch.setattr(ffi_library.importlib.util, 'find_spec', lambda name: None)
  library, reason = onednn._load.__wrapped__()
  assert library is None and 'jaxseg._onednn was not built' in reason


def test_a_failing_build_does_not_fail_the_install(tmp_path):
  """setup.py with oneDNN headers that do not compile: one line, exit status 0."""
  broken = tmp_path / 'dnnl' / 'include' / 'oneapi' / 'dnnl'
  broken.mkdir(parents=True)
  (broken / 'dnnl.hpp').write_text('#error this oneDNN is broken\n')
  (tmp_path / 'dnnl' / 'lib').mkdir()
  env = {**os.environ, 'DNNLROOT': str(tmp_path / 'dnnl')}
  # The GroupNorm extension, where built, is copied in as up to date, so that build_ext
  # (which skips an extension newer than its sources) compiles only the broken one.
  for built in glob.glob(os.path.join(ROOT, 'jaxseg', '_group_norm*.so')):
    os.makedirs(tmp_path / 'lib' / 'jaxseg', exist_ok=True)
    shutil.copy(built, tmp_path / 'lib' / 'jaxseg')
  result = subprocess.run(
      [sys.executable, 'setup.py', '-q', 'build_ext', f'--build-lib={tmp_path / "lib"}',
       f'--build-temp={tmp_path / "temp"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  notices = [line for line in result.stderr.splitlines() if line.startswith('jaxseg:')]
  assert len(notices) == 1 and 'oneDNN convolutions not built' in notices[0], result.stderr
  assert not list((tmp_path / 'lib').rglob('_onednn*.so'))
