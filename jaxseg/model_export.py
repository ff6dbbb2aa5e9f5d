"""export.py's work: a trained model's predictor of one window, as a file that runs
without jaxseg (ONNX, or StableHLO that `jax.export.deserialize` loads), and beside it
a JSON of what a caller must do around it (`sidecar`).

The exported function takes normalised modalities, channels-last (batch, *window,
modality), and returns the per-region probabilities and logits of the last refinement
iteration: the LSTM-U-Net's feedback loop is inside. Its layers are XLA's own ops
(never jaxseg's CPU kernels, custom calls that exist only inside jaxseg), and the batch
is symbolic, so any batch size runs.

jax2onnx converts the function to ONNX. It runs flax's code under its own patches of
jax.numpy, which break flax's nn.scan, so it is handed the traced program (a jaxpr of
lax primitives) to replay instead of the model, flat (jaxpr_replay.py: the feedback
loop unrolled); and as it has no 3D convolutions, 3D models are exported with the
depth-folded convolution (2D convolutions, the same function: backend/xla.py).
"""

import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections

from jaxseg import checkpointing, jaxpr_replay, parallel, sliding_window, workdir as files
from jaxseg.data import brats, layouts, synthetic
from jaxseg.data.regions import Region
from jaxseg.errors import CheckpointError, ConfigError, WorkdirError
from jaxseg.models import registry
from jaxseg.onnx_predict import INPUT_NAME, OUTPUT_NAMES, SIDECAR_SUFFIX
from jaxseg.train_state import setup_model

FORMATS = ('onnx', 'stablehlo')
# The primitives of jaxseg's CPU kernels: never in an exported program.
_KERNEL_PRIMITIVES = ('ffi_call', 'custom_call')
_FOLDER_CHANNELS = (('gray',), ('red', 'green', 'blue'))  # 2D image folders (sources.py)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A checkpoint of a workdir, restored for export."""
  config: ml_collections.ConfigDict
  model: object                # the flax module, computed with XLA's ops
  params: dict
  step: int
  regions: tuple[Region, ...]
  channels: tuple[str, ...]    # the input's modalities, in order


def restore(workdir: str, checkpoint: str = 'best', *, for_onnx: bool = False
            ) -> TrainedModel:
  """Checkpoint `checkpoint` ('best', 'latest' or a step) of `workdir`, its model built
  with XLA's ops (`for_onnx`: 3D convolutions depth-folded into 2D ones)."""
  saved = files.read_saved(workdir)  # any format version this jaxseg reads
  config = saved.config
  depth_folded = for_onnx and len(config.data.image_size) == 3
  config.compute = ml_collections.ConfigDict(
      {'conv_library': 'xla', 'norm_kernel': 'xla',
       'conv3d': 'depth_folded' if depth_folded else 'native'})
  regions = saved.regions
  if regions is None:  # a 2D image folder run older than regions.json
    raise WorkdirError(f'{workdir}: no regions.json, which says what the model predicts; '
                       'write it (a list of {"name", "labels"}), or train the run again')
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  step = checkpointing.checkpoint_step(checkpointer, checkpoint)
  sharding = parallel.replicated(parallel.make_mesh())
  candidates = _channel_candidates(config)
  for channels in candidates:
    stand_in = _Data(tuple(regions), channels)  # what setup_model reads of the data
    model, _, abstract_state = setup_model(config, stand_in)
    try:
      state = checkpointing.restore_train_state(checkpointer, step, abstract_state,
                                                sharding)['state']
    except CheckpointError as error:
      if channels == candidates[-1] or isinstance(error, checkpointing.CheckpointDamaged):
        raise
      continue  # another number of input channels (gray or RGB images)
    return TrainedModel(config, model, state.params, step, tuple(regions), channels)
  raise AssertionError('unreachable')


@dataclasses.dataclass(frozen=True)
class _Data:
  regions: tuple[Region, ...]
  channels: tuple[str, ...]


def _channel_candidates(config) -> list[tuple[str, ...]]:
  """The input channels the run may have trained on, most likely first: the NIfTI
  modalities (the embedded data's are the same), or a 2D folder's gray or RGB."""
  root = config.data.root and os.path.expanduser(config.data.root)
  if not root:
    return [tuple(synthetic.CHANNELS)]
  if os.path.isdir(root) and brats.detect_layout(root) == 'folders':
    return list(_FOLDER_CHANNELS)
  return [tuple(config.data.modalities), *_FOLDER_CHANNELS]  # a root moved away: by shape


def window_function(trained: TrainedModel):
  """fn(images (B, *window, C) float32) -> (probabilities, logits), each (B, *window, R)
  float32, of the model's last refinement iteration."""
  model, params = trained.model, trained.params

  def predict(images):
    logits = model.apply({'params': params}, images)[0][-1].astype(jnp.float32)
    return jax.nn.sigmoid(logits), logits
  return predict


def input_spec(trained: TrainedModel, batch: int | None = None) -> jax.ShapeDtypeStruct:
  """(batch, *window, modalities) float32; the batch symbolic unless given."""
  window = tuple(trained.config.data.image_size)
  batch_dims = (batch,) if batch else jax.export.symbolic_shape('batch')
  return jax.ShapeDtypeStruct(batch_dims + window + (len(trained.channels),), jnp.float32)


def fixed_batch(trained: TrainedModel, fmt: str) -> int | None:
  """The batch size of a format that cannot take any (None: any). jax2onnx cannot pad
  (the depth-folded 3D convolution pads) along a symbolic dimension: 3D ONNX files
  take eval.batch_size windows per call, as eval.py computes them."""
  if fmt == 'onnx' and len(trained.config.data.image_size) == 3:
    return int(trained.config.eval.batch_size)
  return None


