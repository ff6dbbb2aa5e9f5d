"""BraTS data sets in NIfTI: recognising their layout and finding their cases.

The layouts, with their labels and regions, are the table of layouts.py. Recognised
from the files under `data.root`:

  brats2021   BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
  BraTS 2023+ BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz: the
              sub-challenge from the prefix (GLI, SSA, GoAT, MEN, MET, PED; another
              prefix: 'brats2023', glioma labels 1-3)
  decathlon   imagesTr/BRATS_001.nii.gz (4D), labelsTr/BRATS_001.nii.gz, dataset.json
              (Medical Segmentation Decathlon Task01): label meanings from dataset.json,
              by default 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour

Plain `.nii` works too. Whatever the layout, a case is read into channels in the
order of CHANNELS and labels in its family's canonical numbering (layouts.py), so
regions are derived the same way for every layout of a family. A case without a
segmentation is unlabelled. Reading a case's files is nifti_case.py's.

Case folders of the BraTS layouts are the non-hidden subdirectories of `data.root` that
hold NIfTI files; hidden folders ('.x') and folders without NIfTI files are ignored.
A root mixing layouts (BraTS 2021 and 2023 naming, or two sub-challenges) is refused:
one layout would be read and the other's cases dropped or mislabelled. A folder with
NIfTI files not named as a case folder of the layout is a problem of that folder, like
a case missing a modality: fatal, or listed and skipped with data.skip_bad_cases.

Every problem with a file raises `DataError` with one line naming the file.
"""

import dataclasses
import json
import os
import re

from jaxseg.data import layouts
from jaxseg.data.layouts import Layout
from jaxseg.errors import DataError

CHANNELS = ('t1', 't1ce', 't2', 'flair')
NIFTI_SUFFIXES = ('.nii.gz', '.nii')


@dataclasses.dataclass(frozen=True)
class CaseFiles:
  """The files of one case: one per channel (or one 4D file), and the segmentation."""
  case_id: str
  images: tuple[str, ...]        # CHANNELS order; a single 4D file for the decathlon
  seg: str | None                # None: unlabelled
  channel_index: tuple[int, ...] = ()  # decathlon: the 4D volume's index of each channel

  @property
  def files(self) -> tuple[str, ...]:
    return self.images + ((self.seg,) if self.seg else ())


# Per-case file suffixes of each channel (CHANNELS order) and the segmentation, for the
# two namings of BraTS case folders.
_SUFFIXES = {'2021': ('_t1', '_t1ce', '_t2', '_flair', '_seg'),
             '2023': ('-t1n', '-t1c', '-t2w', '-t2f', '-seg')}
# Decathlon modality names -> CHANNELS; label names -> canonical labels.
_MODALITY_NAMES = {'t1': 't1', 't1w': 't1', 't1n': 't1', 't1gd': 't1ce', 't1ce': 't1ce',
                   't1c': 't1ce', 't2': 't2', 't2w': 't2', 'flair': 'flair', 't2f': 'flair'}
_LABEL_PATTERNS = (('non-enhancing|necro', 1), ('edema|oedema', 2), ('enhancing', 3))


def _nifti_stem(name: str) -> str | None:
  for suffix in NIFTI_SUFFIXES:
    if name.endswith(suffix) and not name.startswith('._'):  # '._x': macOS metadata
      return name[:-len(suffix)]
  return None


def _find(directory: str, stem: str) -> str | None:
  for suffix in NIFTI_SUFFIXES:
    path = os.path.join(directory, stem + suffix)
    if os.path.isfile(path):
      return path
  return None


def _folder_layouts(directory: str) -> set[str]:
  """The BraTS layouts whose case-file naming the NIfTI files of `directory` follow."""
  name = os.path.basename(directory)
  found = set()
  for file_name in os.listdir(directory):
    stem = _nifti_stem(file_name)
    for naming, suffixes in _SUFFIXES.items():
      if stem and stem.startswith(name) and stem[len(name):] in suffixes:
        found.add('brats2021' if naming == '2021' else layouts.layout_of_folder(name))
  return found


