"""Where the time of one jaxseg train step goes on XLA:CPU, op by op.

  python benchmarks/profile_step.py                      # 2D U-Net, 8 x 4 x 128^2
  python benchmarks/profile_step.py --case=2             # a case of compare_torch.py (0-5)
  python benchmarks/profile_step.py --case=2 --conv3d=native
  python benchmarks/profile_step.py --case=1 --framework=pytorch   # the PyTorch reference
  python benchmarks/profile_step.py --framework=pytorch --channels_last --dtype=bfloat16

Traces two steps with jax.profiler after a warm-up and splits each instant of the step's
wall time evenly among the XLA ops running on the CPU threads at that instant, grouped
by op kind (the HLO op name without its number). Convolutions and dots that XLA hands to
its CPU library (the default jaxseg XLA flag) run in that library's thread pool, which
the trace does not name: that time shows as 'library (convolutions, dots)'.

With --framework=pytorch, the same step of the PyTorch reference (compare_torch.py,
eager) under torch.profiler: each op's own time (without the ops it calls), with the
convolutions' forward and both gradients in one row. The profiler's per-op overhead
makes the profiled step slower than the plain one; the shares are of the profiled
step, and 'ms per step' scales them to the plain step, timed before profiling.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cases  # noqa: E402

cases.prepare_process()  # as compare_torch.py's measuring processes

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

from benchmarks import jax_model, timing  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

STEPS = 2


def op_events(trace_dir: str):
  """(start_ns, duration_ns, name) of the XLA ops inside the traced steps."""
  path = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)[0]
  events = [(e.start_ns, e.duration_ns, line.name, e.name)
            for plane in ProfileData.from_file(path).planes for line in plane.lines
            for e in line.events]
  steps = [e for e in events if e[3] == 'ThunkExecutor::Execute (wait for completion)']
  inside = lambda start: any(s[0] <= start <= s[0] + s[1] for s in steps)  # noqa: E731
  ops = [(start, length, name) for start, length, line, name in events
         if line.startswith('tf_XLAEigen') and inside(start)
         and not name.startswith(('ThunkExecutor', 'ThreadpoolListener', 'end:'))]
  return ops, sum(s[1] for s in steps)


def attribute(ops, kinds=None) -> collections.Counter:
  """Wall time per op kind, each instant shared evenly among the ops running then."""
  points = sorted([(start, 1, name) for start, _, name in ops] +
                  [(start + length, -1, name) for start, length, name in ops])
  active, shares, previous = collections.Counter(), collections.Counter(), None
  for time_ns, change, name in points:
    if previous is not None and time_ns > previous:
      running = sum(active.values())
      if running:
        for op, count in active.items():
          kind = (kinds or {}).get(op) or re.sub(r'\.\d+$', '', op)
          shares[kind] += (time_ns - previous) * count / running
    active[name] += change
    if not active[name]:
      del active[name]
    previous = time_ns
  return shares


def profile_torch(case: int, channels_last: bool, dtype: str) -> None:
  """The PyTorch reference's train step, split by op kind with torch.profiler; in
  channels-last memory format and under bfloat16 autocast as compare_torch.py runs it."""
  import torch  # noqa: PLC0415  (only the bench extra has it)
  from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

  from benchmarks.torch_reference.steps import make_torch_steps  # noqa: PLC0415

  label, config = cases.case_config(case)
  shape, batch_size = tuple(config.data.image_size), config.train.batch_size
  config.model.dtype = dtype
  image, target = cases.make_inputs(config)
  torch.set_num_threads(os.cpu_count())
  # On the CPU, whose threads the profiler follows, whatever else the machine has.
  _, run, _, _ = make_torch_steps(config, image, target, channels_last=channels_last,
                                  device='cpu')
  _, step_s = timing.first_and_median(run, 3)  # warm-up, then the plain step time
  with profile(activities=[ProfilerActivity.CPU]) as trace:
    for _ in range(STEPS):
      run()
  shares = collections.Counter()
  for event in trace.key_averages():
    kind = ('convolutions (forward, both gradients)' if 'conv' in event.key
            else event.key)
    shares[kind] += event.self_cpu_time_total
  total = sum(shares.values())
  print(f'PyTorch reference of the {label}, {batch_size} x 4 x {shape}, {dtype}'
        f'{", channels-last" if channels_last else ""}: {1e3 * step_s:.0f} ms '
        f'per step (plain), {total / STEPS / 1e3:.0f} ms profiled')
  print('| op kind | ms per step | share |')
  print('| --- | ---: | ---: |')
  for kind, us in shares.most_common(16):
    print(f'| {kind} | {1e3 * step_s * us / total:.1f} | {100 * us / total:.0f}% |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  count = len(cases.ALL_CASES)
  parser.add_argument('--case', type=int, default=0, choices=range(count),
                      help=f'index into compare_torch cases (0-{count - 1})')
  parser.add_argument('--conv3d', default='auto')
  parser.add_argument('--conv_library', default='auto', help='auto | xla | onednn')
  parser.add_argument('--norm_kernel', default='auto', help='auto | xla | cpu')
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--framework', default='jax', choices=('jax', 'pytorch'))
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help='model.dtype (PyTorch: bfloat16 autocast)')
  parser.add_argument('--channels_last', action='store_true',
                      help='PyTorch in channels-last memory format')
  args = parser.parse_args()
  if args.framework == 'pytorch':
    return profile_torch(args.case, args.channels_last, args.dtype)
  label, config = cases.case_config(args.case)
  shape, batch_size = tuple(config.data.image_size), config.train.batch_size
  config.compute.conv3d = args.conv3d
  config.compute.conv_library = args.conv_library
  config.compute.norm_kernel = args.norm_kernel
  config.model.dtype = args.dtype
  image, target = cases.make_inputs(config)
  _, state = jax_model.model_and_state(config)
  step = make_train_step(config)
  batch = {'image': jnp.asarray(image), 'target': jnp.asarray(target)}
  for _ in range(2):  # compile, warm up
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(STEPS):
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    ops, step_ns = op_events(trace_dir)
  # jaxseg's custom calls all trace as 'ffi_call.N': name them by their kernel instead.
  hlo = step.lower(state, batch).compile().as_text()
  kinds = {name: target for name, target in re.findall(
      r'%?([\w.-]+) = .*custom-call\(.*custom_call_target="(\w+)"', hlo)}
  shares = attribute(ops, kinds)
  step_ms = step_ns / STEPS / 1e6
  traced_ms = sum(shares.values()) / STEPS / 1e6
  print(f'{label}, {batch_size} x 4 x {shape}, compute.conv3d={args.conv3d}: '
        f'{step_ms:.0f} ms per step (traced)')
  print('| op kind | ms per step | share |')
  print('| --- | ---: | ---: |')
  rows = [('library (convolutions, dots)', step_ms - traced_ms)]
  rows += [(kind, ns / STEPS / 1e6) for kind, ns in shares.most_common(args.top)]
  for kind, ms in rows:
    print(f'| {kind} | {ms:.1f} | {100 * ms / step_ms:.0f}% |')
  print(f'| (other op kinds) | {traced_ms - sum(ms for _, ms in rows[1:]):.1f} | |')


if __name__ == '__main__':
  main()
