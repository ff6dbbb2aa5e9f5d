"""Peak memory of a compiled train step, with and without rematerialisation.

  python benchmarks/memory.py                              # 3D LSTM-U-Net, :brats3d, 128^3
  python benchmarks/memory.py --config=lstm_unet:brats3d --batch_size=1 --dtype=bfloat16
  python benchmarks/memory.py --conv3d=native               # as compiled on GPU / TPU
  python benchmarks/memory.py --target=tpu:v5e:2x2          # compiled for one TPU v5e chip
  python benchmarks/memory.py --config=unet:brats3d,lstm_unet:brats3d --batch_size=2 \
      --dtype=float32,bfloat16 --target=tpu:v5e:2x2,tpu:v5p:2x2x1,tpu:v6e:2x2 --first_fit

Compiles (does not run) the train step of the config for the default JAX device, or
with --target=tpu:TOPOLOGY for one chip of a TPU topology (ahead-of-time, through
libtpu: `pip install 'jax[tpu]'`; no TPU needed), and reads XLA's memory analysis of
the compiled program: arguments (parameters, optimiser state, batch), outputs, and
temporaries (the activations kept for the backward pass, which rematerialisation
trades for recomputation). Compiling needs no accelerator
memory, so the figures for a 128^3 patch come from any machine; they are XLA's
estimate for the device compiled for. --first_fit answers "which switches does this
chip need?": per config, dtype and chip it stops at the first row the compiler accepts.
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

from benchmarks import timing  # noqa: E402
from jaxseg.data import SegmentationData  # noqa: E402
from jaxseg.data.regions import BRATS_2023_REGIONS  # noqa: E402
from jaxseg.models import backend  # noqa: E402
from jaxseg.models.backend import ops_from_config  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

GIB = 2**30
REMATS = ('none', 'iterations', 'levels')


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


def planned_rows(name: str, rows: str | None, microbatches: str, first_fit: bool):
  """(remat, microbatches) pairs in the order they are compiled. remat: 'none',
  'iterations' (model.remat, LSTM-U-Net only) or 'levels' (model.remat_levels)."""
  if rows:
    pairs = [row.partition(':') for row in rows.split(',')]
    if any(remat not in REMATS or not k.isdigit() or int(k) < 1 for remat, _, k in pairs):
      raise SystemExit(f'--rows={rows}: expected REMAT:MICROBATCHES,... with REMAT one of '
                       f'{", ".join(REMATS)}, e.g. none:1,levels:2')
    return [(remat, int(k)) for remat, _, k in pairs]
  if first_fit:  # the cheapest change first: recompute, then smaller parts, then both
    return [('none', 1), ('levels', 1), ('none', 2), ('levels', 2)]
  runs = [('none', 1), ('levels', 1)]
  if name == 'lstm_unet':
    runs.insert(1, ('iterations', 1))
  for k in (int(k) for k in microbatches.split(',') if int(k) > 1):
    runs += [('none', k), ('levels', k)]  # micro-batches alone, and with level remat
  return runs


def target_ops(device, conv3d: str) -> backend.Ops:
  """config.compute resolved for the device compiled for, not for this host: a TPU
  program must not call this CPU's kernels (and conv3d follows the convolutions)."""
  return ops_from_config({'conv3d': conv3d}, backend=device.platform, num_devices=1)


def row_config(name: str, variant: str, remat: str, microbatches: int, dtype: str,
               ops: backend.Ops):
  config = importlib.import_module(f'configs.{name}').get_config(variant or None)
  if name == 'lstm_unet':
    config.model.remat = remat == 'iterations'
  config.model.remat_levels = remat == 'levels'
  config.train.microbatches = microbatches
  config.model.dtype = dtype
  config.compute.update(conv_library=ops.conv_library, norm_kernel=ops.norm_kernel,
                        conv3d=ops.conv3d)
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='lstm_unet:brats3d',
                      help='CONFIG:VARIANT, or several separated by commas')
  parser.add_argument('--batch_size', type=int, default=None,
                      help="per device compiled for; default: the config's train.batch_size")
  parser.add_argument('--dtype', default='float32',
                      help='model.dtype, or several: float32,bfloat16')
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
                           'topology, several separated by commas; default: the default JAX '
                           'device')
  parser.add_argument('--first_fit', action='store_true',
                      help='per config, dtype and target, stop at the first row that compiles '
                           '(a TPU compiler refuses a step larger than the chip); rows: none:1, '
                           'levels:1, none:2, levels:2 unless --rows')
  args = parser.parse_args()
  targets = args.target.split(',') if args.target else [None]
  print(f'jax {jax.__version__}')
  print('| config | batch | dtype | compiled for | remat | microbatches | arguments (GiB) '
        '| temporaries (GiB) | arguments + temporaries (GiB) |')
  print('| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |')
  for config_name in args.config.split(','):
    name, _, variant = config_name.partition(':')
    for target in targets:
      device = target_device(target)
      try:
        ops = target_ops(device, args.conv3d)
      except ValueError as error:
        raise SystemExit(f'--conv3d: {error}') from None
      where = f'{target or device.platform} ({device.device_kind}), {backend.describe(ops)}'
      for dtype in args.dtype.split(','):
        for remat, microbatches in planned_rows(name, args.rows, args.microbatches,
                                                args.first_fit):
          config = row_config(name, variant, remat, microbatches, dtype, ops)
          batch_size = args.batch_size or config.train.batch_size
          seconds, sizes = timing.once(lambda: analyse(config, batch_size, device))
          print(f'{config_name} {where} {dtype} {remat}:{microbatches}: compiled in '
                f'{seconds:.0f} s', file=sys.stderr, flush=True)
          head = (f'| {config_name} {tuple(config.data.image_size)} | {batch_size} | {dtype} | '
                  f'{where} | {remat} | {microbatches} |')
          if 'refused' in sizes:
            print(f'{head} does not fit: {sizes["refused"]} | | |', flush=True)
            continue
          total = sizes['arguments'] + sizes['temporaries']  # outputs reuse the donated state
          print(f'{head} {sizes["arguments"]:.2f} | {sizes["temporaries"]:.2f} | {total:.2f} |',
                flush=True)
          if args.first_fit:
            break


if __name__ == '__main__':
  main()
