"""Every figure of the report and of the figure commands reads at a glance: saved at 120 dpi or more,
legends of at least 9 points outside the axes (never on the data), axes and legends labelled in words,
a title naming the model, dataset and trials (and, for stability, the sparsity), and the dense
network's accuracy on every plot against sparsity."""

import json
import pathlib
import re

from matplotlib import text as text_lib
from matplotlib.backends import backend_agg
import numpy as np
from PIL import Image
import pytest

from lth_jax.analysis import mask_overlap
from lth_jax.analysis import stability_results
from lth_jax.reporting import plots
from lth_jax.reporting import stability_tables
from lth_jax.reporting import style
from experiments import figures
from experiments import late_reset_table
from experiments import weight_fate

SETTING = 'LeNet-300-100 on MNIST-1D'
FRACTIONS = (1.0, 0.8, 0.64)
RAW_KEYS = re.compile(r'level_\d|reset_step|final test metric|test_accuracy|\breinit\b|\(W_[FT], W_|Percent')


def _records(trials=3):
  """A ticket and its random reinitialization over three levels, `trials` trials."""
  records = []
  for trial in range(trials):
    for level, fraction in enumerate(FRACTIONS):
      for branch in ('ticket', 'reinit') if level else ('ticket',):
        accuracy = 0.9 + 0.01 * trial - (0.1 * level if branch == 'reinit' else 0.0)
        records.append(
            {
                'trial': trial,
                'level': level,
                'branch': branch,
                'fraction_remaining': fraction,
                'test_accuracy': accuracy,
                'start_step': 0,
                'layer_density': {'dense_0/kernel': fraction, 'output/kernel': (1 + fraction) / 2},
                'curve': [{'step': step, 'test_accuracy': accuracy - 0.1 / step} for step in (1, 2, 3)],
            }
        )
  return records


def _stability_results(trials=2):
  def metrics(step, scale):
    grow = step / 100 * scale
    names = ('l2_distance', 'angle', 'angle_ticket_to_final', 'angle_full_to_final', 'correlation')
    values = {name: grow for name in names} | {'full_distance_from_init': grow, 'ticket_distance_from_init': grow}
    return values | {f'{name}_max_normalized': value / 2 for name, value in values.items()}

  results = []
  for rewind_step in (0, 25):
    for trial in range(trials):
      curve = [
          {'step': step, 'ticket': metrics(step, 1.0 + trial), 'random_ticket': metrics(step, 2.0)}
          for step in (50, 75, 100)
      ]
      results.append(
          stability_results.StabilityResult(
              rewind_step=rewind_step,
              final={name: curve[-1][name] for name in ('ticket', 'random_ticket')},
              curve=curve,
              test_metrics={'full': 0.9, 'ticket': 0.88, 'random_ticket': 0.8},
              normalizer=1.0,
              max_normalizer=2.0,
              level=2,
              trial=trial,
          )
      )
  return results


def _dpi(path):
  with Image.open(path) as image:
    return image.info['dpi']


def _legends(figure):
  return list(figure.legends) + [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]


def _check_readable(figure, path, raw_keys=RAW_KEYS):
  """Saved at 120 dpi or more; every legend of 9 points or more and clear of every axes; no raw key
  in any text of the figure."""
  dpi = _dpi(path)
  assert min(dpi) >= 120, dpi
  canvas = backend_agg.FigureCanvasAgg(figure)
  canvas.draw()
  renderer = canvas.get_renderer()
  legends = _legends(figure)
  assert legends, 'no legend'
  for legend in legends:
    assert min(text.get_fontsize() for text in legend.get_texts()) >= 9
    box = legend.get_window_extent(renderer)
    for axes in figure.axes:
      assert not box.overlaps(axes.get_window_extent(renderer)), f'legend {legend.get_texts()[0]} covers an axes'
  raw = [text.get_text() for text in figure.findobj(text_lib.Text) if raw_keys.search(text.get_text())]
  assert not raw, f'raw keys in {raw}'


