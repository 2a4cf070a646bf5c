"""Small configs shared by the tests."""

import os
import shutil

import flax.linen as nn
import jax
import ml_collections

from lth_jax.config import schema
from lth_jax.training.checkpoints import CHECKSUM_FILE


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """A lottery config that finishes in seconds: a small MLP on the sklearn digits."""
  config = schema.base_config()
  config.dataset.name = 'digits'
  config.model.name = 'lenet'
  config.model.hidden_sizes = (32, 16)
  config.training.optimizer = 'adam'
  config.training.learning_rate = 3e-3
  config.training.batch_size = 32
  config.training.num_steps = 60
  config.training.eval_every = 20
  config.training.steps_per_dispatch = 16
  config.pruning.fraction = 0.5
  config.pruning.levels = 2
  config.pruning.rewind_step = 5
  config.branches = ('reinit', 'permuted')
  for field, value in overrides.items():
    section, _, name = field.rpartition('__')
    target = config
    for part in filter(None, section.split('__')):
      target = target[part]
    target[name] = value
  return config


class BatchNormNet(nn.Module):
  """Dense -> batch norm -> ReLU -> Dense ('hidden_0', 'norm', 'output'): a model with running statistics."""

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    hidden = nn.Dense(32, name='hidden_0')(inputs)
    hidden = nn.BatchNorm(use_running_average=not train, momentum=0.5, name='norm')(hidden)
    return nn.Dense(10, name='output')(nn.relu(hidden))


def tiny_streaming_config(**overrides) -> ml_collections.ConfigDict:
  """`tiny_config` streaming (mock) CIFAR-10: six steps at batch 16, one level rewound to step 2."""
  fields = dict(
      dataset__name='cifar10',
      dataset__streaming=True,
      training__batch_size=16,
      training__num_steps=6,
      training__eval_every=3,
      training__steps_per_dispatch=2,
      training__eval_batch_size=32,
      pruning__levels=1,
      pruning__rewind_step=2,
  )
  return tiny_config(**{**fields, **overrides})


def swap_checkpoint_arrays(source: str, target: str) -> None:
  """Gives `target` the array files of `source` (same tree structure, other values), keeping the
  rest of `target`: a checkpoint whose bytes changed without orbax noticing."""
  for name in os.listdir(source):
    if name in (CHECKSUM_FILE, 'metadata'):
      continue
    destination = os.path.join(target, name)
    if os.path.isdir(destination):
      shutil.rmtree(destination)
      shutil.copytree(os.path.join(source, name), destination)
    else:
      shutil.copy(os.path.join(source, name), destination)
