"""The workdir format's versions: each migration step on a constructed config, the steps
a version gets, and a newer version refused in one line by eval.py and train.py. (A
version-0 workdir that resumes and evaluates: test_training.py.)"""

import json

import pytest

from helpers import assert_one_line_error, run
from jaxseg import workdir_format
from jaxseg.data import layouts
from jaxseg.data.regions import Region
from jaxseg.errors import WorkdirError
from jaxseg.models import registry

ONE_REGION = (Region('tumour', (1,)),)


def _saved(config, regions=None):
  return {'config': config, 'regions': regions}


def test_runs_before_regions_json_predicted_the_glioma_regions_or_their_folders(tmp_path):
  saved = _saved({'data': {'root': None}})
  assert 'glioma' in workdir_format.regions_json(saved)
  assert saved['regions'] == layouts.GLIOMA_REGIONS
  (tmp_path / 'images').mkdir()  # a 2D image folder: its regions come from its data
  saved = _saved({'data': {'root': str(tmp_path)}})
  assert '2D' in workdir_format.regions_json(saved) and saved['regions'] is None
  saved = _saved({'data': {'root': None}}, ONE_REGION)
  assert workdir_format.regions_json(saved) is None and saved['regions'] == ONE_REGION


def test_the_compute_keys_move_from_model_to_compute():
  saved = _saved({'model': {'name': 'unet', 'conv_library': 'xla', 'conv3d': 'native',
                            'features': [8]}})
  note = workdir_format.compute_section(saved)
  assert saved['config'] == {'model': {'name': 'unet', 'features': [8]},
                             'compute': {'conv_library': 'xla', 'conv3d': 'native'}}
  assert 'model.conv_library' in note and 'model.conv3d' in note
  assert workdir_format.compute_section(saved) is None  # nothing left to move


def test_keys_added_since_take_the_model_config_files_values(tiny_lstm_config):
  config = json.loads(tiny_lstm_config.to_json())
  del config['eval']['mirror_axes'], config['compute']
  config['train']['num_steps'] = 123
  saved = _saved(config)
  note = workdir_format.fill_from_defaults(saved)
  assert saved['config']['eval']['mirror_axes'] == []
  assert saved['config']['compute']['conv_library'] == 'auto'
  assert saved['config']['train']['num_steps'] == 123  # what was saved is kept
  assert saved['config']['model']['features'] == [8, 16]
  assert 'eval.mirror_axes' in note and 'compute' in note
  assert workdir_format.fill_from_defaults(saved) is None


def test_version_0_gets_every_step_and_the_current_version_none(tiny_unet_config):
  config = json.loads(tiny_unet_config.to_json())
  compute = config.pop('compute')
  config['model'].update(compute, conv_library='xla')
  original = json.loads(json.dumps(config))
  migrated, notes = workdir_format.migrate(_saved(config), 'config.json')
  assert config == original  # the input is not changed
  assert migrated['config']['compute'] == {**compute, 'conv_library': 'xla'}
  assert 'conv_library' not in migrated['config']['model']
  assert migrated['regions'] == layouts.GLIOMA_REGIONS and len(notes) == 2
  # The same keys saved by the current version are what it wrote: no step applies.
  current = {**original, workdir_format.KEY: workdir_format.VERSION}
  migrated, notes = workdir_format.migrate(_saved(current, ONE_REGION), 'config.json')
  assert migrated['config']['model']['conv_library'] == 'xla'
  assert workdir_format.KEY not in migrated['config']
  assert migrated['regions'] == ONE_REGION and notes == ['keys it lacks from configs.unet: compute']


def test_without_the_config_files_the_saved_keys_are_read_alone(monkeypatch):
  """A library caller whose path lacks configs/ (it is not installed) reads what was saved."""
  monkeypatch.setattr(registry, 'config_module', lambda name: 'no_configs_here.unet')
  saved = _saved({'model': {'name': 'unet'}})
  assert workdir_format.fill_from_defaults(saved) is None
  assert saved['config'] == {'model': {'name': 'unet'}}


@pytest.mark.parametrize('version', [workdir_format.VERSION + 1, 'one', True, -1])
def test_an_unknown_version_is_refused(version):
  with pytest.raises(WorkdirError) as error:
    workdir_format.migrate(_saved({workdir_format.KEY: version}), 'run/config.json')
  assert 'run/config.json' in str(error.value) and repr(version) in str(error.value)


def test_a_newer_workdir_is_refused_in_one_line_by_eval_and_train(tmp_path):
  newer = workdir_format.VERSION + 1
  (tmp_path / 'config.json').write_text(json.dumps({workdir_format.KEY: newer}))
  code, _, err = run('eval.py', f'--workdir={tmp_path}')
  assert_one_line_error(code, err, 'config.json', f'version {newer}',
                        f'0 to {workdir_format.VERSION}')
  code, _, err = run('train.py', '--config=configs/unet.py', '--config.data.image_size=(32, 32)',
                     '--config.model.features=(8, 16)', '--config.data.num_train_cases=2',
                     '--config.data.num_val_cases=1', f'--workdir={tmp_path}')
  assert_one_line_error(code, err, 'config.json', f'version {newer}')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']  # nothing written
