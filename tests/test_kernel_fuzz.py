"""A shape fuzz of jaxseg's CPU kernels against XLA's and flax's ops, and the kernels'
custom calls run concurrently.

Cases are drawn at import from fixed seeds and each id names its shapes, so a failing
case reruns as it was: oneDNN convolutions (2D and 3D; windows 1, 2 and 3; channels 1-17
and 32; odd sizes; batch 1-3), the per-voxel product and the 2x upsampling built on it,
every convolution and product of a small U-Net and LSTM-U-Net, and the fused GroupNorm;
values and every gradient, float32 and bfloat16 (references in float32).

XLA:CPU runs independent custom calls on several threads at once, and Python threads
call compiled functions at once too: a kept oneDNN primitive once crashed on a thread
other than its creator's (kernels/onednn_conv.cc). tests/test_isa_levels.py runs this
file at the capped levels, tools/asan_check.sh under AddressSanitizer.
"""

import concurrent.futures
import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import LSTMUNet, Ops, UNet, UNetSettings
from jaxseg.models.backend import fused_norm, modules, onednn, xla
from jaxseg.models.layers import Upsample
from jaxseg.models.unet import lstm_locations

needs_onednn = pytest.mark.skipif(not onednn.available(), reason='oneDNN extension not built')
needs_kernel = pytest.mark.skipif(not fused_norm.available(), reason='kernel not built')

CHANNELS = tuple(range(1, 18)) + (32,)  # narrower than a SIMD register, odd, one block
TOLERANCES = {'float32': 1e-5, 'bfloat16': 2e-2}  # of the reference's largest value


def _name(shape) -> str:
  return 'x'.join(map(str, shape))


