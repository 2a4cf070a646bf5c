"""What Figure 5's sweep costs at full size, worked out from the configs alone (no data, no training).

    python -m experiments.sweep_cost [--devices=8]

Figure 5 of "The Lottery Ticket Hypothesis at Scale" is ResNet-50 on ImageNet, one-shot pruning, 6
late-reset epochs x 3 trials (the README's command: `late_reset_sweep --config=configs/
resnet50_imagenet.py:one_shot --config.pruning.turnaround_epoch=0 --reset_epochs=0,2,4,6,8,10
--trials=3 --stability_level=3`). This resolves the same variants the command builds (ImageNet's
1,281,167 training images, --devices devices) and prints:
  * the dense trainings of one lottery run per reset point against one sweep (one dense run per trial);
  * what is trained in all, in full trainings of 90 epochs;
  * the host memory the shared dense run's snapshots take (one per reset point, copied to the host and
    written to disk as they are taken, kept until its level 0 ends), and the device memory one run takes
    (`lth_jax.training.memory`'s estimate), which does not grow with the number of reset points.
The README quotes these lines; tests/test_experiments.py checks that it quotes them as printed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from lth_jax import config as config_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.search import sweep_plan
from lth_jax.models import calling
from lth_jax.training import memory
from lth_jax.training import steps
from experiments import common

_DEVICES = flags.DEFINE_integer('devices', 8, 'Accelerators the sweep runs on (the global batch is split over them).')

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_TRAIN_SIZE = 1_281_167  # tfds imagenet2012, split 'train'
IMAGENET_INPUT_SHAPE = (224, 224, 3)  # the training crop (lth_jax.data.pipeline)
IMAGENET_CLASSES = 1000
RESET_EPOCHS = (0, 2, 4, 6, 8, 10)
TRIALS = 3
STABILITY_LEVEL = 3


def figure5_base() -> config_lib.ConfigDict:
  """configs/resnet50_imagenet.py:one_shot as Figure 5's command sets it: no turnaround, 3 trials."""
  path = os.path.join(REPOSITORY, 'configs', 'resnet50_imagenet.py')
  spec = importlib.util.spec_from_file_location('resnet50_imagenet', path)
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('one_shot')
  config.pruning.turnaround_epoch = 0.0
  config.trials = TRIALS
  return config


@dataclasses.dataclass(frozen=True)
class Figure5Cost:
  """What Figure 5's sweep trains and holds, worked out from the configs."""

  levels: int
  steps_per_training: int
  dense_one_run_per_point: int
  dense_as_sweep: int
  pruned_steps: int  # the steps of every pruned level's trainings, together
  snapshots: int
  snapshot_bytes: int
  device_bytes: int  # one run's device memory by `memory.footprint`, at `examples_per_device`
  examples_per_device: int

  def trainings(self, as_sweep: bool) -> float:
    """Full trainings in all, as one sweep or as one lottery run per reset point."""
    dense = self.dense_as_sweep if as_sweep else self.dense_one_run_per_point
    return (dense * self.steps_per_training + self.pruned_steps) / self.steps_per_training


def figure5_cost(devices: int) -> Figure5Cost:
  """Figure 5's sweep on `devices` devices."""
  base = figure5_base()
  points = [common.ResetPoint(float(epoch), 'epoch') for epoch in RESET_EPOCHS]
  levels = max(base.pruning.levels, STABILITY_LEVEL)
  configs = common.lottery_configs(base, points, levels)
  model = models_lib.build(config_lib.model_spec(base.model), IMAGENET_CLASSES)
  example = jax.ShapeDtypeStruct((1, *IMAGENET_INPUT_SHAPE), jnp.float32)
  variables = calling.variable_shapes(model, example)
  param_shapes, _ = steps.split_variables(variables)
  specs = []
  for config in configs.values():
    config_lib.check_config(config)
    specs.append(config_lib.resolve(config, devices, IMAGENET_TRAIN_SIZE, param_shapes))
  total = specs[0].training.num_steps
  groups = {sweep_plan.dense_key(spec) for spec in specs}
  pruned = sum(
      spec.trials * spec.pruning.levels * len(spec.branch_names) * (total - spec.pruning.rewind_step) for spec in specs
  )
  run = memory.footprint(model, example, optim.from_config(specs[0].training, total))
  per_device = specs[0].training.batch_size // devices
  return Figure5Cost(
      levels=levels,
      steps_per_training=total,
      dense_one_run_per_point=len(specs) * TRIALS,
      dense_as_sweep=len(groups) * TRIALS,
      pruned_steps=pruned,
      snapshots=len(sweep_plan.snapshot_steps(specs)),
      snapshot_bytes=memory.tree_bytes(variables),
      device_bytes=run.device_bytes(1, per_device),
      examples_per_device=per_device,
  )


def cost_lines(devices: int) -> list[str]:
  """The lines the command prints for Figure 5's sweep on `devices` devices."""
  cost = figure5_cost(devices)
  total = cost.steps_per_training
  return [
      f'Figure 5 at full size: ResNet-50 on ImageNet, one-shot, reset epochs {",".join(map(str, RESET_EPOCHS))}, '
      f'{TRIALS} trials, {cost.levels} levels, {devices} devices, {total:,} steps per training',
      f'dense trainings: {cost.dense_one_run_per_point} as one lottery run per reset point, '
      f'{cost.dense_as_sweep} as one sweep',
      f'trainings of {total:,} steps in all: {cost.trainings(False):.1f} one run per reset point, '
      f'{cost.trainings(True):.1f} as one sweep',
      f"host memory: each trial's dense run keeps {cost.snapshots} snapshots of "
      f'{memory.format_bytes(cost.snapshot_bytes)} (weights and batch statistics): '
      f'{memory.format_bytes(cost.snapshots * cost.snapshot_bytes)}',
      f'device memory: about {memory.format_bytes(cost.device_bytes)} per device for one run at '
      f'{cost.examples_per_device} examples per device, whatever the number of reset points (snapshots go to the host)',
  ]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  print('\n'.join(cost_lines(_DEVICES.value)))


if __name__ == '__main__':
  app.run(main)
