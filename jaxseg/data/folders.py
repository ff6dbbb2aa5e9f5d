"""2D image folders, as in the original project: `root/images/*` and `root/masks/*` with
matching file names (PNG, JPEG, BMP or TIFF; grayscale or RGB).

Masks are either 0/255 (one region, 'tumour') or label indices 0..K (one region per
foreground label). Images are resized to `data.image_size` (bilinear; masks nearest)
and z-scored per channel over their non-zero pixels. Distances (HD95) are in pixels of
the resized image. Nothing is ever written into `root`.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxseg.data.regions import Region
from jaxseg.data.synthetic import zscore_in_mask

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


def _list_images(directory: str) -> dict[str, str]:
  """File stem -> path of every image file in `directory`."""
  if not os.path.isdir(directory):
    raise ValueError(f'data.root: {directory} is not a directory (expected images/ and masks/)')
  files = {}
  for name in sorted(os.listdir(directory)):
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in IMAGE_SUFFIXES:
      files[stem] = os.path.join(directory, name)
  if not files:
    raise ValueError(f'data.root: no images ({", ".join(IMAGE_SUFFIXES)}) in {directory}')
  return files


def _read(path: str, mode: str) -> Image.Image:
  try:
    with Image.open(path) as image:
      image.load()
      return image.convert(mode)
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f'{path}: unreadable image ({error})') from error


def load_image_folder(root: str, image_size: tuple[int, int]):
  """(images (N, H, W, C) float32, labels (N, H, W) uint8, case ids, regions) of `root`."""
  images_by_case = _list_images(os.path.join(root, 'images'))
  masks_by_case = _list_images(os.path.join(root, 'masks'))
  missing = sorted(set(images_by_case) - set(masks_by_case))
  if missing:
    raise ValueError(f'{images_by_case[missing[0]]}: no mask with the same name in '
                     f'{os.path.join(root, "masks")} ({len(missing)} image(s) without a mask)')
  height, width = image_size
  images, masks = [], []
  for case, path in images_by_case.items():
    raw = _read(path, 'RGB')
    mask = _read(masks_by_case[case], 'L')
    if raw.size != mask.size:
      raise ValueError(f'{masks_by_case[case]}: mask size {mask.size} differs from image size '
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
  elif values.max() < 255 and len(values) <= 16:
    labels = masks.astype(np.uint8)
    regions = tuple(Region(f'label{v}', (int(v),)) for v in values if v > 0)
  else:
    raise ValueError(f'{os.path.join(root, "masks")}: masks must be 0/255 or label indices '
                     f'below 16 different values; found values {values[:10].tolist()}...')
  images = np.stack([zscore_in_mask(image, image.sum(-1) != 0) for image in images])
  return images, labels, list(images_by_case), regions
