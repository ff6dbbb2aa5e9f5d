"""The U-Net's 2x upsampling and output head on CPU, forward + backward: their dense
layers computed by XLA or by oneDNN, and PyTorch's ConvTranspose2d and 1x1 Conv2d.

  python benchmarks/upsample.py                          # 2D U-Net 16-128, 8 x 128^2
  python benchmarks/upsample.py --features=32,64,128,256 --batch=16   # BraTS-like
  python benchmarks/upsample.py --dtype=bfloat16

Times each decoder level's upsampling (a transposed convolution with kernel 2 and
stride 2, computed as a dense layer then depth_to_space: jaxseg/models/layers.py) alone:
the values and the gradients of input and kernel for a given output gradient, under jit
with jaxseg's XLA flags; median of 15 after two warm-ups: jax.vjp of
depth_to_space(pointwise(x, kernel)), the dense layer computed by XLA (x @ kernel, what
jaxseg ran before) or as a 1x1 convolution by oneDNN (compute.conv_library=onednn, the
default on CPU where it is built). PyTorch's ConvTranspose2d (bias off) in its channels-
last and default memory formats, when installed. Last, the output head (a 1x1
convolution to 3 regions at the top level, float32) the same way. Checks first that
all agree.
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
from jaxseg.models import layers  # noqa: E402
from jaxseg.models.backend import onednn, xla  # noqa: E402



def pointwise(x, kernel, library):
  return (onednn.pointwise if library == 'onednn' else xla.pointwise)(x, kernel)


def upsample(x, kernel, library):
  return layers.depth_to_space(pointwise(x, kernel, library), 2)


def jax_time(function, x, kernel, dy):
  run = jax.jit(lambda x, k, dy: jax.vjp(function, x, k)[1](dy))
  return median_ms(lambda: jax.block_until_ready(run(x, kernel, dy))), run(x, kernel, dy)


def torch_time(torch, module, x, dy, memory_format):
  """Forward + backward of a PyTorch module on x (channels-last numpy layout given)."""
  dtype = unet_passes.torch_dtype(torch, x)
  module = module.to(dtype).to(memory_format=memory_format)
  tx, tdy = (unet_passes.to_torch(torch, a, memory_format) for a in (x, dy))

  def both():
    x = tx.detach().requires_grad_()
    module(x).backward(tdy)
    return x.grad
  grad = both().float().permute(0, 2, 3, 1).numpy()
  return median_ms(both), grad


def torch_module(torch, kernel, upsampling: bool):
  """ConvTranspose2d (kernel 2, stride 2) or a 1x1 Conv2d with jaxseg's dense kernel
  (C_in, 2 * 2 * C_out or C_out) as its weight, bias off."""
  c_in = kernel.shape[0]
  kernel = np.asarray(kernel, np.float32)
  if upsampling:
    c_out = kernel.shape[1] // 4
    module = torch.nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)
    # (C_in, f0, f1, C_out) -> (C_in, C_out, f0, f1): PyTorch's transposed-conv weight.
    weight = kernel.reshape(c_in, 2, 2, c_out).transpose(0, 3, 1, 2)
  else:
    module = torch.nn.Conv2d(c_in, kernel.shape[1], 1, bias=False)
    weight = kernel.T[:, :, None, None]
  with torch.no_grad():
    module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
  return module


def compare(function, torch, formats, libraries, x, kernel, dy, upsampling):
  """Times of each jaxseg library and each PyTorch format, after checking they agree."""
  tolerance = 1e-4 if x.dtype == jnp.float32 else 3e-2
  close = lambda got, want: (np.abs(np.asarray(got, np.float32) - want).max()  # noqa: E731
                             <= tolerance * np.abs(want).max())
  times = []
  for library in libraries.values():
    elapsed, (dx, dk) = jax_time(functools.partial(function, library=library), x, kernel, dy)
    times.append(elapsed)
    if library == 'xla':
      want_dx, want_dk = np.asarray(dx, np.float32), np.asarray(dk, np.float32)
    assert close(dx, want_dx) and close(dk, want_dk), f'{library}: gradients differ'
  for memory_format in formats.values():
    elapsed, torch_dx = torch_time(torch, torch_module(torch, kernel, upsampling), x, dy,
                                   memory_format)
    assert close(torch_dx, want_dx), 'PyTorch differs'
    times.append(elapsed)
  return times


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(os.cpu_count())
    formats = {'PyTorch channels-last': torch.channels_last, 'PyTorch': torch.contiguous_format}
    versions = f'jax {jax.__version__}, torch {torch.__version__}'
  except ImportError:
    torch, formats, versions = None, {}, f'jax {jax.__version__} (no PyTorch)'
  features = unet_passes.features()
  dtype = jnp.dtype(unet_passes.DTYPE.value)
  libraries = {'jaxseg XLA': 'xla'}
  if onednn.available():
    libraries['jaxseg oneDNN'] = 'onednn'
  names = [*libraries, *formats]
  print(f'{versions}; {report.machine()}; {unet_passes.describe()}; forward + backward')
  print('| output side | C_in -> C_out | ' + ' | '.join(names) + ' |')
  print('| ---: | --- |' + ' ---: |' * len(names))
  totals = np.zeros(len(names))
  keys = jax.random.split(jax.random.key(0), 3)
  for level in reversed(range(len(features) - 1)):
    side, c_in, c_out = unet_passes.SIZE.value >> level, features[level + 1], features[level]
    x = jax.random.normal(keys[0], (unet_passes.BATCH.value, side // 2, side // 2, c_in))
    x = x.astype(dtype)
    kernel = (0.1 * jax.random.normal(keys[1], (c_in, 4 * c_out))).astype(dtype)
    dy = jax.random.normal(keys[2], (unet_passes.BATCH.value, side, side, c_out)).astype(dtype)
    times = compare(upsample, torch, formats, libraries, x, kernel, dy, upsampling=True)
    totals += times
    print(f'| {side}² | {c_in} -> {c_out} | ' + ' | '.join(f'{t:.2f}' for t in times) + ' |',
          flush=True)
  print('| all | | ' + ' | '.join(f'{t:.1f}' for t in totals) + ' |')
  # The output head: a 1x1 convolution to 3 regions at the top level, in float32 always.
  side, c_in = unet_passes.SIZE.value, features[0]
  x = jax.random.normal(keys[0], (unet_passes.BATCH.value, side, side, c_in))
  kernel = 0.1 * jax.random.normal(keys[1], (c_in, 3))
  dy = jax.random.normal(keys[2], (unet_passes.BATCH.value, side, side, 3))
  times = compare(pointwise, torch, formats, libraries, x, kernel, dy, upsampling=False)
  print(f'| head, {side}² (float32) | {c_in} -> 3 | ' + ' | '.join(f'{t:.2f}' for t in times)
        + ' |')


if __name__ == '__main__':
  app.run(main)
