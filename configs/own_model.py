"""Your own model and data from a config file: experiments/own_model.py's TinyViT by import path, its
digits arrays under the dataset name it registers, label-smoothed cross-entropy by import path, top-3
accuracy beside accuracy, and every kernel prunable by pattern.

    python -m lth_jax.main --config=configs/own_model.py --workdir=/tmp/lth_own_model_config
"""

import ml_collections

from experiments import own_model  # registers the dataset name own_model.DATASET_NAME


def get_config() -> ml_collections.ConfigDict:
  """The search of experiments/own_model.py, written as a config."""
  config = own_model.base_config(steps=600, levels=3, trials=2)
  config.dataset.name = own_model.DATASET_NAME
  config.model.name = 'experiments.own_model:TinyViT'
  config.model.arguments = ml_collections.ConfigDict({'num_classes': 10, 'width': 32, 'dropout_rate': 0.1})
  config.task.loss = 'experiments.own_model:smoothed_cross_entropy'
  config.task.metrics = ('accuracy', 'top_3_accuracy')
  config.pruning.prunable_patterns = ('*/kernel',)
  return config
