"""Expected speed on paper: a roofline estimate of the train step and the forward pass
on accelerators, from XLA's cost analysis computed on this (CPU) machine.

  python benchmarks/roofline.py                 # FLOPs and bytes of the traced step
  python benchmarks/roofline.py --compiled      # bytes after XLA:CPU's fusion (slow)

For unet:brats3d and lstm_unet:brats3d at 4 x 128^3, batch 2 (the train step train.py
runs, augmentation included) and one 128^3 window's forward pass (batch 1), in float32
and bfloat16, with XLA's own ops and native 3D convolutions (what GPUs and TPUs
compile): FLOPs and bytes accessed from XLA's cost analysis, then for each card of
--cards the least time the tensor units (peak FLOP/s of the dtype) and the memory
(bandwidth) allow (benchmarks/peaks.py). It is an upper bound on speed, not a
prediction: real steps reach a fraction of the peak. Bytes: of the step as traced
(every operation reads and writes memory: an overestimate), or with --compiled of
XLA:CPU's optimised program (fused elementwise work; an accelerator fuses differently).
The anchors are NVIDIA's published PyTorch nnU-Net figures for the same input.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import cases, peaks  # noqa: E402
from jaxseg.data import SegmentationData  # noqa: E402
from jaxseg.data.regions import BRATS_2023_REGIONS  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

# NVIDIA's DeepLearningExamples, PyTorch nnU-Net, 3D U-Net on BraTS 4 x 128^3, AMP,
# batch 2 (train) and 1 (inference), volumes/s.
ANCHORS = [('train, 1 x A100 80 GB, batch 2, AMP', 6.74),
           ('train, 8 x A100 80 GB, batch 2 per GPU, AMP', 51.5),
           ('inference, 1 x A100 80 GB, batch 1, AMP', 10.9)]


def _cost(stage) -> tuple[float, float]:
  cost = stage.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost['flops'], cost['bytes accessed']


def step_costs(model: str, dtype: str, batch: int, shape, compiled: bool) -> dict:
  """FLOPs and bytes of the train step (batch `batch`) and of one window's forward pass."""
  config = cases.make_config(model, 'brats3d', shape, batch)
  config.model.dtype = dtype
  config.compute.update(conv_library='xla', norm_kernel='xla', conv3d='native')
  channels = tuple(config.data.modalities)
  data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, channels)
  net, _, state = setup_model(config, data)
  image = jax.ShapeDtypeStruct((batch, *shape, len(channels)), jnp.float32)
  batch_shapes = {'image': image, 'target': jax.ShapeDtypeStruct(
      (batch, *shape, len(BRATS_2023_REGIONS)), jnp.uint8)}
  train = make_train_step(config).lower(state, batch_shapes)
  forward = jax.jit(lambda p, x: net.apply({'params': p}, x)[0][-1]).lower(
      state.params, jax.ShapeDtypeStruct((1, *shape, len(channels)), jnp.float32))
  (train_flops, train_bytes), (forward_flops, forward_bytes) = _cost(train), _cost(forward)
  if compiled:
    train_bytes, forward_bytes = _cost(train.compile())[1], _cost(forward.compile())[1]
  return {'train': (train_flops, train_bytes), 'forward': (forward_flops, forward_bytes)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='unet,lstm_unet')
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--cards', default='NVIDIA H100 80GB HBM3,NVIDIA A100-SXM4-80GB,TPU v5 lite',
                      help='device kinds of benchmarks/peaks.py')
  parser.add_argument('--compiled', action='store_true',
                      help="bytes of XLA:CPU's optimised program instead of the traced one")
  args = parser.parse_args()
  cards = [peaks.peak_of(kind) for kind in args.cards.split(',')]
  batch, shape = 2, (128, 128, 128)
  print(f'jax {jax.__version__}; bytes: {"XLA:CPU compiled" if args.compiled else "traced"}\n')
  print('| model | dtype | pass | GFLOP | GB accessed | '
        + ' | '.join(f'{card.name}: volumes/s (bound)' for card in cards) + ' |')
  print('| --- | --- | --- | ---: | ---: |' + ' ---: |' * len(cards))
  for model in args.models.split(','):
    for dtype in args.dtypes.split(','):
      costs = step_costs(model, dtype, batch, shape, args.compiled)
      for name, volumes in (('train', batch), ('forward', 1)):
        flops, bytes_accessed = costs[name]
        estimates = []
        for card in cards:
          seconds = peaks.roofline_seconds(flops, bytes_accessed, card, dtype)
          bound = ('compute' if flops / card.tflops(dtype) >= bytes_accessed / card.bandwidth_tb_s
                   else 'memory')
          estimates.append(f'{volumes / seconds:.1f} ({bound})')
        label = f'train step, batch {batch}' if name == 'train' else 'forward, 1 window'
        print(f'| {model} | {dtype} | {label} | {flops / 1e9:.0f} | {bytes_accessed / 1e9:.1f} | '
              + ' | '.join(estimates) + ' |', flush=True)
  print('\nAnchors (measured by NVIDIA, PyTorch nnU-Net 3D, 4 x 128^3):')
  for label, rate in ANCHORS:
    print(f'- {label}: {rate} volumes/s')


if __name__ == '__main__':
  main()
