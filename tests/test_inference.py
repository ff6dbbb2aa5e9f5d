"""Sliding-window prediction of whole cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import parallel
from jaxseg.inference import SlidingWindowPredictor, gaussian_importance, window_starts


def test_window_starts_cover_with_overlap():
  assert window_starts(10, 16, 0.5) == [0]
  assert window_starts(16, 16, 0.5) == [0]
  starts = window_starts(50, 16, 0.5)
  assert starts[0] == 0 and starts[-1] == 50 - 16
  assert all(b - a <= 8 for a, b in zip(starts, starts[1:]))
  assert window_starts(32, 16, 0.0) == [0, 16]


def test_gaussian_importance_peaks_in_the_centre():
  weights = gaussian_importance((9, 9))
  assert weights[4, 4] == weights.max() == 1.0
  assert weights[0, 0] > 0 and weights[0, 0] < weights[2, 2]


# A "model" whose logits are its input's first channel (T=2 iterations: x and -x), so the
# averaged sliding-window output must reproduce the volume itself.
@jax.jit
def _echo(params, images):
  return jnp.stack([images[..., :1], -images[..., :1]]) * params


@pytest.mark.parametrize('shapes, image_size', [
    ([(37, 50, 2), (16, 16, 2), (9, 20, 2)], (16, 16)),      # 2D images, some padded
    ([(20, 24, 7, 2)], (16, 16)),                            # 2D model on a 3D volume
    ([(20, 17, 18, 2), (8, 8, 8, 2)], (8, 8, 8)),            # 3D patches
])
def test_sliding_window_reassembles_the_whole_case(shapes, image_size):
  rng = np.random.default_rng(0)
  volumes = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
  mesh = parallel.make_mesh()
  predictor = SlidingWindowPredictor(_echo, image_size, mesh, batch_size=3)
  results = list(predictor.predict(1.0, volumes))
  assert [index for index, _ in results] == list(range(len(volumes)))
  for (_, logits), volume in zip(results, volumes):
    assert logits.shape == (2, *volume.shape[:-1], 1)
    np.testing.assert_allclose(logits[0, ..., 0], volume[..., 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, ..., 0], -volume[..., 0], rtol=1e-5, atol=1e-5)


def test_bad_overlap_is_refused():
  with pytest.raises(ValueError, match='eval.overlap'):
    SlidingWindowPredictor(_echo, (8, 8), parallel.make_mesh(), batch_size=1, overlap=1.0)


def test_one_window_equals_the_plain_forward_pass(tiny_lstm_config):
  from jaxseg.data import load_splits
  from jaxseg.train_state import setup_model
  data = load_splits(tiny_lstm_config.data, ('val',))['val']
  model, init_state, _ = setup_model(tiny_lstm_config, data)
  params = init_state().params
  mesh = parallel.make_mesh()
  images = [np.asarray(data.images[i]) for i in range(3)]  # each exactly one 32x32 window
  predictor = SlidingWindowPredictor.from_config(model, tiny_lstm_config.eval, (32, 32), mesh)
  windowed = dict(predictor.predict(params, images))
  plain = np.asarray(model.apply({'params': params}, np.stack(images))[0])
  for i in range(3):
    np.testing.assert_array_equal(windowed[i], plain[:, i])


def _flip_equivariant(params, images):
  """Logits of a model that is mirror-symmetric by construction: x + flips of x."""
  out = images[..., :1]
  for axes in ([1], [2], [1, 2]):
    out = out + jnp.flip(images[..., :1], axes)
  return out[None] * params


def _lopsided(params, images):
  """Logits that depend on the position: not mirror-symmetric."""
  ramp = jnp.arange(images.shape[1], dtype=jnp.float32)[None, :, None, None]
  return (images[..., :1] * ramp)[None] * params


def test_mirroring_tta_keeps_a_symmetric_model_and_changes_others():
  from jaxseg.inference import mirrored
  images = np.random.default_rng(0).standard_normal((2, 8, 6, 2)).astype(np.float32)
  symmetric = np.asarray(_flip_equivariant(1.0, images))
  np.testing.assert_allclose(np.asarray(mirrored(_flip_equivariant, (0, 1))(1.0, images)),
                             symmetric, rtol=1e-6, atol=1e-5)
  plain = np.asarray(_lopsided(1.0, images))
  tta = np.asarray(mirrored(_lopsided, (0,))(1.0, images))
  assert np.abs(tta - plain).max() > 0.1
  # Mirroring axis 0: the mean of the model and its flipped-back mirror image.
  expected = (plain + np.flip(np.asarray(_lopsided(1.0, np.flip(images, 1))), 2)) / 2
  np.testing.assert_allclose(tta, expected, rtol=1e-6)
  assert mirrored(_lopsided, ()) is _lopsided


def test_bad_mirror_axes_are_refused():
  from jaxseg.inference import check_mirror_axes
  check_mirror_axes((0, 1, 2), 3)
  for axes in [(3,), (0, 0), (-1,)]:
    with pytest.raises(ValueError, match='eval.mirror_axes'):
      check_mirror_axes(axes, 3)
