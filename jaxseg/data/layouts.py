"""The BraTS data layouts as one table: file naming, label values, regions, and the
organisers' evaluation config of each challenge.

Every label value of a layout is mapped to a *canonical* label of its label family, and
regions are defined on canonical labels, so that one model serves layouts that number
the same tissues differently (BraTS 2021's enhancing tumour 4 is BraTS 2023's 3).

  glioma family   1 necrotic / non-enhancing core (NETC), 2 oedema / surrounding
                  FLAIR hyperintensity (SNFH), 3 enhancing tumour (ET), 4 resection
                  cavity (RC, BraTS 2024-25 post-treatment glioma)
  paediatric      BraTS-PED 2024-25: 1 ET, 2 non-enhancing tumour (NET), 3 cystic
                  component (CC), 4 oedema (ED)

Regions are listed from the outermost to the innermost, the order in which
regions.labels_from_regions paints them. `challenge` names the config of the
organisers' `brats-evaluation` package that scores the layout lesion-wise, and
`min_lesion_voxels` the volume under which that challenge's evaluation ignores a
missed lesion (rachitsaluja/BraTS-2023-Metrics, BraTS-2024-Metrics), the default of
postprocessing's small-component removal.
"""

import dataclasses

import numpy as np

from jaxseg.data.regions import Region
from jaxseg.errors import DataError


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str
  family: str                        # 'glioma' or 'paediatric': what canonical labels mean
  label_values: tuple[int, ...]      # the layout's own label values, background first
  to_canonical: dict[int, int]       # layout label -> canonical label
  regions: tuple[Region, ...]        # on canonical labels, outermost first
  challenge: str | None = None       # brats-evaluation config name (lesion-wise metrics)
  min_lesion_voxels: int | None = None

  def from_canonical(self, labels: np.ndarray) -> np.ndarray:
    """Canonical label map -> this layout's label values (for writing predictions)."""
    lookup = np.zeros(max(self.to_canonical.values()) + 1, np.uint8)
    for own, canonical in self.to_canonical.items():
      lookup[canonical] = own
    return lookup[labels]


GLIOMA_REGIONS = (Region('WT', (1, 2, 3)), Region('TC', (1, 3)), Region('ET', (3,)))
# Post-treatment glioma adds the resection cavity, outside the tumour regions.
GLIOMA_RC_REGIONS = GLIOMA_REGIONS + (Region('RC', (4,)),)
# BraTS-PED 2024-25 (the official 'ped' config): WT 1-4, TC 1-3, ET 1, CC 3; the
# non-enhancing tumour 2 is TC without ET and CC.
PAEDIATRIC_REGIONS = (Region('WT', (1, 2, 3, 4)), Region('TC', (1, 2, 3)), Region('ET', (1,)),
                      Region('CC', (3,)))

_IDENTITY_3 = {0: 0, 1: 1, 2: 2, 3: 3}
_IDENTITY_4 = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}


def _layout(name, family, to_canonical, regions, challenge=None, min_lesion_voxels=None):
  return Layout(name, family, tuple(sorted(to_canonical)), dict(to_canonical), regions,
                challenge, min_lesion_voxels)


# name -> layout. The BraTS 2023+ sub-challenges share one file naming
# (BraTS-<SUB>-00000-000/BraTS-<SUB>-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz) and are told
# apart by <SUB> (SUBCHALLENGE_PREFIXES); 'brats2023' is that naming with another prefix.
LAYOUTS = {layout.name: layout for layout in (
    _layout('brats2021', 'glioma', {0: 0, 1: 1, 2: 2, 4: 3}, GLIOMA_REGIONS),
    _layout('brats2023', 'glioma', _IDENTITY_3, GLIOMA_REGIONS, 'gli', 50),
    _layout('brats-gli', 'glioma', _IDENTITY_4, GLIOMA_RC_REGIONS, 'gli', 50),
    _layout('brats-ssa', 'glioma', _IDENTITY_3, GLIOMA_REGIONS, 'gli', 50),
    _layout('brats-goat', 'glioma', _IDENTITY_3, GLIOMA_REGIONS, 'GoAT', 50),
    _layout('brats-men', 'glioma', _IDENTITY_3, GLIOMA_REGIONS, 'MenPre', 50),
    _layout('brats-met', 'glioma', _IDENTITY_4, GLIOMA_RC_REGIONS, 'mets', 2),
    _layout('brats-ped', 'paediatric', _IDENTITY_4, PAEDIATRIC_REGIONS, 'ped', 50),
)}
SUBCHALLENGE_PREFIXES = {'BraTS-GLI-': 'brats-gli', 'BraTS-SSA-': 'brats-ssa',
                         'BraTS-GoAT-': 'brats-goat', 'BraTS-MEN-': 'brats-men',
                         'BraTS-MET-': 'brats-met', 'BraTS-PED-': 'brats-ped'}
# Layouts of the BraTS 2023+ naming (file suffixes -t1n, -t1c, -t2w, -t2f, -seg).
NAMING_2023 = ('brats2023', *SUBCHALLENGE_PREFIXES.values())


def layout_of_folder(folder_name: str) -> str:
  """The layout of a case folder of the BraTS 2023+ naming, from its sub-challenge."""
  return next((layout for prefix, layout in SUBCHALLENGE_PREFIXES.items()
               if folder_name.startswith(prefix)), 'brats2023')


def decathlon_layout(to_canonical: dict[int, int]) -> Layout:
  """The Medical Segmentation Decathlon's Task01, labels from its dataset.json."""
  return _layout('decathlon', 'glioma', to_canonical, GLIOMA_REGIONS)


def regions_present(layout: Layout, canonical_values) -> tuple[Region, ...]:
  """The layout's regions that contain at least one of `canonical_values` (the labels
  found in the training data): a region no case has cannot be learnt, and its Dice
  would be a constant 1 that inflates every mean."""
  present = set(int(v) for v in canonical_values)
  return tuple(r for r in layout.regions if present & set(r.labels))


def check_regions(model_regions, data_regions, where: str) -> None:
  """Refuses, in one line, data whose labels cannot be scored with a model's regions
  (another label family, or 2D masks against BraTS regions)."""
  available = {(r.name, tuple(r.labels)) for r in data_regions}
  missing = [r for r in model_regions if (r.name, tuple(r.labels)) not in available]
  if missing:
    def names(regions):
      return ', '.join(f'{r.name} {list(r.labels)}' for r in regions)
    raise DataError(f'{where}: the model was trained on the regions {names(model_regions)}, '
                    f'but this data has {names(data_regions)}; evaluate it with a model '
                    'trained on data of its kind')
