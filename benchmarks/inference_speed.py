"""Time to segment one BraTS-sized case (4 x 240 x 240 x 155) with sliding windows.

  python benchmarks/inference_speed.py                    # 3D LSTM-U-Net, :brats3d config
  python benchmarks/inference_speed.py --config=lstm_unet:3d --batch_size=16 --tta=case

Writes one synthetic case in the BraTS 2021 layout to a temporary directory,
preprocesses it (brain crop, z-score), and times `jaxseg.inference.SlidingWindowPredictor`
on it: the model of the config (random parameters: the time does not depend on their
values), windows of data.image_size with eval.overlap, eval.batch_size windows per
call, without mirroring TTA; with TTA over every spatial axis (2^3 = 8 passes) either
on the whole case (--tta=case) or timed on one batch of windows against the plain pass
and scaled to the case (--tta=batch, the default: TTA on a whole case takes hours of
CPU). The first call includes compilation; it is reported separately.
"""

import argparse
import importlib
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.startup import prepare_process  # noqa: E402

prepare_process(host_memory=False, compilation_cache=False)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import cases, timing  # noqa: E402
from benchmarks.brats_files import write_cases  # noqa: E402
from jaxseg import inference, parallel  # noqa: E402
from jaxseg.data import load_splits  # noqa: E402
from jaxseg.train_state import setup_model  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='lstm_unet:brats3d', help='configs/<file>:<variant>')
  parser.add_argument('--tta', default='batch', choices=['batch', 'case'],
                      help="TTA on the whole case ('case'), or, since it costs hours of "
                      "CPU, timed on one batch of windows against the plain pass ('batch') "
                      'and scaled to the case')
  parser.add_argument('--batch_size', type=int, default=None, help='default: eval.batch_size')
  args = parser.parse_args()

  name, _, variant = args.config.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(variant or None)
  batch_size = args.batch_size or config.eval.batch_size
  device = jax.devices()[0]
  print(f'jax {jax.__version__} on {device.platform} ({device.device_kind}), '
        f'python {platform.python_version()}, {os.cpu_count()} CPU cores')
  with tempfile.TemporaryDirectory() as tmp:
    write_cases(os.path.join(tmp, 'data'), num_cases=2, num_distinct=1)
    config.data.root, config.data.cache_dir = os.path.join(tmp, 'data'), os.path.join(tmp, 'c')
    config.data.num_folds, config.data.val_fraction = 0, 0.5
    data = load_splits(config.data, ('val',))['val']
    image = np.asarray(data.images[0])
    model, init_state, _ = setup_model(config, data)
    params = jax.jit(init_state)().params
    mesh = parallel.make_mesh()
    size = tuple(config.data.image_size)
    windows = int(np.prod([len(inference.window_starts(s, w, config.eval.overlap))
                           for s, w in zip(image.shape[:-1], size)]))
    print(f'{args.config}: {sum(x.size for x in jax.tree.leaves(params)):,} parameters; case '
          f'240x240x155x4 cropped to the brain {image.shape[:-1]}; {windows} windows of {size} '
          f'(overlap {config.eval.overlap}), {batch_size} per call')
    mirror_axes = tuple(range(len(size)))
    for tta in (False, True) if args.tta == 'case' else (False,):
      config.eval.batch_size = batch_size
      predictor = inference.SlidingWindowPredictor.from_config(
          model, config.eval, size, mesh, mirror_axes if tta else ())
      times = cases.whole_case_seconds(predictor, params, [image])
      print(f'TTA {"on (all mirrorings)" if tta else "off"}: {times[1]:.1f} s per case '
            f'(first call with compilation {times[0]:.1f} s)', flush=True)
    if args.tta == 'batch':
      # One window from the case's corner, zero-padded where the case is smaller (the
      # cropped brain can be shallower than a 128^3 window), as the predictor pads.
      window = image[tuple(slice(0, s) for s in size)]
      window = np.pad(window, [(0, s - w) for s, w in zip(size, window.shape)] + [(0, 0)])
      windows = np.stack([window] * batch_size)
      windows = parallel.shard_batch({'image': windows}, mesh)['image']
      per_batch = []
      for axes in ((), mirror_axes):
        logits_fn = inference.make_logits_fn(model, mesh, axes)
        jax.block_until_ready(logits_fn(params, windows))  # compiles
        per_batch.append(timing.once(
            lambda: jax.block_until_ready(logits_fn(params, windows)))[0])
      ratio = per_batch[1] / per_batch[0]
      print(f'one batch of {batch_size} windows: {per_batch[0]:.2f} s plain, {per_batch[1]:.2f} s '
            f'with TTA over axes {mirror_axes} ({ratio:.2f}x); TTA on, scaled to the case: '
            f'{times[1] * ratio:.0f} s per case', flush=True)


if __name__ == '__main__':
  main()
