import json

import numpy as np
import pytest

from helpers import batches_of
from jaxseg.data import load_splits, train_iterator
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
  config = tiny_lstm_config
  config.train.batch_size = 3
  data = load_splits(config.data, ('train',))['train']
  stream = batches_of(data, config)
  np.testing.assert_array_equal(stream[5]['image'], batches_of(data, config)[5]['image'])
  assert stream[5]['target'].shape == (3, 32, 32, 3) and stream[5]['target'].dtype == np.uint8
  # Every case appears once in the first epoch.
  first_epoch = np.concatenate([stream[i]['image'] for i in range(4)])[:len(data)]
  assert len({a.tobytes() for a in first_epoch}) == len(data)


def test_each_process_reads_its_own_part_of_the_global_batch(tiny_lstm_config):
  config = tiny_lstm_config
  config.train.batch_size = 4
  data = load_splits(config.data, ('train',))['train']
  whole = batches_of(data, config)
  parts = [batches_of(data, config, process_index=p, process_count=2) for p in range(2)]
  for step in (0, 3):
    joined = np.concatenate([part[step]['image'] for part in parts])
    np.testing.assert_array_equal(joined, whole[step]['image'])
  with pytest.raises(ValueError, match='train.batch_size=4 does not divide over 3'):
    batches_of(data, config, process_index=0, process_count=3)


def test_iterator_state_resumes_the_stream(tiny_lstm_config):
  data = load_splits(tiny_lstm_config.data, ('train',))['train']
  batches = batches_of(data, tiny_lstm_config)
  iterator = train_iterator(batches, num_workers=0, prefetch=2)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = train_iterator(batches, num_workers=0, prefetch=2, state=json.loads(json.dumps(state)))
  np.testing.assert_array_equal(next(resumed)['image'], expected['image'])
  np.testing.assert_array_equal(expected['image'], batches[3]['image'])
