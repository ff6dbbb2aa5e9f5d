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
updates), jit-compiled as train.py does; PyTorch runs benchmarks/torch_models.py in
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
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jaxseg.startup import prepare_process  # noqa: E402
from jaxseg.xla_flags import allocator_environment  # noqa: E402

# As train.py does, before JAX starts its CPU backend, but compiling afresh ('compile s'
# is measured); a measuring process gets its allocator setting from the environment it
# is started with (host_memory_environment).
prepare_process(compilation_cache=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import report as benchmark_report  # noqa: E402
from cases import make_config, make_inputs, time_steps  # noqa: E402,F401  (shared)
import torch_models  # noqa: E402
from jaxseg.data import SegmentationData  # noqa: E402
from jaxseg.data.regions import BRATS_2023_REGIONS  # noqa: E402
from jaxseg.models import backend  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

jax.config.update('jax_default_prng_impl', 'rbg')  # as jaxseg: threefry compiles slowly on CPU
GIB = 2**30

# (label, config module, config variant, spatial shape, batch size); features come from
# the variant's config: (16, 32, 64, 128) for '2d', (8, 16, 32, 64) for '3d'.
CASES = [
    ('2D U-Net', 'unet', '2d', (128, 128), 8),
    ('2D LSTM-U-Net T=3', 'lstm_unet', '2d', (128, 128), 8),
    ('3D U-Net', 'unet', '3d', (64, 64, 64), 2),
    ('3D LSTM-U-Net T=3', 'lstm_unet', '3d', (64, 64, 64), 2),
    # Issue 19's BraTS-like 2D training: the U-Net's brats2d width, 4 levels, batch 16.
    ('2D U-Net 32-256 (BraTS-like)', 'unet', '2d', (128, 128), 16),
]
CASE_FEATURES = {'2D U-Net 32-256 (BraTS-like)': (32, 64, 128, 256)}  # else the variant's
LARGE_CASES = [
    ('3D U-Net 128^3', 'unet', '3d', (128, 128, 128), 2),
    ('3D LSTM-U-Net T=3 128^3', 'lstm_unet', '3d', (128, 128, 128), 2),
]


TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST = 'PyTorch', 'PyTorch channels-last'
# jaxseg as configured ('auto': on a CPU, oneDNN's convolutions and the fused GroupNorm
# kernel where they are built), with XLA's GroupNorm, and with XLA's own ops throughout.
JAX, JAX_XLA_NORM, JAX_XLA = 'JAX', 'JAX, XLA GroupNorm', 'JAX, XLA convolutions and GroupNorm'
JAX_VARIANTS = {JAX: {}, JAX_XLA_NORM: {'norm_kernel': 'xla'},
                JAX_XLA: {'conv_library': 'xla', 'norm_kernel': 'xla'}}
FRAMEWORKS = (*JAX_VARIANTS, TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST)


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


def channels_first(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def merge_rounds(runs: list[dict]) -> dict:
  """One framework's rounds as one result: the median of each time over the rounds
  (the rest, the same in every round, from the last); the rounds' times kept."""
  merged = dict(runs[-1])
  for key in ('compile_s', 'train_s', 'infer_s'):
    merged[key] = statistics.median(r[key] for r in runs)
    merged[f'rounds_{key}'] = [r[key] for r in runs]
  return merged


def round_range(results: dict, framework: str, key: str) -> str:
  """' (low-high)': the range over rounds of the JAX variant's ratio to the faster
  PyTorch run of the same round; '' for a single round."""
  torch_rounds = zip(*(results[f][f'rounds_{key}']
                       for f in (TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST)))
  ratios = [min(torch) / own for torch, own in zip(torch_rounds,
                                                   results[framework][f'rounds_{key}'])]
  return f' ({min(ratios):.2f}-{max(ratios):.2f})' if len(ratios) > 1 else ''


def peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def jax_setup(config):
  data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, tuple(config.data.modalities))
  model, init_state, _ = setup_model(config, data)
  return model, jax.jit(init_state)()


def kernels(model) -> str:
  """What computes the model's convolutions and norms ('auto' resolved), at which level."""
  return backend.describe(model.ops)


def measure_jax(config, image, target, steps: int) -> dict:
  """jaxseg's train step and forward pass, compiled as in train.py."""
  model, state = jax_setup(config)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  step = make_train_step(config)
  batch = {'image': jnp.asarray(image), 'target': jnp.asarray(target)}
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / GIB if memory else None
  cost = compiled.cost_analysis()  # a dict; a list of one dict in older jax versions
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = (cost or {}).get('flops')

  def train():
    nonlocal state
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  _, train_s = time_steps(train, steps)

  # Inference: the last iteration's logits, as evaluation uses them.
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x)[0][-1])
  forward = forward.lower(state.params, batch['image']).compile()
  _, infer_s = time_steps(lambda: forward(state.params, batch['image']).block_until_ready(),
                          steps)
  return {'params': params, 'compile_s': compile_s, 'train_s': train_s, 'infer_s': infer_s,
          'device': jax.devices()[0].device_kind, 'peak_gib': peak, 'rss_gib': peak_rss_gib(),
          'train_flops': flops, 'kernels': kernels(model)}


