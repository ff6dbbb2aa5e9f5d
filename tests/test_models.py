import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import (ConvLSTMCell, LSTMUNet, Ops, UNet, UNetBody, UNetSettings,
                           check_input_shape)
from jaxseg.models.backend import onednn, ops_from_config
from jaxseg.models.backend.modules import Conv, Dense, NormAct
from jaxseg.models.backend.xla import depth_folded_conv
from jaxseg.models.layers import Upsample, downsample
from jaxseg.models.lstm_unet import RefinementStep


def num_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('spatial', [(16, 16), (8, 8, 8)])
def test_output_shapes_2d_and_3d(spatial):
  x = jnp.ones((2, *spatial, 4))
  unet = UNet(UNetSettings(features=(4, 8, 16), num_outputs=3, deep_supervision=True))
  logits, aux = jax.jit(unet.apply)(jax.jit(unet.init)(jax.random.key(0), x), x)
  assert logits.shape == (1, 2, *spatial, 3)
  assert [a.shape for a in aux] == [(1, 2, *(s // 2 for s in spatial), 3)]

  lstm = LSTMUNet(UNetSettings(features=(4, 8, 16), num_outputs=3, deep_supervision=True),
                  num_iterations=3, lstm_at=('encoder0', 'bottleneck', 'decoder1'))
  variables = jax.jit(lstm.init)(jax.random.key(0), x)
  logits, aux = jax.jit(lstm.apply)(variables, x)
  assert logits.shape == (3, 2, *spatial, 3)
  assert [a.shape for a in aux] == [(3, 2, *(s // 2 for s in spatial), 3)]
  # A 3D network has 3D kernels: the rank comes from the input, not from the code.
  kernel = variables['params']['refine']['body']['encoder0']['Conv_0']['kernel']
  assert kernel.shape == (3,) * len(spatial) + (4 + 3, 4)


def test_input_not_divisible_is_a_clear_error():
  x = jnp.ones((1, 14, 14, 4))
  with pytest.raises(ValueError, match='divisible by 4'):
    UNet(UNetSettings(features=(4, 8, 16))).init(jax.random.key(0), x)


@pytest.mark.parametrize('sizes', [(32,), (32, 32, 48, 48)])
def test_sizes_that_are_neither_2d_nor_3d_are_a_clear_error(sizes):
  # A tuple flag given twice (--config.data.image_size=... twice) arrives joined.
  with pytest.raises(ValueError, match=f'data.image_size .*need 2 sizes .* got {len(sizes)}'):
    check_input_shape(sizes, 2, 'data.image_size')
  for valid in ((32, 32), (32, 32, 48)):
    check_input_shape(valid, 2, 'data.image_size')


def test_unknown_lstm_location_is_a_clear_error():
  x = jnp.ones((1, 8, 8, 4))
  with pytest.raises(ValueError, match="model.lstm_at: unknown location 'decoder5'"):
    LSTMUNet(UNetSettings(features=(4, 8)), lstm_at=('decoder5',)).init(jax.random.key(0), x)


def test_dtypes_are_given_by_name_and_computed_in():
  settings = UNetSettings(features=(4, 8), dtype='bfloat16', param_dtype='float32')
  assert (settings.dtype, settings.param_dtype) == (jnp.bfloat16, jnp.float32)
  x = jnp.ones((1, 8, 8, 4))
  params = UNet(settings).init(jax.random.key(0), x)['params']
  logits, _ = UNet(settings).apply({'params': params}, x)
  exact, _ = UNet(UNetSettings(features=(4, 8))).apply({'params': params}, x)
  assert logits.dtype == jnp.float32  # the head's, for the loss
  # computed in bfloat16: off by its rounding (8 bits of mantissa), not by float32's
  error = float(jnp.max(jnp.abs(logits - exact)))
  assert 1e-5 * float(jnp.max(jnp.abs(exact))) < error < 0.05 * float(jnp.max(jnp.abs(exact)))
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  with pytest.raises(ValueError, match=r"model.param_dtype: unknown dtype 'float64'"):
    UNetSettings(param_dtype='float64')


def test_parameter_count_does_not_depend_on_iterations():
  x = jnp.ones((1, 16, 16, 4))
  counts = {t: num_params(jax.eval_shape(LSTMUNet(UNetSettings(features=(4, 8)), num_iterations=t,
                                                  lstm_at=('encoder0', 'bottleneck')).init,
                                         jax.random.key(0), x))
            for t in (1, 4)}
  assert counts[1] == counts[4]


def _manual_unroll(model, params_per_iteration, x):
  """The refinement loop written out by hand: T calls of one step module."""
  body = UNetBody(model.settings, model.lstm_at, parent=None)
  step = RefinementStep(body)
  batch, *spatial, _ = x.shape
  carry = {loc: (jnp.zeros((batch, *(s // 2**(0 if loc == 'encoder0' else 1) for s in spatial),
                            model.settings.features[0 if loc == 'encoder0' else 1])),) * 2
           for loc in model.lstm_at}
  state = (carry, jnp.zeros((batch, *spatial, model.settings.num_outputs)))
  outputs = []
  for params in params_per_iteration:
    state, (logits, _) = step.apply({'params': params['refine']}, state, x)
    outputs.append(logits)
  return jnp.stack(outputs)


def test_scan_equals_t_applications_of_one_shared_step():
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 4))
  model = LSTMUNet(UNetSettings(features=(4, 8), num_outputs=2), num_iterations=3,
                   lstm_at=('encoder0', 'bottleneck'))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  logits, _ = jax.jit(model.apply)({'params': params}, x)
  manual = _manual_unroll(model, [params] * 3, x)
  np.testing.assert_allclose(logits, manual, rtol=1e-5, atol=1e-5)
  # The feedback changes the prediction: iterations differ.
  assert float(jnp.abs(logits[1] - logits[0]).max()) > 1e-3


def test_gradients_reach_the_parameters_through_every_iteration():
  """The final prediction's gradient is the sum of the paths through each iteration,
  and each of them is non-zero."""
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 4))
  model = LSTMUNet(UNetSettings(features=(4, 8), num_outputs=2), num_iterations=3,
                   lstm_at=('encoder0', 'bottleneck'))
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  def final_loss(p):
    return jnp.sum(model.apply({'params': p}, x)[0][-1] ** 2)
  full = jax.jit(jax.grad(final_loss))(params)

  @jax.jit
  @jax.grad
  def path_gradient(p, live):  # only iteration `live` sees the parameters as variables
    per_iteration = [jax.tree.map(lambda v: jnp.where(t == live, v, jax.lax.stop_gradient(v)), p)
                     for t in range(3)]
    return jnp.sum(_manual_unroll(model, per_iteration, x)[-1] ** 2)
  contributions = [path_gradient(params, live) for live in range(3)]  # one compilation
  for t, grads in enumerate(contributions):
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    assert norm > 1e-4, f'no gradient through iteration {t + 1}'
  total = jax.tree.map(lambda *g: sum(g), *contributions)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(total)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('library', ['xla', 'onednn'])
@pytest.mark.parametrize('spatial', [(3, 5), (2, 3, 4)], ids=['2d', '3d'])
def test_transpose_upsampling_equals_conv_transpose_with_its_gradients(spatial, library):
  """The dense + depth_to_space upsampling is exactly a 2x2 stride-2 transposed conv:
  values, and the gradients of input, kernel and bias, with the dense layer computed by
  XLA or by oneDNN (a 1x1 convolution)."""
  if library == 'onednn' and not onednn.available():
    pytest.skip('oneDNN convolutions not built')
  ndim = len(spatial)
  x = jax.random.normal(jax.random.key(0), (2, *spatial, 3))
  ours = Upsample(5, Ops(conv_library=library).dense, 'transpose')
  params = ours.init(jax.random.key(1), x)['params']
  params['bias'] = jax.random.normal(jax.random.key(2), (5,))
  cotangent = jax.random.normal(jax.random.key(3), (2, *(2 * s for s in spatial), 5))
  reference = nn.ConvTranspose(5, (2,) * ndim, strides=(2,) * ndim, padding='VALID')

  def reference_apply(params, x):
    # Dense kernel (C_in, f0*f1*...*C_out) -> transposed-conv kernel (f0, f1, ..., C_in,
    # C_out), spatially flipped (lax.conv_transpose's convention).
    kernel = jnp.moveaxis(params['kernel']['kernel'].reshape(3, *(2,) * ndim, 5), 0, ndim)
    kernel = kernel[(slice(None, None, -1),) * ndim]
    return reference.apply({'params': {'kernel': kernel, 'bias': params['bias']}}, x)

  got, got_vjp = jax.vjp(lambda p, x: ours.apply({'params': p}, x), params, x)
  expected, expected_vjp = jax.vjp(reference_apply, params, x)
  assert expected.shape == (2, *(2 * s for s in spatial), 5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.jit(got_vjp)(cotangent)),
                  jax.tree.leaves(expected_vjp(cotangent))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert num_params({'params': params}) == num_params(reference.init(jax.random.key(0), x))


@pytest.mark.parametrize('library', ['xla', 'onednn'])
@pytest.mark.parametrize('use_bias', [True, False])
def test_dense_has_nn_dense_parameters_and_values(use_bias, library):
  """Same names, shapes and initial values as flax's nn.Dense (the upsampling and the
  output head used it): checkpoints and seeded runs are unchanged."""
  if library == 'onednn' and not onednn.available():
    pytest.skip('oneDNN convolutions not built')
  x = jax.random.normal(jax.random.key(8), (2, 3, 5, 6))
  ours = Ops(conv_library=library).dense(7, use_bias=use_bias)
  assert isinstance(ours, Dense)
  reference = nn.Dense(7, use_bias=use_bias)
  params = ours.init(jax.random.key(7), x)
  want = reference.init(jax.random.key(7), x)
  assert jax.tree.structure(params) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a bias that is not zero
  np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x),
                             rtol=1e-5, atol=1e-5)


def _native_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), 'SAME',
                                      dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))


