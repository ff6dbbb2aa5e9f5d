import numpy as np

from jaxseg.data import SegmentationData, eval_batches, load_split, train_batches
from jaxseg.data.regions import BRATS_2023_REGIONS
from jaxseg.data.synthetic import LABELS, synthetic_case, synthetic_split


def test_synthetic_cases_are_deterministic_and_distinct():
  image_a, labels_a = synthetic_case((32, 32), seed=0, split='train', index=3)
  image_b, labels_b = synthetic_case((32, 32), seed=0, split='train', index=3)
  np.testing.assert_array_equal(image_a, image_b)
  np.testing.assert_array_equal(labels_a, labels_b)
  other, _ = synthetic_case((32, 32), seed=0, split='train', index=4)
  val, _ = synthetic_case((32, 32), seed=0, split='val', index=3)
  reseeded, _ = synthetic_case((32, 32), seed=1, split='train', index=3)
  for different in (other, val, reseeded):
    assert np.abs(different - image_a).max() > 0.1
  # A case does not depend on how many cases are drawn.
  images, _, _ = synthetic_split((32, 32), 0, 'train', 5)
  np.testing.assert_array_equal(images[3], image_a)


def test_synthetic_anatomy_2d_and_3d():
  for shape in [(48, 48), (24, 24, 24)]:
    image, labels = synthetic_case(shape, seed=0, split='train', index=0)
    assert image.shape == (*shape, 4) and image.dtype == np.float32
    assert np.isfinite(image).all()
    assert set(np.unique(labels)) <= set(LABELS.values())
    assert (labels == LABELS['oedema']).any() and (labels == LABELS['enhancing_tumour']).any()
    brain = np.abs(image).sum(-1) > 0
    # z-scored inside the brain, zero outside; the tumour lies in the brain.
    np.testing.assert_allclose(image[brain].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(image[brain].std(0), 1, atol=1e-3)
    assert not (labels[~brain] > 0).any()
    # Enhancing tumour is brighter in T1ce (channel 1) than the rest of the brain.
    enhancing = labels == LABELS['enhancing_tumour']
    assert image[enhancing, 1].mean() > image[brain & ~enhancing, 1].mean() + 0.5


def test_train_batches_are_a_function_of_the_step(tiny_lstm_config):
  data = load_split(tiny_lstm_config.data, 'train')
  stream = train_batches(data, batch_size=3, seed=0)
  np.testing.assert_array_equal(stream[5]['image'], train_batches(data, 3, 0)[5]['image'])
  assert stream[5]['target'].shape == (3, 32, 32, 3)
  # Every case appears once in the first epoch.
  first_epoch = np.concatenate([stream[i]['image'] for i in range(4)])[:len(data)]
  assert len({a.tobytes() for a in first_epoch}) == len(data)


def test_eval_batches_cover_each_case_once():
  images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((5, 2, 2, 1), np.float32)
  data = SegmentationData(images, np.zeros((5, 2, 2), np.uint8), tuple('abcde'), (1.0, 1.0),
                          BRATS_2023_REGIONS, ('t1',))
  seen = []
  for batch, num_real in eval_batches(data, 2):
    assert batch['image'].shape[0] == 2
    seen += list(batch['image'][:num_real, 0, 0, 0])
  assert seen == [0, 1, 2, 3, 4]