def test_display_names_say_in_words_what_a_key_means():
  assert style.display_name('ticket') == 'winning ticket'
  assert style.display_name('reinit') == 'random reinitialization'
  assert style.display_name('level_0') == 'level 0'
  assert style.display_name('reset_step') == 'late-reset step'
  assert style.display_name('test_accuracy') == 'test accuracy'
  assert style.display_name('something_new') == 'something new'
  assert style.setting_name('lenet', 'mnist1d', (300, 100)) == SETTING
  assert style.setting_name('resnet18', 'cifar10') == 'ResNet-18 on CIFAR-10'


def test_workdir_setting_reads_the_model_and_dataset_of_config_json(tmp_path):
  assert style.workdir_setting(str(tmp_path)) is None
  config = {'model': {'name': 'lenet', 'hidden_sizes': [300, 100]}, 'dataset': {'name': 'mnist1d'}}
  (tmp_path / 'config.json').write_text(json.dumps(config))
  assert style.workdir_setting(str(tmp_path)) == SETTING


def test_accuracy_vs_sparsity_is_readable_with_the_dense_network_and_the_setting(tmp_path):
  path = tmp_path / 'accuracy_vs_sparsity.png'
  figure = plots.plot_accuracy_vs_sparsity(_records(), str(path), SETTING)
  _check_readable(figure, path)
  axes = figure.axes[0]
  assert axes.get_xlabel() == '% of weights remaining' and axes.get_ylabel() == 'test accuracy'
  (dense,) = [line for line in axes.lines if line.get_gid() == 'dense']
  assert dense.get_linestyle() == '--' and dense.get_ydata()[0] == pytest.approx(0.91)  # level 0, mean of trials
  labels = [text.get_text() for text in axes.get_legend().get_texts()]
  assert labels[:2] == ['winning ticket', 'random reinitialization'] and labels[2].startswith('dense network')
  assert SETTING in axes.get_title() and 'mean of 3 trials' in axes.get_title()


def test_training_curves_are_readable(tmp_path):
  path = tmp_path / 'training_curves.png'
  figure = plots.plot_training_curves(_records(), str(path), setting=SETTING)
  _check_readable(figure, path)
  axes = figure.axes[0]
  assert axes.get_xlabel() == 'training step' and axes.get_ylabel() == 'test accuracy'
  assert SETTING in axes.get_title() and 'winning ticket' in axes.get_title() and '3 trials' in axes.get_title()


def test_layer_density_is_readable(tmp_path):
  path = tmp_path / 'layer_density.png'
  figure = mask_overlap.plot_layer_density(_records(), str(path), SETTING)
  _check_readable(figure, path)
  assert SETTING in figure.axes[0].get_title() and 'mean of 3 trials' in figure.axes[0].get_title()
  # Layers pruned alike draw the same line: each keeps its own dashes and marker, so none hides another.
  lines = [line for line in figure.axes[0].lines if line.get_gid()]
  assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == len(lines) == 2


def test_stability_against_the_reset_step_is_readable_and_names_the_sparsity(tmp_path):
  path = tmp_path / 'stability.png'
  figure = stability_tables.plot_stability_vs_reset_step(
      _stability_results(), str(path), setting=SETTING, fraction_remaining=0.64
  )
  _check_readable(figure, path)
  assert [axes.get_xlabel() for axes in figure.axes] == ['late-reset step'] * 3
  assert figure.axes[2].get_ylabel() == 'test accuracy'
  title = figure.get_suptitle()
  assert SETTING in title and 'level 2 (64% of weights remaining)' in title and 'mean of 2 trials' in title
  labels = [text.get_text() for text in figure.legends[0].get_texts()]
  assert labels == ['full network', 'winning ticket', 'random ticket']


def test_stability_over_training_is_readable_and_names_the_sparsity(tmp_path):
  path = tmp_path / 'stability_over_training.png'
  figure = stability_tables.plot_stability_over_training(
      _stability_results(trials=1), str(path), 'max', setting=SETTING, fraction_remaining=0.64
  )
  _check_readable(figure, path)
  assert len(_legends(figure)) == 3
  title = figure.get_suptitle()
  assert SETTING in title and '64% of weights remaining' in title and '1 trial' in title