def torch_model(config, ndim: int) -> torch.nn.Module:
  model = config.model
  if (model.norm, model.activation, model.upsampling,
      model.deep_supervision) != ('group', 'relu', 'transpose', False):
    raise ValueError('the PyTorch reference mirrors only the default model settings')
  common = dict(ndim=ndim, in_channels=len(config.data.modalities),
                features=tuple(model.features), num_outputs=len(BRATS_2023_REGIONS))
  if model.name == 'unet':
    return torch_models.UNet(**common)
  return torch_models.LSTMUNet(num_iterations=model.num_iterations,
                               lstm_at=tuple(model.lstm_at), **common)


def make_torch_steps(config, image, target, compile_model: bool = False,
                     channels_last: bool = False):
  """The same step in PyTorch: forward, loss, backward, clipping, AdamW; eager, or the
  model through torch.compile. config.model.dtype bfloat16 runs it under autocast.
  `channels_last`: model and inputs in PyTorch's channels-last memory format (the
  faster one for oneDNN convolutions on a CPU); the tensors' shapes do not change.
  Returns (model, train, infer, device): train and infer run one step each and wait
  for it."""
  torch.manual_seed(config.train.seed)
  # The same kind of device as JAX's: a GPU when there is one (JAX takes it by default).
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  wait = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  model = torch_model(config, image.ndim - 2).to(device)
  memory_format = ({4: torch.channels_last, 5: torch.channels_last_3d}[image.ndim]
                   if channels_last else torch.contiguous_format)
  model = model.to(memory_format=memory_format)
  autocast = torch.bfloat16 if config.model.dtype == 'bfloat16' else None
  if compile_model:
    model = torch.compile(model)
  train_config = config.train
  optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate,
                                weight_decay=train_config.weight_decay)
  x = channels_first(image).to(device).contiguous(memory_format=memory_format)
  y = channels_first(target).float().to(device).contiguous(memory_format=memory_format)

  def train():
    torch_models.train_step(model, optimiser, x, y, config, autocast)
    wait()

  def infer():
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast,
                                                enabled=autocast is not None):
      model(x)[-1]
    wait()
  return model, train, infer, device


def measure_torch(config, image, target, steps: int, compile_model: bool = False,
                  channels_last: bool = False) -> dict:
  """make_torch_steps' train and inference steps, timed."""
  model, train, infer, device = make_torch_steps(config, image, target, compile_model,
                                                 channels_last)
  first_s, train_s = time_steps(train, steps)
  _, infer_s = time_steps(infer, steps)
  return {'params': torch_models.num_params(model), 'compile_s': first_s, 'train_s': train_s,
          'infer_s': infer_s, 'device': (torch.cuda.get_device_name() if device.type == 'cuda'
                                         else 'cpu'), 'peak_gib': None, 'rss_gib': peak_rss_gib()}


def load_flax_params(model: torch.nn.Module, params: dict, ndim: int) -> None:
  """Copies Flax parameters of the same architecture into the PyTorch reference."""
  def conv(kernel):  # (*k, in, out) -> (out, in, *k)
    return np.transpose(kernel, (ndim + 1, ndim, *range(ndim)))

  def set_(tensor, value):
    value = torch.tensor(np.asarray(value))  # a copy: device arrays are read-only
    assert tensor.shape == value.shape, (tensor.shape, value.shape)
    tensor.copy_(value)

  def block(sequential, p):  # conv, norm, relu, conv, norm, relu
    for i in range(2):
      set_(sequential[3 * i].weight, conv(p[f'Conv_{i}']['kernel']))
      set_(sequential[3 * i + 1].weight, p[f'Norm_{i}']['GroupNorm_0']['scale'])
      set_(sequential[3 * i + 1].bias, p[f'Norm_{i}']['GroupNorm_0']['bias'])

  body_params = params['refine']['body'] if 'refine' in params else params['body']
  body = model.body
  with torch.no_grad():
    for level, encoder in enumerate(body.encoders):
      block(encoder, body_params[f'encoder{level}'])
      block(body.decoders[level], body_params[f'decoder{level}'])
      # jaxseg's dense kernel (in, 2^d * out) in depth_to_space order (*factors, out)
      # is the transposed conv's (in, out, *factors) kernel.
      up = body_params[f'upsample{level}']
      kernel = up['kernel']['kernel']
      kernel = kernel.reshape(kernel.shape[0], *(2,) * ndim, -1)
      set_(body.upsamples[level].weight, np.transpose(kernel, (0, ndim + 1, *range(1, ndim + 1))))
      set_(body.upsamples[level].bias, up['bias'])
    block(body.bottleneck, body_params['bottleneck'])
    for location, cell in body.lstms.items():
      set_(cell.gates.weight, conv(body_params[f'lstm_{location}']['gates']['kernel']))
      set_(cell.gates.bias, body_params[f'lstm_{location}']['gates']['bias'])
    head = body_params['head']
    set_(body.head.weight, np.asarray(head['kernel']).T.reshape(*head['kernel'].shape[::-1],
                                                                 *(1,) * ndim))
    set_(body.head.bias, head['bias'])


