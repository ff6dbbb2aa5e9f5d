"""sliding_window.py's mirroring in numpy alone, as the ONNX Runtime predictor runs it:
the same as on the device. (Its windows: test_inference.py.)"""

import jax.numpy as jnp
import numpy as np

from jaxseg import sliding_window
from jaxseg.inference import mirrored


def _lopsided(images):
  """Logits (T=1) that depend on the position: not mirror-symmetric."""
  ramp = np.arange(images.shape[1], dtype=np.float32)[None, :, None, None]
  return (images[..., :1] * ramp + images[..., 1:2] ** 2)[None]


def test_numpy_mirroring_equals_the_devices():
  images = np.random.default_rng(0).standard_normal((2, 8, 6, 2)).astype(np.float32)
  on_host = sliding_window.mirrored(_lopsided, (0, 1))(images)
  on_device = mirrored(lambda params, x: _lopsided(x) * params, (0, 1))(1.0, jnp.asarray(images))
  np.testing.assert_allclose(on_host, np.asarray(on_device), rtol=1e-6, atol=1e-6)
  # Four passes: the plain one and three flipped back, averaged.
  flips = [(), (1,), (2,), (1, 2)]
  expected = sum(np.flip(_lopsided(np.flip(images, f)), tuple(a + 1 for a in f))
                 for f in flips) / 4
  np.testing.assert_allclose(on_host, expected, rtol=1e-6, atol=1e-6)