def test_variants_plot_is_readable_with_the_dense_network(tmp_path):
  path = tmp_path / 'variants.png'
  records = {'reset to step 0': _records(), 'reset to step 25': _records()}  # one shared dense run
  figure = figures.plot_variants(records, f'Late resetting, {SETTING}', path=str(path))
  _check_readable(figure, path)
  axes = figure.axes[0]
  assert axes.get_xlabel() == '% of weights remaining' and axes.get_ylabel() == 'test accuracy'
  (dense,) = [line for line in axes.lines if line.get_gid() == 'dense']
  assert dense.get_linestyle() == '--' and dense.get_ydata()[0] == pytest.approx(0.91)
  labels = [text.get_text() for text in axes.get_legend().get_texts()]
  assert labels[:4] == ['reset to step 0', 'reset to step 25', 'winning ticket', 'random reinitialization']
  assert labels[4].startswith('dense network')
  assert SETTING in axes.get_title() and 'mean of 3 trials' in axes.get_title()


def test_variants_with_their_own_dense_networks_each_get_a_dense_line():
  other = [dict(record, test_accuracy=record['test_accuracy'] - 0.2) for record in _records()]
  figure = figures.plot_variants({'standard': _records(), 'lower rate': other}, 'title', branches=('ticket',))
  gids = {line.get_gid(): line for line in figure.axes[0].lines if line.get_gid()}
  assert gids['standard/dense'].get_ydata()[0] == pytest.approx(0.91)
  assert gids['lower rate/dense'].get_ydata()[0] == pytest.approx(0.71)
  assert gids['standard/dense'].get_color() == gids['standard/ticket'].get_color()


def test_late_reset_table_image_names_its_rows_and_columns_in_words(tmp_path):
  header = ['reset_step', 'level_0', 'level_1']
  rows = [['R', '', '0.8000 @80.0%'], ['0', '0.9000 @100.0%', '0.9100* @80.0%']]
  path = tmp_path / 'table.png'
  figure = late_reset_table.plot_late_reset_table(header, rows, f'Ticket test accuracy, {SETTING}, 1 trial', str(path))
  assert min(_dpi(path)) >= 120
  axes = figure.axes[0]
  assert axes.get_ylabel() == 'late-reset step'
  assert [label.get_text() for label in axes.get_xticklabels()] == [
      'level 0\n100.0% remaining',
      'level 1\n80.0% remaining',
  ]


def test_weight_fate_is_readable(tmp_path):
  edges = np.linspace(-1, 1, 5)
  cells = [
      weight_fate.HistogramCell(step, row, edges, np.array([1, 2, 2, 1]), np.array([3, 0, 0, 3]), 0.1, 0.8)
      for row in ('dense_0/kernel', 'output/kernel')
      for step in (0, 100)
  ]
  path = tmp_path / 'weight_fate.png'
  figure = weight_fate.plot_weight_fate(cells, f'Weights by training step, {SETTING}, 1 trial', str(path))
  _check_readable(figure, path)
  assert [axes.get_xlabel() for axes in figure.axes[-2:]] == ['weight value'] * 2


def test_readme_shows_every_figure_readable():
  readme = (pathlib.Path(__file__).resolve().parent.parent / 'README.md').read_text()
  images = re.findall(r'(<a href="([^"]+)">)?<img src="(docs/figures/[^"]+)"[^>]*?width="(\d+)"', readme)
  assert len(images) >= 10
  for link, target, source, width in images:
    assert (pathlib.Path(__file__).resolve().parent.parent / source).is_file(), source
    assert int(width) >= 480 or (link and target == source), f'{source}: {width} px wide and no link to the full size'


def test_training_curves_of_one_evaluation_per_level_say_how_many_steps_eval_every_must_be_below(tmp_path):
  records = [dict(record, steps=60, curve=record['curve'][-1:]) for record in _records()]
  figure = plots.plot_training_curves(records, str(tmp_path / 'curves.png'), setting=SETTING)
  assert 'set training.eval_every below 60 steps to record curves' in figure.axes[0].get_title()
  assert 'eval_every' not in plots.plot_training_curves(_records(), None, setting=SETTING).axes[0].get_title()
