"""The format of a workdir, versioned: `format_version` in its config.json.

train.py writes VERSION at every start of a run; whatever reads a workdir's config and
regions (eval.py, a restart, export.py, choose_postprocessing.py) reads them through
`migrate`, as this version. A config.json without `format_version` is version 0,
written before 2026-12-05, when the format got its version: it gets every step of
_STEPS[0] (each checks that its change is missing, since such a workdir may have been
written after some of them). A version newer than VERSION was written by a newer
jaxseg and is refused in one line: only that one knows what it means.

Changing the format (a key that moves, is renamed or changes meaning or default; a
file of the workdir that changes): add VERSION to _STEPS with the dated steps that
upgrade it, then add one to VERSION. A config key added with a default that does what
runs did before needs no step: keys a saved config lacks take the values of its
model's config file (`fill_from_defaults`), whatever the version.

What a checkpoint holds is not here: a restart rewrites config.json at this version
while its older checkpoints stay as they were written (checkpointing.py).
"""

import copy
import importlib
import json
import os

from jaxseg.data import layouts
from jaxseg.errors import WorkdirError
from jaxseg.models import registry

VERSION = 1
KEY = 'format_version'  # in config.json, beside the config's sections


def check_version(version, where: str) -> int:
  """`version` as read from `where` (a config.json), refused in one line unless this
  jaxseg reads it."""
  if not isinstance(version, int) or isinstance(version, bool) or version < 0:
    raise WorkdirError(f'{where}: {KEY} {version!r} is not a version number; restore it '
                       'from a copy, or use a new --workdir')
  if version > VERSION:
    raise WorkdirError(f'{where}: workdir format version {version}, written by a newer '
                       f'jaxseg; this one reads versions 0 to {VERSION}: update jaxseg, or '
                       'use a new --workdir')
  return version


def migrate(saved: dict, where: str) -> tuple[dict, list[str]]:
  """`saved` ({'config': config.json's contents, 'regions': the regions of regions.json,
  None if it is absent}) as the current version writes it, without `format_version`,
  and a note for each thing read differently from the files. `where` names config.json
  in errors."""
  if not isinstance(saved['config'], dict):
    raise WorkdirError(f'{where}: not a config (a JSON object); restore it from a copy, or '
                       'use a new --workdir')
  saved = copy.deepcopy(saved)
  version = check_version(saved['config'].pop(KEY, 0), where)
  notes = []
  for from_version in range(version, VERSION):
    for step in _STEPS[from_version]:
      notes += [note for note in [step(saved)] if note]
  notes += [note for note in [fill_from_defaults(saved)] if note]
  return saved, notes


# --- The steps, in order; each changes `saved` in place and says what it did (or None).

def regions_json(saved: dict) -> str | None:
  """2026-12-02: the regions a run predicts are recorded in regions.json. Runs before
  predicted the glioma regions, or those of their 2D image folders (None: read from
  the data)."""
  if saved['regions'] is not None:
    return None
  root = saved['config'].get('data', {}).get('root')
  if root and os.path.isdir(os.path.join(os.path.expanduser(root), 'images')):
    return 'no regions.json: the regions of its 2D image folders'
  saved['regions'] = layouts.GLIOMA_REGIONS
  return (f'no regions.json: the glioma regions '
          f'{", ".join(r.name for r in layouts.GLIOMA_REGIONS)}')


_COMPUTE_KEYS = ('conv_library', 'norm_kernel', 'conv3d')


def compute_section(saved: dict) -> str | None:
  """2026-12-05: model.conv_library, norm_kernel and conv3d (what computes the layers,
  speed only) move to their own section, compute.*."""
  model = saved['config'].get('model')
  moved = [key for key in _COMPUTE_KEYS if isinstance(model, dict) and key in model]
  if not moved:
    return None
  compute = saved['config'].setdefault('compute', {})
  for key in moved:
    compute.setdefault(key, model.pop(key))
  return f'model.{", model.".join(moved)} read as compute.*'


_STEPS = {0: (regions_json, compute_section)}


def fill_from_defaults(saved: dict) -> str | None:
  """Keys added to jaxseg since the run saved its config take the values of its model's
  config file (configs/, default variant)."""
  module = registry.config_module(saved['config'].get('model', {}).get('name'))
  if module is None:  # not a model this jaxseg knows: refused where the model is built
    return None
  try:
    defaults = json.loads(importlib.import_module(module).get_config(None).to_json())
  except ModuleNotFoundError as error:
    if error.name != module.split('.')[0]:
      raise
    # configs/ is beside train.py and eval.py, not installed: a library caller elsewhere
    # reads the saved keys alone.
    return None
  added = []
  saved['config'] = _merged(defaults, saved['config'], '', added)
  return f'keys it lacks from {module}: {", ".join(added)}' if added else None


def _merged(defaults: dict, saved: dict, prefix: str, added: list[str]) -> dict:
  """`defaults` with `saved`'s values; the keys only `defaults` has go to `added`."""
  out = dict(defaults)
  for key, value in saved.items():
    both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
    out[key] = _merged(out[key], value, f'{prefix}{key}.', added) if both_dicts else value
  added += [prefix + key for key in defaults if key not in saved]
  return out