@pytest.mark.parametrize('kernel_size', [1, 3, 5])
@pytest.mark.parametrize('channels', [(3, 4), (6, 2)], ids=['fold_inputs', 'fold_outputs'])
def test_depth_folded_conv_equals_3d_convolution_and_its_gradient(kernel_size, channels):
  """Values and both gradients (input, kernel) of the depth-folded form equal jax.grad of
  XLA's own 3D convolution, on a non-cubic input, folding the inputs (C_in <= C_out)
  and the outputs (C_in > C_out)."""
  in_channels, out_channels = channels
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 7, in_channels))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size,) * 3 + channels)
  cotangent = jax.random.normal(jax.random.key(2), (2, 5, 6, 7, out_channels))

  def assert_equal_to_float32_rounding(ours, reference):
    # Sums of up to a few hundred products added in another order: a few float32 eps of
    # the largest value (elements near 0 have no relative precision); 64 leaves room for
    # other CPUs' kernels. A wrong or missing tap is off by a sizeable share of it.
    scale = float(np.max(np.abs(reference)))
    np.testing.assert_allclose(ours, reference, rtol=0,
                               atol=64 * np.finfo(np.float32).eps * scale)
  assert_equal_to_float32_rounding(depth_folded_conv(x, kernel), _native_conv(x, kernel))

  def grads(conv):
    return jax.grad(lambda x, k: jnp.sum(conv(x, k) * cotangent), argnums=(0, 1))(x, kernel)
  for ours, reference in zip(grads(depth_folded_conv), grads(_native_conv)):
    assert_equal_to_float32_rounding(ours, reference)


