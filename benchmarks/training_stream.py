"""The host part of the training stream on BraTS-sized cases, measured: a config of
written cases with every augmentation on, and the batches per second that grain
delivers (pipeline_throughput.py, and accelerator.py's pipeline job). Import it after
jaxseg.startup.prepare_process (it imports JAX)."""

from benchmarks import timing
from configs import lstm_unet
from jaxseg import augment
from jaxseg.data import load_splits, train_iterator
from jaxseg.training import make_train_batches


def config_for(root: str, cache_dir: str, image_size, batch_size: int, workers: int):
  """The LSTM-U-Net config (3D or 2D by `image_size`) reading the cases under `root`,
  every augmentation on (probability 1: the worst case)."""
  config = lstm_unet.get_config('3d' if len(image_size) == 3 else '2d')
  config.data.root, config.data.cache_dir = root, cache_dir
  config.data.image_size = tuple(image_size)
  config.data.num_workers = workers
  config.data.preprocess_workers = 2
  config.data.num_folds, config.data.val_fraction = 0, 0.25
  config.train.batch_size = batch_size
  config.augment.enabled = True
  for key in augment.PROBABILITIES:
    config.augment[key] = 1.0
  return config


def host_throughput(config, num_batches: int) -> float:
  """Batches per second of the host stream after the first few (worker start-up)."""
  data = load_splits(config.data, ('train',))['train']
  iterator = train_iterator(make_train_batches(config, data), config.data.num_workers,
                            config.data.prefetch)
  for _ in range(3):
    next(iterator)

  def read_batches():
    for _ in range(num_batches):
      next(iterator)
  seconds, _ = timing.once(read_batches)
  return num_batches / seconds
