"""The README's sentences about the quick figures are the captions the figures' own runs wrote
(experiments.captions via experiments.regenerate_figures), and a caption says when a claim is not shown."""

import importlib.util
import json
import os
import pathlib
import re
import types

from absl import app
import pytest

from lth_jax import results as results_lib
from experiments import captions
from experiments import init_pruning_sweep
from experiments import regenerate_figures

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_readme_holds_every_caption_as_its_figure_wrote_it():
  readme = (REPO / 'README.md').read_text()
  for name in captions.CAPTIONS:
    written = REPO / 'docs' / 'figures' / f'{name}.md'
    assert written.is_file(), f'{written} is missing: run python -m experiments.regenerate_figures --only={name}'
    begin, end = regenerate_figures.caption_markers(name)
    quoted = re.search(re.escape(begin) + r'\n(.*?)' + re.escape(end), readme, re.S)
    assert quoted is not None, f'README.md has no caption block for {name}'
    assert quoted.group(1) == written.read_text(), f'README.md quotes another caption of {name} than {written}'


def _lottery_workdir(path, dense, ticket, snip, reinit):
  """A lottery workdir with 3 trials: the dense network at level 0, each branch at level 1 (80%)."""
  records = []
  for trial in range(3):
    records.append(
        {'trial': trial, 'level': 0, 'branch': 'ticket', 'fraction_remaining': 1.0, 'test_accuracy': dense[trial]}
    )
    for branch, values in (('ticket', ticket), ('snip', snip), ('reinit', reinit)):
      records.append(
          {'trial': trial, 'level': 1, 'branch': branch, 'fraction_remaining': 0.8, 'test_accuracy': values[trial]}
      )
  os.makedirs(path, exist_ok=True)
  results_lib.append_records(os.path.join(path, results_lib.RESULTS_FILE), records)
  with open(os.path.join(path, 'config.json'), 'w') as file:
    json.dump({'dataset': {'name': 'digits'}}, file)  # 359 test examples
  return str(path)


def test_a_caption_says_whether_its_figure_shows_the_claim(tmp_path):
  shown = captions.snip_caption(
      _lottery_workdir(tmp_path / 'a', (0.70, 0.71, 0.72), (0.75, 0.76, 0.74), (0.60, 0.61, 0.62), (0.58, 0.6, 0.59))
  )
  assert 'Winning tickets at 1 of 1 levels, the sparsest at 80.0% of the weights' in shown
  assert 'ticket 0.750 [0.740, 0.760], SNIP 0.610 [0.600, 0.620]' in shown and 'every trial, as in the paper.' in shown
  # SNIP reaches the ticket's range, and one ticket trial is below the best dense trial: no winning ticket.
  not_shown = captions.snip_caption(
      _lottery_workdir(tmp_path / 'b', (0.70, 0.71, 0.76), (0.75, 0.76, 0.74), (0.60, 0.75, 0.62), (0.58, 0.6, 0.59))
  )
  assert 'No winning ticket' in not_shown
  assert 'not shown: the ticket does not clear SNIP.' in not_shown
  assert 'The test set holds 359 examples' in not_shown


def test_regenerating_puts_each_caption_between_its_markers(tmp_path):
  begin, end = regenerate_figures.caption_markers('fig01')
  readme = tmp_path / 'README.md'
  readme.write_text(f'before\n{begin}\nold words\n{end}\nafter\n')
  (tmp_path / 'fig01.md').write_text('new words\n')
  (tmp_path / 'fig99.md').write_text('no block for this one\n')
  assert regenerate_figures.update_readme(readme, tmp_path) == ['fig01']
  assert readme.read_text() == f'before\n{begin}\nnew words\n{end}\nafter\n'


