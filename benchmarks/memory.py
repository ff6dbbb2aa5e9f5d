"""Peak memory of a compiled train step, with and without rematerialisation.

  python benchmarks/memory.py                              # 3D LSTM-U-Net, :brats3d, 128^3
  python benchmarks/memory.py --config=lstm_unet:brats3d --batch_size=1 --dtype=bfloat16
  python benchmarks/memory.py --conv3d=native               # as compiled on GPU / TPU
  python benchmarks/memory.py --target=tpu:v5e:2x2          # compiled for one TPU v5e chip

Compiles (does not run) the train step of the config for the default JAX device, or
with --target=tpu:TOPOLOGY for one chip of a TPU topology (ahead-of-time, through
libtpu: `pip install 'jax[tpu]'`; no TPU needed), and reads XLA's memory analysis of
the compiled program: arguments (parameters, optimiser state, batch), outputs, and
temporaries (the activations kept for the backward pass, which rematerialisation
trades for recomputation). Compiling needs no accelerator
memory, so the figures for a 128^3 patch come from any machine; they are XLA's
estimate for the device compiled for.
"""

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxseg.data import SegmentationData  # noqa: E402
from jaxseg.data.regions import BRATS_2023_REGIONS  # noqa: E402
from jaxseg.models.backend import ops_from_config  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

GIB = 2**30


def target_device(target: str | None):
  """The device to compile for: the default one, or chip 0 of a TPU topology."""
  if not target:
    return jax.devices()[0]
  platform, _, topology = target.partition(':')
  if platform != 'tpu' or not topology:
    raise SystemExit(f'--target={target}: expected tpu:TOPOLOGY, e.g. tpu:v5e:2x2')
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return topologies.get_topology_desc(topology, 'tpu').devices[0]
  except Exception as error:  # pylint: disable=broad-except  (libtpu missing, bad name)
    raise SystemExit(f'--target={target}: cannot describe this TPU topology ({error}); '
                     "compiling for a TPU needs libtpu: pip install 'jax[tpu]'") from None


def analyse(config, batch_size: int, device) -> dict[str, float]:
  channels = tuple(config.data.modalities)
  data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, channels)
  _, _, abstract_state = setup_model(config, data)
  on_device = jax.sharding.SingleDeviceSharding(device)
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_device), abstract_state)
  shape = (batch_size, *config.data.image_size)
  batch = {'image': jax.ShapeDtypeStruct((*shape, len(channels)), jnp.float32,
                                         sharding=on_device),
           'target': jax.ShapeDtypeStruct((*shape, len(BRATS_2023_REGIONS)), jnp.uint8,
                                          sharding=on_device)}
  config.train.batch_size = batch_size
  step = make_train_step(config)  # train.py's step: augmentation and loss weights included
  try:
    memory = step.lower(abstract_state, batch).compile().memory_analysis()
  except jax.errors.JaxRuntimeError as error:
    if 'RESOURCE_EXHAUSTED' not in str(error):
      raise
    # An accelerator compiler refuses a program larger than the device's memory.
    return {'refused': str(error).split('RESOURCE_EXHAUSTED:')[-1].strip().splitlines()[0]}
  return {'arguments': memory.argument_size_in_bytes / GIB,
          'outputs': memory.output_size_in_bytes / GIB,
          'temporaries': memory.temp_size_in_bytes / GIB}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='lstm_unet:brats3d')
  parser.add_argument('--batch_size', type=int, default=None)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--microbatches', default='1,2', help='values of train.microbatches')
  parser.add_argument('--conv3d', default='auto',
                      help="compute.conv3d; 'auto' is native, but depth_folded on a CPU without "
                           "jaxseg's oneDNN convolutions")
  parser.add_argument('--rows', default=None,
                      help='REMAT:MICROBATCHES,... (REMAT: none, iterations, levels), e.g. '
                           'levels:2; default: each remat alone, then each micro-batch count '
                           'alone and with level remat')
  parser.add_argument('--target', default=None,
                      help='tpu:TOPOLOGY (e.g. tpu:v5e:2x2) compiles for one chip of that TPU '
                           'topology; default: the default JAX device')
  args = parser.parse_args()
  name, _, variant = args.config.partition(':')
  device = target_device(args.target)
  try:
    # 'auto' follows the target (and, on a CPU, the convolution library it gets)
    args.conv3d = ops_from_config({'conv3d': args.conv3d}, backend=device.platform,
                                  num_devices=1).conv3d
  except ValueError as error:
    raise SystemExit(f'--conv3d: {error}') from None
  print(f'jax {jax.__version__}, compiled for {device.platform} ({device.device_kind}); '
        f'compute.conv3d={args.conv3d}')
  print('| config | batch | dtype | remat | microbatches | arguments (GiB) | temporaries (GiB) '
        '| arguments + temporaries (GiB) |')
  print('| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |')
  # remat: 'none', 'iterations' (model.remat, LSTM-U-Net only), 'levels' (model.remat_levels)
  runs = [('none', 1), ('levels', 1)]
  if name == 'lstm_unet':
    runs.insert(1, ('iterations', 1))
  for k in (int(k) for k in args.microbatches.split(',') if int(k) > 1):
    runs += [('none', k), ('levels', k)]  # micro-batches alone, and with level remat
  if args.rows:
    rows = [row.partition(':') for row in args.rows.split(',')]
    if any(remat not in ('none', 'iterations', 'levels') or not k.isdigit() or int(k) < 1
           for remat, _, k in rows):
      raise SystemExit(f'--rows={args.rows}: expected REMAT:MICROBATCHES,... with REMAT one '
                       'of none, iterations, levels, e.g. none:1,levels:2')
    runs = [(remat, int(k)) for remat, _, k in rows]
  for remat, microbatches in runs:
    config = importlib.import_module(f'configs.{name}').get_config(variant or None)
    if name == 'lstm_unet':
      config.model.remat = remat == 'iterations'
    config.model.remat_levels = remat == 'levels'
    config.train.microbatches = microbatches
    config.model.dtype = args.dtype
    config.compute.conv3d = args.conv3d
    batch_size = args.batch_size or config.train.batch_size
    sizes = analyse(config, batch_size, device)
    if 'refused' in sizes:
      print(f'| {args.config} {tuple(config.data.image_size)} | {batch_size} | {args.dtype} | '
            f'{remat} | {microbatches} | does not fit: {sizes["refused"]} | | |', flush=True)
      continue
    total = sizes['arguments'] + sizes['temporaries']  # outputs reuse the donated state
    print(f'| {args.config} {tuple(config.data.image_size)} | {batch_size} | {args.dtype} | '
          f'{remat} | {microbatches} | {sizes["arguments"]:.2f} | {sizes["temporaries"]:.2f} | '
          f'{total:.2f} |', flush=True)


if __name__ == '__main__':
  main()
