"""augment.py: every config is static, so each one compiles; the tests share few configs."""

import functools
import math

import jax
import ml_collections
import numpy as np
import pytest

from configs.common import get_common_config
from jaxseg import augment

SHAPES = {'2d': (16, 16), '3d': (8, 8, 8)}
# Jitted: run eagerly, every primitive compiles on its own (slower on XLA:CPU).
apply_affine = jax.jit(augment.apply_affine)
affine_matrix = jax.jit(augment.affine_matrix)


def make_aug(**overrides) -> ml_collections.ConfigDict:
  """The augment config with every key; the defaults are the training defaults."""
  aug = get_common_config(None).augment
  aug.update({'enabled': True, **overrides})
  return aug


def only(**overrides) -> ml_collections.ConfigDict:
  """A config with every probability 0 except those given."""
  return make_aug(**{**{name: 0.0 for name in augment.PROBABILITIES}, **overrides})


def make_batch(spatial, batch=2, seed=0):
  """Normal images (B, *spatial, 2) and nested 0/1 boxes (B, *spatial, 3) off the centre."""
  images = np.random.default_rng(seed).normal(size=(batch, *spatial, 2)).astype(np.float32)
  index, half = np.indices(spatial), min(spatial) // 2
  # Boxes [1, size) along every axis: off the centre, so any rotation or zoom moves them.
  boxes = np.stack([(index.min(0) >= 1) & (index.max(0) < size)
                    for size in (half + 1, half, half - 1)], -1)
  targets = np.broadcast_to(boxes, (batch, *boxes.shape)).astype(np.float32)
  return images, targets


def augmenter(aug):
  augment.check_config(aug)
  return jax.jit(functools.partial(augment.augment_batch, aug=aug))


def run(aug, images, targets, seed=0):
  out = augmenter(aug)(jax.random.key(seed), images, targets)
  return tuple(np.asarray(a) for a in out)


@pytest.mark.parametrize('rank', SHAPES)
def test_disabled_or_zero_probabilities_is_exact_identity(rank):
  images, targets = make_batch(SHAPES[rank])
  for aug in (make_aug(enabled=False), only()):
    out_images, out_targets = run(aug, images, targets)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_targets, targets)


@pytest.mark.parametrize('rank', SHAPES)
def test_flip_probability_one_flips_every_spatial_axis(rank):
  images, targets = make_batch(SHAPES[rank])
  out_images, out_targets = run(only(flip_probability=1.0), images, targets)
  axes = tuple(range(1, images.ndim - 1))
  np.testing.assert_array_equal(out_images, np.flip(images, axes))
  np.testing.assert_array_equal(out_targets, np.flip(targets, axes))


def test_apply_affine_rotates_by_90_degrees_like_rot90_and_zooms_about_the_centre():
  x = np.random.default_rng(0).normal(size=(9, 9, 2)).astype(np.float32)
  rotated = apply_affine(x, affine_matrix(np.array([math.pi / 2], np.float32), 1.0))
  # cos(pi/2) is -4e-8 in float32: equal up to rounding, not bit for bit.
  np.testing.assert_allclose(rotated, np.rot90(x, -1, axes=(0, 1)), atol=1e-5)
  # Zoom 1/2: output voxel 4 + d samples input voxel 4 + 2d; integer coordinates, exact.
  zoomed = apply_affine(x, affine_matrix(np.zeros(1, np.float32), 0.5))
  expected = np.zeros_like(x)
  expected[2:7, 2:7] = x[::2, ::2]
  np.testing.assert_array_equal(zoomed, expected)


def test_3d_angles_rotate_about_each_axis_and_compose_to_a_rotation():
  x = np.random.default_rng(0).normal(size=(7, 7, 7, 1)).astype(np.float32)
  for axis in range(3):
    angles = np.zeros(3, np.float32)
    angles[axis] = math.pi / 2
    plane = tuple(a for a in range(3) if a != axis)
    np.testing.assert_allclose(apply_affine(x, affine_matrix(angles, 1.0)),
                               np.rot90(x, -1, axes=plane), atol=1e-5)
  matrix = np.asarray(affine_matrix(np.array([0.3, -1.1, 2.0], np.float32), 1.0))
  np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-6)
  assert np.linalg.det(matrix) == pytest.approx(1.0, abs=1e-6)


