import os

import numpy as np
import pytest
from PIL import Image

from helpers import assert_mentions
from jaxseg.data import load_splits
from jaxseg.data.folders import load_image_folder
from jaxseg.errors import DataError

SEED_2D = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'seed_2d')


def write_folder(root, masks, image_mode='L', size=(40, 40), suffix='.png'):
  os.makedirs(root / 'images')
  os.makedirs(root / 'masks')
  rng = np.random.default_rng(0)
  for i, mask in enumerate(masks):
    pixels = rng.integers(1, 255, (*size, 3) if image_mode == 'RGB' else size, dtype=np.uint8)
    Image.fromarray(pixels, image_mode).save(root / 'images' / f'case{i}{suffix}')
    Image.fromarray(mask.astype(np.uint8)).save(root / 'masks' / f'case{i}.png')


def test_binary_masks_make_one_tumour_region(tmp_path):
  masks = [np.zeros((40, 40)) for _ in range(3)]
  masks[0][10:20, 10:20] = 255
  write_folder(tmp_path, masks)
  images, labels, case_ids, regions = load_image_folder(str(tmp_path), (20, 20))
  assert images.shape == (3, 20, 20, 1) and labels.shape == (3, 20, 20)
  assert [r.name for r in regions] == ['tumour']
  assert labels[0, 5:10, 5:10].all() and labels.sum() == 25
  assert case_ids == ['case0', 'case1', 'case2']
  np.testing.assert_allclose(images.reshape(3, -1).mean(1), 0, atol=1e-4)


def test_label_index_masks_and_rgb_images(tmp_path):
  mask = np.zeros((40, 40))
  mask[:10] = 1
  mask[30:] = 2
  write_folder(tmp_path, [mask, mask], image_mode='RGB', suffix='.jpg')
  images, labels, _, regions = load_image_folder(str(tmp_path), (40, 40))
  assert images.shape[-1] == 3
  assert [r.labels for r in regions] == [(1,), (2,)]
  assert set(np.unique(labels)) == {0, 1, 2}


def test_bad_folders_name_the_file(tmp_path):
  write_folder(tmp_path, [np.zeros((40, 40))] * 2)
  os.remove(tmp_path / 'masks' / 'case1.png')
  with pytest.raises(DataError, match='case1.png: no mask with the same name'):
    load_image_folder(str(tmp_path), (20, 20))
  Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / 'masks' / 'case1.png')
  with pytest.raises(DataError, match='case1.png: mask size'):
    load_image_folder(str(tmp_path), (20, 20))
  (tmp_path / 'masks' / 'case1.png').write_bytes(b'not a png')
  with pytest.raises(DataError, match='case1.png: unreadable image'):
    load_image_folder(str(tmp_path), (20, 20))


def test_a_mask_of_no_kind_is_named_with_its_values(tmp_path):
  labels = np.zeros((40, 40))
  labels[:10], labels[30:] = 1, 2
  binary = np.where(labels > 0, 255, 0)
  write_folder(tmp_path, [labels, binary, labels])  # label indices and 0/255 mixed
  with pytest.raises(DataError) as error:
    load_image_folder(str(tmp_path), (20, 20))
  assert_mentions(str(error.value), 'case1.png', '[0, 255]', 'case0.png')
  graded = np.tile(np.arange(40) * 6, (40, 1))  # anti-aliased edges: 40 grey levels
  Image.fromarray(graded.astype(np.uint8)).save(tmp_path / 'masks' / 'case2.png')
  with pytest.raises(DataError) as error:
    load_image_folder(str(tmp_path), (40, 40))
  assert_mentions(str(error.value), 'case2.png', '[0, 6, 12, ')


def test_empty_image_folder_is_named(tmp_path):
  (tmp_path / 'images').mkdir()
  (tmp_path / 'masks').mkdir()
  with pytest.raises(DataError, match=r'no images \(.png.*\) in .*images'):
    load_image_folder(str(tmp_path), (20, 20))


@pytest.mark.skipif(not os.path.isdir(SEED_2D), reason='shared/data/seed_2d not beside the repo')
def test_seed_2d_loads_7_train_3_val(tiny_unet_config):
  config = tiny_unet_config
  config.data.root = SEED_2D
  config.data.image_size = (64, 64)
  data = load_splits(config.data)
  train, val = data['train'], data['val']
  assert (len(train), len(val)) == (7, 3)
  assert not set(train.case_ids) & set(val.case_ids)
  assert train.images[0].shape == (64, 64, 1)
  assert [r.name for r in train.regions] == ['tumour']
  assert any(labels.any() for labels in train.labels)
