"""One prepared accelerator check: every figure a BraTS user asks first, in one table.

  python benchmarks/accelerator.py --output=accelerator.md   # on one GPU: about 8 minutes
  python benchmarks/accelerator.py --smoke                   # tiny shapes, on a CPU
  python benchmarks/accelerator.py --models=unet --dtypes=bfloat16   # a part of it

On the default JAX device (one GPU or TPU chip), for unet:brats3d and lstm_unet:brats3d
at 4 x 128^3 and batch 2 (--smoke: 16^3 and narrow models): jaxseg's train throughput
in float32 and bfloat16 with its model FLOPs utilisation (XLA's cost analysis against
the card's peak, benchmarks/peaks.py) and peak device memory; XLA's memory estimate
with model.remat_levels and train.microbatches; the PyTorch reference under AMP, eager
and through torch.compile; whole-case inference of a 4 x 240 x 240 x 155 case without
and with mirroring TTA; and whether the host's input pipeline (os.cpu_count() workers)
delivers patches as fast as the fastest train step takes them.

Each measurement is a process of its own (benchmarks/accelerator_jobs.py) with a time
budget (BUDGETS, scaled by --budget_scale); one that runs out is stopped and its row
says so, so the whole run ends within the sum of the budgets (7.5 minutes).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from benchmarks import peaks, timing  # noqa: E402
from jaxseg.startup import prepare_process  # noqa: E402

FULL = {'shape': [128, 128, 128], 'batch': 2, 'features': None, 'steps': 10,
        'case_shape': [240, 240, 155], 'pipeline_batches': 20,
        # (label, torch.compile, channels-last; None: the faster eager format)
        'torch_rows': [['AMP eager', False, False], ['AMP eager, channels-last', False, True],
                       ['AMP torch.compile', True, None]]}
# (dtype, model.remat_levels, train.microbatches): most wanted first
FULL['memory_rows'] = [['bfloat16', True, 1], ['bfloat16', True, 2], ['float32', True, 1],
                       ['float32', False, 2], ['float32', True, 2], ['bfloat16', False, 2]]
SMOKE = {**FULL, 'shape': [16, 16, 16], 'features': [4, 8, 8, 16, 16], 'steps': 2,
         'case_shape': [40, 40, 32], 'pipeline_batches': 4, 'torch_rows': FULL['torch_rows'][:1],
         'memory_rows': [['float32', True, 2], ['bfloat16', True, 2]]}
JOB_KINDS = ('jax_train', 'torch', 'inference', 'pipeline', 'jax_memory')
# Seconds per job on one H100 / H200 (compiling dominates; the LSTM-U-Net unrolls T = 3).
BUDGETS = {'jax_train:unet:float32': 45, 'jax_train:unet:bfloat16': 40,
           'jax_train:lstm_unet:float32': 70, 'jax_train:lstm_unet:bfloat16': 60,
           'torch:unet': 40, 'torch:lstm_unet': 70, 'inference': 50, 'pipeline': 20,
           'jax_memory:unet': 20, 'jax_memory:lstm_unet': 35}
SMOKE_BUDGET = 120
# Memory rows compile without GPU autotuning: its figures are estimates anyway, and
# autotuning would take most of the budget.
NO_AUTOTUNE = '--xla_gpu_autotune_level=0'


def ellipsoid_case(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A BraTS-like case, quick to make: a brain ellipsoid of a typical cropped size
  (about 140 x 170 x 140 of 240 x 240 x 155) with noise, and a three-label tumour."""
  grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing='ij', sparse=True)
  radii = (0.58, 0.71, 0.9)
  brain = sum((g / r) ** 2 for g, r in zip(grid, radii)) <= 1
  tumour = sum((g - 0.2) ** 2 for g in grid)
  labels = np.select([tumour < 0.01, tumour < 0.03, tumour < 0.06], [3, 1, 2], 0)
  image = np.random.default_rng(seed).standard_normal((*shape, 4), dtype=np.float32)
  image += labels[..., None]
  return np.where(brain[..., None], image, 0), np.where(brain, labels, 0).astype(np.uint8)


def planned_jobs(models, dtypes, kinds=JOB_KINDS) -> list[tuple[str, list[str]]]:
  """(budget key, job arguments), in the order they run: most wanted first."""
  jobs = [(f'jax_train:{m}:{d}', ['jax_train', m, d]) for m in models for d in dtypes]
  jobs += [(f'torch:{m}', ['torch', m]) for m in models]
  jobs += [('inference', ['inference']), ('pipeline', ['pipeline'])]
  jobs += [(f'jax_memory:{m}', ['jax_memory', m]) for m in models]
  return [(key, job_args) for key, job_args in jobs if job_args[0] in kinds]


