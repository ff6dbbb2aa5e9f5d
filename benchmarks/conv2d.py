"""2D convolution passes on CPU: jaxseg's oneDNN custom calls against PyTorch.

  python benchmarks/conv2d.py                       # 2D U-Net 16-128, 8 x 128^2
  python benchmarks/conv2d.py --features=32,64,128,256 --batch=16   # BraTS-like
  python benchmarks/conv2d.py --dtype=bfloat16

Times each 3x3 'SAME' convolution of a 2D U-Net (encoder, bottleneck and decoder, the
decoder's first conv on the skip concatenation) alone, one pass at a time: forward,
data gradient, weight gradient; median of 15 after two warm-ups. jaxseg's passes are
the custom calls that compute.conv_library=onednn puts in the train step (channels-last
arrays as they are); PyTorch's are aten's convolution and convolution_backward in its
channels-last memory format (what PyTorch's faster train step runs on a CPU) and,
with --channels_first, also in its default format. Checks first that both compute the
same forward values.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import unet_passes  # noqa: E402
from benchmarks.unet_passes import median_ms  # noqa: E402
from jaxseg.models.backend import onednn  # noqa: E402

_IN_CHANNELS = flags.DEFINE_integer('in_channels', 4, 'Input channels (modalities).')
_CHANNELS_FIRST = flags.DEFINE_bool('channels_first', False,
                                    "Also time PyTorch's channels-first format.")

PASSES = ('forward', 'data gradient', 'weight gradient')


def unet_conv_shapes(features, size, in_channels):
  """(side, C_in, C_out) of every 3x3 conv of the U-Net, top level first."""
  shapes, c_prev = [], in_channels
  for level, width in enumerate(features):
    side = size >> level
    shapes += [(side, c_prev, width), (side, width, width)]
    c_prev = width
  for level in reversed(range(len(features) - 1)):
    side, width = size >> level, features[level]
    shapes += [(side, 2 * width, width), (side, width, width)]
  return shapes


def onednn_passes(x, kernel, dy):
  """Forward, data gradient and weight gradient as jaxseg's custom calls."""
  y_shape = x.shape[:-1] + kernel.shape[-1:]
  # pylint: disable=protected-access  (the custom calls themselves, one pass each)
  forward = jax.jit(lambda x, k: onednn._call('forward', y_shape, x.dtype, x, k))
  data = jax.jit(lambda dy, k: onednn._call('backward_data', x.shape, x.dtype, dy, k))
  weight = jax.jit(lambda x, dy: onednn._call('backward_weights', kernel.shape, kernel.dtype,
                                              x, dy))
  # pylint: enable=protected-access
  times = (median_ms(lambda: forward(x, kernel).block_until_ready()),
           median_ms(lambda: data(dy, kernel).block_until_ready()),
           median_ms(lambda: weight(x, dy).block_until_ready()))
  return times, forward(x, kernel)


def torch_passes(torch, x, kernel, dy, memory_format):
  """The same three passes through aten, in the given memory format."""
  tx, tdy = (unet_passes.to_torch(torch, a, memory_format) for a in (x, dy))
  tk = unet_passes.to_torch(torch, kernel, memory_format, axes=(3, 2, 0, 1))
  backward = lambda mask: torch.ops.aten.convolution_backward(  # noqa: E731
      tdy, tx, tk, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
  with torch.no_grad():
    times = (median_ms(lambda: torch.nn.functional.conv2d(tx, tk, padding=1)),
             median_ms(lambda: backward([True, False, False])),
             median_ms(lambda: backward([False, True, False])))
    y = torch.nn.functional.conv2d(tx, tk, padding=1).float().permute(0, 2, 3, 1).numpy()
  return times, y


def main(argv):
  del argv
  if not onednn.available():
    sys.exit(f'conv2d.py: no oneDNN extension ({onednn.unavailable_reason()})')
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.exit("conv2d.py: needs PyTorch (pip install -e '.[bench]')")
  torch.set_num_threads(os.cpu_count())
  formats = {'PyTorch channels-last': torch.channels_last}
  if _CHANNELS_FIRST.value:
    formats['PyTorch'] = torch.contiguous_format
  features = unet_passes.features()
  dtype = jnp.dtype(unet_passes.DTYPE.value)
  print(f'jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); '
        f'{os.cpu_count()} CPU cores; {unet_passes.describe()}; 3x3 convolutions')
  names = ['jaxseg oneDNN'] + list(formats)
  print('| side | C_in -> C_out | ' + ' | '.join(f'{n} {p}' for p in PASSES for n in names) + ' |')
  print('| ---: | --- |' + ' ---: |' * (len(PASSES) * len(names)))
  totals = np.zeros((len(names), len(PASSES)))
  keys = jax.random.split(jax.random.key(0), 3)
  for side, c_in, c_out in unet_conv_shapes(features, unet_passes.SIZE.value, _IN_CHANNELS.value):
    batch = (unet_passes.BATCH.value, side, side)
    x = jax.random.normal(keys[0], batch + (c_in,)).astype(dtype)
    kernel = (0.1 * jax.random.normal(keys[1], (3, 3, c_in, c_out))).astype(dtype)
    dy = jax.random.normal(keys[2], batch + (c_out,)).astype(dtype)
    times, y = onednn_passes(x, kernel, dy)
    rows = [times]
    for memory_format in formats.values():
      times, y_torch = torch_passes(torch, x, kernel, dy, memory_format)
      error = float(np.max(np.abs(np.asarray(y, np.float32) - y_torch)))
      scale = float(np.max(np.abs(y_torch)))
      tolerance = 1e-4 if dtype == jnp.float32 else 3e-2
      assert error <= tolerance * scale, f'forward values differ by {error} (of {scale})'
      rows.append(times)
    totals += np.array(rows)
    print(f'| {side}² | {c_in} -> {c_out} | '
          + ' | '.join(f'{rows[n][p]:.2f}' for p in range(len(PASSES)) for n in range(len(names)))
          + ' |', flush=True)
  print('| all | | ' + ' | '.join(f'{totals[n][p]:.1f}' for p in range(len(PASSES))
                                    for n in range(len(names))) + ' |')


if __name__ == '__main__':
  app.run(main)
