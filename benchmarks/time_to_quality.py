"""Time to a validation Dice of 0.8 on the embedded data: jaxseg against the PyTorch reference.

  pip install -e '.[bench]'
  python benchmarks/time_to_quality.py                 # LSTM-U-Net T=3, 2D embedded data
  python benchmarks/time_to_quality.py --config=unet   # the plain U-Net

Both frameworks train the same model from the same initial weights (jaxseg's
initialisation, copied into the PyTorch model) on the same batches (jaxseg's grain
pipeline, the same seed) with the same hyper-parameters (the config's AdamW, warm-up +
cosine schedule, global-norm clipping and Dice + BCE loss over iterations). Every
`--every` steps both predict the validation cases and score them with the same host
code: Dice of each region mask (logit > 0) of the last iteration, averaged over cases
and regions. The clock counts training only (JAX's compilation and PyTorch's first
step included, batch reading included), not validation. Each framework runs in a
process of its own, one after the other. JAX runs twice: first with an empty
persistent compilation cache (as a first train.py run), then with the cache it filled
(as any later run of the same model, see README).
"""

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cases  # noqa: E402

cases.prepare_process()  # as compare_torch.py's measuring processes

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import timing  # noqa: E402
from benchmarks.torch_reference import models  # noqa: E402
from benchmarks.torch_reference.flax_weights import load_flax_params  # noqa: E402
from benchmarks.torch_reference.steps import channels_first, torch_model  # noqa: E402
from jaxseg.data import load_splits  # noqa: E402
from jaxseg.data.regions import region_masks  # noqa: E402
from jaxseg.metrics import overlap_metrics  # noqa: E402
from jaxseg.train_state import learning_rate_schedule, setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402
from jaxseg.training import make_train_batches  # noqa: E402
from jaxseg.xla_flags import enable_compilation_cache  # noqa: E402


def validation_dice(logits: np.ndarray, targets: np.ndarray) -> float:
  """Mean over cases and regions of the Dice of (logits > 0); both (N, *spatial, R)."""
  scores = [overlap_metrics(logits[i, ..., r] > 0, targets[i, ..., r])['dice']
            for i in range(len(logits)) for r in range(logits.shape[-1])]
  return float(np.mean(scores))


def setup(config_name: str):
  config = importlib.import_module(f'configs.{config_name}').get_config('2d')
  data = load_splits(config.data)
  val = data['val']
  val_images = np.stack([np.asarray(x, np.float32) for x in val.images])
  val_targets = np.stack([region_masks(np.asarray(y), val.regions) for y in val.labels])
  model, init_state, _ = setup_model(config, data['train'])
  state = jax.jit(init_state)()
  return config, data['train'], val_images, val_targets, model, state


def train_jax(config, train_data, val_images, val_targets, model, state, args) -> dict:
  step_fn = make_train_step(config)
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x)[0][-1])
  batches = make_train_batches(config, train_data)

  def validate(state):
    return validation_dice(np.asarray(forward(state.params, val_images)), val_targets)
  return _run(lambda s, state: step_fn(state, batches[s])[0], state, validate,
              lambda state: jax.block_until_ready(state), args)


def train_torch(config, train_data, val_images, val_targets, model, state, args) -> dict:
  torch.manual_seed(config.train.seed)
  reference = torch_model(config, 2)
  load_flax_params(reference, jax.device_get(state.params), 2)
  train_config = config.train
  # optax.adamw scales the decay by the learning rate, as torch.optim.AdamW does.
  optimiser = torch.optim.AdamW(reference.parameters(), lr=0.0,
                                weight_decay=train_config.weight_decay)
  rates = np.asarray(learning_rate_schedule(train_config)(np.arange(args.max_steps)))
  batches = make_train_batches(config, train_data)

  def step(s, model):
    batch = batches[s]
    x = channels_first(batch['image'])
    y = channels_first(batch['target']).float()
    for group in optimiser.param_groups:
      group['lr'] = float(rates[s])
    models.train_step(model, optimiser, x, y, config)
    return model

  def validate(model):
    with torch.inference_mode():
      logits = model(channels_first(val_images))[-1].numpy()
    return validation_dice(np.moveaxis(logits, 1, -1), val_targets)
  return _run(step, reference, validate, lambda model: None, args)


def _train(step, wait, s, state):
  """Step `s`, waited for with `wait` if given: JAX dispatches asynchronously, and the
  steps before a validation must be done to be timed."""
  state = step(s, state)
  if wait:
    wait(state)
  return state


def _run(step, state, validate, wait, args) -> dict:
  """Trains until validation Dice >= args.target or args.max_steps; the clock runs only
  during training steps."""
  train_seconds, curve = 0.0, []
  for s in range(args.max_steps):
    validating = (s + 1) % args.every == 0 or s + 1 == args.max_steps
    seconds, state = timing.once(
        functools.partial(_train, step, wait if validating else None, s, state))
    train_seconds += seconds
    if validating:
      dice = validate(state)
      curve.append((s + 1, round(train_seconds, 2), round(dice, 4)))
      print(f'step {s + 1}: {train_seconds:.1f} s of training, validation Dice {dice:.4f}',
            file=sys.stderr, flush=True)
      if dice >= args.target:
        return {'reached': True, 'steps': s + 1, 'seconds': train_seconds, 'curve': curve}
  return {'reached': False, 'steps': args.max_steps, 'seconds': train_seconds, 'curve': curve}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='lstm_unet', choices=('lstm_unet', 'unet'))
  parser.add_argument('--target', type=float, default=0.8, help='validation Dice to reach')
  parser.add_argument('--every', type=int, default=10, help='validate every N steps')
  parser.add_argument('--max_steps', type=int, default=500, help="the config's num_steps")
  parser.add_argument('--one', choices=('JAX', 'PyTorch'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  if args.one:
    if args.one == 'JAX':
      enable_compilation_cache()  # in the directory main() gives
    train = train_jax if args.one == 'JAX' else train_torch
    print(json.dumps(train(*setup(args.config), args)))
    return
  print(f'jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), '
        f'{os.cpu_count()} CPU cores; {time.strftime("%Y-%m-%d", time.gmtime())}; '
        f'load average at start {os.getloadavg()[0]:.2f}', flush=True)
  results = {}
  with tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache, 'JAXSEG_COMPILATION_CACHE': '1'}
    for label, framework in (('JAX, first run', 'JAX'), ('JAX, compilation cached', 'JAX'),
                             ('PyTorch', 'PyTorch')):
      print(f'--- {label}', file=sys.stderr, flush=True)
      out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--one={framework}',
                            f'--config={args.config}', f'--target={args.target}',
                            f'--every={args.every}', f'--max_steps={args.max_steps}'],
                           stdout=subprocess.PIPE, text=True, check=True, env=env).stdout
      results[label] = json.loads(out.strip().splitlines()[-1])
  print(f'\n| {args.config}, embedded 2D data | steps to Dice {args.target} | training seconds '
        '| seconds per step |')
  print('| --- | ---: | ---: | ---: |')
  for framework, r in results.items():
    steps = r['steps'] if r['reached'] else f'not reached in {r["steps"]}'
    print(f'| {framework} | {steps} | {r["seconds"]:.1f} | {r["seconds"] / r["steps"]:.3f} |')
  t = results['PyTorch']
  for label in ('JAX, first run', 'JAX, compilation cached'):
    j = results[label]
    if j['reached'] and t['reached']:
      print(f'\n{label}: PyTorch / JAX time to quality {t["seconds"] / j["seconds"]:.2f} '
            '(above 1: JAX gets there sooner)')
  print(f'load average at end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
