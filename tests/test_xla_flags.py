import os
import subprocess
import sys

import numpy as np

from jaxseg.xla_flags import DEFAULT_FLAGS, apply_default_flags


def test_defaults_are_added_but_never_override_the_user():
  env = {}
  assert apply_default_flags(env).split() == list(DEFAULT_FLAGS)
  name = DEFAULT_FLAGS[0].split('=')[0]
  env = {'XLA_FLAGS': f'{name}=LIBRARY_FUSION_TYPE_NONE --xla_dump_to=/tmp/x'}
  assert apply_default_flags(env) == f'{name}=LIBRARY_FUSION_TYPE_NONE --xla_dump_to=/tmp/x'
  env = {'JAXSEG_XLA_DEFAULTS': '0'}
  assert apply_default_flags(env) == ''


_GRADIENT = '''
import sys, jax, jax.numpy as jnp, numpy as np
from jaxseg.models import UNet
x = jax.random.normal(jax.random.key(0), (2, 16, 16, 4))
model = UNet(features=(8, 16), num_outputs=3)
params = model.init(jax.random.key(1), x)['params']
grads = jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x)[0] ** 2))(params)
np.save(sys.argv[1], np.concatenate([g.ravel() for g in jax.tree.leaves(grads)]))
'''


def test_default_flags_keep_the_numerics(tmp_path):
  """A U-Net gradient with the default XLA flags equals the one without (float32)."""
  results = {}
  for defaults in ('1', '0'):
    env = {**os.environ, 'JAXSEG_XLA_DEFAULTS': defaults, 'XLA_FLAGS': ''}
    script = 'from jaxseg.xla_flags import apply_default_flags; apply_default_flags()\n' + _GRADIENT
    path = tmp_path / f'{defaults}.npy'
    subprocess.run([sys.executable, '-c', script, str(path)], env=env, check=True)
    results[defaults] = np.load(path)
  # Equal up to float32 summation order: relative error of the whole gradient ~1e-7.
  relative_error = np.linalg.norm(results['1'] - results['0']) / np.linalg.norm(results['0'])
  assert relative_error < 1e-5
