"""bfloat16 training on a CPU without bfloat16 convolution units: which path is fastest.

  ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bfloat16_paths.py [--steps=5]

oneDNN computes bfloat16 convolutions only with AVX-512 BF16 or AMX units; the cap makes
an AVX-512 machine take the path of an AVX2 one. Times the real train step (train.py's)
of the '2d' and '3d' U-Net and LSTM-U-Net in bfloat16 with oneDNN's float32
convolutions between conversions (jaxseg's default there) and with XLA's convolutions,
and in float32 with oneDNN for scale, one after the other in one process. Prints a
Markdown table for BENCHMARKS.md.
"""

import argparse
import importlib
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402

from jaxseg.data import load_splits  # noqa: E402
from jaxseg.models import backend  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402
from jaxseg.training import make_train_batches  # noqa: E402

PATHS = {  # label -> (model.dtype, compute.conv_library)
    'bfloat16, oneDNN float32 + conversions': ('bfloat16', 'onednn'),
    'bfloat16, XLA convolutions': ('bfloat16', 'xla'),
    'float32, oneDNN': ('float32', 'onednn'),
}


def step_seconds(config_name: str, variant: str, dtype: str, library: str, steps: int):
  config = importlib.import_module(f'configs.{config_name}').get_config(variant)
  config.data.num_train_cases = 8
  config.model.dtype = dtype
  config.compute.conv_library = library
  data = load_splits(config.data, ('train',))['train']
  _, init_state, _ = setup_model(config, data)
  state = init_state()
  compiled = make_train_step(config).lower(state, (batches := make_train_batches(
      config, data))[0]).compile()
  state, metrics = compiled(state, batches[0])  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batches[i + 1])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times), config


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  print(f'jax {jax.__version__}, {platform.machine()}, {os.cpu_count()} cores, '
        f'ONEDNN_MAX_CPU_ISA={os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset)")}, '
        f'oneDNN bfloat16 convolutions: {backend.onednn.supports_bfloat16()}; '
        f'median of {args.steps} steps after warm-up\n')
  print('| model | path | step (ms) | vs oneDNN float32 + conversions |')
  print('| --- | --- | ---: | ---: |')
  for config_name, variant in [('unet', '2d'), ('lstm_unet', '2d'), ('unet', '3d'),
                               ('lstm_unet', '3d')]:
    times = {label: step_seconds(config_name, variant, *path, args.steps)
             for label, path in PATHS.items()}
    first = next(iter(times.values()))[0]
    for label, (seconds, config) in times.items():
      shape = f'{config.train.batch_size} x {tuple(config.data.image_size)}'
      print(f'| {config_name}:{variant} ({shape}) | {label} | {seconds * 1000:.0f} | '
            f'{seconds / first:.2f} |', flush=True)


if __name__ == '__main__':
  main()