def _relative_error(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _normal(rng, shape, dtype, mean=0.0, std=1.0):
  return jnp.asarray(rng.normal(mean, std, shape).astype(np.float32)).astype(dtype)


def _values_and_grads(function, args, cotangent):
  y, vjp = jax.vjp(function, *args)
  return y, vjp(cotangent)


def _rng(*case):
  """A generator of the case's own: its data do not depend on which cases run."""
  return np.random.RandomState(zlib.crc32(repr(case).encode()))


def _check(ours, reference, args, dtype, what, rng, widen=True):
  """ours(*args) against reference(*args in float32, or as they are if not `widen`): the
  values (all of `dtype`) and the gradient of every argument (of its dtype), compiled
  once."""
  tolerance = TOLERANCES[jnp.dtype(dtype).name]
  wide = jax.tree.map(lambda a: a.astype(jnp.float32) if widen else a, args)
  cotangent = jax.tree.map(lambda s: _normal(rng, s.shape, s.dtype),
                           jax.eval_shape(ours, *args))
  got, want = jax.jit(lambda args, wide, cotangent: (
      _values_and_grads(ours, args, cotangent),
      _values_and_grads(reference, wide, jax.tree.map(
          lambda c: c.astype(jnp.float32) if widen else c, cotangent))))(args, wide, cotangent)
  values = jax.tree_util.tree_leaves_with_path(got[0])
  for (path, value), expected in zip(values, jax.tree.leaves(want[0])):
    name = f'{what}: values{jax.tree_util.keystr(path)}'
    assert value.dtype == dtype and value.shape == expected.shape, name
    assert _relative_error(value, expected) < tolerance, name
  grads = zip(jax.tree_util.tree_leaves_with_path(got[1]), jax.tree.leaves(want[1]),
              jax.tree.leaves(args))
  for (path, grad), expected, arg in grads:
    name = f'{what}: gradient{jax.tree_util.keystr(path)}'
    assert grad.dtype == arg.dtype and grad.shape == arg.shape, name
    assert _relative_error(grad, expected) < tolerance, name


def _conv_case(rng, i):
  rank, batch = 2 + i % 2, int(rng.randint(1, 4))
  sizes = tuple(int(s) for s in rng.choice(np.arange(1, 12 if rank == 2 else 8, 2), rank))
  # Windows 1, 3 and an even one ('SAME' pads one more after than before), and mixed.
  window = (tuple(int(w) for w in rng.choice((1, 2, 3), rank)) if i % 4 == 3
            else ((1, 3, 2)[i % 3],) * rank)
  c_in, c_out = (int(c) for c in rng.choice(CHANNELS, 2))
  return (batch, *sizes, c_in), (*window, c_in, c_out)


def _product_case(rng, i):
  x_shape, kernel_shape = _conv_case(rng, i)
  return x_shape, kernel_shape[-2:]


def _cases(seed, draw_case, count, label=lambda *shapes: '-'.join(map(_name, shapes))):
  """(dtype, *case) drawn for each dtype from a seed of its own; ids by `label`."""
  rngs = [np.random.RandomState(seed + offset) for offset in range(len(TOLERANCES))]
  return [pytest.param(dtype, *case, id=f'{dtype}-{label(*case)}')
          for dtype, rng in zip(TOLERANCES, rngs) for case in map(
              functools.partial(draw_case, rng), range(count))]


@needs_onednn
@pytest.mark.parametrize('dtype, x_shape, kernel_shape',
                         _cases(0, _conv_case, 12) + _cases(10, _product_case, 4))
def test_convolutions_and_products_equal_xlas(dtype, x_shape, kernel_shape):
  """A (C_in, C_out) kernel: the per-voxel product of the upsampling and heads."""
  ours, reference = ((onednn.pointwise, xla.pointwise) if len(kernel_shape) == 2
                     else (onednn.convolve, xla.conv))
  rng = _rng(dtype, x_shape, kernel_shape)
  args = (_normal(rng, x_shape, dtype), _normal(rng, kernel_shape, dtype, std=0.3))
  _check(ours, reference, args, dtype, f'{x_shape} * {kernel_shape}', rng)


def _upsampling(library, dtype, features):
  dense = functools.partial(Ops(conv_library=library).dense, dtype=dtype,
                            param_dtype=jnp.float32)
  return Upsample(features, dense, 'transpose')


@needs_onednn
@pytest.mark.parametrize('dtype, x_shape, features', _cases(
    20, lambda rng, i: (_product_case(rng, i)[0], int(rng.choice(CHANNELS))), 4,
    lambda x_shape, features: f'{_name(x_shape)}-to{features}'))
def test_transposed_convolution_upsampling_equals_xlas(dtype, x_shape, features):
  """models.layers.Upsample's 'transpose': oneDNN's product + depth_to_space against
  XLA's product, same parameters, same dtype: the bias's gradient is XLA's bfloat16 sum
  in both (1-3% from a float32 one), and only the product is oneDNN's."""
  rng = _rng(dtype, x_shape, features)
  x = _normal(rng, x_shape, dtype)
  shapes = jax.eval_shape(lambda x: _upsampling('xla', jnp.float32, features).init(
      jax.random.key(0), x), x.astype(jnp.float32))['params']
  params = jax.tree.map(lambda s: _normal(rng, s.shape, s.dtype, std=0.3), shapes)

  def apply(library, x, params):
    return _upsampling(library, x.dtype, features).apply({'params': params}, x)
  _check(functools.partial(apply, 'onednn'), functools.partial(apply, 'xla'), (x, params),
         dtype, f'{x_shape} -> {features} features', rng, widen=False)


_RECORDED = set()


def _recording_conv(x, kernel):
  _RECORDED.add(('conv', x.shape, kernel.shape))
  return xla.conv(x, kernel)


def _recording_product(x, kernel):
  _RECORDED.add(('product', x.shape, kernel.shape))
  return xla.pointwise(x, kernel)


class _RecordingOps(Ops):
  """XLA's layers, noting the operand shapes of every convolution and product."""

  @property
  def conv(self):
    return functools.partial(modules.Conv, convolve=_recording_conv)

  @property
  def dense(self):
    return functools.partial(modules.Dense, product=_recording_product)


MODEL_FEATURES = (4, 8, 16)
MODEL_INPUTS = {2: (2, 32, 32, 4), 3: (2, 16, 16, 16, 4)}


@functools.cache
def _model_shapes(rank):
  """(kind, x shape, kernel shape) of every convolution and product of a U-Net and of an
  LSTM-U-Net with ConvLSTM cells at every level."""
  settings = UNetSettings(features=MODEL_FEATURES, num_outputs=3)
  ops = _RecordingOps()
  models = (UNet(settings, ops), LSTMUNet(settings, ops, num_iterations=1,
                                          lstm_at=tuple(lstm_locations(len(MODEL_FEATURES)))))
  _RECORDED.clear()
  for model in models:
    jax.eval_shape(lambda x, model=model: model.init(jax.random.key(0), x),
                   jax.ShapeDtypeStruct(MODEL_INPUTS[rank], jnp.float32))
  return sorted(_RECORDED)


@needs_onednn
@pytest.mark.parametrize('dtype', TOLERANCES)
@pytest.mark.parametrize('rank', [2, 3])
def test_every_layer_of_the_models_equals_xlas(rank, dtype):
  """The shapes of every level, taken from the models themselves: in one compiled
  function, whose independent custom calls XLA runs at once."""
  shapes = _model_shapes(rank)
  batch, *size, _ = MODEL_INPUTS[rank]
  window = (3,) * rank
  for level, features in enumerate(MODEL_FEATURES):
    x_shape = (batch, *(s // 2**level for s in size), 2 * features)
    # ConvLSTM gates over concat(input, h); the decoder's first convolution after concat.
    assert ('conv', x_shape, (*window, 2 * features, 4 * features)) in shapes
    if level < len(MODEL_FEATURES) - 1:
      assert ('conv', x_shape, (*window, 2 * features, features)) in shapes
    assert ('conv', x_shape[:-1] + (features,), (*window, features, features)) in shapes
  rng = np.random.RandomState(rank)
  args = {f'{kind} {_name(x_shape)} {_name(kernel_shape)}':
          (_normal(rng, x_shape, dtype), _normal(rng, kernel_shape, dtype, std=0.3))
          for kind, x_shape, kernel_shape in shapes}

  def run(functions, args):
    return {name: functions[name.split()[0]](*pair) for name, pair in args.items()}
  _check(functools.partial(run, {'conv': onednn.convolve, 'product': onednn.pointwise}),
         functools.partial(run, {'conv': xla.conv, 'product': xla.pointwise}), (args,),
         dtype, f'{rank}D models', rng)


def _norm_case(rng, i):
  rank = 1 + i % 3
  channels = int(rng.choice(CHANNELS))
  groups = int(rng.choice([g for g in range(1, channels + 1) if channels % g == 0]))
  # Odd sizes; 1D ones longer than one of the kernel's blocks of rows (256).
  odd = np.arange(*((257, 301), (3, 23), (3, 11))[rank - 1], 2)
  sizes = tuple(int(s) for s in rng.choice(odd, rank))
  activation = ('none', 'relu', 'leaky_relu')[i % 3 if i < 3 else rng.randint(3)]
  return (int(rng.randint(1, 4)), *sizes, channels), groups, activation


def _flax_group_norm(x, scale, bias, groups, activation):
  y = nn.GroupNorm(num_groups=groups, dtype=x.dtype).apply(
      {'params': {'scale': scale, 'bias': bias}}, x)
  return y if activation == 'none' else modules.get_activation(activation)(y)


@needs_kernel
@pytest.mark.parametrize('dtype, shape, groups, activation', _cases(
    30, _norm_case, 8, lambda shape, groups, act: f'{_name(shape)}-{groups}groups-{act}'))
def test_group_norms_equal_flax(dtype, shape, groups, activation):
  rng = _rng(dtype, shape, groups, activation)
  # A mean far from 0 and unequal scales, as tests/test_fused_norm.py.
  args = (_normal(rng, shape, dtype, mean=3.0, std=2.0),
          _normal(rng, shape[-1:], jnp.float32, mean=1.0, std=0.5),
          _normal(rng, shape[-1:], jnp.float32, std=0.3))
  _check(lambda *a: fused_norm.group_norm(*a, groups, activation),
         lambda *a: _flax_group_norm(*a, groups, activation), args, dtype,
         f'{shape}, {groups} groups, {activation}', rng)


# Different shapes, float32 (GEMM-based below AVX-512, with a scratchpad) and bfloat16.
CONCURRENT = [((2, 24, 24, 16), (3, 3, 16, 32), 'float32'),
              ((3, 17, 13, 5), (3, 3, 5, 12), 'float32'),
              ((1, 12, 12, 12, 8), (3, 3, 3, 8, 16), 'float32'),
              ((2, 9, 8, 7, 12), (2, 3, 1, 12, 4), 'float32'),
              ((2, 15, 11, 24), (3, 3, 24, 8), 'bfloat16')]


def _concurrent_case(x_shape, kernel_shape, dtype):
  """(x, kernel, cotangent), and XLA's values and gradients from them in float32."""
  rng = _rng(x_shape, kernel_shape)
  operands = (_normal(rng, x_shape, dtype), _normal(rng, kernel_shape, dtype, std=0.3),
              _normal(rng, x_shape[:-1] + kernel_shape[-1:], dtype))
  want = jax.jit(lambda x, k, c: _values_and_grads(xla.conv, (x, k), c))(
      *(a.astype(jnp.float32) for a in operands))
  return operands, want


def _assert_equal_to_xlas(got, want, dtype, what):
  for value, expected in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert value.dtype == dtype and _relative_error(value, expected) < TOLERANCES[dtype], what


@needs_onednn
def test_independent_convolutions_run_concurrently_by_xla():
  """One compiled function with the three passes of five convolutions: XLA:CPU runs the
  independent custom calls on several threads, which differ from run to run."""
  cases = [_concurrent_case(*case) for case in CONCURRENT]
  ours = jax.jit(lambda operands: [_values_and_grads(onednn.convolve, (x, k), c)
                                   for x, k, c in operands])
  for _ in range(20):
    got = ours([operands for operands, _ in cases])
    for result, (_, want), case in zip(got, cases, CONCURRENT):
      _assert_equal_to_xlas(result, want, case[2], case)


@needs_onednn
def test_python_threads_call_convolutions_at_once():
  """Four Python threads running the passes of five convolutions, twelve times each."""
  cases = [_concurrent_case(*case) for case in CONCURRENT]
  function = jax.jit(lambda x, k, c: _values_and_grads(onednn.convolve, (x, k), c))

  def run(i):
    operands, want = cases[i]
    _assert_equal_to_xlas(function(*operands), want, CONCURRENT[i][2], CONCURRENT[i])
  for i in range(len(cases)):  # compiled and run once here: the threads then run, at
    run(i)                     # the same time, primitives that another thread created
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    for future in [pool.submit(run, i % len(cases)) for i in range(12 * len(cases))]:
      future.result()
