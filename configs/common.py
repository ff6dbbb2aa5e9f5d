"""Data, loss, training, evaluation and checkpoint settings shared by every model config."""

import ml_collections
from ml_collections import config_dict


VARIANTS = ('2d', '3d', 'brats2d', 'brats3d')


def get_common_config(variant: str | None) -> ml_collections.ConfigDict:
  """Everything but the model.

  `variant`: '2d' (default) and '3d' train small models on the embedded data, fast on a
  laptop; 'brats2d' (axial slices) and 'brats3d' (128^3 patches) are full-size BraTS
  training and need --config.data.root.
  """
  variant = variant or '2d'
  if variant not in VARIANTS:
    raise ValueError(f'unknown config variant {variant!r}; use one of :{", :".join(VARIANTS)}')
  brats = variant.startswith('brats')
  three_d = variant.endswith('3d')
  config = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  # Unset: the embedded synthetic data. Else BraTS 2021 / 2023 / decathlon NIfTI, or 2D
  # images/ and masks/ folders (layout detected from the files).
  config.data.root = config_dict.placeholder(str)
  config.data.seed = 0              # synthetic data, and the train/val split of a data.root
  config.data.val_fraction = 0.3    # share of a data.root's cases used for validation ...
  config.data.num_folds = 5 if brats else 0  # ... unless > 0: k-fold split by case,
  config.data.fold = 0                        # validating on this fold
  # A labelled validation directory of the same kind: then every labelled case of
  # data.root trains, every one of data.val_root validates, and nothing is split.
  config.data.val_root = config_dict.placeholder(str)
  # Model input: 2D images / slices, or 3D patches, cut from the cases.
  config.data.image_size = {'2d': (64, 64), '3d': (32, 32, 32), 'brats2d': (192, 192),
                            'brats3d': (128, 128, 128)}[variant]
  config.data.modalities = ('t1', 't1ce', 't2', 'flair')  # NIfTI channels, in this order
  config.data.foreground_fraction = 0.33  # share of training windows centred on tumour
  # unset: $JAXSEG_CACHE_DIR, else ~/.cache/jaxseg
  config.data.cache_dir = config_dict.placeholder(str)
  config.data.preprocess_workers = config_dict.placeholder(int)  # processes; unset: all cores
  config.data.num_workers = 0       # processes reading training windows; 0: 2 threads here
  config.data.prefetch = 4          # training batches read ahead
  config.data.prefetch_to_device = 2  # batches placed on the devices ahead (0: off)
  config.data.skip_bad_cases = False  # True: list bad cases and train without them
  # Embedded data only; 0 for the BraTS variants, which need a data.root.
  config.data.num_train_cases = {'2d': 256, '3d': 64}.get(variant, 0)
  config.data.num_val_cases = {'2d': 32, '3d': 16}.get(variant, 0)

  # Applied on the device inside the train step (see jaxseg/augment.py and BENCHMARKS.md).
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = brats
  config.augment.flip_probability = 0.5          # per spatial axis
  config.augment.rotation_probability = 0.2
  config.augment.rotation_degrees = 15.0         # about each axis
  config.augment.scale_probability = 0.2
  config.augment.scale_range = (0.85, 1.25)
  config.augment.intensity_scale_probability = 0.15
  config.augment.intensity_scale_range = (0.75, 1.25)
  config.augment.intensity_shift_probability = 0.15
  config.augment.intensity_shift = 0.1           # in standard deviations (z-scored input)
  config.augment.gamma_probability = 0.15
  config.augment.gamma_range = (0.7, 1.5)
  config.augment.noise_probability = 0.15
  config.augment.noise_std = 0.1

  config.loss = ml_collections.ConfigDict()
  config.loss.dice_weight = 1.0
  config.loss.ce_weight = 1.0
  config.loss.iteration_weights = ()  # one per refinement iteration; empty = equal weights

  config.train = ml_collections.ConfigDict()
  config.train.seed = 0
  config.train.num_steps = {'2d': 500, '3d': 300, 'brats2d': 100_000, 'brats3d': 50_000}[variant]
  config.train.batch_size = {'2d': 8, '3d': 2, 'brats2d': 32, 'brats3d': 2}[variant]
  config.train.microbatches = 1  # > 1: gradient accumulation over parts of each batch
  config.train.learning_rate = 1e-3 if brats else 3e-3
  config.train.warmup_steps = 1000 if brats else 50
  config.train.weight_decay = 1e-4
  config.train.grad_clip = 1.0
  config.train.log_every_steps = 100 if brats else 20
  # Set: stop (validated and saved) when this many minutes of training are used, over
  # restarts; the learning-rate schedule ends there and num_steps is an upper bound.
  config.train.time_budget_minutes = config_dict.placeholder(float)
  # A non-finite loss or gradient: 'stop' (with a message naming the step; the last
  # good checkpoint is kept) or 'skip' (leave that update out and go on).
  config.train.on_nonfinite = 'stop'

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 5000 if brats else 100
  config.eval.batch_size = 2 if three_d else 16  # windows per prediction batch
  config.eval.overlap = 0.5                      # of neighbouring sliding windows
  config.eval.mirror_axes = ()  # test-time augmentation: mirror along these spatial axes

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = {'2d': 200, '3d': 100}.get(variant, 1000)

  # What computes the layers: speed only, never the parameters or (beyond float
  # rounding) the values; a restart may change them. 'auto' picks per device
  # (jaxseg/models/backend/__init__.py; measured in BENCHMARKS.md).
  config.compute = ml_collections.ConfigDict()
  # Convolutions and per-voxel products: 'onednn' (jaxseg's oneDNN extension, built by
  # pip install where it can be), 'xla', or 'auto' = onednn on a single CPU device
  # where built, xla elsewhere (several devices, GPU, TPU).
  config.compute.conv_library = 'auto'
  # Each norm and the activation after it: 'cpu' (jaxseg's fused GroupNorm kernel),
  # 'xla' (flax's GroupNorm, then the activation), or 'auto' as for conv_library.
  config.compute.norm_kernel = 'auto'
  # 3D convolutions: 'native', 'depth_folded' (one 2D convolution over stacked depth
  # taps, for XLA:CPU's slow 3D ones), or 'auto' = depth_folded on CPU when XLA computes
  # the convolutions, native otherwise.
  config.compute.conv3d = 'auto'
  return config


def model_defaults(variant: str | None) -> ml_collections.ConfigDict:
  """Model settings shared by the U-Net and the LSTM-U-Net."""
  model = ml_collections.ConfigDict()
  model.features = {'2d': (16, 32, 64, 128), '3d': (8, 16, 32, 64),
                    'brats2d': (32, 64, 128, 256, 512),
                    'brats3d': (32, 64, 128, 256, 320)}[variant or '2d']
  model.norm = 'group'              # group | instance | layer | none
  model.activation = 'relu'         # relu | leaky_relu | gelu | silu
  model.upsampling = 'transpose'    # transpose | resize
  model.deep_supervision = False
  # Recompute each U-Net level's conv block (and ConvLSTM cell) in the backward pass
  # instead of keeping its activations: less memory on GPU / TPU, for a second forward
  # pass of each level.
  model.remat_levels = False
  model.dtype = 'float32'           # computation dtype: float32 | bfloat16
  model.param_dtype = 'float32'
  return model