def test_conv_module_matches_flax_conv_parameters_and_values():
  """Same parameter names, shapes and initial values as nn.Conv, so checkpoints and the
  PyTorch weight copy do not depend on compute.conv3d; both methods give nn.Conv's
  output."""
  x = jax.random.normal(jax.random.key(0), (1, 4, 6, 8, 3))
  reference = nn.Conv(5, (3, 3, 3), padding='SAME')
  expected_params = reference.init(jax.random.key(1), x)['params']
  for method in ('native', 'depth_folded'):
    ours = Ops(conv3d=method).conv(5, 3)
    assert isinstance(ours, Conv)
    params = ours.init(jax.random.key(1), x)['params']
    jax.tree.map(np.testing.assert_array_equal, params, expected_params)
    params = {'kernel': params['kernel'], 'bias': jnp.arange(5.0)}
    np.testing.assert_allclose(ours.apply({'params': params}, x),
                               reference.apply({'params': params}, x), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='compute.conv3d'):
    Ops(conv3d='fast')


def test_conv3d_auto_depends_on_the_backend_and_library():
  def conv3d(value, backend, library='xla'):
    compute = {'conv3d': value, 'conv_library': library, 'norm_kernel': 'xla'}
    return ops_from_config(compute, backend=backend, num_devices=1).conv3d
  assert conv3d('auto', 'cpu') == 'depth_folded'
  if onednn.available():
    assert conv3d('auto', 'cpu', 'onednn') == 'native'  # oneDNN's 3D kernels are fast
    assert conv3d('depth_folded', 'cpu', 'onednn') == 'depth_folded'
  assert conv3d('auto', 'gpu') == 'native'
  assert conv3d('native', 'cpu') == 'native'
  with pytest.raises(ValueError, match="compute.conv3d: unknown choice 'fast'"):
    conv3d('fast', 'cpu')


