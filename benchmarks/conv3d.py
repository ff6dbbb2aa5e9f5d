"""3D convolution on CPU: native against depth-folded (jaxseg's compute.conv3d), XLA's
against oneDNN's (compute.conv_library), and PyTorch.

  python benchmarks/conv3d.py            # the conv shapes of the '3d' U-Net at 64^3, batch 2

For each (input size, C_in -> C_out) of a 3x3x3 'SAME' convolution: forward, and
forward + backward (gradients of input and kernel), median of 5 after one warm-up, for
the native 3D convolution and jaxseg's depth_folded_conv (which folds the taps into the
inputs when C_in <= C_out, else into the outputs), each computed by XLA and, where
jaxseg's oneDNN extension is built, by oneDNN; and, when torch is installed, PyTorch
eager in its channels-last-3d memory format (its faster one here). Also checks that
every form's values equal XLA's native ones.
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg.models.backend import onednn  # noqa: E402
from benchmarks import timing  # noqa: E402
from jaxseg.models.backend.xla import conv as _conv, depth_folded_conv  # noqa: E402

median_ms = functools.partial(timing.median_ms, repeats=5, warmups=1)

# Encoder, bottleneck and decoder convs of the U-Net with features (8, 16, 32, 64) on
# 2 x 64^3 patches (configs/unet.py:3d at the benchmark's 64^3).
SHAPES = [(64, 4, 8), (64, 8, 8), (32, 8, 16), (32, 16, 16), (16, 16, 32), (16, 32, 32),
          (8, 32, 64), (8, 64, 64), (16, 64, 32), (32, 32, 16), (64, 16, 8)]


def time_jax(conv, x, kernel, cotangent) -> tuple[float, float]:
  forward = jax.jit(conv)
  both = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * cotangent), argnums=(0, 1)))
  return (median_ms(lambda: forward(x, kernel).block_until_ready()),
          median_ms(lambda: jax.block_until_ready(both(x, kernel))))


def time_torch(x, kernel, cotangent) -> tuple[float, float] | None:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  as_torch = lambda a, axes: torch.from_numpy(np.ascontiguousarray(  # noqa: E731
      np.transpose(np.asarray(a), axes))).contiguous(memory_format=torch.channels_last_3d)
  tx, tc = as_torch(x, (0, 4, 1, 2, 3)), as_torch(cotangent, (0, 4, 1, 2, 3))
  tk = as_torch(kernel, (4, 3, 0, 1, 2))
  tx.requires_grad_(True)
  tk.requires_grad_(True)

  def forward():
    with torch.no_grad():
      torch.nn.functional.conv3d(tx, tk, padding=1)

  def both():
    (torch.nn.functional.conv3d(tx, tk, padding=1) * tc).sum().backward()
  return median_ms(forward), median_ms(both)


def methods() -> dict:
  """jaxseg's ways to compute a 3D convolution: (x, kernel) -> y."""
  forms = {'XLA native': _conv, 'XLA folded': depth_folded_conv}
  if onednn.available():
    forms['oneDNN native'] = onednn.convolve
    forms['oneDNN folded'] = lambda x, k: depth_folded_conv(x, k, onednn.convolve)
  return forms


def main():
  forms = methods()
  print(f'jax {jax.__version__}; {os.cpu_count()} CPU cores; batch 2; XLA_FLAGS='
        f'{os.environ.get("XLA_FLAGS", "")!r}'
        + ('' if onednn.available() else f'; no oneDNN: {onednn.unavailable_reason()}'))
  names = list(forms) + ['PyTorch']
  print('| input | C_in -> C_out | ' + ' | '.join(f'{n} fwd' for n in names) + ' | '
        + ' | '.join(f'{n} fwd+bwd' for n in names) + ' |')
  print('| --- | --- |' + ' ---: |' * (2 * len(names)))
  totals = np.zeros((len(names), 2))
  for size, c_in, c_out in SHAPES:
    x = jax.random.normal(jax.random.key(0), (2, size, size, size, c_in))
    kernel = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, 3, c_in, c_out))
    cotangent = jax.random.normal(jax.random.key(2), (2, size, size, size, c_out))
    reference = _conv(x, kernel)
    times = []
    for name, conv in forms.items():
      error = float(jnp.max(jnp.abs(conv(x, kernel) - reference)))
      assert error < 1e-3, f'{name} differs from the XLA native conv by {error}'
      times.append(time_jax(conv, x, kernel, cotangent))
    times.append(time_torch(x, kernel, cotangent) or (float('nan'),) * 2)
    totals += np.array(times)
    print(f'| {size}³ | {c_in} -> {c_out} | ' + ' | '.join(f'{t[0]:.1f}' for t in times)
          + ' | ' + ' | '.join(f'{t[1]:.1f}' for t in times) + ' |', flush=True)
  print('| all | | ' + ' | '.join(f'{t[0]:.1f}' for t in totals) + ' | '
        + ' | '.join(f'{t[1]:.1f}' for t in totals) + ' |')
  print('Times in ms.')


if __name__ == '__main__':
  main()