def test_zero_angle_and_unit_zoom_when_drawn_is_exact_identity():
  images, targets = make_batch(SHAPES['2d'])
  aug = only(rotation_probability=1.0, rotation_degrees=0.0,
             scale_probability=1.0, scale_range=(1.0, 1.0))
  out_images, out_targets = run(aug, images, targets)
  np.testing.assert_array_equal(out_images, images)
  np.testing.assert_array_equal(out_targets, targets)


def assert_binary_and_nested(targets):
  assert set(np.unique(targets)) == {0.0, 1.0}
  # The boxes stay nested: one map moves every region.
  assert np.all(targets[..., 2] <= targets[..., 1])
  assert np.all(targets[..., 1] <= targets[..., 0])


def test_rotation_and_zoom_move_images_and_keep_targets_binary_in_3d():
  images, targets = make_batch(SHAPES['3d'])
  aug = only(rotation_probability=1.0, rotation_degrees=30.0,
             scale_probability=1.0, scale_range=(0.8, 1.2))
  out_images, out_targets = run(aug, images, targets)
  assert out_images.shape == images.shape and out_images.dtype == np.float32
  assert out_targets.shape == targets.shape and out_targets.dtype == np.float32
  assert_binary_and_nested(out_targets)
  for i in range(len(images)):
    assert not np.array_equal(out_images[i], images[i])
    assert not np.array_equal(out_targets[i], targets[i])


def test_draws_are_per_sample_keyed_and_leave_undrawn_samples_untouched():
  images, targets = make_batch(SHAPES['2d'], batch=16)
  fn = augmenter(only(rotation_probability=0.5, rotation_degrees=30.0,
                      scale_probability=0.5, scale_range=(0.8, 1.2)))
  (first, first_targets), again, other = (
      fn(jax.random.key(seed), images, targets) for seed in (1, 1, 2))
  np.testing.assert_array_equal(first, again[0])
  np.testing.assert_array_equal(first_targets, again[1])
  assert not np.array_equal(first, other[0])
  assert_binary_and_nested(np.asarray(first_targets))
  same = [np.array_equal(first[i], images[i]) for i in range(len(images))]
  # A quarter of the samples draw neither: bit-identical, never an interpolated copy.
  assert any(same) and not all(same)
  for i in np.flatnonzero(same):
    np.testing.assert_array_equal(first_targets[i], targets[i])


def test_intensity_transforms_change_images_only():
  images, targets = make_batch(SHAPES['3d'])
  aug = only(intensity_scale_probability=1.0, intensity_shift_probability=1.0,
             gamma_probability=1.0, noise_probability=1.0)
  out_images, out_targets = run(aug, images, targets)
  np.testing.assert_array_equal(out_targets, targets)
  for i in range(len(images)):
    for c in range(images.shape[-1]):
      assert not np.allclose(out_images[i, ..., c], images[i, ..., c], atol=1e-3)


def test_gamma_rescales_by_channel_min_max_and_keeps_a_constant_channel():
  images, targets = make_batch(SHAPES['2d'])
  images[1, ..., 1] = 0.7  # a constant channel must not divide by zero
  out, _ = run(only(gamma_probability=1.0, gamma_range=(0.5, 0.5)), images, targets)
  np.testing.assert_array_equal(out[1, ..., 1], images[1, ..., 1])
  x, y = images[0, ..., 0].ravel(), out[0, ..., 0].ravel()
  unit = (x - x.min()) / (x.max() - x.min())
  np.testing.assert_allclose(y, np.sqrt(unit) * (x.max() - x.min()) + x.min(), atol=1e-5)


def test_noise_changes_images_by_at_most_noise_std():
  images, targets = make_batch(SHAPES['2d'], batch=4)
  out, _ = run(only(noise_probability=1.0, noise_std=0.1), images, targets)
  std = (out - images).std(axis=(1, 2))  # per sample and channel
  assert np.all(std > 0) and np.all(std < 0.12)


def test_check_config_names_the_bad_key():
  augment.check_config(make_aug())
  message = r'augment.rotation_probability must be in \[0, 1\], got 1.5'
  with pytest.raises(ValueError, match=message):
    augment.check_config(make_aug(rotation_probability=1.5))
  with pytest.raises(ValueError, match=r'augment.scale_range .*low <= high'):
    augment.check_config(make_aug(scale_range=(1.2, 0.8)))
  with pytest.raises(ValueError, match=r'augment.gamma_range .*0 < low'):
    augment.check_config(make_aug(gamma_range=(0.0, 1.5)))
  with pytest.raises(ValueError, match='augment.noise_std must be >= 0'):
    augment.check_config(make_aug(noise_std=-0.1))