def test_3d_unet_and_convlstm_are_the_same_function_with_either_conv3d():
  """A 3D U-Net (encoder, decoder and concatenated skips: both folding sides) gives
  equal logits and parameter gradients with native and depth-folded convolutions, and
  so does a 3D ConvLSTM cell."""
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4, 2))
  models = [UNet(UNetSettings(features=(4, 8)), Ops(conv3d=method))
            for method in ('native', 'depth_folded')]
  params = jax.jit(models[0].init)(jax.random.key(1), x)['params']

  def loss(params, model):
    logits, _ = model.apply({'params': params}, x)
    return jnp.sum(jnp.sin(logits))
  (native_loss, native_grads), (folded_loss, folded_grads) = (
      jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, model) for model in models)
  np.testing.assert_allclose(folded_loss, native_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(folded_grads), jax.tree.leaves(native_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # float32 summation order

  carry = ConvLSTMCell.initialize_carry(x.shape[:-1], 3)
  cells = [ConvLSTMCell(3, Ops(conv3d=method).conv) for method in ('native', 'depth_folded')]
  cell_params = jax.jit(cells[0].init)(jax.random.key(2), carry, x)
  outputs = [jax.jit(cell.apply)(cell_params, carry, x) for cell in cells]
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5), *outputs)


@pytest.mark.parametrize('shape', [(2, 6, 4, 3), (1, 4, 6, 2, 3)])
def test_downsample_is_max_pooling_with_its_gradient(shape):
  """On inputs without ties, the reshape-and-max pooling has nn.max_pool's values and
  gradient (its gradient differs only in how ties inside a window share it)."""
  ndim = len(shape) - 2
  x = jax.random.permutation(jax.random.key(0), np.prod(shape)).reshape(shape) / 7.0
  window = (2,) * ndim

  def reference(x):
    return nn.max_pool(x, window, strides=window)
  np.testing.assert_array_equal(downsample(x), reference(x))
  cotangent = jax.random.normal(jax.random.key(1), reference(x).shape)
  ours, expected = (jax.grad(lambda x: jnp.sum(f(x) * cotangent))(x)
                    for f in (downsample, reference))
  np.testing.assert_array_equal(ours, expected)


