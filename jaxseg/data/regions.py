"""Label maps and the (possibly overlapping) regions that are trained and scored.

BraTS scores three nested regions rather than the raw labels, so jaxseg trains one
sigmoid output per region: whole tumour WT, tumour core TC and enhancing tumour ET.
Other data sets use one region per foreground label (or a single 'tumour' region).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Region:
  name: str
  labels: tuple[int, ...]  # label values that belong to this region


# BraTS 2021: 1 necrotic core, 2 oedema, 4 enhancing tumour.
BRATS_2021_REGIONS = (Region('WT', (1, 2, 4)), Region('TC', (1, 4)), Region('ET', (4,)))
# BraTS 2023 glioma (and the embedded synthetic data): enhancing tumour is label 3.
BRATS_2023_REGIONS = (Region('WT', (1, 2, 3)), Region('TC', (1, 3)), Region('ET', (3,)))


def region_masks(labels: np.ndarray, regions: tuple[Region, ...]) -> np.ndarray:
  """Label map (...) -> boolean region masks (..., len(regions))."""
  return np.stack([np.isin(labels, r.labels) for r in regions], axis=-1)


def labels_from_regions(masks: np.ndarray, regions: tuple[Region, ...]) -> np.ndarray:
  """Boolean region masks (..., R) -> label map, for nested regions.

  Regions are painted from the largest (listed first) to the smallest; each voxel gets
  the label that belongs to its innermost region and to no region inside it.
  """
  labels = np.zeros(masks.shape[:-1], np.uint8)
  for index, region in enumerate(regions):
    inner = set().union(*(r.labels for r in regions[index + 1:]))
    own = [l for l in region.labels if l not in inner]
    if own:
      labels[masks[..., index]] = own[0]
  return labels
