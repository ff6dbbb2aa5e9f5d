"""notebooks/quickstart.ipynb runs top to bottom (tiny step counts through its parameter
cell) and is kept without outputs."""

import os

import pytest

from helpers import ROOT

NOTEBOOK = os.path.join(ROOT, 'notebooks', 'quickstart.ipynb')
TINY = ['--config.model.features=(4, 8)', '--config.model.num_iterations=2',
        '--config.data.num_train_cases=4',
        '--config.data.num_val_cases=2', '--config.train.batch_size=2',
        '--config.train.warmup_steps=1', '--config.train.log_every_steps=1',
        '--config.eval.every_steps=2', '--config.checkpoint.every_steps=2',
        '--config.eval.batch_size=2']


def test_quickstart_notebook_runs_and_has_no_stored_outputs(tmp_path):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert all(not cell.outputs and cell.execution_count is None for cell in code)
  [parameters] = [cell for cell in code if 'parameters' in cell.metadata.get('tags', [])]
  parameters.source += (f'\nNUM_STEPS = 2\nFOLDER_STEPS = 2\nINSTALL = False\n'
                        f"IMAGE_SIZE_2D = '(32, 32)'\n"
                        f'WORKDIR = {str(tmp_path / "run")!r}\n'
                        f'NIFTI_ROOT = {str(tmp_path / "nifti")!r}\nOVERRIDES = {TINY!r}\n')
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()  # a cell that raises fails here, naming it
  outputs = ''.join(output.get('text', '') for cell in code for output in cell.outputs)
  assert 'Final validation' in outputs and 'val Dice' in outputs
  assert os.path.isfile(tmp_path / 'run' / 'eval_nifti' / 'predictions' /
                        'BraTS-SYN-00000-000.nii.gz')
  assert os.path.isdir(tmp_path / 'run_2d_folder' / 'checkpoints')
  images = sum(1 for cell in code for output in cell.outputs
               if 'image/png' in output.get('data', {}))
  assert images >= 4  # the curves, the case figures, the NIfTI slices