def test_remat_levels_keeps_parameters_and_gradients():
  """Recomputing every level's conv block and ConvLSTM cell changes memory, never the
  parameter tree (checkpoints stay compatible) or the gradients."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  plain, remat = (LSTMUNet(UNetSettings(features=(4, 8), remat_levels=flag), num_iterations=2,
                           lstm_at=('encoder0',)) for flag in (False, True))
  params = jax.jit(plain.init)(jax.random.key(1), x)['params']

  def shapes(params):
    return {jax.tree_util.keystr(path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert shapes(jax.eval_shape(remat.init, jax.random.key(1), x)['params']) == shapes(params)

  def grads(model):
    return jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.apply({'params': p}, x)[0]))))(
        params)
  for a, b in zip(jax.tree.leaves(grads(remat)), jax.tree.leaves(grads(plain))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # float32 recomputation order


def test_remat_lowers_the_compiled_steps_memory():
  """model.remat keeps only each refinement iteration's inputs for the backward pass.
  XLA's memory analysis of the compiled gradient shows it. On XLA:CPU this needs the
  rolled loop (model.unroll=False): with unrolled iterations its scheduler runs the
  recomputation early, next to the forward pass (BENCHMARKS.md); TPU compilers keep it late."""
  x = jnp.ones((2, 32, 32, 3))

  def temporaries(remat):
    model = LSTMUNet(UNetSettings(features=(8, 16)), num_iterations=4, lstm_at=('encoder0',),
                     remat=remat, unroll=False)
    params = jax.eval_shape(lambda: model.init(jax.random.key(1), x)['params'])
    loss = lambda p: jnp.sum(jnp.sin(model.apply({'params': p}, x)[0]))  # noqa: E731
    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes
  assert temporaries(remat=True) < 0.5 * temporaries(remat=False)


def test_bfloat16_norm_is_recomputed_with_the_same_parameters_and_gradients():
  """In bfloat16, NormAct recomputes flax's GroupNorm in the backward pass (its float32
  intermediates are not kept): the parameter tree, values and gradients stay those of
  nn.GroupNorm."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16), jnp.bfloat16) * 3 + 1
  ours = NormAct('group', num_groups=4, dtype=jnp.bfloat16)
  reference = nn.GroupNorm(num_groups=4, dtype=jnp.bfloat16)
  params = ours.init(jax.random.key(1), x)['params']
  assert set(params) == {'GroupNorm_0'}
  reference_params = reference.init(jax.random.key(1), x)['params']
  assert jax.tree.map(jnp.shape, params['GroupNorm_0']) == jax.tree.map(jnp.shape,
                                                                        reference_params)
  cotangent = jax.random.normal(jax.random.key(2), x.shape, jnp.float32)

  def value_and_grads(apply, params):
    loss = lambda p, x: jnp.sum(apply({'params': p}, x).astype(jnp.float32) * cotangent)  # noqa: E731
    return loss(params, x), jax.grad(loss, argnums=(0, 1))(params, x)
  (value, (grad_params, grad_x)), (ref_value, (ref_params, ref_x)) = (
      value_and_grads(ours.apply, params),
      value_and_grads(reference.apply, params['GroupNorm_0']))
  assert float(value) == float(ref_value)
  np.testing.assert_array_equal(np.asarray(grad_x, np.float32), np.asarray(ref_x, np.float32))
  for a, b in zip(jax.tree.leaves(grad_params['GroupNorm_0']), jax.tree.leaves(ref_params)):
    np.testing.assert_array_equal(a, b)
  # The backward pass recomputes the normalisation: it appears twice in the jaxpr.
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(
      ours.apply({'params': params}, x).astype(jnp.float32))))(x))
  assert 'remat' in jaxpr or 'checkpoint' in jaxpr
