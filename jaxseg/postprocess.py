"""Postprocessing of predicted region masks: removal of small connected components.

BraTS evaluations since 2023 count every predicted connected component that touches
no ground-truth lesion as a false positive, so winning entries remove small predicted
components. Components are 26-connected in 3D (8 in 2D), as the challenges' lesion
definition. Removing a component of a region also removes the regions inside it at
those voxels (its nested regions, whose labels are a subset of its own), so the voxels
take the label of the next outer region: an enhancing-tumour island inside the core
becomes core (label 1), a whole-tumour island becomes background. Regions are
processed from the outermost, as written in the label map.
"""

import numpy as np
from scipy import ndimage

from jaxseg.data.regions import Region
from jaxseg.errors import ConfigError


def parse_min_volumes(text: str, regions: tuple[Region, ...],
                      challenge_default: float | None) -> dict[str, float]:
  """--remove_lesions_below: '' (none), 'challenge' (the layout's threshold for every
  region), a volume for every region ('50'), or per region ('ET=50,TC=20'), in mm^3
  (pixels for 2D images); {region name: volume}."""
  text = (text or '').strip()
  names = [r.name for r in regions]
  if not text:
    return {}
  if text == 'challenge':
    if challenge_default is None:
      raise ConfigError('--remove_lesions_below=challenge: this data\'s layout has no '
                        'challenge threshold; give a volume in mm^3, e.g. 50')
    return {name: float(challenge_default) for name in names}
  volumes = {}
  for part in text.split(','):
    name, _, value = part.rpartition('=')
    try:
      volume = float(value)
    except ValueError:
      volume = -1.0
    if volume < 0 or (name and name not in names):
      raise ConfigError(f'--remove_lesions_below={text}: give a volume in mm^3 (50), '
                        f'\'challenge\', or REGION=VOLUME pairs with regions of {names}')
    for region in ([name] if name else names):
      volumes[region] = volume
  return volumes


def remove_small_components(masks: np.ndarray, regions: tuple[Region, ...],
                            min_volumes: dict[str, float], spacing) -> np.ndarray:
  """masks (*spatial, R) boolean region masks, nested as a label map's -> the same with
  every component of region r smaller than min_volumes[r.name] (mm^3) removed from r
  and from the regions nested in r."""
  if not min_volumes:
    return masks
  masks = masks.copy()
  voxel_volume = float(np.prod(spacing))
  structure = ndimage.generate_binary_structure(masks.ndim - 1, masks.ndim - 1)
  for index, region in enumerate(regions):
    threshold = min_volumes.get(region.name)
    if not threshold:
      continue
    components, count = ndimage.label(masks[..., index], structure)
    if not count:
      continue
    sizes = np.bincount(components.ravel())[1:] * voxel_volume
    small = np.flatnonzero(sizes < threshold) + 1
    if not len(small):
      continue
    removed = np.isin(components, small)
    nested = [j for j, other in enumerate(regions) if set(other.labels) <= set(region.labels)]
    for j in nested:
      masks[..., j] &= ~removed
  return masks
