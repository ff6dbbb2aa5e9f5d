"""Synthetic BraTS-GLI cases: ground truth with tumours of labels 1-4 (some close lesions,
small lesions) and predictions perturbed from it (shifts, dropped and extra lesions)."""
import sys, os, json, numpy as np, nibabel as nib
from scipy import ndimage
rng = np.random.default_rng(int(sys.argv[2]))
out = sys.argv[1]; n = int(sys.argv[3]); shape = tuple(int(x) for x in sys.argv[4].split('x'))
os.makedirs(out, exist_ok=True)
def ball(shape, centre, radii):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
def tumour(labels, centre, size, with_rc):
    r = np.array(size, float)
    labels[ball(labels.shape, centre, r) & (rng.random(labels.shape) > 0.02)] = 2
    labels[ball(labels.shape, centre + rng.normal(0, 1, 3), r * 0.6)] = 3
    labels[ball(labels.shape, centre + rng.normal(0, 1, 3), r * 0.35)] = 1
    if with_rc:
        labels[ball(labels.shape, centre + r * np.array([0.9, 0, 0]), r * 0.4)] = 4
def case(with_rc):
    gt = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(1, 4)):
        tumour(gt, rng.uniform(8, np.array(shape) - 8), rng.uniform(3, 8, 3),
               with_rc and rng.random() < .6)
    for _ in range(rng.integers(0, 4)):  # small satellites, some near a tumour
        c = rng.integers(2, np.array(shape) - 2)
        gt[tuple(slice(x - 1, x + rng.integers(1, 3)) for x in c)] = rng.choice([1, 2, 3])
    pred = np.roll(gt, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    pred = np.where(rng.random(shape) < 0.03, 0, pred).astype(np.uint8)
    lab, k = ndimage.label(pred > 0)
    for i in range(1, k + 1):
        if rng.random() < 0.2: pred[lab == i] = 0                 # a missed lesion
    for _ in range(rng.integers(0, 4)):                           # false positives
        c = rng.integers(3, np.array(shape) - 3)
        pred[ball(shape, c, rng.uniform(0.8, 3, 3))] = rng.choice([1, 2, 3, 4])
    if rng.random() < 0.15: pred[:] = 0
    if rng.random() < 0.1: gt[gt == 3] = 0
    return gt, pred
spacings = [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0.9375, 0.9375, 1.5), (1.0, 1.2, 2.0)]
for i in range(n):
    gt, pred = case(with_rc=i % 2 == 0)
    affine = np.diag(list(spacings[i % 4]) + [1.0])
    cid = f'BraTS-GLI-{i:05d}-000'
    nib.save(nib.Nifti1Image(gt, affine), f'{out}/{cid}-seg.nii.gz')
    nib.save(nib.Nifti1Image(pred, affine), f'{out}/{cid}-pred.nii.gz')
