"""How the figures of the report and of the figure commands look: their resolution, legends of a
readable size outside the axes (never on the data), and the words that stand for the records' keys,
branches, models and datasets in titles, axis labels and legends (`display_name`, `setting_name`)."""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Mapping, Sequence

from matplotlib import figure as figure_lib
from matplotlib import legend as legend_lib
from PIL import Image

from lth_jax.config import compatibility
from lth_jax import results as results_lib

DPI = 150  # every PNG of the report and of the figure commands, unless told otherwise
LEGEND_FONTSIZE = 9
TITLE_FONTSIZE = 11
PERCENT_REMAINING = '% of weights remaining'

_NAMES = {
    # branches, and the members of a stability measurement
    'ticket': 'winning ticket',
    'reinit': 'random reinitialization',
    'permuted': 'permuted mask',
    'permuted_reinit': 'permuted mask, reinitialized',
    'random_pruning': 'random pruning',
    'snip': 'SNIP',
    'grasp': 'GraSP',
    'synflow': 'SynFlow',
    'magnitude_at_init': 'magnitude at init',
    'sign_reinit': 'sign-preserving reinitialization',
    'random_ticket': 'random ticket',
    'full': 'full network',
    'dense': 'dense network',
    # the keys of records and tables
    'test_accuracy': 'test accuracy',
    'test_rmse': 'test RMSE',
    'fraction_remaining': PERCENT_REMAINING,
    'reset': 'late-reset point',
    'reset_step': 'late-reset step',
    'reset_epoch': 'late-reset epoch',
    'rewind_step': 'late-reset step',
    'turnaround_step': 'turnaround step',
    'step': 'training step',
    # models and datasets
    'linear': 'linear network',
    'lenet': 'LeNet',
    'mnist1d': 'MNIST-1D',
    'mnist': 'MNIST',
    'cifar10': 'CIFAR-10',
    'imagenet2012': 'ImageNet',
    'digits': '8x8 digits',
    'sum_of_two': 'sum of two',
}
_MODEL_FAMILIES = {'conv': 'Conv', 'vgg': 'VGG', 'resnet': 'ResNet'}


def display_name(key: str) -> str:
  """The words for a record key, branch, model or dataset name: 'reinit' -> 'random reinitialization',
  'level_3' -> 'level 3', 'reset_step' -> 'late-reset step', 'vgg19' -> 'VGG-19'; any other key with
  its underscores as spaces."""
  if key in _NAMES:
    return _NAMES[key]
  ablation = re.fullmatch(r'(\w+)_(shuffled|reinit)', key)  # of a pruning-at-init branch: 'SNIP, shuffled'
  if ablation and ablation.group(1) in _NAMES:
    return f'{_NAMES[ablation.group(1)]}, {"shuffled" if ablation.group(2) == "shuffled" else "reinitialized"}'
  level = re.fullmatch(r'level_(\d+)', key)
  if level:
    return f'level {level.group(1)}'
  family = re.fullmatch(r'([a-z]+)(\d+)', key)
  if family and family.group(1) in _MODEL_FAMILIES:
    return f'{_MODEL_FAMILIES[family.group(1)]}-{family.group(2)}'
  return key.replace('_', ' ')


def setting_name(model: str, dataset: str, hidden_sizes: Sequence[int] = ()) -> str:
  """The model and dataset as a title says them: 'LeNet-300-100 on MNIST-1D', 'ResNet-18 on CIFAR-10'."""
  name = display_name(model)
  if model == 'lenet' and hidden_sizes:
    name += '-' + '-'.join(str(size) for size in hidden_sizes)
  return f'{name} on {display_name(dataset)}'


def config_setting(config: Mapping[str, Any]) -> str | None:
  """`setting_name` of a config (a ConfigDict or its JSON, as in WORKDIR/config.json); None without
  a model or dataset name."""
  model, dataset = config.get('model') or {}, config.get('dataset') or {}
  if not model.get('name') or not dataset.get('name'):
    return None
  return setting_name(model['name'], dataset['name'], tuple(model.get('hidden_sizes') or ()))


def workdir_setting(workdir: str) -> str | None:
  """`config_setting` of a lottery workdir's config.json; None when it has none or it cannot be read."""
  try:
    with open(os.path.join(workdir, compatibility.CONFIG_FILE)) as file:
      config = json.load(file)
  except (OSError, ValueError):
    return None
  return config_setting(config) if isinstance(config, dict) else None


def trials_note(trials: int, bars: str = 'bars') -> str:
  """'mean of 3 trials, bars min to max', or '1 trial'."""
  return f'mean of {trials} trials, {bars} min to max' if trials > 1 else '1 trial'


def percent(fraction: float) -> str:
  """A fraction as a short percent: 1.0 -> '100', 0.802 -> '80.2', 0.00667 -> '0.667'."""
  return f'{100 * fraction:.3g}'


def legend_outside(axes: Any, *handles_and_labels: Any, **options: Any) -> legend_lib.Legend:
  """`axes.legend` to the right of the axes (so it covers no data), at `LEGEND_FONTSIZE`; constrained
  layout makes room for it."""
  options = {'fontsize': LEGEND_FONTSIZE, **options}
  return axes.legend(*handles_and_labels, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **options)


def save_png(figure: figure_lib.Figure, path: str, dpi: int = DPI) -> None:
  """Writes `figure` as a PNG at `dpi` (recorded in the file), cropped to what is drawn, in 256 colours
  (a third of the size of a true-colour PNG of these plots, which read the same); atomically."""
  rendered = io.BytesIO()
  figure.savefig(rendered, format='png', dpi=dpi, bbox_inches='tight', pad_inches=0.1)
  rendered.seek(0)
  with Image.open(rendered) as image:
    small = image.convert('RGB').quantize(colors=256)
  with results_lib.atomic_open(path, 'wb') as file:
    small.save(file, format='PNG', optimize=True, dpi=(dpi, dpi))