def test_every_caption_belongs_to_a_figure_and_the_readme_shows_every_quick_command():
  assert set(captions.CAPTIONS) <= {figure.name for figure in regenerate_figures.FIGURES}
  readme = (REPO / 'README.md').read_text()
  for figure in regenerate_figures.FIGURES:
    for command in figure.commands:
      if command[1] == 'lth_jax.report' or 'sum_of_two' in ' '.join(command):
        continue  # the blog's commands: the README shows them joined with &&
      written = 'python ' + ' '.join(command).replace('{workdir}', 'W')
      assert written in readme, f'README.md does not show the quick command of {figure.name}: {written}'


def test_the_stability_caption_says_whether_a_later_reset_is_more_stable_and_whether_normalizations_differ(tmp_path):
  def write(rows):
    with open(tmp_path / 'stability.csv', 'w') as file:
      file.write('rewind_step,member,trials,l2_distance,l2_distance_max_normalized\n')
      file.writelines(f'{step},{member},3,{final},{maximum}\n' for step, member, final, maximum in rows)

  write(
      [
          (0, 'ticket', 0.4, 0.2),
          (50, 'ticket', 0.3, 0.15),
          (0, 'random_ticket', 0.6, 0.3),
          (50, 'random_ticket', 0.5, 0.25),
      ]
  )
  caption = captions.stability_caption(str(tmp_path))
  assert 'for reset steps 0, 50: 0.400 → 0.300; random ticket 0.600 → 0.500 (3 trials)' in caption
  assert 'A later reset gives a more stable ticket, and the ticket stays closer' in caption
  assert 'the distances are 2.00x smaller: the two normalizations differ here.' in caption
  write(
      [
          (0, 'ticket', 0.3, 0.3),
          (50, 'ticket', 0.4, 0.4),
          (0, 'random_ticket', 0.2, 0.2),
          (50, 'random_ticket', 0.5, 0.5),
      ]
  )
  caption = captions.stability_caption(str(tmp_path))
  assert 'Not shown: a later reset does not make the ticket more stable; the random ticket is not farther' in caption
  assert caption.endswith('the two normalizations coincide here.')


