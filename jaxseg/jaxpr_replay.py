"""Replaying a traced JAX program (a jaxpr) flat: every jit call inlined and every scan
unrolled, for converters that see the replay (jax2onnx, model_export.py).

An unrolled scan is the same arithmetic: iteration t of the body on the carry of t - 1,
the per-iteration outputs stacked along a new leading axis. ONNX Runtime runs the flat
graph of the LSTM-U-Net's few iterations faster than an ONNX Loop over the body
(BENCHMARKS.md), and the flat graph is what XLA compiles for jaxseg too (model.unroll).
"""

import jax.numpy as jnp
from jax.extend import core as jax_core

_CALLS = ('jit', 'pjit')


def replay(jaxpr, consts, *args) -> list:
  """The outputs of `jaxpr` on `args`, each primitive bound again (so a tracer of the
  caller records it), jit calls inlined and scans unrolled; as jax.core.eval_jaxpr
  otherwise."""
  env = {}

  def read(var):
    return var.val if isinstance(var, jax_core.Literal) else env[var]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    inputs = [read(var) for var in eqn.invars]
    if eqn.primitive.name in _CALLS:
      inner = eqn.params['jaxpr']
      outputs = replay(inner.jaxpr, inner.consts, *inputs)
    elif eqn.primitive.name == 'scan':
      outputs = _unrolled_scan(eqn.params, inputs)
    else:
      with eqn.ctx.manager:
        outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outputs = [outputs]
    env.update(zip(eqn.outvars, outputs))
  return [read(var) for var in jaxpr.outvars]


def _unrolled_scan(params: dict, inputs: list) -> list:
  """lax.scan's outputs (final carry, stacked per-iteration outputs), the body replayed
  `length` times."""
  body, length = params['jaxpr'], params['length']
  num_consts, num_carry = params['num_consts'], params['num_carry']
  consts = inputs[:num_consts]
  carry = inputs[num_consts:num_consts + num_carry]
  xs = inputs[num_consts + num_carry:]
  order = range(length - 1, -1, -1) if params['reverse'] else range(length)
  ys = {}
  for t in order:
    outputs = replay(body.jaxpr, body.consts, *consts, *carry, *[x[t] for x in xs])
    carry, ys[t] = outputs[:num_carry], outputs[num_carry:]
  stacked = [jnp.stack(parts) for parts in zip(*(ys[t] for t in range(length)))]
  return list(carry) + stacked
