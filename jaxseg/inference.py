"""Prediction: model outputs -> binary region masks of every refinement iteration."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_predict_fn(model, mesh: Mesh):
  """jit-compiled fn(params, images (B, *spatial, C)) -> masks (T, B, *spatial, R) bool.

  A region is predicted where its sigmoid exceeds 0.5, i.e. where its logit is positive.
  """
  def predict(params, images):
    logits, _ = model.apply({'params': params}, images)
    return logits > 0
  return jax.jit(predict, out_shardings=NamedSharding(mesh, P(None, 'data')))
