"""3D convolution on XLA:CPU: native against depth-folded (jaxseg's model.conv3d), and PyTorch.

  python benchmarks/conv3d.py            # the conv shapes of the '3d' U-Net at 64^3, batch 2

For each (input size, C_in -> C_out) of a 3x3x3 'SAME' convolution: forward, and
forward + backward (gradients of input and kernel), median of 5 after one warm-up, for
XLA's native 3D convolution, jaxseg's depth_folded_conv (which folds the taps into the
inputs when C_in <= C_out, else into the outputs) and, when torch is installed, PyTorch
eager (channels-first). Also checks that the folded form's values equal the native ones.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.xla_flags import apply_default_flags  # noqa: E402

apply_default_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg.models.layers import _conv, depth_folded_conv  # noqa: E402

# Encoder, bottleneck and decoder convs of the U-Net with features (8, 16, 32, 64) on
# 2 x 64^3 patches (configs/unet.py:3d at the benchmark's 64^3).
SHAPES = [(64, 4, 8), (64, 8, 8), (32, 8, 16), (32, 16, 16), (16, 16, 32), (16, 32, 32),
          (8, 32, 64), (8, 64, 64), (16, 64, 32), (32, 32, 16), (64, 16, 8)]


def median_ms(run, repeats: int = 5) -> float:
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


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
  tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))
  tk = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(kernel), (4, 3, 0, 1, 2))))
  tc = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(cotangent), -1, 1)))
  tx.requires_grad_(True)
  tk.requires_grad_(True)

  def forward():
    with torch.no_grad():
      torch.nn.functional.conv3d(tx, tk, padding=1)

  def both():
    (torch.nn.functional.conv3d(tx, tk, padding=1) * tc).sum().backward()
  return median_ms(forward), median_ms(both)


def main():
  print(f'jax {jax.__version__}; {os.cpu_count()} CPU cores; batch 2; XLA_FLAGS='
        f'{os.environ.get("XLA_FLAGS", "")!r}')
  print('| input | C_in -> C_out | native fwd | folded fwd | PyTorch fwd | native fwd+bwd '
        '| folded fwd+bwd | PyTorch fwd+bwd | folded side |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
  for size, c_in, c_out in SHAPES:
    x = jax.random.normal(jax.random.key(0), (2, size, size, size, c_in))
    kernel = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, 3, c_in, c_out))
    cotangent = jax.random.normal(jax.random.key(2), (2, size, size, size, c_out))
    error = float(jnp.max(jnp.abs(depth_folded_conv(x, kernel) - _conv(x, kernel))))
    assert error < 1e-3, f'depth_folded_conv differs from the native conv by {error}'
    native = time_jax(_conv, x, kernel, cotangent)
    folded = time_jax(depth_folded_conv, x, kernel, cotangent)
    reference = time_torch(x, kernel, cotangent) or (float('nan'),) * 2
    print(f'| {size}³ | {c_in} -> {c_out} | {native[0]:.1f} | {folded[0]:.1f} | '
          f'{reference[0]:.1f} | {native[1]:.1f} | {folded[1]:.1f} | {reference[1]:.1f} | '
          f'{"inputs" if c_in <= c_out else "outputs"} |', flush=True)
  print('Times in ms.')


if __name__ == '__main__':
  main()
