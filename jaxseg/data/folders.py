"""2D image folders, as in the original project: `root/images/*` and `root/masks/*` with
matching file names (PNG, JPEG, BMP or TIFF; grayscale or RGB).

Masks are either all 0/255 (one region, 'tumour') or all label indices 0..K below 255
(one region per foreground label, at most MAX_LABEL_VALUES values over all masks); a
mask that breaks this is named with its values. Images are resized to
`data.image_size` (bilinear; masks nearest) and z-scored per channel over their
non-zero pixels. Distances (HD95) are in pixels of the resized image. Nothing is ever
written into `root`.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxseg.data.regions import Region
from jaxseg.data.synthetic import zscore_in_mask
from jaxseg.errors import DataError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
MAX_LABEL_VALUES = 16  # more distinct values: not label indices (a JPEG mask, say)


def _list_images(directory: str) -> dict[str, str]:
  """File stem -> path of every image file in `directory`."""
  if not os.path.isdir(directory):
    raise DataError(f'data.root: {directory} is not a directory (expected images/ and masks/)')
  files = {}
  for name in sorted(os.listdir(directory)):
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in IMAGE_SUFFIXES:
      files[stem] = os.path.join(directory, name)
  if not files:
    raise DataError(f'data.root: no images ({", ".join(IMAGE_SUFFIXES)}) in {directory}')
  return files


def _read(path: str, mode: str) -> Image.Image:
  try:
    with Image.open(path) as image:
      image.load()
      return image.convert(mode)
  except (UnidentifiedImageError, OSError) as error:
    raise DataError(f'{path}: unreadable image ({error})') from error


def load_image_folder(root: str, image_size: tuple[int, int]):
  """(images (N, H, W, C) float32, labels (N, H, W) uint8, case ids, regions) of `root`."""
  images_by_case = _list_images(os.path.join(root, 'images'))
  masks_by_case = _list_images(os.path.join(root, 'masks'))
  missing = sorted(set(images_by_case) - set(masks_by_case))
  if missing:
    raise DataError(f'{images_by_case[missing[0]]}: no mask with the same name in '
                    f'{os.path.join(root, "masks")} ({len(missing)} image(s) without a mask)')
  height, width = image_size
  images, masks = [], []
  for case, path in images_by_case.items():
    raw = _read(path, 'RGB')
    mask = _read(masks_by_case[case], 'L')
    if raw.size != mask.size:
      raise DataError(f'{masks_by_case[case]}: mask size {mask.size} differs from image size '
                      f'{raw.size} of {path}')
    pixels = np.asarray(raw.resize((width, height), Image.BILINEAR), np.float32)
    images.append(pixels)
    masks.append(np.asarray(mask.resize((width, height), Image.NEAREST)))
  images = np.stack(images)
  if all(np.array_equal(a[..., 0], a[..., c]) for a in images for c in (1, 2)):
    images = images[..., :1]  # grayscale stored as RGB or L: one channel
  masks = np.stack(masks)
  values = np.unique(masks)
  if set(values.tolist()) <= {0, 255}:
    labels, regions = (masks > 0).astype(np.uint8), (Region('tumour', (1,)),)
  elif values.max() < 255 and len(values) <= MAX_LABEL_VALUES:
    labels = masks.astype(np.uint8)
    regions = tuple(Region(f'label{v}', (int(v),)) for v in values if v > 0)
  else:
    raise DataError(_bad_mask(masks, [masks_by_case[case] for case in images_by_case]))
  images = np.stack([zscore_in_mask(image, image.sum(-1) != 0) for image in images])
  return images, labels, list(images_by_case), regions


def _bad_mask(masks: np.ndarray, paths: list[str]) -> str:
  """The line naming the first mask that breaks the rule, with its values."""
  values = [np.unique(mask).tolist() for mask in masks]
  binary = [set(v) <= {0, 255} for v in values]
  rule = (f'masks must be all 0/255 or all label indices below 255, at most '
          f'{MAX_LABEL_VALUES} values over all masks')

  def line(i: int, problem: str) -> str:
    shown = ', '.join(map(str, values[i][:10])) + (', ...' if len(values[i]) > 10 else '')
    return f'{paths[i]}: mask values [{shown}] {problem}; {rule}'

  for i, v in enumerate(values):
    if not binary[i] and (255 in v or len(v) > MAX_LABEL_VALUES):
      return line(i, 'are neither 0/255 nor label indices')
  mixed = [i for i, v in enumerate(values) if binary[i] and 255 in v]
  if mixed:  # each mask fits one rule, but not the same one
    return line(mixed[0], f'are 0/255 but {paths[binary.index(False)]} holds label indices')
  seen = set()
  for i, v in enumerate(values):
    seen.update(v)
    if len(seen) > MAX_LABEL_VALUES:
      return line(i, f'bring the label values over all masks to more than {MAX_LABEL_VALUES}')
  raise AssertionError('every mask fits the rule')
