"""The README's sentences about the quick figures are the captions the figures' own runs wrote
(experiments.captions via experiments.regenerate_figures), and a caption says when a claim is not shown."""

import importlib.util
import json
import os
import pathlib
import re

from lth_jax import results as results_lib
from experiments import captions
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
