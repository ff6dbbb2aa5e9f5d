"""The model registry is the one place that knows each model: a third model registered
there is built, iterated, trained and checked by the rest of jaxseg unchanged."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxseg import workdir as files
from jaxseg.errors import ConfigError, WorkdirError
from jaxseg.models import UNet, build_model, registry


class WideHeadUNet(nn.Module):
  """A stand-in third model: a U-Net whose logits pass through a learned scale."""
  settings: object
  ops: object
  head_scale: float = 1.0
  chunked_head: bool = False  # a speed-only key

  @nn.compact
  def __call__(self, x):
    logits, aux = UNet(self.settings, self.ops)(x)
    return logits * self.param('scale', lambda _: jnp.float32(self.head_scale)), aux


@pytest.fixture
def third_model(monkeypatch):
  monkeypatch.setitem(registry.MODELS, 'wide_head_unet', registry.ModelEntry(
      build=WideHeadUNet, own_keys=('head_scale', 'chunked_head'),
      runtime_keys=('chunked_head',), config_file='unet'))


def _third_config(tiny_unet_config):
  config = tiny_unet_config
  config.model.name = 'wide_head_unet'
  config.model.head_scale = 2.0
  config.model.chunked_head = False
  return config


def test_a_registered_model_is_built_with_its_own_keys(third_model, tiny_unet_config):
  config = _third_config(tiny_unet_config)
  model = build_model(config.model, num_outputs=3)
  assert isinstance(model, WideHeadUNet) and model.head_scale == 2.0
  x = jnp.ones((1, 16, 16, 4))
  params = model.init(jax.random.key(0), x)['params']
  assert float(params['scale']) == 2.0
  assert registry.num_iterations(config.model) == 1


def test_only_its_speed_keys_may_change_on_a_restart(third_model, tiny_unet_config, tmp_path):
  config = _third_config(tiny_unet_config)
  (tmp_path / files.CONFIG_FILE).write_text(config.to_json())
  config.model.chunked_head = True
  files.check_same_model(str(tmp_path), config)
  config.model.head_scale = 3.0
  with pytest.raises(WorkdirError):
    files.check_same_model(str(tmp_path), config)


def test_iterating_models_make_one_prediction_per_iteration(tiny_lstm_config, tiny_unet_config):
  tiny_lstm_config.model.num_iterations = 4
  assert registry.num_iterations(tiny_lstm_config.model) == 4
  assert registry.num_iterations(tiny_unet_config.model) == 1
  assert registry.iterating_models() == ('lstm_unet',)
  assert json.loads(tiny_lstm_config.to_json())['model']['name'] in registry.MODELS


def test_an_unknown_model_is_refused_in_one_line(tiny_unet_config):
  tiny_unet_config.model.name = 'transformer'
  with pytest.raises(ConfigError, match=r"model.name: unknown model 'transformer'.*lstm_unet"):
    build_model(tiny_unet_config.model, num_outputs=3)


def test_every_entry_names_its_keys_and_config_file():
  for name, entry in registry.MODELS.items():
    assert set(entry.runtime_keys) <= set(entry.own_keys), name
    assert registry.config_module(name) == f'configs.{entry.config_file}'
