"""Training windows: cropping with padding, foreground oversampling, 2D slices of 3D."""

import numpy as np
import pytest

from jaxseg.data.preprocessing import foreground_voxels
from jaxseg.data.sampling import crop_padded, sample_window, window_shape


def test_crop_padded_inside_and_across_the_border():
  array = np.arange(5 * 6).reshape(5, 6) + 1
  np.testing.assert_array_equal(crop_padded(array, (1, 2), (2, 3)), array[1:3, 2:5])
  out = crop_padded(array, (-1, 4), (3, 4))
  expected = np.zeros((3, 4), array.dtype)
  expected[1:, :2] = array[:2, 4:]
  np.testing.assert_array_equal(out, expected)
  assert not crop_padded(array, (7, 0), (2, 2)).any()
  channels = np.ones((4, 4, 3))
  assert crop_padded(channels, (0, 0), (6, 6)).shape == (6, 6, 3)


def test_window_shape():
  assert window_shape((8, 8), 3) == (8, 8, 1)
  assert window_shape((8, 8, 8), 3) == (8, 8, 8)
  with pytest.raises(ValueError, match='does not fit 2D volumes'):
    window_shape((8, 8, 8), 2)


def _volume():
  labels = np.zeros((40, 40, 30), np.uint8)
  labels[30:33, 5:8, 20:22] = 3  # a small tumour far from the centre
  image = np.stack([np.arange(labels.size, dtype=np.float32).reshape(labels.shape)] * 2, -1)
  return image, labels, foreground_voxels(labels, seed=0)


def test_foreground_oversampling_centres_windows_on_tumour():
  image, labels, foreground = _volume()
  rng = np.random.default_rng(0)
  always = [sample_window(rng, image, labels, foreground, (8, 8, 8), 1.0)[1] for _ in range(20)]
  assert all((patch == 3).any() for patch in always)
  never = [sample_window(rng, image, labels, foreground, (8, 8, 8), 0.0)[1] for _ in range(50)]
  assert sum((patch == 3).any() for patch in never) < 10  # the tumour is 0.05% of the volume


def test_windows_match_the_volume_and_are_deterministic():
  image, labels, foreground = _volume()
  patch, patch_labels = sample_window(np.random.default_rng(3), image, labels, foreground,
                                      (8, 8, 8), 0.5)
  again = sample_window(np.random.default_rng(3), image, labels, foreground, (8, 8, 8), 0.5)
  np.testing.assert_array_equal(patch, again[0])
  # The image window is the volume at the same place as the label window.
  start = np.unravel_index(int(patch[0, 0, 0, 0]), labels.shape)
  np.testing.assert_array_equal(patch_labels, labels[start[0]:start[0] + 8,
                                                     start[1]:start[1] + 8,
                                                     start[2]:start[2] + 8])


def test_2d_slices_of_3d_volumes_and_padding():
  image, labels, foreground = _volume()
  rng = np.random.default_rng(0)
  patch, patch_labels = sample_window(rng, image, labels, foreground, (16, 16), 1.0)
  assert patch.shape == (16, 16, 2) and patch_labels.shape == (16, 16)
  assert (patch_labels == 3).any()
  # A volume smaller than the window is padded with zeros, never cut.
  big, big_labels = sample_window(rng, image, labels, foreground, (64, 48), 0.0)
  assert big.shape == (64, 48, 2)
  assert (big_labels == 3).sum() in (0, 9)  # a whole tumour slice or none
  assert np.count_nonzero(big[..., 0]) >= 40 * 40 - 1
