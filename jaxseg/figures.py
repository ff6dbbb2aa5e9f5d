"""PNG figures: a case with its ground truth and every refinement iteration's prediction,
and mean Dice against refinement iteration. matplotlib, without a display."""

import os

import matplotlib

matplotlib.use('Agg')  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

# Label colours (canonical BraTS: 1 necrotic core, 2 oedema, 3 enhancing; other data: 1..).
_COLOURS = ListedColormap(['none', '#e41a1c', '#4daf4a', '#ffd92f', '#377eb8', '#984ea3'])


def _slice_index(labels: np.ndarray | None, predicted: np.ndarray) -> int:
  """The axial slice (last axis) with the most tumour, in the truth if there is one."""
  reference = labels if labels is not None and labels.any() else predicted
  counts = (reference > 0).reshape(-1, reference.shape[-1]).sum(0)
  return int(counts.argmax()) if counts.any() else reference.shape[-1] // 2


def case_figure(path: str, case_id: str, image: np.ndarray, channel: int,
                channel_name: str, labels: np.ndarray | None, predicted: np.ndarray) -> None:
  """image (*spatial, C); labels (*spatial) or None; predicted (T, *spatial) label maps."""
  volume = image.ndim == 4
  if volume:  # a 3D volume: show one axial slice
    z = _slice_index(labels, predicted[-1])
    image, predicted = image[..., z, :], predicted[..., z]
    labels = None if labels is None else labels[..., z]
    case_id = f'{case_id}, slice {z}'
  panels = [('image', None)] + ([('ground truth', labels)] if labels is not None else [])
  panels += [(f'iteration {t + 1}', predicted[t]) for t in range(predicted.shape[0])]
  figure, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
  # NIfTI slices: first axis across, second axis up (as viewers show BraTS volumes);
  # 2D images as they are stored.
  orient = (lambda a: a.T) if volume else (lambda a: a)
  origin = 'lower' if volume else 'upper'
  for axis, (title, overlay) in zip(axes[0], panels):
    axis.imshow(orient(image[..., channel]), cmap='gray', origin=origin)
    if overlay is not None:
      axis.imshow(np.ma.masked_equal(orient(overlay), 0), cmap=_COLOURS, vmin=0,
                  vmax=_COLOURS.N - 1, origin=origin, alpha=0.6, interpolation='nearest')
    axis.set_title(title if overlay is not None else f'{channel_name}', fontsize=9)
    axis.axis('off')
  figure.suptitle(case_id, fontsize=10)
  figure.tight_layout()
  _save(figure, path)


def dice_per_iteration_plot(path: str, summary: dict) -> None:
  """Mean Dice per region and overall against refinement iteration (from `summarize`)."""
  iterations = [entry['iteration'] for entry in summary['per_iteration']]
  figure, axis = plt.subplots(figsize=(4.5, 3.2))
  for region in summary['per_region']:
    axis.plot(iterations, [e['per_region'][region]['dice'] for e in summary['per_iteration']],
              marker='o', label=region)
  axis.plot(iterations, [e['dice'] for e in summary['per_iteration']], marker='s', color='black',
            label='mean')
  axis.set_xlabel('refinement iteration')
  axis.set_ylabel('mean Dice')
  axis.set_xticks(iterations)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  _save(figure, path)


def sweep_dice_plot(path: str, per_iteration: dict[str, list[dict]]) -> None:
  """Mean Dice against refinement iteration for each arm of a sweep, with the standard
  deviation over seeds as a band ({arm: [{'iteration', 'mean', 'std'}, ...]})."""
  figure, axis = plt.subplots(figsize=(5, 3.4))
  for arm, entries in per_iteration.items():
    iterations = [e['iteration'] for e in entries]
    mean, std = np.array([e['mean'] for e in entries]), np.array([e['std'] for e in entries])
    # Error bars, not only a band: an arm of one iteration is a single point.
    line = axis.errorbar(iterations, mean, yerr=std, marker='o', capsize=3, label=arm)
    axis.fill_between(iterations, mean - std, mean + std, alpha=0.15,
                      color=line.lines[0].get_color())
  axis.set_xlabel('refinement iteration')
  axis.set_ylabel('mean Dice (± std over seeds)')
  axis.xaxis.get_major_locator().set_params(integer=True)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  _save(figure, path)


def _save(figure, path: str) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  figure.savefig(path, dpi=100)
  plt.close(figure)
