"""Resuming a workdir whose checkpoints may be damaged: the newest checkpoint that can
be read is restored, and each one that cannot is moved, untouched, to
`<workdir>/damaged_checkpoints/<step>/` (never deleted: the user may want to look at or
rescue it; and a later save of the same step must not collide with it)."""

import os
from typing import Any

from jaxseg.checkpointing import CheckpointDamaged, Checkpointer, restore_train_state

DAMAGED_DIR = 'damaged_checkpoints'


def set_aside(workdir: str, step: int) -> str:
  """Moves checkpoint `step` of `workdir`, untouched, to <workdir>/damaged_checkpoints/;
  returns where it went. Never deletes: the user may want to look at or rescue it."""
  workdir = os.path.abspath(workdir)
  source = os.path.join(workdir, 'checkpoints', str(step))
  target = os.path.join(workdir, DAMAGED_DIR, str(step))
  if not os.path.exists(source):  # another process of the job moved it already
    return target
  suffix = 0
  while os.path.exists(target):
    suffix += 1
    target = os.path.join(workdir, DAMAGED_DIR, f'{step}-{suffix}')
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.rename(source, target)
  return target


def open_for_training(workdir: str, warn) -> Checkpointer:
  """The Checkpointer of a workdir to train in; a checkpoint too damaged for Orbax to
  open the directory is set aside first, with `warn(line)`."""
  while True:
    try:
      return Checkpointer(workdir)
    except CheckpointDamaged as error:
      warn(f'{error}; moved it to {set_aside(workdir, error.step)}')


def restore_newest(checkpointer: Checkpointer, abstract_state: Any, sharding, warn
                   ) -> dict | None:
  """Checkpointer.restore of the newest checkpoint that can be read, or None when there
  is none. Each damaged one on the way is set aside, with `warn(line)` saying why."""
  for step in reversed(checkpointer.all_steps()):
    try:
      return restore_train_state(checkpointer, step, abstract_state, sharding)
    except CheckpointDamaged as error:
      target = set_aside(checkpointer.workdir, step)
      checkpointer.reload()
      warn(f'{error}; skipped it (moved to {target})')
  return None
