"""What glibc's handling of host memory costs the CPU train step: page faults, kernel
time, step time and peak memory, per allocator setting.

  python benchmarks/host_memory.py             # 2D LSTM-U-Net, BraTS-like U-Net, 3D 64^3
  python benchmarks/host_memory.py --cases=6 --steps=3 --warmup=2   # 3D LSTM-U-Net 128^3
  python benchmarks/host_memory.py --framework=pytorch   # the PyTorch reference, channels-last

XLA:CPU allocates each execution's buffers anew. Settings (each measured in a process
of its own, the settings interleaved in every round):
  glibc defaults     JAXSEG_HUGE_PAGES=0: large blocks are fresh 4 KiB pages every step;
  huge pages         jaxseg's default (startup.restart_with_huge_pages): 2 MiB pages;
  kept memory        JAXSEG_KEEP_HOST_MEMORY=1 JAXSEG_HUGE_PAGES=0: freed memory reused;
  kept memory + huge pages   JAXSEG_KEEP_HOST_MEMORY=1 alone (huge pages stay on): both.
Case numbers are benchmarks/compare_torch.py's (benchmarks/cases.py's ALL_CASES). Per step:
median wall time, and the mean minor page faults and kernel (sys) CPU seconds; peak RSS
is the process's over compilation and all steps.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cases, timing  # noqa: E402  (import nothing heavy)
from jaxseg.xla_flags import allocator_environment  # noqa: E402

SETTINGS = {
    'glibc defaults': {'huge_pages': False, 'keep_memory': False},
    'huge pages (default)': {'huge_pages': True, 'keep_memory': False},
    'kept memory': {'huge_pages': False, 'keep_memory': True},
    'kept memory + huge pages': {'huge_pages': True, 'keep_memory': True},
}


def measure(case: int, framework: str, warmup: int, steps: int) -> dict:
  """Runs in the measuring process: prepare_process applies the settings, as in
  compare_torch.py's measuring processes."""
  cases.prepare_process()
  # pylint: disable=import-outside-toplevel  (JAX and PyTorch after the settings)
  import jax
  import jax.numpy as jnp
  import torch

  from benchmarks import jax_model
  from benchmarks.torch_reference.steps import make_torch_steps
  from jaxseg.train_step import make_train_step
  # pylint: enable=import-outside-toplevel
  label, config = cases.case_config(case)
  image, target = cases.make_inputs(config)
  if framework == 'jax':
    _, state = jax_model.model_and_state(config)
    step = make_train_step(config)
    inputs = {'image': jnp.asarray(image), 'target': jnp.asarray(target)}

    def train():
      nonlocal state
      state, metrics = step(state, inputs)
      jax.block_until_ready(metrics)
  else:
    torch.set_num_threads(os.cpu_count())
    _, train, _, _ = make_torch_steps(config, image, target, channels_last=True)
  for _ in range(warmup):
    train()
  before = resource.getrusage(resource.RUSAGE_SELF)
  step_s = timing.repeat(train, steps).median
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {'label': label, 'step_s': step_s,
          'faults': (after.ru_minflt - before.ru_minflt) / steps,
          'sys_s': (after.ru_stime - before.ru_stime) / steps,
          'peak_rss_gib': after.ru_maxrss / 2**20,
          'tunables': os.environ.get('GLIBC_TUNABLES', '')}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases', default='1,4,3', help="compare_torch.py's case numbers")
  parser.add_argument('--framework', default='jax', choices=('jax', 'pytorch'),
                      help="jaxseg's train step, or the PyTorch reference's in channels-last")
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--one', type=int, help=argparse.SUPPRESS)  # a measuring process
  args = parser.parse_args()
  if args.one is not None:
    print(json.dumps(measure(args.one, args.framework, args.warmup, args.steps)))
    return
  print(f'Command: `python benchmarks/host_memory.py {" ".join(sys.argv[1:])}`, '
        f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; {os.cpu_count()} CPU cores; '
        f'median step of {args.steps} after {args.warmup}; per setting, the median over '
        f'{args.rounds} rounds; {args.framework}.\n')
  print('| case | setting | step s | page faults per step | kernel s per step | '
        'peak RSS GiB | step time / glibc defaults |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
  for case in (int(c) for c in args.cases.split(',')):
    runs = {name: [] for name in SETTINGS}
    for round_index in range(args.rounds):
      names = list(SETTINGS)
      names = names[round_index % len(names):] + names[:round_index % len(names)]
      for name in names:
        command = [sys.executable, os.path.abspath(__file__), f'--one={case}',
                   f'--framework={args.framework}', f'--warmup={args.warmup}',
                   f'--steps={args.steps}']
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True,
                             env=allocator_environment(os.environ, **SETTINGS[name])).stdout
        runs[name].append(json.loads(out.strip().splitlines()[-1]))
    baseline = statistics.median(r['step_s'] for r in runs['glibc defaults'])
    for name, results in runs.items():
      median = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
      print(f'| {results[0]["label"]} | {name} | {median("step_s"):.3f} | '
            f'{median("faults"):,.0f} | {median("sys_s"):.3f} | '
            f'{median("peak_rss_gib"):.2f} | {median("step_s") / baseline:.2f} |', flush=True)


if __name__ == '__main__':
  main()
