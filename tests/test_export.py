"""export.py and the ONNX Runtime predictor: the exported files compute what jaxseg
computes, whole cases predicted without JAX match eval.py's files, and bad input is one
line. The ONNX files need jax2onnx (docs/export.md: installed without its dependencies)."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from configs import lstm_unet, unet
from export_fixtures import make_workdir
from helpers import ROOT, assert_one_line_error, run, tiny
from jaxseg import model_export
from nifti_fixtures import make_dataset

MODELS = {'unet': unet, 'lstm_unet': lstm_unet}
WINDOWS = {'2d': (16, 16), '3d': (16, 16, 16)}


def _config(name, rank, **data):
  config = tiny(MODELS[name].get_config('3d' if rank == '3d' else None))
  config.data.image_size = WINDOWS[rank]
  config.model.features = (4, 8)
  config.data.update(data)
  return config


def _random_windows(spec_shape, batch):
  return np.random.default_rng(1).standard_normal((batch, *spec_shape[1:])).astype(np.float32)


def _onnx_outputs(path, images):
  import onnxruntime  # pylint: disable=import-outside-toplevel
  session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  return session.run(['probabilities', 'logits'], {'image': images})


@pytest.mark.parametrize('name', sorted(MODELS))
@pytest.mark.parametrize('rank', sorted(WINDOWS))
def test_onnx_window_equals_jaxseg(tmp_path, name, rank):
  pytest.importorskip('jax2onnx', reason='pip install --no-deps jax2onnx (docs/export.md)')
  import jax  # pylint: disable=import-outside-toplevel
  model, params = make_workdir(tmp_path / 'run', _config(name, rank))
  path = str(tmp_path / 'model.onnx')
  model_export.export_workdir(str(tmp_path / 'run'), 'best', 'onnx', path)
  with open(path + '.json') as f:
    sidecar = json.load(f)
  batch = sidecar['input']['shape'][0]
  assert batch == ('batch' if rank == '2d' else 2)  # 3D: eval.batch_size, fixed
  images = _random_windows(sidecar['input']['shape'], 3 if rank == '2d' else 2)
  # jaxseg as eval.py computes it (on this CPU its own kernels, where built).
  logits = np.asarray(model.apply({'params': params}, images)[0][-1])
  probabilities, onnx_logits = _onnx_outputs(path, images)
  assert onnx_logits.shape == logits.shape == (len(images), *WINDOWS[rank], 3)
  assert np.abs(logits).max() > 0.5  # a model whose output is not all near zero
  np.testing.assert_allclose(onnx_logits, logits, rtol=0, atol=1e-4)
  np.testing.assert_allclose(probabilities, np.asarray(jax.nn.sigmoid(logits)), rtol=0, atol=1e-4)


# Run in a process that imports JAX and numpy only: the file needs none of jaxseg's code.
_LOAD_STABLEHLO = '''
import sys
import jax, numpy as np
exported = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))
probabilities, logits = exported.call(np.load(sys.argv[2]))
np.save(sys.argv[3], np.asarray(logits))
print(sorted(m for m in sys.modules if m.split('.')[0] in ('jaxseg', 'flax', 'configs')))
'''


@pytest.mark.parametrize('name, rank', [('lstm_unet', '3d'), ('unet', '2d')])
def test_stablehlo_loads_without_jaxseg_and_gives_the_same_output(tmp_path, name, rank):
  model, params = make_workdir(tmp_path / 'run', _config(name, rank))
  path = str(tmp_path / 'model.stablehlo')
  code, out, err = run('export.py', f'--workdir={tmp_path / "run"}', '--format=stablehlo',
                       f'--output={path}')
  assert code == 0, err
  images = _random_windows((None, *WINDOWS[rank], 4), 3)  # any batch size
  np.save(tmp_path / 'images.npy', images)
  result = subprocess.run([sys.executable, '-c', _LOAD_STABLEHLO, path,
                           str(tmp_path / 'images.npy'), str(tmp_path / 'logits.npy')],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'  # no jaxseg, flax or config module was loaded
  expected = np.asarray(model.apply({'params': params}, images)[0][-1])
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), expected, rtol=0, atol=1e-4)
  with open(path + '.json') as f:
    sidecar = json.load(f)
  assert sidecar['modalities'] == ['t1', 't1ce', 't2', 'flair']
  assert [r['name'] for r in sidecar['regions']] == ['WT', 'TC', 'ET']
  assert sidecar['window_size'] == list(WINDOWS[rank])


def test_onnx_runtime_whole_cases_equal_eval_py(tmp_path):
  pytest.importorskip('jax2onnx', reason='pip install --no-deps jax2onnx (docs/export.md)')
  from jaxseg import onnx_predict  # pylint: disable=import-outside-toplevel
  data = tmp_path / 'data'
  case_ids = make_dataset(str(data), 'brats2021', num_cases=2)
  config = _config('lstm_unet', '3d', root=str(data), cache_dir=str(tmp_path / 'cache'))
  config.eval.batch_size = 3  # windows of one case and the next share a batch
  make_workdir(tmp_path / 'run', config)
  model_path = str(tmp_path / 'model.onnx')
  model_export.export_workdir(str(tmp_path / 'run'), 'best', 'onnx', model_path)
  code, _, err = run('eval.py', f'--workdir={tmp_path / "run"}', f'--data_root={data}',
                     f'--output_dir={tmp_path / "eval"}', '--num_figures=0')
  assert code == 0, err
  for case_id in case_ids:
    written = nib.load(tmp_path / 'eval' / 'predictions' / f'{case_id}.nii.gz')
    output = tmp_path / 'onnx' / f'{case_id}.nii.gz'
    onnx_predict.predict_to_file(model_path, str(data / case_id), str(output))
    ours = nib.load(output)
    assert ours.shape == written.shape and np.allclose(ours.affine, written.affine)
    expected, labels = np.asarray(written.dataobj), np.asarray(ours.dataobj)
    assert set(np.unique(expected)) - {0} <= {1, 2, 4}  # BraTS 2021's values
    assert len(np.unique(expected)) >= 2  # not a trivially empty prediction
    assert np.mean(labels == expected) >= 0.999


def test_onnx_predict_imports_no_jax():
  result = subprocess.run(
      [sys.executable, '-c', 'import sys, jaxseg.onnx_predict; print(sorted(m for m in '
       "('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'grain', 'ml_collections') "
       'if m in sys.modules))'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'


def _identity_model(path, sidecar):
  """An ONNX file that passes its input through, with a JSON: enough to reach the
  checks of the case before anything is predicted."""
  import onnx  # pylint: disable=import-outside-toplevel
  from onnx import TensorProto, helper  # pylint: disable=import-outside-toplevel
  graph = helper.make_graph(
      [helper.make_node('Identity', ['image'], ['logits'])], 'identity',
      [helper.make_tensor_value_info('image', TensorProto.FLOAT, None)],
      [helper.make_tensor_value_info('logits', TensorProto.FLOAT, None)])
  onnx.save_model(helper.make_model(graph), path)
  with open(path + '.json', 'w') as f:
    json.dump(sidecar, f)


def test_bad_input_is_one_line(tmp_path):
  pytest.importorskip('onnx')
  data = tmp_path / 'data'
  [case_id] = make_dataset(str(data), 'brats-gli', num_cases=1)
  model = str(tmp_path / 'model.onnx')
  sidecar = {'window_size': [16, 16], 'modalities': ['t1', 't1ce', 't2', 'flair', 'dwi'],
             'regions': [{'name': 'WT', 'labels': [1, 2, 3]}],
             'sliding_window': {'overlap': 0.5, 'mirror_axes': []}}
  _identity_model(model, sidecar)
  predict = [sys.executable, '-m', 'jaxseg.onnx_predict', '--model', model,
             '--output', str(tmp_path / 'out.nii.gz')]

  def predict_case(*args):
    result = subprocess.run(predict + list(args), cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    return result.returncode, result.stderr

  # A modality the model takes and the case lacks (and one it does not know).
  code, err = predict_case('--input', str(data / case_id))
  assert code == 2
  assert_one_line_error(code, err, 'dwi')
  sidecar['modalities'] = ['t1ce', 'flair']
  os.remove(data / case_id / f'{case_id}-t2f.nii.gz')
  _identity_model(model, sidecar)
  code, err = predict_case('--input', str(data / case_id))
  assert code == 2
  assert_one_line_error(code, err, 'flair', f'{case_id}-t2f.nii.gz')
  code, err = predict_case('--input', str(tmp_path / 'nowhere'))
  assert code == 2
  assert_one_line_error(code, err, 'nowhere')
  os.remove(model + '.json')
  code, err = predict_case('--input', str(data / case_id))
  assert code == 2
  assert_one_line_error(code, err, 'model.onnx.json')

  # export.py: a workdir without a checkpoint, an unknown format.
  workdir = tmp_path / 'run'
  make_workdir(workdir, _config('unet', '2d'))
  code, _, err = run('export.py', f'--workdir={workdir}', '--format=tflite',
                     f'--output={tmp_path / "m.tflite"}')
  assert code == 2
  assert_one_line_error(code, err, 'tflite')
  for step in os.listdir(workdir / 'checkpoints'):
    os.rename(workdir / 'checkpoints' / step, tmp_path / f'moved_{step}')
  code, _, err = run('export.py', f'--workdir={workdir}', '--format=onnx',
                     f'--output={tmp_path / "m.onnx"}')
  assert code == 2
  assert_one_line_error(code, err, 'no checkpoint')
  assert not os.path.exists(tmp_path / 'm.onnx')
