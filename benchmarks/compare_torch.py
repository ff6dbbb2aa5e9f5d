"""JAX (jaxseg) against a PyTorch reference of the same models, side by side in one run.

  pip install -e '.[bench]'
  python benchmarks/compare_torch.py            # 2D at 128^2 (batch 8), 3D at 64^3 (batch 2)
  python benchmarks/compare_torch.py --quick    # fewer timed steps
  python benchmarks/compare_torch.py --large    # also 3D at 128^3 (slow on a CPU)
  python benchmarks/compare_torch.py --peak_tflops=PEAK  # adds JAX's model FLOPs utilisation
  python benchmarks/compare_torch.py --dtype=bfloat16 --torch_compile  # GPU: bf16 vs AMP, compiled
  python benchmarks/compare_torch.py --no_write # print only

The table, with the command, machine, versions and date, is printed and written into
the 'compare_torch' section of BENCHMARKS.md (between its markers; the rest of the file
is left as it is), or of the file named by --write_to.

For each case both frameworks run in the same command, one after the other, on the same
random inputs (channels-last for JAX; PyTorch twice, in its default channels-first
memory format and in channels-last, drawn from one seed). The ratios are against the
faster PyTorch run: the peer at its best. A case runs in rounds (--rounds, default 3):
every framework once per round, each round starting with the next one; the table has
each framework's median over the rounds and, in brackets, the range of the ratios
between runs of the same round, which shows how far the machine's drift moved them.
Each measurement runs in a process of its own: in one shared process, PyTorch's 3D
steps after a JAX measurement were several times slower and erratic (likely the
other framework's thread pools competing for the 2 cores; not isolated, as those runs
also overlapped other jobs on the machine). JAX runs jaxseg's own
`setup_model` and `train_step` (AdamW after global-norm clipping, skip of non-finite
updates), jit-compiled as train.py does; PyTorch runs benchmarks/torch_reference/ in
eager mode with torch.optim.AdamW and clip_grad_norm_. Before timing, the Flax
parameters are copied into the PyTorch model of a small 2D and 3D LSTM-U-Net and the
logits compared, so the two sides compute the same function.

Columns: 'compile s' is lower + compile of the train step for JAX and the first
(warm-up) train step for PyTorch, which has no compile step in eager mode; throughputs
are batch / median step time after one warm-up step; 'XLA peak GiB' is XLA's estimate
of the compiled train step's arguments + temporaries; 'peak RSS GiB' is the measuring
process's peak resident memory (the framework, its libraries, compiled code, inputs,
and the train and inference steps), comparable between the two frameworks because each
measurement runs in a process of its own.
Ratios are JAX / faster PyTorch throughput: above 1, JAX is faster.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import cases  # noqa: E402
from jaxseg.xla_flags import allocator_environment  # noqa: E402

# Before JAX starts its CPU backend; a measuring process gets its allocator setting from
# the environment it is started with (host_memory_environment).
cases.prepare_process()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import comparison_table, jax_model, timing  # noqa: E402
from benchmarks import report as benchmark_report  # noqa: E402
from benchmarks.comparison_table import (  # noqa: E402
    FRAMEWORKS, JAX, JAX_VARIANTS, TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST, merge_rounds)
from benchmarks.torch_reference.flax_weights import check_same_function  # noqa: E402
from benchmarks.torch_reference.steps import measure_torch  # noqa: E402
from jaxseg.models import backend  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

GIB = 2**30

# glibc's handling of host memory, per measuring process. jaxseg runs with its default
# (huge-page malloc). PyTorch runs at its best, which is the opt-in kept memory: its
# BraTS-like step took 0.78x its time with glibc's defaults, and 1.10x with huge pages
# (benchmarks/host_memory.py --framework=pytorch, BENCHMARKS.md).
TORCH_HOST_MEMORY = {'huge_pages': False, 'keep_memory': True}


def host_memory_environment(framework: str) -> dict:
  """The environment of the process that measures `framework`."""
  if framework in JAX_VARIANTS:
    return dict(os.environ)
  return allocator_environment(os.environ, **TORCH_HOST_MEMORY)


def kernels(model) -> str:
  """What computes the model's convolutions and norms ('auto' resolved), at which level."""
  return backend.describe(model.ops)


