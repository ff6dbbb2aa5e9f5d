"""The files of a workdir other than its checkpoints: the run's config and its splits.

  config.json     the config of the run and the workdir's format_version (rewritten at
                  each start; a restart with another model is refused); read, whatever
                  its version, as the current one (workdir_format.py)
  splits.json     the case ids of the training and validation splits (written once;
                  a restart whose data splits differently is refused)
  regions.json    the regions the model predicts, with their labels (written once);
                  eval.py scores and writes labels with them
  checkpoints/    checkpointing.py

Also the start-up checks of a workdir: writable, and room for two checkpoints.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections

from jaxseg import workdir_format
from jaxseg.data.regions import Region
from jaxseg.errors import WorkdirError
from jaxseg.models import registry

CONFIG_FILE = 'config.json'
SPLITS_FILE = 'splits.json'
REGIONS_FILE = 'regions.json'



def prepare_workdir(workdir: str, flag: str = '--workdir') -> None:
  """Creates `workdir` (or the directory of another `flag`) and proves it writable, with
  one-line errors, before any compiling; a workdir written by a newer jaxseg is refused
  before any of its files is read or changed."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-test-'):
      pass
  except OSError as error:
    raise WorkdirError(f'{flag} {workdir}: cannot be created or written '
                       f'({error.strerror or error})') from None
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return  # none yet; or damaged, which read_config names if it is ever read
  if isinstance(saved, dict):
    workdir_format.check_version(saved.get(workdir_format.KEY, 0), path)


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
    raise WorkdirError(f'--workdir {workdir}: {free / 2**20:.0f} MiB free on its disk, but '
                       f'checkpoints need about {needed / 2**20:.0f} MiB; free some space or '
                       'choose another workdir')


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  saved = {**json.loads(config.to_json()), workdir_format.KEY: workdir_format.VERSION}
  with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    json.dump(saved, f, indent=2, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class SavedRun:
  """A workdir's config and regions as the current format has them."""
  config: ml_collections.ConfigDict
  regions: tuple[Region, ...] | None  # None: those of its data (a 2D folder's, version 0)
  notes: tuple[str, ...]  # what was read otherwise than saved (workdir_format.migrate)


def read_saved(workdir: str) -> SavedRun:
  """The config a run was trained with and the regions it predicts, from a workdir of
  any format version this jaxseg reads (workdir_format.py)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{path}: not found; is {workdir!r} the --workdir of a training run?')
  saved, notes = workdir_format.migrate(
      {'config': _read_json(path), 'regions': read_regions(workdir)}, path)
  return SavedRun(ml_collections.ConfigDict(saved['config']), saved['regions'], tuple(notes))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (`read_saved`)."""
  return read_saved(workdir).config


# Config entries that decide the saved state's shapes and meaning; a restart may change
# everything else (more steps, another learning rate, the compute section, and the
# model keys that change speed or memory only, registry.runtime_keys).
_ARCHITECTURE_KEYS = ('model', 'data.image_size')


def _architecture(config: ml_collections.ConfigDict) -> dict:
  as_dict = json.loads(config.to_json())
  model = as_dict.get('model', {})
  for key in registry.runtime_keys(model.get('name')):
    model.pop(key, None)
  return {key: _get(as_dict, key) for key in _ARCHITECTURE_KEYS}


def _get(config: dict, dotted: str):
  for key in dotted.split('.'):
    config = config.get(key) if isinstance(config, dict) else None
  return config


def check_same_model(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises WorkdirError when the workdir was trained with another model config."""
  saved, current = _architecture(read_config(workdir)), _architecture(config)
  if saved != current:
    raise WorkdirError(
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


def record_splits(workdir: str, splits: dict[str, list[str]]) -> None:
  """Writes splits.json, or checks that it agrees with the one already there."""
  path = os.path.join(workdir, SPLITS_FILE)
  saved = read_splits(workdir)
  if saved is not None and saved != splits:
    changed = next(name for name in splits if saved.get(name) != splits[name])
    raise WorkdirError(f'{path}: the {changed} cases differ from those this run started with '
                     '(did data.root, data.seed or the fold change?); use a new --workdir')
  if saved is None:
    with open(path, 'w') as f:
      json.dump(splits, f, indent=1)


def record_regions(workdir: str, regions: tuple[Region, ...]) -> None:
  """Writes regions.json, or checks that the data still has the regions it records."""
  path = os.path.join(workdir, REGIONS_FILE)
  saved = read_regions(workdir)
  if saved is not None and saved != tuple(regions):
    raise WorkdirError(f'{path}: this run predicts the regions {_names(saved)}, but its data '
                       f'now has {_names(regions)} (did data.root change?); use a new --workdir')
  if saved is None:
    with open(path, 'w') as f:
      json.dump([{'name': r.name, 'labels': list(r.labels)} for r in regions], f, indent=1)


def read_regions(workdir: str) -> tuple[Region, ...] | None:
  """The regions of regions.json; None where there is none (`read_saved` says which)."""
  path = os.path.join(workdir, REGIONS_FILE)
  if not os.path.exists(path):
    return None
  saved = _read_json(path)
  try:
    return tuple(Region(str(r['name']), tuple(int(v) for v in r['labels'])) for r in saved)
  except (TypeError, KeyError, ValueError):
    raise WorkdirError(f'{path}: not a list of {{"name", "labels"}} regions; restore it '
                       'from a copy, or use a new --workdir') from None


def _names(regions) -> str:
  return ', '.join(r.name for r in regions)


def read_splits(workdir: str) -> dict[str, list[str]] | None:
  path = os.path.join(workdir, SPLITS_FILE)
  if not os.path.exists(path):
    return None
  return _read_json(path)


def _read_json(path: str):
  """The JSON in `path`; a damaged file is a WorkdirError naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
    raise WorkdirError(f'{path}: not valid JSON ({error}); restore it from a copy, or use a '
                       'new --workdir') from None
