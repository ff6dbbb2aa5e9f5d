"""Orbax checkpoints of a workdir: the latest (to resume) and the best (by validation Dice).

Layout of a workdir:
  config.json            the config of the run (written once; checked on restart)
  splits.json            the case ids of the training and validation splits
  checkpoints/<step>/    state (params, optimiser state, step), validation summary and
                         the position of the training data stream
"""

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
BEST_METRIC = 'dice'  # mean validation Dice at the last refinement iteration


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message is one line for the user."""


def _best_metric(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC]


class Checkpointer:
  """Keeps the latest and the best checkpoint under `workdir/checkpoints`."""

  def __init__(self, workdir: str, create: bool = True):
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=1),
        ocp.checkpoint_managers.BestN(get_metric_fn=_best_metric, reverse=False, n=1),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_best_metric, best_mode='max',
        create=create)
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, summary: dict, data_state: dict) -> None:
    """Saves state with its validation summary and the position of the training data
    stream (`data_state`, a grain iterator state); `summary[BEST_METRIC]` ranks it."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), summary=ocp.args.JsonSave(summary),
        data_iterator=ocp.args.JsonSave(data_state)),
        metrics={BEST_METRIC: float(summary[BEST_METRIC])})

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state, validation summary) of `step`; `abstract_state` gives structure, shapes
    and shardings (without it optax states would come back as plain dicts)."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), summary=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as error:
      first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
      raise CheckpointError(f'checkpoint {self.directory}/{step} does not fit this model '
                            f'({first_line[:200]})') from error
    return restored.state, restored.summary

  def data_state(self, step: int) -> dict:
    """The training data iterator state saved with checkpoint `step`."""
    return self._manager.restore(step, args=ocp.args.Composite(
        data_iterator=ocp.args.JsonRestore())).data_iterator

  def summary(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(
        summary=ocp.args.JsonRestore())).summary

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and proves it writable, with one-line errors, before any compiling."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-test-'):
      pass
  except OSError as error:
    raise CheckpointError(f'--workdir {workdir}: cannot be created or written '
                          f'({error.strerror or error})') from None


# Room needed beyond two copies of the state (latest and best) for logs and Orbax's
# temporary files.
_SPACE_MARGIN_BYTES = 64 * 2**20


def check_free_space(workdir: str, abstract_state: Any) -> None:
  """Refuses to start when the workdir's disk cannot hold the latest and best checkpoints."""
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state)
                    if hasattr(x, 'dtype'))
  needed = 2 * state_bytes + _SPACE_MARGIN_BYTES
  free = shutil.disk_usage(workdir).free
  if free < needed:
    raise CheckpointError(f'--workdir {workdir}: {free / 2**20:.0f} MiB free on its disk, but '
                          f'checkpoints need about {needed / 2**20:.0f} MiB; free some space or '
                          'choose another workdir')


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    f.write(config.to_json(indent=2, sort_keys=True))


def read_config(workdir: str, defaults: ml_collections.ConfigDict | None = None
                ) -> ml_collections.ConfigDict:
  """The config a run was trained with; keys added to jaxseg since then (absent from
  the saved file) take their values from `defaults`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f'{path}: not found; is {workdir!r} the --workdir of a training run?')
  with open(path) as f:
    saved = json.load(f)
  if defaults is not None:
    saved = _merged(json.loads(defaults.to_json()), saved)
  return ml_collections.ConfigDict(saved)


def saved_model_name(workdir: str) -> str | None:
  """model.name in a workdir's config.json, or None."""
  try:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      return json.load(f)['model']['name']
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _merged(defaults: dict, saved: dict) -> dict:
  out = dict(defaults)
  for key, value in saved.items():
    both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
    out[key] = _merged(out[key], value) if both_dicts else value
  return out


# Config entries that decide the saved state's shapes and meaning; a restart may change
# everything else (more steps, another learning rate, remat, compute dtype, conv3d).
_ARCHITECTURE_KEYS = ('model', 'data.image_size')
_RUNTIME_MODEL_KEYS = ('remat', 'remat_levels', 'unroll', 'dtype', 'conv3d')


def _architecture(config: ml_collections.ConfigDict) -> dict:
  as_dict = json.loads(config.to_json())
  for key in _RUNTIME_MODEL_KEYS:
    as_dict.get('model', {}).pop(key, None)
  return {key: _get(as_dict, key) for key in _ARCHITECTURE_KEYS}


def _get(config: dict, dotted: str):
  for key in dotted.split('.'):
    config = config.get(key) if isinstance(config, dict) else None
  return config


def check_same_model(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises CheckpointError when the workdir was trained with another model config."""
  saved, current = _architecture(read_config(workdir)), _architecture(config)
  if saved != current:
    raise CheckpointError(
        f'workdir {workdir} holds a checkpoint of a different model '
        f'({_diff(saved, current, "config")}); use a new --workdir, or the config it was '
        'trained with')


def _diff(saved, current, prefix: str) -> str:
  if isinstance(saved, dict) and isinstance(current, dict):
    for key in sorted(set(saved) | set(current), key=lambda k: (k != 'name', k)):
      if saved.get(key) != current.get(key):
        name = key if prefix == 'config' else f'{prefix}.{key}'
        return _diff(saved.get(key), current.get(key), name)
  return f'{prefix}: saved {saved!r}, now {current!r}'