def run_job(job_args, settings: dict, budget: float) -> tuple[list[dict], str | None]:
  """(the job's results, None or why it stopped short)."""
  env = dict(os.environ)
  if job_args[0] == 'jax_memory':
    env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} {NO_AUTOTUNE}'.strip()
  if job_args[0] in ('torch', 'pipeline'):  # JAX would take most of the GPU's memory
    env['JAX_PLATFORMS'] = 'cpu'
  settings = {**settings, 'deadline': timing.deadline_after(budget)}
  process = subprocess.Popen(  # its own session: a stop ends its workers too
      [sys.executable, os.path.join(HERE, 'accelerator_jobs.py'), job_args[0],
       json.dumps(settings), *job_args[1:]], stdout=subprocess.PIPE, text=True, env=env,
      start_new_session=True)
  try:
    out, _ = process.communicate(timeout=budget)
    problem = f'failed (exit {process.returncode}; its error above)' if process.returncode else None
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    out, _ = process.communicate()
    problem = f'not finished within its {budget:.0f} s budget'
  results = [json.loads(line[len('RESULT '):]) for line in out.splitlines()
             if line.startswith('RESULT ')]
  return results, problem


def _gib(value) -> str:
  return 'n/a' if value is None else f'{value:.2f}'


def _mfu(flops, step_s, device: str, dtype: str) -> str:
  peak = peaks.peak_of(device or '')
  if not flops or not peak:
    return 'n/a'
  return f'{100 * flops / step_s / (peak.tflops(dtype) * 1e12):.0f}%'


def table(done: dict, settings: dict, models, dtypes, kinds=JOB_KINDS) -> list[str]:
  """The markdown rows: every planned measurement of `kinds`, measured or why not."""
  batch = settings['batch']
  rows = ['| measurement | model | dtype | setting | volumes/s | time | MFU | device peak GiB '
          '| XLA estimate GiB | note |', '| --- | --- | --- | --- | ---: | ---: | ---: | ---: '
          '| ---: | --- |']

  def missing(what, model, dtype, setting, key):
    rows.append(f'| {what} | {model} | {dtype} | {setting} | | | | | | '
                f'not measured: {done.get(key, ([], "not run"))[1] or "no result"} |')
  flops = {}
  for model in models if 'jax_train' in kinds else ():
    for dtype in dtypes:
      key = f'jax_train:{model}:{dtype}'
      for r in done.get(key, ([], None))[0]:
        flops[model] = r['flops']
        mfu = _mfu(r['flops'], r['step_s'], r['device'], dtype)
        rows.append(f'| JAX train | {model} | {dtype} | batch {batch} | '
                    f'{batch / r["step_s"]:.2f} | {1000 * r["step_s"]:.0f} ms | {mfu} | '
                    f'{_gib(r["peak_gib"])} | {_gib(r["xla_gib"])} | compile '
                    f'{r["compile_s"]:.0f} s, {(r["flops"] or 0) / 1e9:.4g} GFLOP/step, median '
                    f'of {r["steps"]}; augmentation on the device included (train.py\'s step; '
                    'the PyTorch step has none) |')
      if not done.get(key, ([], None))[0]:
        missing('JAX train', model, dtype, f'batch {batch}', key)
  for model in models if 'torch' in kinds else ():
    results, _ = done.get(f'torch:{model}', ([], None))
    for label, *_ in settings['torch_rows']:
      r = next((r for r in results if r['label'] == label), None)
      if r is None:
        missing('PyTorch train', model, 'bfloat16 AMP', label, f'torch:{model}')
        continue
      if r['channels_last'] is not None and 'channels' not in label:
        label += ', channels-last' if r['channels_last'] else ''
      rows.append(f'| PyTorch train | {model} | bfloat16 AMP | {label} | '
                  f'{batch / r["step_s"]:.2f} | {1000 * r["step_s"]:.0f} ms | '
                  f'{_mfu(flops.get(model), r["step_s"], r["device"], "bfloat16")} | '
                  f'{_gib(r["peak_gib"])} | | first step {r["first_s"]:.0f} s, '
                  f'torch {r["torch"]} |')
  results, _ = done.get('inference', ([], None))
  for tta in (False, True) if 'inference' in kinds else ():
    r = next((r for r in results if r['tta'] == tta), None)
    setting = 'whole case, TTA (8 mirrorings)' if tta else 'whole case, no TTA'
    if r is None:
      missing('inference', 'lstm_unet' if 'lstm_unet' in models else models[0], 'float32',
              setting, 'inference')
      continue
    rows.append(f'| inference | {r["model"]} | float32 | {setting} | {1 / r["case_s"]:.2f} | '
                f'{r["case_s"]:.1f} s | | | | {"x".join(map(str, settings["case_shape"]))} case '
                f'cropped to {"x".join(map(str, r["cropped"]))}: {r["windows"]} windows, '
                f'{r["batch"]} per call; first call {r["first_s"]:.0f} s |')
  results, _ = done.get('pipeline', ([], None))
  steps = [batch / r['step_s'] for k, (rs, _) in done.items() if k.startswith('jax_train')
           for r in rs]
  if results and 'pipeline' in kinds:
    r = results[0]
    need = max(steps) if steps else None
    verdict = ('no train step measured to compare' if need is None else
               f'the fastest JAX step above takes {need:.1f}/s: '
               f'{"keeps up" if r["patches_s"] >= need else "does NOT keep up"}')
    rows.append(f'| input pipeline (host) | | | {r["workers"]} workers, batch {batch} | '
                f'{r["patches_s"]:.1f} patches/s | | | | | {verdict} |')
  elif 'pipeline' in kinds:
    missing('input pipeline (host)', '', '', f'{os.cpu_count()} workers', 'pipeline')
  for model in models if 'jax_memory' in kinds else ():
    results, _ = done.get(f'jax_memory:{model}', ([], None))
    for dtype, remat_levels, microbatches in settings['memory_rows']:
      if dtype not in dtypes:
        continue
      setting = (f'{"remat_levels" if remat_levels else "no remat"}, '
                 f'{microbatches} micro-batch{"es" if microbatches > 1 else ""}')
      r = next((r for r in results if (r['dtype'], r['remat_levels'], r['microbatches'])
                == (dtype, remat_levels, microbatches)), None)
      if r is None:
        missing('JAX train memory', model, dtype, setting, f'jax_memory:{model}')
      else:
        rows.append(f'| JAX train memory | {model} | {dtype} | {setting} | | | | | '
                    f'{_gib(r["xla_gib"])} | compiled only, without autotuning |')
  return rows