def measure_jax(config, image, target, steps: int) -> dict:
  """jaxseg's train step and forward pass, compiled as in train.py."""
  model, state = jax_model.model_and_state(config)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  step = make_train_step(config)
  batch = {'image': jnp.asarray(image), 'target': jnp.asarray(target)}
  compile_s, compiled = timing.once(step.lower(state, batch).compile)
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / GIB if memory else None
  cost = compiled.cost_analysis()  # a dict; a list of one dict in older jax versions
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get('flops')

  def train():
    nonlocal state
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  _, train_s = timing.first_and_median(train, steps)

  # Inference: the last iteration's logits, as evaluation uses them.
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x)[0][-1])
  forward = forward.lower(state.params, batch['image']).compile()
  _, infer_s = timing.first_and_median(
      lambda: forward(state.params, batch['image']).block_until_ready(), steps)
  return {'params': params, 'compile_s': compile_s, 'train_s': train_s, 'infer_s': infer_s,
          'device': jax.devices()[0].device_kind, 'peak_gib': peak,
          'rss_gib': benchmark_report.peak_rss_gib(), 'train_flops': flops,
          'kernels': kernels(model)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='2 timed steps instead of 5')
  parser.add_argument('--large', action='store_true', help='also 3D cases at 128^3')
  parser.add_argument('--steps', type=int, default=None, help='timed steps per measurement')
  parser.add_argument('--rounds', type=int, default=None,
                      help='measurements per framework and case, interleaved (default 3, '
                           '--quick 1); the table has their medians')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help='compute dtype: jaxseg model.dtype, PyTorch autocast')
  parser.add_argument('--torch_compile', action='store_true',
                      help='PyTorch model through torch.compile instead of eager')
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help="the device's peak TFLOP/s in float32, to report JAX's model FLOPs "
                           'utilisation (MFU)')
  parser.add_argument('--write_to', default=os.path.join(ROOT, 'BENCHMARKS.md'),
                      help="the Markdown file whose 'compare_torch' section gets this run's "
                           'table (appended if the file has none)')
  parser.add_argument('--no_write', action='store_true', help='print only')
  parser.add_argument('--no_variants', action='store_true',
                      help="jaxseg only as configured, not also with XLA's GroupNorm and "
                           "with XLA's ops")
  parser.add_argument('--one', nargs=2, metavar=('CASE', 'FRAMEWORK'),
                      help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout
  args = parser.parse_args()
  steps = args.steps or (2 if args.quick else 5)
  rounds = args.rounds or (1 if args.quick else 3)
  # jaxseg as configured and PyTorch in both formats always; the XLA variants unless
  # --no_variants (they triple JAX's share of the run's time).
  frameworks = tuple(f for f in FRAMEWORKS if not (args.no_variants and f in JAX_VARIANTS
                                                   and f != JAX))
  torch.set_num_threads(os.cpu_count())
  if args.one:
    _, config = cases.case_config(int(args.one[0]))
    config.model.dtype = args.dtype
    image, target = cases.make_inputs(config)  # the same seed in every process: the same inputs
    if args.one[1] in JAX_VARIANTS:
      config.compute.update(JAX_VARIANTS[args.one[1]])
      result = measure_jax(config, image, target, steps)
    else:
      result = measure_torch(config, image, target, steps, args.torch_compile,
                             channels_last=args.one[1] == TORCH_CHANNELS_LAST)
    print(json.dumps(result))
    return
  # The reference check below runs JAX in this process: keep it off the accelerator,
  # whose memory JAX would otherwise reserve here and deny the measuring processes.
  jax.config.update('jax_platforms', 'cpu')
  report = []

  def emit(line: str = '') -> None:
    print(line, flush=True)
    report.append(line)

  if not args.no_write:  # a file that cannot take the table is refused now, not after the run
    try:
      benchmark_report.check_writable(args.write_to, 'compare_torch')
    except (OSError, ValueError) as error:
      raise SystemExit(f'compare_torch.py: --write_to={args.write_to}: {error}')
  invocation = ' '.join(['python benchmarks/compare_torch.py'] + sys.argv[1:])
  emit(f'- Command: `{invocation}`, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.')
  emit(f'- Machine: {benchmark_report.machine()}. Python {platform.python_version()}, '
       f'jax {jax.__version__}, torch {torch.__version__}, numpy {np.__version__}; '
       f'torch threads {torch.get_num_threads()}.')
  emit(f'- Median of {steps} steps after 1 warm-up step, in each of {rounds} rounds '
       f'(every framework once per round, in a new process; the table has the median over '
       f'rounds, and in brackets the range of the per-round ratios); {args.dtype} (PyTorch: '
       f'{"autocast, " if args.dtype != "float32" else ""}'
       f'{"torch.compile" if args.torch_compile else "eager"}); XLA_FLAGS='
       f'{os.environ.get("XLA_FLAGS", "")!r}; host memory: JAX GLIBC_TUNABLES='
       f'{os.environ.get("GLIBC_TUNABLES", "")!r} (jaxseg\'s default), PyTorch '
       f'JAXSEG_HUGE_PAGES={int(TORCH_HOST_MEMORY["huge_pages"])} JAXSEG_KEEP_HOST_MEMORY='
       f'{int(TORCH_HOST_MEMORY["keep_memory"])} (its fastest).')
  caps = {name: os.environ[name] for name in ('ONEDNN_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY',
                                                'JAXSEG_MAX_CPU_ISA') if name in os.environ}
  if caps:
    emit(f'- Instruction set capped: {", ".join(f"{k}={v}" for k, v in caps.items())}.')
  # PyTorch's OpenMP threads wait for each other at every parallel region: a test
  # suite running on the same 2 cores slowed its 2D train steps 15-19x here, JAX's 2x.
  # The load average makes such a run recognisable (it lags by about a minute).
  emit(f'- Load average (1 min) at the start: {os.getloadavg()[0]:.2f}.')
  emit()

  for variant, shape in (('2d', (16, 16)), ('3d', (8, 8, 8))):
    error = check_same_function(variant, shape)
    emit(f'Same weights, {variant} LSTM-U-Net T=3 on {shape}: max |logit difference| '
         f'JAX vs PyTorch = {error:.2e}.')
    if error > 1e-3:
      raise SystemExit('the PyTorch reference does not compute the same function as jaxseg')

  rows = []
  # a prefix of ALL_CASES: the same numbers
  selected = cases.CASES + (cases.LARGE_CASES if args.large else [])
  for index, (label, _, _, shape, batch) in enumerate(selected):
    runs = {framework: [] for framework in frameworks}
    for round_ in range(rounds):
      # Each round starts with the next framework, so that none always runs first
      # (or right after another's compilation) on a machine whose speed drifts.
      order = frameworks[round_ % len(frameworks):] + frameworks[:round_ % len(frameworks)]
      for framework in order:
        command = [sys.executable, os.path.abspath(__file__), '--one', str(index), framework,
                   f'--steps={steps}', f'--dtype={args.dtype}']
        command += ['--torch_compile'] if args.torch_compile else []
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True,
                             env=host_memory_environment(framework)).stdout
        runs[framework].append(r := json.loads(out.strip().splitlines()[-1]))
        print(f'{label} {framework} (round {round_ + 1}/{rounds}): {r["params"]:,} parameters, '
              f'compile/first {r["compile_s"]:.1f} s, train {r["train_s"] * 1000:.0f} ms/step, '
              f'infer {r["infer_s"] * 1000:.0f} ms', file=sys.stderr, flush=True)
    results = {framework: merge_rounds(r) for framework, r in runs.items()}
    jax_params, torch_params = results[JAX]['params'], results[TORCH_CHANNELS_FIRST]['params']
    if abs(jax_params - torch_params) > 0.01 * jax_params:
      raise SystemExit(f'{label}: parameter counts differ by more than 1%: '
                       f'{jax_params} (JAX) vs {torch_params} (PyTorch)')
    rows.append((f'{label}, {batch} x 4 x {"x".join(map(str, shape))}', batch, results))

  for line in comparison_table.table(rows, args.no_variants, args.peak_tflops):
    emit(line)
  emit()
  emit(f'Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.')
  if not args.no_write:
    benchmark_report.write_section(args.write_to, 'compare_torch', '\n'.join(report))
    print(f'wrote this table into the compare_torch section of {args.write_to}', file=sys.stderr)


if __name__ == '__main__':
  main()
