"""The step loop's idle time with a slow input, data.prefetch_to_device 0 against 2.

  python benchmarks/prefetch.py                    # the 2D LSTM-U-Net of configs/
  python benchmarks/prefetch.py --sleep_ms=300 --steps=30

The host iterator sleeps before each batch, in the thread that draws it: an input
pipeline whose read-ahead cannot keep up. The sleeps are `--sleep_ms`, or by default
the step's own time and half of it, the step timed first with its batch on the
devices. The loop is the training loop's: take the next batch, dispatch the step,
read the loss every `--log_every` steps (which waits for the step). Reported per step,
after `--warmup` steps, with the batches placed 0 deep (in the loop's thread, as before
the prefetch) and `--depth` deep (a thread), in one run: the time the loop waits for
its next batch, the wall-clock, and the devices' idle time, wall-clock less the step
alone.
"""

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process()

import jax  # noqa: E402

from benchmarks import report, timing  # noqa: E402
from configs import lstm_unet  # noqa: E402
from jaxseg import parallel  # noqa: E402
from jaxseg.data import load_splits, train_iterator  # noqa: E402
from jaxseg.device_prefetch import DevicePrefetch  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402
from jaxseg.training import make_train_batches  # noqa: E402


class SlowHost:
  """A host iterator that sleeps `seconds` before each batch."""

  def __init__(self, iterator, seconds: float):
    self.iterator, self.seconds = iterator, seconds

  def __next__(self):
    time.sleep(self.seconds)
    return next(self.iterator)

  def get_state(self):
    return self.iterator.get_state()


def step_seconds(step_fn, state, batch, repeats: int = 5):
  """(median seconds of one step with its batch on the devices, the state after)."""
  def step():
    nonlocal state
    state, metrics = step_fn(state, batch)
    float(metrics['loss'])
  return timing.repeat(step, repeats).median, state


def loop(step_fn, state, host, mesh, depth: int, steps: int, warmup: int, log_every: int):
  """(mean seconds waiting for a batch, seconds of wall-clock per step, state) after
  `warmup` steps."""
  waits = []
  with DevicePrefetch(host, functools.partial(parallel.shard_batch, mesh=mesh),
                      depth) as batches:
    for step in range(1, warmup + steps + 1):
      if step == warmup + 1:
        jax.block_until_ready(state)
        clock = timing.Stopwatch()
      wait, batch = timing.once(lambda: next(batches))
      waits.append(wait)
      state, metrics = step_fn(state, batch)
      if step % log_every == 0:
        float(metrics['loss'])
    jax.block_until_ready(state)
    wall = clock.seconds()
  return statistics.mean(waits[warmup:]), wall / steps, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='2d')
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--depth', type=int, default=2)
  parser.add_argument('--sleep_ms', type=float, default=None)
  args = parser.parse_args()

  config = lstm_unet.get_config(args.variant)
  mesh = parallel.make_mesh()
  data = load_splits(config.data, ('train',))['train']
  _, init_state, _ = setup_model(config, data)
  state = jax.device_put(init_state(), parallel.replicated(mesh))
  step_fn = make_train_step(config)
  batches = make_train_batches(config, data)
  first = parallel.shard_batch(batches[0], mesh)
  state, _ = step_fn(state, first)  # compiles
  seconds, state = step_seconds(step_fn, state, first)
  sleeps = [seconds, seconds / 2] if args.sleep_ms is None else [args.sleep_ms / 1e3]
  print(f'{report.cpu_model()}; {jax.device_count()} {jax.devices()[0].platform} device(s); '
        f'jax {jax.__version__}; {os.cpu_count()} cores')
  print(f'{args.variant} LSTM-U-Net, batch {config.train.batch_size} x '
        f'{tuple(config.data.image_size)}: step alone {1e3 * seconds:.0f} ms; '
        f'{args.steps} steps timed, loss read every {args.log_every}')
  print('sleep (ms/batch)  depth  wait for batch  wall-clock  device idle (ms/step)')
  for sleep in sleeps:
    for depth in (0, args.depth):
      host = SlowHost(train_iterator(batches, 0, config.data.prefetch), sleep)
      wait, wall, state = loop(step_fn, state, host, mesh, depth, args.steps, args.warmup,
                               args.log_every)
      print(f'{1e3 * sleep:16.0f}  {depth:5d}  {1e3 * wait:14.1f}  {1e3 * wall:10.1f}  '
            f'{1e3 * (wall - seconds):11.1f}')


if __name__ == '__main__':
  main()
