"""The cache of preprocessed NIfTI cases: each case is preprocessed once, on first use.

Each case is cropped to the bounding box of its brain (voxels non-zero in any
channel), z-scored per channel over the brain (preprocessing.py), and written as
`.npy` arrays that training memory-maps, with `meta.json` holding what is needed to
put predictions back into the original geometry (source files, original shape,
affine, crop box).

An entry's directory name contains a hash of its source files (path, size, mtime),
the layout's label mapping and CACHE_VERSION, so a changed file or setting never
reuses a stale entry. Entries are written into a temporary directory and renamed
into place, so an interrupted run never leaves a half-written entry that is trusted.
An entry damaged later (garbled meta.json, a truncated or deleted .npy; never unpickled)
is rebuilt from its source files: the cache is ours, so that is neither an error nor
trusted. Nothing is written next to the source data.
"""

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile

import numpy as np
from tqdm import tqdm

from jaxseg.data import brats, nifti_case
from jaxseg.data.preprocessing import brain_crop, foreground_voxels, normalise
from jaxseg.errors import DataError

CACHE_VERSION = 2
# What preprocess_case writes into meta.json; eval.py needs each of them.
META_KEYS = ('case_id', 'layout', 'images', 'seg', 'original_shape', 'affine', 'spacing',
             'crop_start', 'crop_stop', 'label_mapping')


def cache_directory(configured: str | None) -> str:
  """data.cache_dir, else $JAXSEG_CACHE_DIR, else ~/.cache/jaxseg."""
  if configured:
    return os.path.abspath(os.path.expanduser(configured))
  if os.environ.get('JAXSEG_CACHE_DIR'):
    return os.path.abspath(os.path.expanduser(os.environ['JAXSEG_CACHE_DIR']))
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'jaxseg')


@dataclasses.dataclass(frozen=True)
class CachedCase:
  """One preprocessed case on disk; arrays are memory-mapped when read."""
  case_id: str
  directory: str

  @property
  def meta(self) -> dict:
    with open(os.path.join(self.directory, 'meta.json')) as f:
      return json.load(f)

  def array(self, name: str) -> np.ndarray:
    return np.load(os.path.join(self.directory, f'{name}.npy'), mmap_mode='r')

  @property
  def labelled(self) -> bool:
    return os.path.exists(os.path.join(self.directory, 'labels.npy'))


def _entry_name(case: brats.CaseFiles, layout: brats.Layout) -> str:
  files = [(os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in case.files]
  key = json.dumps({'version': CACHE_VERSION, 'files': files, 'layout': layout.name,
                    'labels': sorted(layout.to_canonical.items()),
                    'channels': list(case.channel_index)})
  safe_id = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in case.case_id)
  return f'{safe_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}'


def preprocess_case(case: brats.CaseFiles, layout: brats.Layout, directory: str) -> None:
  """Reads, checks, crops and normalises one case into the entry `directory`."""
  image, labels, reference = nifti_case.read_case(case, layout)
  try:
    box = brain_crop(image)
  except DataError as error:
    raise DataError(f'{case.images[0]}: {error}') from None
  image = normalise(image[box])
  meta = {'case_id': case.case_id, 'layout': layout.name, 'images': list(case.images),
          'seg': case.seg, 'original_shape': list(reference.shape[:3]),
          'affine': np.asarray(reference.affine).tolist(),
          'spacing': [float(z) for z in reference.header.get_zooms()[:3]],
          'crop_start': [s.start for s in box], 'crop_stop': [s.stop for s in box],
          'label_mapping': [[own, canonical] for own, canonical in layout.to_canonical.items()]}
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.partial-', dir=parent)
  try:
    np.save(os.path.join(staging, 'image.npy'), image)
    if labels is not None:
      labels = labels[box]
      np.save(os.path.join(staging, 'labels.npy'), labels)
      seed = int.from_bytes(hashlib.sha256(case.case_id.encode()).digest()[:4], 'little')
      np.save(os.path.join(staging, 'foreground.npy'), foreground_voxels(labels, seed))
    with open(os.path.join(staging, 'meta.json'), 'w') as f:
      json.dump(meta, f, indent=1)
    try:
      os.rename(staging, directory)  # atomic: the entry appears complete or not at all
    except OSError:
      if not os.path.isdir(directory):
        raise
      shutil.rmtree(staging)  # another process (another host, say) finished it first
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _preprocess_or_error(case, layout, directory) -> str | None:
  """Worker entry point: None on success, else the one-line problem."""
  try:
    preprocess_case(case, layout, directory)
  except DataError as error:
    return str(error)
  return None


