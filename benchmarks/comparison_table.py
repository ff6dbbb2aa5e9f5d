"""The table of compare_torch.py: each case's frameworks, their throughputs and their
ratios to the faster PyTorch run over rounds of measurements, and the FLOPs rates."""

import statistics

TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST = 'PyTorch', 'PyTorch channels-last'
# jaxseg as configured ('auto': on a CPU, oneDNN's convolutions and the fused GroupNorm
# kernel where they are built), with XLA's GroupNorm, and with XLA's own ops throughout.
JAX, JAX_XLA_NORM, JAX_XLA = 'JAX', 'JAX, XLA GroupNorm', 'JAX, XLA convolutions and GroupNorm'
JAX_VARIANTS = {JAX: {}, JAX_XLA_NORM: {'norm_kernel': 'xla'},
                JAX_XLA: {'conv_library': 'xla', 'norm_kernel': 'xla'}}
FRAMEWORKS = (*JAX_VARIANTS, TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST)


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


def fmt(value, spec):
  return 'n/a' if value is None else format(value, spec)


def _ratios(results: dict, framework: str) -> str:
  """The two ratio cells of a JAX variant's row: its throughput over the faster PyTorch
  run's (the peer at its best, per column), bold for jaxseg as configured."""
  cells = []
  for key in ('train_s', 'infer_s'):
    best = min(results[f][key] for f in (TORCH_CHANNELS_FIRST, TORCH_CHANNELS_LAST))
    bold = '**' if framework == JAX and key == 'train_s' else ''
    cells.append(f'{bold}{best / results[framework][key]:.2f}{bold}'
                 f'{round_range(results, framework, key)}')
  return ' | '.join(cells)


def table(rows, no_variants: bool, peak_tflops: float | None) -> list[str]:
  """The Markdown lines of `rows`, (case label, batch size, {framework: merged result})."""
  lines = ['',
           '| case | framework | params | compile s | train img/s | infer img/s '
           '| XLA peak GiB | peak RSS GiB | JAX / faster PyTorch, train '
           '| JAX / faster PyTorch, infer |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for label, batch, results in rows:
    for framework, r in results.items():
      ratios = _ratios(results, framework) if framework in JAX_VARIANTS else ' | '
      case = label if framework == JAX else ''
      if framework == JAX:
        framework = f'JAX ({r["kernels"]})'
      lines.append(f'| {case} | {framework} | {r["params"]:,} | {r["compile_s"]:.1f} | '
                   f'{batch / r["train_s"]:.3g} | {batch / r["infer_s"]:.3g} | '
                   f'{fmt(r["peak_gib"], ".2f")} | {fmt(r.get("rss_gib"), ".2f")} | {ratios} |')
  devices = sorted({f'{name} {r["device"]}' for _, _, results in rows
                    for name, r in results.items()})
  lines += ['', 'compile s: JAX lower + compile of the train step; PyTorch: first (eager) '
            f'train step. Devices: {", ".join(devices)}.', '']
  # jaxseg's kernels are custom calls, which XLA's cost analysis does not count: the
  # FLOPs are those of the same step with XLA's ops.
  if not no_variants:
    lines.append("JAX train-step FLOPs (XLA cost analysis of the step with XLA's ops) and "
                 'the rate each JAX run reached:')
  for label, _, results in rows:
    flops = results.get(JAX_XLA, {}).get('train_flops')
    if flops:
      rates = {name: flops / results[name]['train_s'] / 1e12 for name in JAX_VARIANTS}
      mfu = f', MFU {100 * rates[JAX] / peak_tflops:.1f}%' if peak_tflops else ''
      lines.append(f'- {label}: {flops / 1e9:.1f} GFLOP per step, {rates[JAX]:.3f} TFLOP/s '
                   f'({rates[JAX_XLA_NORM]:.3f} with XLA GroupNorm, {rates[JAX_XLA]:.3f} '
                   f'with XLA convolutions and GroupNorm){mfu}')
  return lines
