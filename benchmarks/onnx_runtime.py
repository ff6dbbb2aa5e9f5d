"""Time to predict one whole case: ONNX Runtime without JAX (`python -m
jaxseg.onnx_predict`) against `eval.py`, each run as a user runs it.

  python benchmarks/onnx_runtime.py --config=lstm_unet:3d --shape=120,120,78

Writes one synthetic case in the BraTS 2021 layout and a workdir of the config with
one checkpoint of freshly initialised parameters (the time does not depend on their
values), exports it (`export.py --format=onnx`), then times each command (process
start, compilation or session creation included) and ONNX Runtime's prediction of the
case in this process (session ready). Both predict with the config's eval.overlap and
eval.batch_size, without mirroring.
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from jaxseg.startup import prepare_process  # noqa: E402

# jaxseg's XLA flags for the workdir made here, and for the timed commands through the
# environment they inherit (they add the same flags themselves).
prepare_process(host_memory=False, compilation_cache=False)

from benchmarks import timing  # noqa: E402
from benchmarks.brats_files import write_case  # noqa: E402
from export_fixtures import make_workdir  # noqa: E402
from jaxseg.data.synthetic import synthetic_case  # noqa: E402


def timed(*command) -> float:
  """Wall seconds of a Python command run from the repository root, start-up included."""
  seconds, _ = timing.once(lambda: subprocess.run([sys.executable, *command], cwd=ROOT,
                                                  check=True, capture_output=True))
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='lstm_unet:3d', help='configs/NAME.py:VARIANT')
  parser.add_argument('--shape', default='120,120,78', help='the case volume')
  args = parser.parse_args()
  name, variant = args.config.split(':')
  shape = tuple(int(s) for s in args.shape.split(','))
  with tempfile.TemporaryDirectory() as scratch:
    data, workdir = os.path.join(scratch, 'data'), os.path.join(scratch, 'run')
    write_case(data, 0, *synthetic_case(shape, 0, 'train', 0))
    [case_id] = os.listdir(data)
    config = importlib.import_module(f'configs.{name}').get_config(variant)
    config.data.root, config.data.cache_dir = data, os.path.join(scratch, 'cache')
    make_workdir(workdir, config)
    model = os.path.join(scratch, 'model.onnx')
    export = timed('export.py', f'--workdir={workdir}', '--format=onnx', f'--output={model}')
    times = {'eval.py': timed('eval.py', f'--workdir={workdir}', f'--data_root={data}',
                              f'--output_dir={scratch}/eval', '--num_figures=0'),
             'onnx_predict': timed('-m', 'jaxseg.onnx_predict', '--model', model, '--input',
                                   os.path.join(data, case_id), '--output',
                                   os.path.join(scratch, 'onnx.nii.gz'))}
    from jaxseg.onnx_predict import OnnxPredictor  # pylint: disable=import-outside-toplevel
    predictor = OnnxPredictor(model)
    in_process, _ = timing.once(lambda: predictor.predict_case(os.path.join(data, case_id)))
  print(f'{args.config}, case {shape}, window {tuple(config.data.image_size)}, '
        f'overlap {config.eval.overlap}, batch {config.eval.batch_size}; export {export:.1f} s')
  for command, seconds in times.items():
    print(f'  {command}: {seconds:.1f} s (the command)')
  print(f'  ONNX Runtime, session ready: {in_process:.1f} s (read, predict, label map)')


if __name__ == '__main__':
  main()