def damage(directory: str, labelled: bool) -> str | None:
  """What is wrong with the cache entry `directory`, or None: meta.json parses with its
  keys, and each .npy opens (header intact, file as long as the header says)."""
  names = ('image', 'labels', 'foreground') if labelled else ('image',)
  try:
    with open(os.path.join(directory, 'meta.json')) as f:
      meta = json.load(f)
    arrays = [np.load(os.path.join(directory, f'{name}.npy'), mmap_mode='r') for name in names]
  except (OSError, ValueError, EOFError) as error:  # missing, garbled or truncated files
    return f'{type(error).__name__}: {error}'.splitlines()[0]
  if not isinstance(meta, dict) or not set(META_KEYS) <= set(meta):
    return 'meta.json lacks keys'
  if arrays[0].ndim < 3 or (labelled and arrays[1].shape != arrays[0].shape[:-1]):
    return 'array shapes do not fit together'
  return None


def prepare(root: str, cache_dir: str | None, num_workers: int, skip_bad_cases: bool
            ) -> tuple[brats.Layout, list[CachedCase], list[tuple[str, str]]]:
  """Discovers, checks and preprocesses (where not cached yet) every case under `root`.

  A bad case raises DataError naming its file, before any case is trained on; with
  `skip_bad_cases` every bad case is listed on stderr and left out instead. Returns
  (layout, usable cases, skipped bad cases as (case id, problem)).
  """
  root = os.path.abspath(os.path.expanduser(root))
  layout, cases, problems = brats.discover(root)
  entries_dir = os.path.join(cache_directory(cache_dir), 'cases')
  if os.path.commonpath([entries_dir, root]) == root:
    raise DataError(f'data.cache_dir: {entries_dir} is inside data.root; the source '
                    'directory is never written, choose another cache directory')
  entries = {case.case_id: os.path.join(entries_dir, _entry_name(case, layout))
             for case in cases}
  todo = []
  for case in cases:
    directory = entries[case.case_id]
    if not os.path.isdir(directory):
      todo.append(case)
    elif (why := damage(directory, case.seg is not None)) is not None:
      print(f'note: rebuilding damaged cache entry {directory} ({why})', file=sys.stderr)
      shutil.rmtree(directory)
      todo.append(case)
  num_bad = f' ({len(problems)} bad)' if problems else ''
  print(f'{root}: {layout.name} layout, {len(cases) + len(problems)} case(s){num_bad}; '
        f'preprocessed cache in {entries_dir}' + (f' ({len(todo)} to preprocess)' if todo else ''))
  if problems and not skip_bad_cases:
    raise DataError(_problem_line(problems))
  if todo:
    problems += _run_all(todo, layout, entries, num_workers, stop_early=not skip_bad_cases)
  if problems and not skip_bad_cases:
    raise DataError(_problem_line(problems))
  for _, message in problems:
    print(f'warning: skipping bad case: {message}', file=sys.stderr)
  bad = {case_id for case_id, _ in problems}
  kept = [CachedCase(c.case_id, entries[c.case_id]) for c in cases if c.case_id not in bad]
  if not kept:
    raise DataError(f'data.root: {root}: no usable cases')
  return layout, kept, problems


def _problem_line(problems: list[tuple[str, str]]) -> str:
  more = f'{len(problems) - 1} more bad case(s); ' if len(problems) > 1 else ''
  # One hint for both programs: eval.py has no --config flags.
  return (f'{problems[0][1]} ({more}data.skip_bad_cases skips bad cases: train.py '
          '--config.data.skip_bad_cases=True, eval.py --skip_bad_cases)')


def _run_all(todo, layout, entries, num_workers: int, stop_early: bool):
  """Preprocesses `todo` in `num_workers` processes (0: here); returns the problems."""
  problems = []
  progress = tqdm(total=len(todo), desc='preprocess', unit='case', dynamic_ncols=True)
  if num_workers <= 0 or len(todo) == 1:
    for case in todo:
      problem = _preprocess_or_error(case, layout, entries[case.case_id])
      progress.update(1)
      if problem:
        problems.append((case.case_id, problem))
        if stop_early:
          break
  else:
    # 'spawn': forking a process that has started JAX's thread pools is unsafe. The
    # workers leave Ctrl-C to this process. However this ends (done, a bad case, Ctrl-C,
    # SIGTERM raised as Stopped), the pool is terminated: its workers end at once, and
    # multiprocessing's resource tracker, which they keep open, ends with this process.
    pool = multiprocessing.get_context('spawn').Pool(min(num_workers, len(todo)),
                                                     initializer=_worker_signals)
    try:
      for case_id, problem in pool.imap_unordered(
          _preprocess_task, [(case, layout, entries[case.case_id]) for case in todo]):
        progress.update(1)
        if problem:
          problems.append((case_id, problem))
          if stop_early:
            break
    finally:
      pool.terminate()
      pool.join()
  progress.close()
  return problems


def _preprocess_task(task) -> tuple[str, str | None]:
  """Pool entry point: (case id, None or its one-line problem)."""
  case, layout, directory = task
  return case.case_id, _preprocess_or_error(case, layout, directory)


def _worker_signals() -> None:
  """Ctrl-C is the main process's to handle; SIGTERM (Pool.terminate, or the scheduler
  signalling every process) exits through preprocess_case's clean-up of its staging
  directory."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
