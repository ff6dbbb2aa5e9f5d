"""The measurements of benchmarks/accelerator.py, each run in a process of its own.

  python benchmarks/accelerator_jobs.py JOB SETTINGS_JSON

accelerator.py starts each job with a time budget and reads its stdout: one line
`RESULT {json}` per finished measurement, printed as soon as it is done, so that a job
stopped at its budget still reports what it finished. Jobs (ARGS from SETTINGS_JSON):
  jax_train    jaxseg's train step (train.py's, augmentation included) of one model and
               dtype: compile time, XLA's FLOPs and memory estimate, step time, the
               device's peak memory (a process of its own, so the peak is this step's)
  jax_memory   XLA's memory estimate of the same step with model.remat_levels and
               train.microbatches, compiled only
  torch        the PyTorch reference (benchmarks/torch_reference/) under AMP (bfloat16
               autocast), eager in both memory formats, then through torch.compile
  inference    one whole case through jaxseg.inference, without and with mirroring TTA
  pipeline     training patches per second that the host delivers, os.cpu_count() workers
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import cases, jax_model, timing  # noqa: E402
from jaxseg import inference, parallel  # noqa: E402
from jaxseg.data import SegmentationData, load_splits  # noqa: E402
from jaxseg.data.regions import BRATS_2023_REGIONS  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402
from jaxseg.train_step import make_train_step  # noqa: E402

GIB = 2**30


def emit(**result) -> None:
  print('RESULT ' + json.dumps(result), flush=True)


def config_of(settings: dict, model: str, dtype: str = 'float32'):
  """The :brats3d config of `model` at the settings' patch, batch and widths."""
  config = cases.make_config(model, 'brats3d', settings['shape'], settings['batch'],
                             settings.get('features'))
  config.model.dtype = dtype
  return config


def _state_and_batch(config):
  model, state = jax_model.model_and_state(config)
  image, target = cases.make_inputs(config)
  return model, state, {'image': jax.device_put(image), 'target': jax.device_put(target)}


def _xla_estimate_gib(compiled) -> float | None:
  memory = compiled.memory_analysis()
  return (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / GIB if memory else None


def jax_train(settings: dict, model: str, dtype: str) -> None:
  config = config_of(settings, model, dtype)
  _, state, batch = _state_and_batch(config)
  lowered = make_train_step(config).lower(state, batch)
  compile_s, compiled = timing.once(lowered.compile)
  # The model's FLOPs, before XLA's rematerialisation or fusion: what MFU counts (the
  # compiled program's where a jax version cannot analyse the traced one).
  try:
    cost = lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost

  def step():
    nonlocal state
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  times = timing.repeat(step, settings['steps'], warmups=1,
                        deadline=settings['deadline'] - 2).seconds
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  emit(model=model, dtype=dtype, device=device.device_kind, compile_s=compile_s,
       step_s=float(np.median(times)), steps=len(times), flops=(cost or {}).get('flops'),
       xla_gib=_xla_estimate_gib(compiled),
       peak_gib=stats['peak_bytes_in_use'] / GIB if 'peak_bytes_in_use' in stats else None)


def jax_memory(settings: dict, model: str) -> None:
  for dtype, remat_levels, microbatches in settings['memory_rows']:
    config = config_of(settings, model, dtype)
    config.model.remat_levels, config.train.microbatches = remat_levels, microbatches
    data = SegmentationData([], [], (), (), BRATS_2023_REGIONS, tuple(config.data.modalities))
    _, _, abstract_state = setup_model(config, data)
    image, target = cases.make_inputs(config)
    compiled = make_train_step(config).lower(abstract_state, {
        'image': jax.ShapeDtypeStruct(image.shape, image.dtype),
        'target': jax.ShapeDtypeStruct(target.shape, target.dtype)}).compile()
    emit(model=model, dtype=dtype, remat_levels=remat_levels, microbatches=microbatches,
         xla_gib=_xla_estimate_gib(compiled))


def torch_reference(settings: dict, model: str) -> None:
  # pylint: disable=import-outside-toplevel  (PyTorch: this job only)
  import torch as torch_module

  from benchmarks.torch_reference.steps import make_torch_steps
  # pylint: enable=import-outside-toplevel
  torch_module.backends.cudnn.benchmark = True  # as nnU-Net trains: fastest algorithms
  config = config_of(settings, model, 'bfloat16')  # AMP: bfloat16 autocast
  image, target = cases.make_inputs(config)
  best = {}
  for label, compile_model, channels_last in settings['torch_rows']:
    if channels_last is None:  # the faster eager format
      channels_last = best.get(True, float('inf')) < best.get(False, float('inf'))
    cuda = torch_module.cuda.is_available()
    if cuda:
      torch_module.cuda.reset_peak_memory_stats()
    _, train, _, device = make_torch_steps(config, image, target, compile_model,
                                           channels_last)
    first_s, step_s = timing.first_and_median(train, settings['steps'])
    if not compile_model:
      best[channels_last] = step_s
    emit(model=model, label=label, channels_last=channels_last, first_s=first_s,
         step_s=step_s, device=torch_module.cuda.get_device_name() if cuda else 'cpu',
         peak_gib=torch_module.cuda.max_memory_allocated() / GIB if cuda else None,
         torch=torch_module.__version__)


def _brats_data(settings: dict, names, val_fraction: float):
  config = config_of(settings, settings['inference_model'])
  config.data.root, config.data.cache_dir = settings['data_root'], settings['cache_dir']
  config.data.num_folds, config.data.val_fraction = 0, val_fraction
  return config, load_splits(config.data, names)


def inference_job(settings: dict) -> None:
  config, splits = _brats_data(settings, ('val',), 0.5)
  image = np.asarray(splits['val'].images[0])
  model, init_state, _ = setup_model(config, splits['val'])
  params = jax.jit(init_state)().params
  size = tuple(config.data.image_size)
  for tta in (False, True):
    predictor = inference.SlidingWindowPredictor.from_config(
        model, config.eval, size, parallel.make_mesh(), tuple(range(len(size))) if tta else ())
    first_s, case_s = cases.whole_case_seconds(predictor, params, [image])
    windows = int(np.prod([len(inference.window_starts(s, w, config.eval.overlap))
                           for s, w in zip(image.shape[:-1], size)]))
    emit(model=settings['inference_model'], tta=tta, case_s=case_s, first_s=first_s,
         cropped=list(image.shape[:-1]), windows=windows, batch=config.eval.batch_size)


def pipeline(settings: dict) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from benchmarks import training_stream  # pylint: disable=import-outside-toplevel  (grain)
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  workers = os.cpu_count()
  config = training_stream.config_for(settings['data_root'], settings['cache_dir'],
                                      settings['shape'], settings['batch'], workers)
  rate = training_stream.host_throughput(config, settings['pipeline_batches'])
  emit(workers=workers, batches_s=rate, patches_s=rate * settings['batch'])


JOBS = {'jax_train': jax_train, 'jax_memory': jax_memory, 'torch': torch_reference,
        'inference': inference_job, 'pipeline': pipeline}

if __name__ == '__main__':
  job, settings, *job_args = sys.argv[1:]
  JOBS[job](json.loads(settings), *job_args)
