"""A lottery search on your own flax module and your own arrays: a small vision transformer on the real
8x8 handwritten digits that scikit-learn ships (no download).

    python -m experiments.own_model --workdir=/tmp/lth_own_model [--steps=600] [--levels=3] [--trials=2]

It defines everything a user brings: the module (`TinyViT`: patch embedding, a learned position
embedding, one transformer block with LayerNorm, attention and dropout), the data (numpy arrays through
`lth_jax.data.from_arrays`), the loss and metrics (cross-entropy with label smoothing; accuracy and
top-3 accuracy), and which weights may be pruned (every kernel: the patch embedding, the attention
projections, the MLP and the output layer; not the position embedding, biases or LayerNorm scales).
Then it runs a 3-level search with random reinitialization as the control, exports the last level's
ticket, loads it back, and plots test accuracy against the fraction of weights remaining.

The same search from a config file (the module by import path, the arrays under a registered dataset
name): `python -m lth_jax.main --config=configs/own_model.py --workdir=...`.
"""

from __future__ import annotations

import os
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

import lth_jax
from lth_jax import data as data_lib
from lth_jax import tasks
from lth_jax import tickets
from experiments import common

DATASET_NAME = 'digits_arrays'  # the arrays below, registered under this name for configs/own_model.py


class TransformerBlock(nn.Module):
  """Pre-LayerNorm self-attention and MLP, each with dropout and a residual connection."""

  num_heads: int
  mlp_width: int
  dropout_rate: float

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.dropout_rate, deterministic=not train, name='attention'
    )(nn.LayerNorm(name='attention_norm')(tokens))
    tokens = tokens + attended
    hidden = nn.gelu(nn.Dense(self.mlp_width, name='mlp_in')(nn.LayerNorm(name='mlp_norm')(tokens)))
    hidden = nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)
    return tokens + nn.Dense(tokens.shape[-1], name='mlp_out')(hidden)


class TinyViT(nn.Module):
  """A vision transformer for small grey images (batch, height, width): square patches embedded as
  tokens, a learned position embedding, transformer blocks, mean pooling, and a final 'output' layer."""

  num_classes: int = 10
  patch_size: int = 2
  width: int = 32
  depth: int = 1
  num_heads: int = 2
  mlp_width: int = 64
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    batch, height, width = images.shape
    size = self.patch_size
    patches = images.reshape(batch, height // size, size, width // size, size).transpose(0, 1, 3, 2, 4)
    tokens = nn.Dense(self.width, name='patch_embedding')(patches.reshape(batch, -1, size * size))
    position = self.param('position_embedding', nn.initializers.normal(0.02), tokens.shape[1:])
    tokens = tokens + position
    for index in range(self.depth):
      tokens = TransformerBlock(self.num_heads, self.mlp_width, self.dropout_rate, name=f'block_{index}')(tokens, train)
    pooled = nn.LayerNorm(name='final_norm')(tokens).mean(axis=1)
    return nn.Dense(self.num_classes, name='output')(pooled)


def digits_arrays(test_fraction: float = 0.2, seed: int = 0) -> data_lib.ArrayDataset:
  """scikit-learn's 1,797 real 8x8 digits as arrays, pixels scaled to [0, 1], split at random."""
  from sklearn import datasets as sklearn_datasets  # pylint: disable=import-outside-toplevel

  digits = sklearn_datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(labels))
  test_count = int(round(len(labels) * test_fraction))
  test, train = order[:test_count], order[test_count:]
  return data_lib.from_arrays(images[train], labels[train], images[test], labels[test], name='digits')


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy against labels smoothed by 0.1, the batch mean (a loss of your own: one scalar)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), 0.1)
  return optax.softmax_cross_entropy(logits, targets).mean()


TASK = tasks.Task(loss=smoothed_cross_entropy, metrics=(tasks.accuracy(), tasks.top_k_accuracy(3)), name='smoothed')


def is_prunable(path: str, leaf: Any) -> bool:
  """Every kernel (patch embedding, attention projections, MLP, output layer); never the position
  embedding, biases or LayerNorm scales."""
  return path.endswith('/kernel')


def base_config(steps: int, levels: int, trials: int) -> ml_collections.ConfigDict:
  """The search: Adam with a cosine schedule, 20% of each layer's remaining weights pruned per level
  (10% of the output layer's), random reinitialization as the control."""
  config = lth_jax.config.base_config()
  config.trials = trials
  config.training.optimizer = 'adam'
  config.training.learning_rate = 3e-3
  config.training.schedule = 'cosine'
  config.training.batch_size = 64
  config.training.num_steps = steps
  config.training.eval_every = max(1, steps // 4)
  config.pruning.levels = levels
  config.pruning.fraction = 0.2
  config.branches = ('reinit',)
  config.checkpointing.tensorboard = False
  return config


def register_dataset() -> None:
  """Registers the digits arrays as `dataset.name = 'digits_arrays'` (for configs/own_model.py)."""
  data_lib.register(DATASET_NAME, lambda dataset_config: digits_arrays(seed=dataset_config.seed))


def run(workdir: str, steps: int, levels: int, trials: int, log: Any = print) -> dict[str, Any]:
  """The search, the ticket exported and loaded back, and the plot; returns what it made."""
  results = lth_jax.run(
      base_config(steps, levels, trials),
      workdir,
      model=TinyViT(),
      dataset=digits_arrays(),
      task=TASK,
      prunable=is_prunable,
      log=log,
  )
  ticket = tickets.load(workdir, level=levels, trial=0)
  exported = tickets.export(ticket, os.path.join(workdir, f'ticket_level_{levels}.npz'))
  loaded = tickets.load_exported(exported)
  same = all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, ticket.keep_mask, loaded.keep_mask)))
  plot = os.path.join(workdir, 'accuracy_vs_sparsity.png')
  lth_jax.reporting.plot_accuracy_vs_sparsity(results.records, plot, setting='TinyViT on 8x8 digits')
  log(results.sparsity_table())
  log(
      f'ticket of level {levels}: {100 * loaded.density:.1f}% of the prunable weights kept, exported to '
      f'{exported} (loaded back: {"the same mask" if same else "A DIFFERENT MASK"}); plot: {plot}'
  )
  return {'results': results, 'ticket': loaded, 'exported': exported, 'plot': plot, 'same_mask': same}


def main(argv: list[str]) -> None:
  del argv
  common.quiet_logging()
  values = flags.FLAGS
  run(values.workdir, values.steps, values.levels, values.trials)


register_dataset()

if __name__ == '__main__':
  # Defined only when run as a command: configs/own_model.py imports this module into lth_jax.main,
  # whose flags these would collide with.
  flags.DEFINE_string('workdir', '/tmp/lth_own_model', 'where the search keeps its results')
  flags.DEFINE_integer('steps', 600, 'training steps per level')
  flags.DEFINE_integer('levels', 3, 'pruning levels after the dense one')
  flags.DEFINE_integer('trials', 2, 'independent trials')
  app.run(main)
