"""Train-step time of the default 2D configs under the choices that matter on XLA:CPU.

  python benchmarks/train_step_speed.py [--steps=10]

Each variant runs in its own process (XLA flags are read once per process), one after
the other in the same run, so the ratios compare like with like. Prints a Markdown
table for BENCHMARKS.md.
"""

import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import timing  # noqa: E402  (imports nothing heavy)

# (label, config file, overrides, jaxseg's default XLA flags on)
VARIANTS = [
    ('U-Net', 'unet', {}, True),
    ('U-Net, no XLA flag', 'unet', {}, False),
    ('LSTM-U-Net T=3, unrolled (default)', 'lstm_unet', {}, True),
    ('LSTM-U-Net T=3, unrolled, no XLA flag', 'lstm_unet', {}, False),
    ('LSTM-U-Net T=3, rolled while loop', 'lstm_unet', {'unroll': False}, True),
    ('LSTM-U-Net T=1, direct call (default)', 'lstm_unet', {'num_iterations': 1}, True),
    ('LSTM-U-Net T=1, length-1 scan', 'lstm_unet', {'num_iterations': 1, 'unroll': False}, True),
]


def measure(config_name: str, model_overrides: dict, steps: int) -> dict:
  import importlib

  import jax

  from jaxseg.data import load_splits
  from jaxseg.train_state import setup_model
  from jaxseg.train_step import make_train_step
  from jaxseg.training import make_train_batches

  name, _, variant = config_name.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(variant or None)
  config.data.num_train_cases = 32
  for key, value in model_overrides.items():  # model keys, or 'section.key'
    section, _, key = key.rpartition('.')
    config[section or 'model'][key] = value
  data = load_splits(config.data, ('train',))['train']
  _, init_state, _ = setup_model(config, data)
  state = init_state()
  step = make_train_step(config)
  batches = make_train_batches(config, data)
  compile_seconds, compiled = timing.once(step.lower(state, batches[0]).compile)
  indices = iter(range(steps + 1))  # batch 0 for the warm-up, then one batch a step

  def train():
    nonlocal state
    state, metrics = compiled(state, batches[next(indices)])
    jax.block_until_ready(metrics)
  step_s = timing.repeat(train, steps, warmups=1).median
  return {'compile_s': compile_seconds, 'step_s': step_s,
          'batch': config.train.batch_size, 'shape': list(config.data.image_size),
          'jax': jax.__version__}


def main():
  steps = 10
  for arg in sys.argv[1:]:
    if arg.startswith('--steps='):
      steps = int(arg.split('=')[1])
  if len(sys.argv) > 1 and sys.argv[1] == '--one':
    name, overrides = sys.argv[2], json.loads(sys.argv[3])
    from jaxseg.startup import prepare_process
    prepare_process(host_memory=False, compilation_cache=False)
    print(json.dumps(measure(name, overrides, int(sys.argv[4]))))
    return
  rows = []
  for label, name, overrides, flags_on in VARIANTS:
    env = {**os.environ, 'JAXSEG_XLA_DEFAULTS': '1' if flags_on else '0',
           'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')}
    out = subprocess.run([sys.executable, __file__, '--one', name, json.dumps(overrides),
                          str(steps)], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    rows.append((label, result))
    print(f'{label}: {result["step_s"] * 1000:.0f} ms/step', file=sys.stderr)
  first = rows[0][1]
  print(f'jax {first["jax"]}, {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores; batch {first["batch"]} x 4 x {first["shape"]}; '
        f'median of {steps} steps after warm-up\n')
  print('| variant | compile (s) | step (ms) | images/s |')
  print('| --- | ---: | ---: | ---: |')
  for label, r in rows:
    print(f'| {label} | {r["compile_s"]:.1f} | {r["step_s"] * 1000:.0f} | '
          f'{r["batch"] / r["step_s"]:.1f} |')


if __name__ == '__main__':
  main()
