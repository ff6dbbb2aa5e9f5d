"""GroupNorm + ReLU on CPU: jaxseg's fused kernel at each x86-64 level, against PyTorch.

  python benchmarks/group_norm.py                        # 2D U-Net 16-128, 8 x 128^2
  python benchmarks/group_norm.py --features=32,64,128,256 --batch=16   # BraTS-like
  python benchmarks/group_norm.py --dtype=bfloat16

Times every GroupNorm of a 2D U-Net (two per level in the encoder, the bottleneck and
the decoder; 8 groups, ReLU after) alone: the forward pass, and forward + backward (the
gradients of input, scale and bias); median of 15 after two warm-ups, summed over the
network. jaxseg's kernel (jaxseg/models/backend/fused_norm.py) is timed at each x86-64 level the
CPU has: baseline (SSE2, what a portable build may assume), x86-64-v3 (AVX2) and
x86-64-v4 (AVX-512). PyTorch's native_group_norm and its backward (with the ReLU after)
in its channels-last and its default (channels-first) memory formats, when installed.
"""

import functools
import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import report, unet_passes  # noqa: E402
from benchmarks.unet_passes import median_ms  # noqa: E402
from jaxseg.models.backend import fused_norm  # noqa: E402


GROUPS = 8
LEVELS = [name for name, code in fused_norm.ISA_LEVELS.items() if code > 0]


def unet_norm_shapes(features, size):
  """(side, channels) of every GroupNorm of the U-Net, top level first."""
  shapes = [(size >> level, width) for level, width in enumerate(features) for _ in range(2)]
  return shapes + [(size >> level, features[level])
                   for level in reversed(range(len(features) - 1)) for _ in range(2)]


def jaxseg_times(x, dy, isa):
  scale, bias = jnp.ones(x.shape[-1]), jnp.zeros(x.shape[-1])
  apply = lambda x, s, b: fused_norm.group_norm(x, s, b, GROUPS, 'relu', isa)  # noqa: E731
  forward = jax.jit(apply)
  both = jax.jit(lambda x, s, b, dy: jax.vjp(apply, x, s, b)[1](dy))
  return (median_ms(lambda: forward(x, scale, bias).block_until_ready()),
          median_ms(lambda: jax.block_until_ready(both(x, scale, bias, dy))))


def torch_times(torch, x, dy, memory_format):
  dtype = unet_passes.torch_dtype(torch, x)
  tx, tdy = (unet_passes.to_torch(torch, a, memory_format) for a in (x, dy))
  norm = torch.nn.GroupNorm(GROUPS, x.shape[-1]).to(dtype)

  def forward():
    with torch.no_grad():
      torch.relu(norm(tx))

  def both():
    x = tx.detach().requires_grad_()
    torch.relu(norm(x)).backward(tdy)
  return median_ms(forward), median_ms(both)


def main(argv):
  del argv
  if not fused_norm.available():
    sys.exit(f'group_norm.py: no fused GroupNorm kernel ({fused_norm.unavailable_reason()})')
  supported = fused_norm.ISA_LEVELS[fused_norm.supported_isa()]
  columns = {isa: functools.partial(jaxseg_times, isa=isa) for isa in LEVELS
             if fused_norm.ISA_LEVELS[isa] <= supported}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(os.cpu_count())
    columns['PyTorch channels-last'] = functools.partial(
        torch_times, torch, memory_format=torch.channels_last)
    columns['PyTorch'] = functools.partial(torch_times, torch,
                                           memory_format=torch.contiguous_format)
    versions = f'jax {jax.__version__}, torch {torch.__version__}'
  except ImportError:
    versions = f'jax {jax.__version__} (no PyTorch)'
  features = unet_passes.features()
  dtype = jnp.dtype(unet_passes.DTYPE.value)
  print(f'{versions}; {report.machine()}; {unet_passes.describe()}; GroupNorm({GROUPS}) + ReLU')
  print('| side | C | ' + ' | '.join(f'{n} {p}' for n in columns
                                     for p in ('forward', 'fwd + bwd')) + ' |')
  print('| ---: | ---: |' + ' ---: |' * (2 * len(columns)))
  totals = np.zeros((len(columns), 2))
  keys = jax.random.split(jax.random.key(0), 2)
  for side, channels in unet_norm_shapes(features, unet_passes.SIZE.value):
    shape = (unet_passes.BATCH.value, side, side, channels)
    x = (1.0 + jax.random.normal(keys[0], shape)).astype(dtype)
    dy = jax.random.normal(keys[1], shape).astype(dtype)
    rows = np.array([measure(x, dy) for measure in columns.values()])
    totals += rows
    print(f'| {side}² | {channels} | ' + ' | '.join(f'{t:.2f}' for t in rows.ravel()) + ' |',
          flush=True)
  print('| all | | ' + ' | '.join(f'{t:.1f}' for t in totals.ravel()) + ' |')


if __name__ == '__main__':
  app.run(main)
