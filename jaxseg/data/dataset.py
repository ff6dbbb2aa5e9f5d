"""`SegmentationData`: the cases of one split, whatever their source, as the rest of
jaxseg sees them (images, label maps, ids, spacings, regions, channels)."""

import dataclasses
from typing import Sequence

import numpy as np

from jaxseg.data.layouts import Layout
from jaxseg.data.regions import Region


@dataclasses.dataclass(frozen=True)
class SegmentationData:
  images: Sequence[np.ndarray]        # per case (*spatial, C) float32, z-scored
  labels: Sequence[np.ndarray | None]  # per case (*spatial) uint8 label map; None: unlabelled
  case_ids: tuple[str, ...]
  spacings: tuple[tuple[float, ...], ...]  # per case, mm per voxel along each axis
  regions: tuple[Region, ...]
  channels: tuple[str, ...]
  foreground: Sequence[np.ndarray] | None = None  # per case [label, *index] rows
  source: Sequence[dict] | None = None  # per case geometry of cached NIfTI (cache meta)
  origin: str = 'synthetic'           # 'synthetic', 'folders' or 'nifti'
  layout: Layout | None = None        # NIfTI: the BraTS layout (labels, challenge)

  def __len__(self):
    return len(self.case_ids)
