"""Embedded BraTS-like data: deterministic synthetic multi-contrast brain images.

Each case is a skull-stripped brain (white matter, grey matter, ventricles) with one
tumour made of nested sub-regions, labelled as in BraTS 2023: 1 necrotic core,
2 oedema, 3 enhancing tumour (a rim around the necrosis). The four channels mimic
T1, T1ce, T2 and FLAIR: oedema is bright in FLAIR and T2, the enhancing rim in T1ce,
necrosis dark in T1. Shape, size, position, orientation, contrast, noise and a smooth
intensity inhomogeneity (bias field) vary from case to case.

A case depends only on (seed, split, index), so data sets are reproducible and a
case does not change when the number of cases does.
"""

import numpy as np
from scipy import ndimage

CHANNELS = ('t1', 't1ce', 't2', 'flair')
LABELS = {'background': 0, 'necrotic_core': 1, 'oedema': 2, 'enhancing_tumour': 3}
SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}

# Mean intensity of each tissue in (T1, T1ce, T2, FLAIR), before per-case jitter.
_TISSUE_INTENSITY = {
    'white_matter': (0.85, 0.75, 0.35, 0.45),
    'grey_matter': (0.60, 0.55, 0.55, 0.60),
    'csf': (0.20, 0.20, 1.00, 0.15),
    'oedema': (0.55, 0.55, 0.80, 0.85),
    'enhancing': (0.60, 0.95, 0.60, 0.70),
    'necrosis': (0.25, 0.30, 0.80, 0.50),
}
_MIN_RIM = 0.07  # thinnest enhancing rim, in units of the half field of view


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
  """Zero-mean, unit-variance random field varying over about `cells` cells per axis."""
  coarse = rng.standard_normal((cells + 1,) * len(shape))
  field = ndimage.zoom(coarse, [s / (cells + 1) for s in shape], order=3, mode='nearest')
  field = field[tuple(slice(0, s) for s in shape)]
  return (field - field.mean()) / (field.std() + 1e-8)


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
  q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
  return q * np.sign(np.diag(r))


def synthetic_case(shape: tuple[int, ...], seed: int, split: str, index: int):
  """One case: image (*shape, 4) float32, z-scored inside the brain, and labels (*shape) uint8."""
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  ndim = len(shape)
  grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing='ij'), axis=-1)

  # Brain: a perturbed ellipsoid, with a wavy white/grey matter boundary and ventricles.
  brain_radii = rng.uniform(0.72, 0.9, ndim)
  brain_distance = np.linalg.norm(grid / brain_radii, axis=-1)
  brain_distance *= 1 + 0.05 * _smooth_field(rng, shape, 4)
  brain = brain_distance < 1
  white_matter = brain & (brain_distance + 0.15 * _smooth_field(rng, shape, 6) < 0.7)
  ventricle_radii = rng.uniform(0.06, 0.14, ndim)
  offset = np.zeros(ndim)
  offset[-1] = rng.uniform(0.08, 0.16)
  csf = brain & ((np.linalg.norm((grid - offset) / ventricle_radii, axis=-1) < 1) |
                 (np.linalg.norm((grid + offset) / ventricle_radii, axis=-1) < 1))

  # Tumour: nested, independently perturbed ellipsoids: oedema > core > necrosis.
  centre = rng.uniform(-0.45, 0.45, ndim) * brain_radii
  local = (grid - centre) @ _random_rotation(rng, ndim) / rng.uniform(0.75, 1.3, ndim)
  tumour_distance = np.linalg.norm(local, axis=-1)
  oedema_radius = rng.uniform(0.25, 0.45)
  core_radius = oedema_radius * rng.uniform(0.45, 0.7)
  necrosis_radius = min(core_radius * rng.uniform(0.3, 0.65), core_radius - _MIN_RIM)
  def inside(radius, cells):
    return brain & (tumour_distance * (1 + 0.15 * _smooth_field(rng, shape, cells)) < radius)
  oedema = inside(oedema_radius, 5)
  core = inside(core_radius, 4)
  necrosis = inside(necrosis_radius, 3) & core

  labels = np.zeros(shape, np.uint8)
  labels[oedema | core] = LABELS['oedema']
  labels[core] = LABELS['enhancing_tumour']
  labels[necrosis] = LABELS['necrotic_core']

  tissues = [('grey_matter', brain), ('white_matter', white_matter), ('csf', csf),
             ('oedema', labels == LABELS['oedema']),
             ('enhancing', labels == LABELS['enhancing_tumour']),
             ('necrosis', labels == LABELS['necrotic_core'])]
  image = np.zeros((*shape, len(CHANNELS)), np.float32)
  for name, mask in tissues:  # later tissues overwrite earlier ones
    jitter = rng.uniform(0.85, 1.15, len(CHANNELS))
    image[mask] = np.asarray(_TISSUE_INTENSITY[name]) * jitter
  # Infiltrating oedema fades into the surrounding tissue towards its outer border,
  # so that its boundary is uncertain, as in real scans.
  fade = np.clip((oedema_radius - tumour_distance) / (oedema_radius - core_radius), 0, 1)
  fade = np.where(labels == LABELS['oedema'], 0.35 + 0.65 * fade, 1.0)[..., None]
  healthy = np.asarray(_TISSUE_INTENSITY['grey_matter'])
  image = np.where(labels[..., None] == LABELS['oedema'],
                   healthy + fade * (image - healthy), image)

  texture = 1 + 0.1 * _smooth_field(rng, shape, 12)
  bias_field = np.exp(0.25 * _smooth_field(rng, shape, 2))
  gain = rng.uniform(0.7, 1.3, len(CHANNELS))
  # Partial-volume blur of about one voxel, then acquisition noise.
  image = ndimage.gaussian_filter(image, sigma=(0.8,) * ndim + (0,))
  noise = rng.standard_normal(image.shape) * rng.uniform(0.05, 0.15)
  image = (image * (texture * bias_field)[..., None] * gain + noise) * brain[..., None]
  return zscore_in_mask(image, brain), labels


def zscore_in_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per-channel z-score over the voxels of `mask`; zero outside it (BraTS convention)."""
  values = image[mask]
  mean, std = values.mean(axis=0), values.std(axis=0) + 1e-8
  return np.where(mask[..., None], (image - mean) / std, 0).astype(np.float32)


def synthetic_split(shape: tuple[int, ...], seed: int, split: str, num_cases: int):
  """Images (N, *shape, 4), labels (N, *shape) and case ids of one split."""
  cases = [synthetic_case(shape, seed, split, i) for i in range(num_cases)]
  images = np.stack([c[0] for c in cases])
  labels = np.stack([c[1] for c in cases])
  return images, labels, [f'synthetic-{split}-{i:04d}' for i in range(num_cases)]