def _version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--smoke', action='store_true', help='tiny shapes, for a CPU')
  parser.add_argument('--models', default='unet,lstm_unet')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--jobs', default=','.join(JOB_KINDS),
                      help='which measurements, of ' + ', '.join(JOB_KINDS))
  parser.add_argument('--budget_scale', type=float, default=1.0,
                      help='multiplies every time budget (a slower card)')
  parser.add_argument('--output', default=None, help='also write the table to this file')
  args = parser.parse_args()
  models, dtypes, kinds = args.models.split(','), args.dtypes.split(','), args.jobs.split(',')
  if (not set(models) <= {'unet', 'lstm_unet'} or not set(dtypes) <= {'float32', 'bfloat16'}
      or not set(kinds) <= set(JOB_KINDS)):
    parser.error('--models of unet, lstm_unet; --dtypes of float32, bfloat16; --jobs of '
                 + ', '.join(JOB_KINDS))
  clock = timing.Stopwatch()
  # This process computes nothing (no JAX here, which would reserve the accelerator's
  # memory); the jobs inherit jaxseg's XLA flags, to which jax_memory's are added.
  prepare_process(host_memory=False, compilation_cache=False)
  # pylint: disable-next=import-outside-toplevel  (nibabel: not for --help)
  from benchmarks.brats_files import write_case
  settings = {**(SMOKE if args.smoke else FULL),
              'inference_model': 'lstm_unet' if 'lstm_unet' in models else models[0]}
  done = {}
  with tempfile.TemporaryDirectory() as tmp:
    settings['data_root'] = os.path.join(tmp, 'data')
    settings['cache_dir'] = os.path.join(tmp, 'cache')
    case = ellipsoid_case(settings['case_shape'])
    for index in range(4):  # 3 train, 1 validation case for the pipeline's split
      write_case(settings['data_root'], index, *case, suffix='.nii')
    for key, job_args in planned_jobs(models, dtypes, kinds):
      budget = (SMOKE_BUDGET if args.smoke else BUDGETS[key]) * args.budget_scale
      if job_args[0] == 'torch' and _version('torch') == 'not installed':
        done[key] = ([], 'PyTorch not installed')
        continue
      done[key] = run_job(job_args, settings, budget)
      print(f'{key}: {len(done[key][0])} results, {clock.seconds():.0f} s so far'
            + (f'; {done[key][1]}' if done[key][1] else ''), file=sys.stderr, flush=True)
  devices = sorted({r['device'] for results, _ in done.values() for r in results if 'device' in r})
  lines = [f'- Command: `python benchmarks/accelerator.py {" ".join(sys.argv[1:])}`, '
           f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {clock.seconds():.0f} s.',
           f'- Devices: {", ".join(devices) or "none reported"}; host {platform.machine()}, '
           f'{os.cpu_count()} cores. Python {platform.python_version()}, jax {_version("jax")}, '
           f'jaxlib {_version("jaxlib")}, torch {_version("torch")}.',
           f'- Patch {"x".join(map(str, settings["shape"]))} x 4 channels, :brats3d configs'
           f'{" (smoke: narrow models)" if args.smoke else ""}; MFU: model FLOPs (XLA cost '
           'analysis of the step before optimisation) per second against the peak of '
           'benchmarks/peaks.py for the dtype (float32: TF32 on GPUs).', '']
  lines += table(done, settings, models, dtypes, kinds)
  print('\n'.join(lines))
  if args.output:
    with open(args.output, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