def test_the_readme_describes_the_quick_setting_as_configs_figures_sets_it():
  spec = importlib.util.spec_from_file_location('figures_config', REPO / 'configs' / 'figures.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  readme = ' '.join((REPO / 'README.md').read_text().split())
  levels = {6: 'six'}[config.pruning.levels]
  remaining = 100 * (1 - config.pruning.fraction) ** config.pruning.levels
  assert (
      f'{config.training.num_steps} steps, {levels} levels of {100 * config.pruning.fraction:.0f}% down to '
      f'{remaining:.1f}% of the weights, **{config.trials} trials**' in readme
  )
  steps = regenerate_figures.RESET_STEPS.split('=')[1].split(',')
  assert f'late-reset points {", ".join(steps[:-1])} and {steps[-1]}' in readme
  assert max(map(int, steps)) <= 0.05 * config.training.num_steps  # within the first 5% of training


def _figures_config():
  spec = importlib.util.spec_from_file_location('figures_config', REPO / 'configs' / 'figures.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_the_init_pruning_sweep_prunes_at_initialization_and_rewinds_only_imp():
  base = _figures_config()
  configs = init_pruning_sweep.variant_configs(base, init_pruning_sweep.BRANCHES, 10)
  assert list(configs) == ['at_init', 'rewind_10']
  at_init, rewind = configs['at_init'], configs['rewind_10']
  assert (
      at_init.branches == ('snip', 'grasp', 'synflow', 'magnitude_at_init', 'random_pruning') and rewind.branches == ()
  )
  assert (at_init.pruning.rewind_step, at_init.pruning.rewind_epoch) == (0, 0.0)  # the branches score W_0
  assert (rewind.pruning.rewind_step, rewind.pruning.rewind_epoch) == (10, 0.0)
  for config in (at_init, rewind):  # nothing else changes: the two share one dense run per trial
    changed = config.to_dict()
    changed['pruning'] = dict(changed['pruning'], rewind_step=0)
    assert dict(changed, branches=base.branches) == base.to_dict()
  for branches, step in ((init_pruning_sweep.BRANCHES, 0), ((), 10)):
    with pytest.raises(app.UsageError):
      init_pruning_sweep.variant_configs(base, branches, step)
  # the quick command's --rewind_step is the script's default on the quick setting: 1% of its training
  (command,) = next(figure for figure in regenerate_figures.FIGURES if figure.name == 'missing_the_mark').commands
  (given,) = [part for part in command if part.startswith('--rewind_step=')]
  no_rewind = types.SimpleNamespace(pruning=types.SimpleNamespace(rewind_step=0))
  assert int(given.split('=')[1]) == init_pruning_sweep.default_rewind_step(no_rewind, base.training.num_steps) == 10
  resnet = types.SimpleNamespace(pruning=types.SimpleNamespace(rewind_step=500))
  assert init_pruning_sweep.default_rewind_step(resnet, 30_000) == 500  # a config's own rewind step


def _sweep_records(imp, snip, grasp, random):
  """The two variants of an init_pruning_sweep with 3 trials: the dense network at level 0 (shared), IMP with
  rewinding's ticket and the at_init variant's ticket and branches at level 1 (20%)."""
  records = {'at_init': [], 'rewind_10': []}
  for trial, dense in enumerate((0.70, 0.71, 0.72)):
    for variant in records:
      records[variant].append(_record(trial, 0, 'ticket', 1.0, dense))
    records['rewind_10'].append(_record(trial, 1, 'ticket', 0.2, imp[trial]))
    records['at_init'].append(_record(trial, 1, 'ticket', 0.2, 0.5))
    for branch, values in (('snip', snip), ('grasp', grasp), ('random_pruning', random)):
      records['at_init'].append(_record(trial, 1, branch, 0.2, values[trial]))
  return records


def _record(trial, level, branch, fraction, accuracy):
  return {'trial': trial, 'level': level, 'branch': branch, 'fraction_remaining': fraction, 'test_accuracy': accuracy}


def test_the_init_pruning_caption_says_whether_imp_with_rewinding_clears_every_method_at_init(monkeypatch, tmp_path):
  sweep = {}
  monkeypatch.setattr(captions, 'variant_records', lambda workdir: sweep[workdir])
  sweep['shown'] = _sweep_records((0.70, 0.69, 0.71), (0.60, 0.61, 0.62), (0.55, 0.56, 0.50), (0.45, 0.52, 0.40))
  shown = captions.init_pruning_caption('shown')
  assert shown.startswith(
      '**Pruning at initialization (Frankle et al. 2021).** At 20.0% of the weights: IMP with rewinding (to step 10) '
      '0.700 [0.690, 0.710], SNIP 0.610 [0.600, 0.620], GraSP 0.537 [0.500, 0.560], random pruning 0.457 [0.400, 0.520] '
      '(dense network 0.710 [0.700, 0.720], 3 trials): '
  )
  assert 'above every method of pruning at initialization, every trial, as in the paper; SNIP is above random' in shown
  assert ', GraSP is not. IMP with rewinding has the best mean at 1 of 1 levels.' in shown
  sweep['not_shown'] = _sweep_records((0.70, 0.69, 0.71), (0.60, 0.70, 0.62), (0.55, 0.69, 0.50), (0.65, 0.66, 0.67))
  not_shown = captions.init_pruning_caption('not_shown')
  assert 'not shown: SNIP and GraSP reach the range of IMP with rewinding; none is above random pruning' in not_shown
  # the figure: one colour per method, the dense network once (one dense run shared by both variants)
  path = init_pruning_sweep.report(sweep['shown'], str(tmp_path), 'title')
  assert os.path.isfile(path)
  with open(tmp_path / 'init_pruning_sweep_table.csv') as file:
    assert [line.split(',')[0] for line in file][1:] == [
        'IMP with rewinding (to step 10)',
        'SNIP',
        'GraSP',
        'random pruning',
    ]