def check_same_function(variant: str, shape) -> float:
  """Max |logit difference| of the Flax and PyTorch LSTM-U-Nets with the same weights."""
  config = make_config('lstm_unet', variant, shape, 2)
  model, state = jax_setup(config)
  image, _ = make_inputs(config, seed=1)
  ours = np.asarray(model.apply({'params': state.params}, jnp.asarray(image))[0])
  reference = torch_model(config, len(shape))
  load_flax_params(reference, jax.device_get(state.params), len(shape))
  with torch.no_grad():
    theirs = reference(channels_first(image)).numpy()
  return float(np.abs(np.moveaxis(theirs, 2, -1) - ours).max())


def fmt(value, spec):
  return 'n/a' if value is None else format(value, spec)


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
  cases = CASES + LARGE_CASES
  if args.one:
    label, name, variant, shape, batch = cases[int(args.one[0])]
    config = make_config(name, variant, shape, batch, CASE_FEATURES.get(label))
    config.model.dtype = args.dtype
    image, target = make_inputs(config)  # the same seed in every process: the same inputs
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
  selected = CASES + (LARGE_CASES if args.large else [])  # a prefix of `cases`: same indices
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

  emit()
  emit('| case | framework | params | compile s | train img/s | infer img/s | XLA peak GiB '
       '| peak RSS GiB | JAX / faster PyTorch, train | JAX / faster PyTorch, infer |')
  emit('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for label, batch, results in rows:
    # The peer at its best: the faster of PyTorch's two memory formats, per column.
    best_train = min(results[f]['train_s'] for f in (TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST))
    best_infer = min(results[f]['infer_s'] for f in (TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST))
    for framework, r in results.items():
      if framework in JAX_VARIANTS:
        bold = '**' if framework == JAX else ''
        ratios = (f'{bold}{best_train / r["train_s"]:.2f}{bold}'
                  f'{round_range(results, framework, "train_s")} | '
                  f'{best_infer / r["infer_s"]:.2f}{round_range(results, framework, "infer_s")}')
      else:
        ratios = ' | '
      case = label if framework == JAX else ''
      if framework == JAX:
        framework = f'JAX ({r["kernels"]})'
      emit(f'| {case} | {framework} | {r["params"]:,} | {r["compile_s"]:.1f} | '
           f'{batch / r["train_s"]:.3g} | {batch / r["infer_s"]:.3g} | '
           f'{fmt(r["peak_gib"], ".2f")} | {fmt(r.get("rss_gib"), ".2f")} | {ratios} |')
  emit()
  emit('compile s: JAX lower + compile of the train step; PyTorch: first (eager) train step. '
       'Devices: ' + ', '.join(sorted({f'{name} {r["device"]}' for _, _, results in rows
                                       for name, r in results.items()})) + '.')
  emit()
  # jaxseg's kernels are custom calls, which XLA's cost analysis does not count: the
  # FLOPs are those of the same step with XLA's ops.
  if not args.no_variants:
    emit("JAX train-step FLOPs (XLA cost analysis of the step with XLA's ops) and the "
         'rate each JAX run reached:')
  for label, _, results in rows:
    flops = results.get(JAX_XLA, {}).get('train_flops')
    if flops:
      rates = {name: flops / results[name]['train_s'] / 1e12 for name in JAX_VARIANTS}
      mfu = (f', MFU {100 * rates[JAX] / args.peak_tflops:.1f}%' if args.peak_tflops else '')
      emit(f'- {label}: {flops / 1e9:.1f} GFLOP per step, {rates[JAX]:.3f} TFLOP/s '
           f'({rates[JAX_XLA_NORM]:.3f} with XLA GroupNorm, {rates[JAX_XLA]:.3f} with XLA '
           f'convolutions and GroupNorm){mfu}')
  emit()
  emit(f'Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.')
  if not args.no_write:
    benchmark_report.write_section(args.write_to, 'compare_torch', '\n'.join(report))
    print(f'wrote this table into the compare_torch section of {args.write_to}', file=sys.stderr)


if __name__ == '__main__':
  main()
