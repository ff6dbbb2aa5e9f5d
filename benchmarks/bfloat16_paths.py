"""bfloat16 training on a CPU without bfloat16 convolution units: which path is fastest.

  ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bfloat16_paths.py [--steps=5]

oneDNN computes bfloat16 convolutions only with AVX-512 BF16 or AMX units; the cap makes
an AVX-512 machine take the path of an AVX2 one. Times the real train step (train.py's,
as `benchmarks/train_step_speed.py --one` measures it, each in its own process) of the '2d'
and '3d' U-Net and LSTM-U-Net in bfloat16 with oneDNN's float32 convolutions between
conversions (jaxseg's default there) and with XLA's convolutions, and in float32 with
oneDNN for scale, one after the other. Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = {  # label -> overrides of the config
    'bfloat16, oneDNN float32 + conversions': {'dtype': 'bfloat16',
                                               'compute.conv_library': 'onednn'},
    'bfloat16, XLA convolutions': {'dtype': 'bfloat16', 'compute.conv_library': 'xla'},
    'float32, oneDNN': {'dtype': 'float32', 'compute.conv_library': 'onednn'},
}
MODELS = ('unet:2d', 'lstm_unet:2d', 'unet:3d', 'lstm_unet:3d')


def step_result(config: str, overrides: dict, steps: int) -> dict:
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'train_step_speed.py'),
                        '--one', config, json.dumps(overrides), str(steps)],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  print(f'ONEDNN_MAX_CPU_ISA={os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset)")}; median of '
        f'{args.steps} steps after warm-up, each path in its own process\n')
  print('| model | path | step (ms) | vs oneDNN float32 + conversions |')
  print('| --- | --- | ---: | ---: |')
  for config in MODELS:
    results = {label: step_result(config, overrides, args.steps)
               for label, overrides in PATHS.items()}
    first = next(iter(results.values()))['step_s']
    for label, r in results.items():
      shape = f'{r["batch"]} x {tuple(r["shape"])}'
      print(f'| {config} ({shape}) | {label} | {r["step_s"] * 1000:.0f} | '
            f'{r["step_s"] / first:.2f} |', flush=True)


if __name__ == '__main__':
  main()