def traced(fn, spec):
  """The program of `fn` on `spec`, checked to hold none of jaxseg's CPU kernels."""
  closed = jax.make_jaxpr(fn)(spec)
  found = sorted(set(primitive_names(closed.jaxpr)) & set(_KERNEL_PRIMITIVES))
  if found:  # a bug: the model was built with XLA's ops only
    raise AssertionError(f'the exported program calls {found}')
  return closed


def primitive_names(jaxpr):
  """Every primitive of `jaxpr` and of the programs inside it (scan bodies, jit calls)."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for value in eqn.params.values():
      for inner in (value if isinstance(value, (list, tuple)) else [value]):
        inner = getattr(inner, 'jaxpr', inner)
        if hasattr(inner, 'eqns'):
          yield from primitive_names(inner)


def export_stablehlo(fn, spec, path: str, platforms=('cpu',)) -> None:
  """jax.export's serialisation of `fn`, lowered for `platforms`."""
  traced(fn, spec)
  exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(spec)
  with open(path, 'wb') as f:
    f.write(exported.serialize())


def export_onnx(fn, spec, path: str) -> None:
  """jax2onnx's conversion of `fn`'s traced program (see the module's docstring)."""
  try:
    import jax2onnx  # pylint: disable=import-outside-toplevel
    import onnx  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ConfigError(f'--format=onnx needs jax2onnx and onnx ({error}); install them: '
                      'docs/export.md') from None
  closed = traced(fn, spec)
  for name in ('jax2onnx', 'onnx_ir'):  # per-node notes of the conversion
    logging.getLogger(name).setLevel(logging.ERROR)

  def flat(images):
    return tuple(jaxpr_replay.replay(closed.jaxpr, closed.consts, images))
  proto = jax2onnx.to_onnx(flat, [spec], model_name='jaxseg', input_names=[INPUT_NAME],
                           output_names=list(OUTPUT_NAMES))
  onnx.save_model(proto, path)


def sidecar(trained: TrainedModel, fmt: str, path: str) -> dict:
  """What a caller of the exported file must know and do around it (docs/export.md)."""
  config = trained.config
  window = [int(s) for s in config.data.image_size]
  layout = _trained_layout(config)
  shape = [fixed_batch(trained, fmt) or 'batch', *window]
  return {
      'format': fmt, 'file': os.path.basename(path), 'model': config.model.name,
      'checkpoint_step': int(trained.step),
      'num_iterations': registry.num_iterations(config.model),
      'input': {'name': INPUT_NAME, 'shape': [*shape, len(trained.channels)],
                'dtype': 'float32', 'layout': 'channels-last'},
      'outputs': [{'name': OUTPUT_NAMES[0], 'shape': [*shape, len(trained.regions)],
                   'meaning': 'sigmoid of each region, last refinement iteration'},
                  {'name': OUTPUT_NAMES[1], 'shape': [*shape, len(trained.regions)],
                   'meaning': 'logit of each region, last refinement iteration'}],
      'window_size': window,
      'modalities': list(trained.channels),
      'normalisation': {
          'crop': 'bounding box of the voxels non-zero in any modality',
          'z_score': 'per modality, over the voxels non-zero in any modality; 0 elsewhere',
          'min_std': 1e-8},
      'regions': [{'name': r.name, 'labels': list(r.labels)} for r in trained.regions],
      'labels': {'layout': layout.name if layout else None,
                 'canonical_to_layout': ({str(c): own for own, c in layout.to_canonical.items()}
                                         if layout else None),
                 'from_regions': 'regions painted outermost first; a voxel takes the first '
                                 'label of its innermost region that no inner region has'},
      'sliding_window': {
          'overlap': float(config.eval.overlap), 'batch_size': int(config.eval.batch_size),
          'gaussian_sigma_scale': sliding_window.SIGMA_SCALE,
          'gaussian_min_weight': sliding_window.MIN_WEIGHT,
          'averaged': OUTPUT_NAMES[1], 'region_present': 'averaged logit > 0',
          'mirror_axes': [int(a) for a in config.eval.mirror_axes],
          'volumes_with_2d_models': 'every slice along the last axis'},
  }


def _trained_layout(config) -> layouts.Layout | None:
  """The labels of the data the run trained on (None: 2D folders, or a root moved)."""
  root = config.data.root and os.path.expanduser(config.data.root)
  if not root:  # the embedded data: the glioma family's canonical labels
    return layouts.LAYOUTS['brats2023']
  if not os.path.isdir(root):
    return None
  name = brats.detect_layout(root)
  if name == 'decathlon':
    return brats.discover(root)[0]
  return layouts.LAYOUTS.get(name)


def export_workdir(workdir: str, checkpoint: str, fmt: str, output: str,
                   platforms=('cpu',)) -> tuple[str, str]:
  """export.py: writes `output` and `output`.json; returns their paths."""
  if fmt not in FORMATS:
    raise ConfigError(f'--format={fmt}: choose one of {", ".join(FORMATS)}')
  trained = restore(workdir, checkpoint, for_onnx=fmt == 'onnx')
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fn, spec = window_function(trained), input_spec(trained, fixed_batch(trained, fmt))
  if fmt == 'onnx':
    export_onnx(fn, spec, output)
  else:
    export_stablehlo(fn, spec, output, platforms)
  json_path = output + SIDECAR_SUFFIX
  with open(json_path, 'w') as f:
    json.dump(sidecar(trained, fmt, output), f, indent=1)
  return output, json_path