def _case_folders(root: str) -> list[os.DirEntry]:
  """Subdirectories of `root` that may be case folders: not hidden, sorted by name."""
  return sorted((e for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.')),
                key=lambda e: e.name)


def detect_layout(root: str) -> str | None:
  """A layout name of layouts.LAYOUTS, 'decathlon', 'folders' or None (nothing
  recognised).

  Raises DataError when `root` holds case folders of two layouts.
  """
  if os.path.isfile(os.path.join(root, 'dataset.json')) and (
      os.path.isdir(os.path.join(root, 'imagesTr')) or
      os.path.isdir(os.path.join(root, 'imagesTs'))):
    return 'decathlon'
  if os.path.isdir(os.path.join(root, 'images')):
    return 'folders'
  example = {}  # layout -> its first case folder
  for entry in _case_folders(root):
    for layout in _folder_layouts(entry.path):
      example.setdefault(layout, entry.name)
  if len(example) > 1:
    (first, one), (second, other) = sorted(example.items(), key=lambda item: item[1])[:2]
    raise DataError(f'data.root: {root} mixes case folders of the {first} layout ({one}) '
                    f'and the {second} layout ({other}); give one layout per data.root')
  return next(iter(example), None)


def discover(root: str) -> tuple[Layout, list[CaseFiles], list[tuple[str, str]]]:
  """(layout, cases, problems) of the data set under `root`.

  `problems` lists (case id, one-line message) of cases that cannot be used (a missing
  modality, say); the caller decides whether they are fatal or skipped.
  """
  if not os.path.isdir(root):
    raise DataError(f'data.root: {root} is not a directory')
  if not os.listdir(root):
    raise DataError(f'data.root: {root} is empty')
  layout = detect_layout(root)
  if layout is None:
    raise DataError(
        f'data.root: {root}: no known layout (expected BraTS 2021 case folders with '
        '*_t1ce.nii.gz, BraTS 2023 case folders with *-t1c.nii.gz, a decathlon folder with '
        'dataset.json and imagesTr/, or 2D images/ and masks/ folders)')
  if layout == 'decathlon':
    return _discover_decathlon(root)
  if layout == 'folders':
    raise AssertionError('2D image folders are read by jaxseg.data.folders')
  return _discover_brats(root, layout)


def _discover_brats(root: str, layout: str):
  suffixes = _SUFFIXES['2021' if layout == 'brats2021' else '2023']
  cases, problems = [], []
  for entry in _case_folders(root):
    found = [_find(entry.path, entry.name + suffix) for suffix in suffixes]
    if not any(found):
      nifti = sorted(n for n in os.listdir(entry.path) if _nifti_stem(n))
      if nifti:  # renamed folder or files: reported, never dropped silently
        problems.append((entry.name, f'{entry.path}: not a {layout} case folder: its NIfTI '
                                      f'files ({nifti[0]}, ...) are not named '
                                      f'{entry.name}{suffixes[1]}.nii.gz and so on'))
      continue
    missing = [CHANNELS[i] for i, path in enumerate(found[:4]) if path is None]
    if missing:
      expected = entry.name + suffixes[CHANNELS.index(missing[0])] + '.nii.gz'
      problems.append((entry.name, f'{entry.path}: missing {", ".join(missing)} image '
                                    f'({expected})'))
      continue
    cases.append(CaseFiles(entry.name, tuple(found[:4]), found[4]))
  if not cases and not problems:
    raise DataError(f'data.root: {root}: no case folders found')
  return layouts.LAYOUTS[layout], cases, problems


def case_folder(directory: str, channels) -> tuple[Layout, CaseFiles]:
  """The layout and the image files of one BraTS case folder (either naming), one per
  name of `channels` (CHANNELS' names) in that order, without its segmentation: one
  case predicted outside a data root (onnx_predict.py)."""
  directory = os.path.normpath(directory)
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: not a directory')
  found = _folder_layouts(directory)
  if len(found) != 1:
    raise DataError(f'{directory}: not a BraTS case folder (its NIfTI files are named '
                    f'<folder>_t1ce.nii.gz or <folder>-t1c.nii.gz and so on)')
  layout = found.pop()
  suffixes = _SUFFIXES['2021' if layout == 'brats2021' else '2023']
  name, images = os.path.basename(directory), []
  for channel in channels:
    if channel not in CHANNELS:
      raise DataError(f'the model takes the modality {channel!r}, not one of a BraTS case '
                      f'({", ".join(CHANNELS)})')
    suffix = suffixes[CHANNELS.index(channel)]
    path = _find(directory, name + suffix)
    if path is None:
      raise DataError(f'{directory}: no {channel} image ({name}{suffix}.nii.gz); the model '
                      f'takes {", ".join(channels)}')
    images.append(path)
  return layouts.LAYOUTS[layout], CaseFiles(name, tuple(images), None)


def _discover_decathlon(root: str):
  json_path = os.path.join(root, 'dataset.json')
  try:
    with open(json_path) as f:
      description = json.load(f)
    modalities = {int(k): str(v).lower() for k, v in description['modality'].items()}
    label_names = {int(k): str(v).lower() for k, v in description['labels'].items()}
  except (OSError, ValueError, KeyError, AttributeError) as error:
    raise DataError(f'{json_path}: not a decathlon dataset.json with "modality" and '
                    f'"labels" ({type(error).__name__}: {error})') from error
  by_channel = {_MODALITY_NAMES.get(name): index for index, name in modalities.items()}
  missing = [c for c in CHANNELS if c not in by_channel]
  if missing:
    raise DataError(f'{json_path}: modalities {sorted(modalities.values())} lack '
                    f'{", ".join(missing)}')
  to_canonical = {0: 0}
  for value, name in label_names.items():
    if value == 0:
      continue
    canonical = next((c for pattern, c in _LABEL_PATTERNS if re.search(pattern, name)), None)
    if canonical is None:
      raise DataError(f'{json_path}: label {value} {name!r} is not a BraTS tumour '
                      'sub-region (oedema, non-enhancing/necrotic, enhancing)')
    to_canonical[value] = canonical
  layout = layouts.decathlon_layout(to_canonical)
  channel_index = tuple(by_channel[c] for c in CHANNELS)

  cases = []
  for images_dir, labels_dir in (('imagesTr', 'labelsTr'), ('imagesTs', None)):
    directory = os.path.join(root, images_dir)
    if not os.path.isdir(directory):
      continue
    for name in sorted(os.listdir(directory)):
      stem = _nifti_stem(name)
      if stem is None:
        continue
      seg = _find(os.path.join(root, labels_dir), stem) if labels_dir else None
      cases.append(CaseFiles(stem, (os.path.join(directory, name),), seg, channel_index))
  if not cases:
    raise DataError(f'data.root: {root}: no NIfTI images in imagesTr/ or imagesTs/')
  return layout, cases, []
