import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses


def test_soft_dice_loss_is_zero_for_confident_correct_and_one_for_wrong():
  targets = jnp.array([[[1.0, 0.0], [0.0, 0.0]]])  # (B=1, 2, R=2)
  confident = jnp.where(targets > 0, 50.0, -50.0)
  assert float(losses.soft_dice_loss(confident, targets)) == pytest.approx(0.0, abs=1e-4)
  # Region 0 all wrong (dice 0); region 1 empty and predicted empty (dice 1).
  wrong = jnp.where(targets > 0, -50.0, 50.0).at[..., 1].set(-50.0)
  assert float(losses.soft_dice_loss(wrong, targets)) == pytest.approx(0.5, abs=1e-4)


def test_iteration_weights():
  np.testing.assert_allclose(losses.iteration_weights(4), [0.25] * 4)
  np.testing.assert_allclose(losses.iteration_weights(2, (1.0, 3.0)), [0.25, 0.75])
  with pytest.raises(ValueError, match='loss.iteration_weights: need 3'):
    losses.iteration_weights(3, (1.0, 1.0))


def test_total_loss_weights_iterations():
  targets = jnp.zeros((1, 4, 4, 1)).at[0, :2].set(1.0)
  good = jnp.where(targets > 0, 9.0, -9.0)
  bad = -good
  logits = jnp.stack([bad, good])  # iteration 1 wrong, iteration 2 right
  loss_late, per_iteration = losses.total_loss(logits, (), targets, jnp.array([0.0, 1.0]))
  loss_early, _ = losses.total_loss(logits, (), targets, jnp.array([1.0, 0.0]))
  assert per_iteration[0] > per_iteration[1]
  assert float(loss_late) == pytest.approx(float(per_iteration[1]))
  assert float(loss_early) == pytest.approx(float(per_iteration[0]))


def test_downsample_targets_averages_blocks():
  targets = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(1.0)
  pooled = losses.downsample_targets(targets, 2)
  assert pooled.shape == (1, 2, 2, 1)
  np.testing.assert_allclose(pooled[0, :, :, 0], [[0.25, 0.0], [0.0, 0.0]])
