"""Sliding-window prediction of whole cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import parallel
from jaxseg.inference import gaussian_importance, predict_cases, window_starts


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
  results = list(predict_cases(_echo, 1.0, volumes, image_size, batch_size=3, mesh=mesh))
  assert [index for index, _ in results] == list(range(len(volumes)))
  for (_, logits), volume in zip(results, volumes):
    assert logits.shape == (2, *volume.shape[:-1], 1)
    np.testing.assert_allclose(logits[0, ..., 0], volume[..., 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, ..., 0], -volume[..., 0], rtol=1e-5, atol=1e-5)


def test_bad_overlap_is_refused():
  with pytest.raises(ValueError, match='eval.overlap'):
    list(predict_cases(_echo, 1.0, [np.zeros((8, 8, 1))], (8, 8), 1, parallel.make_mesh(), 1.0))
