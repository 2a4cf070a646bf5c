"""The figure commands (learning_rate_sweep, pruning_mode_sweep, turnaround_sweep, weight_fate): their plots, tables, masks
and histograms on synthetic inputs, their sweep and dense run on a tiny config, and (slow) each one's --quick run end
to end (one sweep: shared dense runs, a folder per variant), resumed."""

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

from absl import app
import jax
import numpy as np
import pytest

import lth_jax
from lth_jax import config as config_lib
from lth_jax.config import schema
from lth_jax import pruning
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from experiments import common
from experiments import figures
from experiments import learning_rate_sweep
from experiments import pruning_mode_sweep
from experiments import turnaround_sweep
from experiments import weight_fate
from tests import helpers

TRAINING_PROGRESS = re.compile(r': step \d+/\d+ \(')  # the progress line of a run that trains
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *arguments):
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', module, *arguments], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
  )


def _record(level, branch, accuracy, trial=0):
  return {
      'trial': trial,
      'level': level,
      'branch': branch,
      'fraction_remaining': 0.8**level,
      'test_accuracy': accuracy,
      'start_step': 0,
  }


def _records(dense, tickets, reinits, trials=1, spread=0.0):
  """Records of `trials` trials: the ticket at levels 0.. and reinit at levels 1.., trial t offset by t * spread."""
  records = []
  for trial in range(trials):
    offset = trial * spread
    records.append(_record(0, 'ticket', dense + offset, trial))
    records += [_record(level, 'ticket', value + offset, trial) for level, value in enumerate(tickets, start=1)]
    records += [_record(level, 'reinit', value + offset, trial) for level, value in enumerate(reinits, start=1)]
  return records


def test_plot_variants_draws_one_colour_per_variant_ticket_solid_reinit_dashed():
  records = {
      'standard': _records(0.9, [0.91, 0.88], [0.85, 0.7], trials=2, spread=0.01),
      'late_reset': _records(0.9, [0.92, 0.93], [0.86, 0.72], trials=2, spread=0.01),
  }
  figure = figures.plot_variants(records, 'title')
  axes = figure.axes[0]
  lines = {line.get_gid(): line for line in axes.lines if line.get_gid()}
  assert set(lines) == {'standard/ticket', 'standard/reinit', 'late_reset/ticket', 'late_reset/reinit', 'dense'}
  assert lines['standard/ticket'].get_linestyle() == '-' and lines['standard/reinit'].get_linestyle() == '--'
  assert lines['standard/ticket'].get_color() == lines['standard/reinit'].get_color()
  assert lines['standard/ticket'].get_color() != lines['late_reset/ticket'].get_color()
  np.testing.assert_allclose(
      np.asarray(lines['late_reset/ticket'].get_ydata(), float), [0.905, 0.925, 0.935]
  )  # means over trials
  np.testing.assert_allclose(np.asarray(lines['late_reset/reinit'].get_xdata(), float), [0.8, 0.64])
  assert axes.get_xscale() == 'log' and axes.get_xlim()[0] > axes.get_xlim()[1]  # decreasing to the right
  assert len(axes.collections) == 4  # min-max bars of every line (two trials)


def test_winning_table_stars_tickets_whose_trials_are_clear_of_their_own_dense_network():
  records = {
      'a': _records(0.5, [0.5, 0.49], [0.6, 0.4]),
      'b': _records(0.4, [0.45, 0.41], [0.3, 0.2], trials=2, spread=0.02),
  }
  header, rows = figures.winning_table(figures.table_cells(records), 'variant')
  assert header == ['variant', 'dense', '80.0%', '64.0%']
  assert rows[0] == ['a', '0.5000', '0.5000*', '0.4900']
  # b's dense trials are 0.40 and 0.42: 0.45/0.47 clear them, 0.41/0.43 (mean above the dense mean) does not.
  assert rows[1] == ['b', '0.4100±0.0100', '0.4600±0.0100*', '0.4200±0.0100']
  reinit = figures.table_cells(records, 'reinit')
  assert [(cell.variant, cell.level, cell.winning) for cell in reinit] == [
      ('a', 1, True),
      ('a', 2, False),
      ('b', 1, False),
      ('b', 2, False),
  ]


def test_learning_rate_variants_differ_in_rate_warmup_and_reset_only():
  base = schema.base_config()
  base.training.learning_rate = 0.1
  base.training.warmup_epochs = 5.0
  base.pruning.rewind_epoch = 6.0
  settings = learning_rate_sweep.Settings(
      learning_rate=0.1, low_lr_factor=10.0, warmup_steps=300, warmup_learning_rate=0.03, reset_step=50
  )
  configs = learning_rate_sweep.variant_configs(base, learning_rate_sweep.VARIANTS, settings)
  fields = {
      name: (
          config.training.learning_rate,
          config.training.warmup_steps,
          config.training.warmup_epochs,
          config.pruning.rewind_step,
          config.pruning.rewind_epoch,
          config.branches,
      )
      for name, config in configs.items()
  }
  assert fields == {
      'standard': (0.1, 0, 0.0, 0, 0.0, ('reinit',)),
      'low_lr': (pytest.approx(0.01), 0, 0.0, 0, 0.0, ('reinit',)),
      'warmup': (0.03, 300, 0.0, 0, 0.0, ('reinit',)),
      'late_reset': (0.1, 0, 0.0, 50, 0.0, ('reinit',)),
  }
  assert base.pruning.rewind_epoch == 6.0  # the base config is not changed
  with pytest.raises(app.UsageError, match='--variants: fast; choose from standard, low_lr'):
    learning_rate_sweep.variant_configs(base, ['standard', 'fast'], settings)
  with pytest.raises(app.UsageError, match='--quick shrinks the embedded config'):
    figures.base_config(base, True, None, 'learning_rate_sweep')


def test_pruning_mode_variants_match_the_resnet50_config_variants():
  base = _paper_config('resnet50_imagenet.py')
  configs = pruning_mode_sweep.variant_configs(base, pruning_mode_sweep.VARIANTS, 7506)
  fields = {
      name: (config.pruning.mode, config.pruning.rewind_step, config.pruning.rewind_epoch, config.branches)
      for name, config in configs.items()
  }
  assert fields == {
      'iterative': ('iterative', 7506, 0.0, ('reinit',)),
      'one_shot': ('one_shot', 7506, 0.0, ('reinit',)),
      'no_reset': ('iterative', 0, 0.0, ('reinit',)),
  }
  # The config file's own variants (README, Figure 10) differ from these in the same fields only.
  for name, variant in (('one_shot', 'one_shot'), ('no_reset', 'no_rewind')):
    own = _paper_config('resnet50_imagenet.py', variant)
    assert own.pruning.mode == configs[name].pruning.mode
    assert bool(own.pruning.rewind_epoch) == bool(configs[name].pruning.rewind_step)
  assert all(config.pruning.turnaround_epoch == 45 for config in configs.values())  # kept in every variant
  assert pruning_mode_sweep.variant_label('no_reset', configs['no_reset']) == 'iterative, reset to initialization'
  with pytest.raises(app.UsageError, match='--variants: gradual; choose from iterative, one_shot, no_reset'):
    pruning_mode_sweep.variant_configs(base, ['gradual'], 7506)


def _paper_config(name, variant=''):
  path = os.path.join(REPO, 'configs', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_learning_rate_defaults_follow_the_paper_configs():
  resnet18 = learning_rate_sweep.default_settings(_paper_config('resnet18_cifar10.py'), 30_000)
  assert (resnet18.learning_rate, resnet18.reset_step, resnet18.warmup_steps) == (0.1, 500, 3000)
  warmup = learning_rate_sweep.default_settings(_paper_config('resnet18_cifar10.py', 'warmup'), 30_000)
  assert (warmup.warmup_steps, warmup.warmup_learning_rate) == (20_000, 0.03)
  vgg19 = _paper_config('vgg19_cifar10.py')
  configs = learning_rate_sweep.variant_configs(
      vgg19, ['standard', 'late_reset'], learning_rate_sweep.default_settings(vgg19, 112_000)
  )
  assert [c.pruning.rewind_step for c in configs.values()] == [0, 1000]
  assert {c.model.name for c in configs.values()} == {'vgg19'}


def test_turnaround_configs_and_the_library_refuses_impossible_turnarounds():
  base = common.embedded_config(True, 1)
  configs = turnaround_sweep.turnaround_configs(base, [100, 300], 300, 20, 'one_shot', ('reinit',))
  assert [(c.pruning.turnaround_step, c.pruning.rewind_step, c.pruning.mode) for c in configs.values()] == [
      (100, 20, 'one_shot'),
      (0, 20, 'one_shot'),  # the end of training: no early turnaround
  ]
  assert turnaround_sweep.default_turnaround_steps(300, 20) == [50, 100, 200, 300]
  with pytest.raises(app.UsageError, match='0 would prune the initial weights'):
    turnaround_sweep.turnaround_configs(base, [0], 300, 20, 'iterative', ())
  (early,) = turnaround_sweep.turnaround_configs(base, [20], 300, 20, 'iterative', ()).values()
  with pytest.raises(lth_jax.ConfigError, match=r'turnaround_step=20: must come after the rewind step'):
    experiment_lib.prepare(early)
  (late,) = turnaround_sweep.turnaround_configs(base, [301], 300, 20, 'one_shot', ()).values()
  with pytest.raises(lth_jax.ConfigError, match=r'turnaround_step=301: is past the end of training \(300 steps\)'):
    experiment_lib.prepare(late)


def test_turnaround_sweep_refuses_a_turnaround_before_the_reset_step_before_training(tmp_path):
  completed = _run(
      'experiments.turnaround_sweep', f'--workdir={tmp_path}', '--quick', '--turnaround_steps=500,10', '--reset_step=20'
  )
  assert completed.returncode == 1
  assert (
      'turnaround_sweep: turnaround_10: pruning.turnaround_step=10: must come after the rewind step' in completed.stderr
  )
  assert not os.listdir(tmp_path)  # nothing trained


def test_run_variants_runs_one_sweep_and_refuses_a_variant_of_another_config_before_training(tmp_path):
  workdir = str(tmp_path)
  base = helpers.tiny_config(pruning__levels=0, branches=())
  late_reset = helpers.tiny_config(pruning__levels=0, branches=(), pruning__rewind_step=10)
  records = figures.run_variants(base, {'late_reset': late_reset}, workdir, 'sweep')
  assert [(r['level'], r['variant']) for r in records['late_reset']] == [(0, {'pruning.rewind_step': 10})]
  assert os.listdir(tmp_path / 'variants') == ['late_reset']
  assert not os.path.exists(tmp_path / 'dense')  # a variant that shares its level 0 with none trains it alone
  recorded = (tmp_path / 'sweep.json').read_text()
  changed = helpers.tiny_config(pruning__levels=0, branches=(), pruning__rewind_step=7)
  with pytest.raises(
      SystemExit,
      match=r"sweep: .*sweep variant late_reset changes \{'pruning.rewind_step': 7\} now, "
      r"\{'pruning.rewind_step': 10\} when it was trained",
  ):
    figures.run_variants(base, {'fresh': base, 'late_reset': changed}, workdir, 'sweep')
  other_base = helpers.tiny_config(pruning__levels=0, branches=(), training__learning_rate=1e-2)
  with pytest.raises(SystemExit, match=r'sweep: .*different base config(.|\n)*training.learning_rate: 0.003 -> 0.01'):
    figures.run_variants(other_base, {'fresh': other_base}, workdir, 'sweep')
  assert os.listdir(tmp_path / 'variants') == ['late_reset']  # nothing trained
  assert (tmp_path / 'sweep.json').read_text() == recorded


def _lenet_params(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {'dense_0': (20, 12), 'dense_1': (12, 8), 'output': (8, 3)}
  return {
      name: {'kernel': rng.normal(size=shape).astype(np.float32), 'bias': np.zeros(shape[1], np.float32)}
      for name, shape in shapes.items()
  }


@pytest.mark.parametrize('scope, excluded', [('local', ()), ('global', ('output',))])
def test_one_shot_mask_is_the_mask_of_a_one_shot_lottery_level(scope, excluded):
  config = schema.base_config()
  config.pruning.mode = 'one_shot'
  config.pruning.scope = scope
  config.pruning.excluded_layers = excluded
  config.pruning.layer_fractions = {'output': 0.1} if scope == 'local' else {}
  params = _lenet_params()
  plan = config_lib.pruning_plan(config)
  prunable = plan.prunable(params)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params)
  for level in (1, 3):
    expected = pruning.next_mask(plan, level, pruning.magnitude_scores(params), ones, prunable)
    mask = weight_fate.one_shot_mask(params, prunable, plan, 0.8**level)
    for got, want in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(expected)):
      np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match='strictly between 0 and 1'):
    weight_fate.one_shot_mask(params, prunable, plan, 1.0)


def test_weight_histograms_split_every_weight_by_the_mask():
  config = schema.base_config()
  snapshots = {0: _lenet_params(0), 5: _lenet_params(1), 9: _lenet_params(2)}
  plan = config_lib.pruning_plan(config)
  prunable = plan.prunable(snapshots[9])
  mask = weight_fate.one_shot_mask(snapshots[9], prunable, plan, 0.5)
  layers = weight_fate.row_groups(mask, prunable, 'auto')
  assert layers == ['dense_0/kernel', 'dense_1/kernel', 'output/kernel']
  assert weight_fate.row_groups(mask, prunable, 'auto', max_layer_rows=2) == [weight_fate.POOLED]
  cells = weight_fate.weight_histograms([snapshots], [mask], prunable, [*layers, weight_fate.POOLED], bins=7)
  assert [(cell.row, cell.step) for cell in cells[:3]] == [
      ('dense_0/kernel', 0),
      ('dense_0/kernel', 5),
      ('dense_0/kernel', 9),
  ]
  for cell in cells:
    names = ['dense_0', 'dense_1', 'output'] if cell.row == weight_fate.POOLED else [cell.row.split('/')[0]]
    kept = sum(int(mask[name]['kernel'].sum()) for name in names)
    total = sum(mask[name]['kernel'].size for name in names)
    assert (int(cell.kept.sum()), int(cell.pruned.sum())) == (kept, total - kept)
    assert len(cell.edges) == 8
  final = [cell for cell in cells if cell.step == 9 and cell.row == 'dense_0/kernel'][0]
  assert final.mean_abs_kept > final.mean_abs_pruned  # magnitude pruning removes the small weights
  agreement = weight_fate.mask_agreement(mask, mask, prunable, [*layers, weight_fate.POOLED])
  assert set(agreement.values()) == {1.0}
  # Two trials pooled: every weight of both, each split by its own mask.
  other = {step: _lenet_params(3 + step) for step in snapshots}
  other_mask = weight_fate.one_shot_mask(other[9], prunable, plan, 0.5)
  pooled = weight_fate.weight_histograms([snapshots, other], [mask, other_mask], prunable, layers, bins=7)
  for cell in pooled:
    name = cell.row.split('/')[0]
    kept = int(mask[name]['kernel'].sum()) + int(other_mask[name]['kernel'].sum())
    assert (int(cell.kept.sum()), int(cell.pruned.sum())) == (kept, 2 * mask[name]['kernel'].size - kept)
  figure = weight_fate.plot_weight_fate(cells, 'title')
  assert len(figure.axes) == 4 * 3
  pruned, kept = figure.axes[0].containers  # row dense_0, step 0: light bars below, dark ones stacked on them
  assert (pruned.get_label(), kept.get_label()) == ('eventually pruned', 'remains')
  np.testing.assert_array_equal(pruned.datavalues, cells[0].pruned)
  np.testing.assert_array_equal(kept.datavalues, cells[0].kept)
  np.testing.assert_array_equal([patch.get_y() for patch in kept.patches], cells[0].pruned)


def test_weight_fate_keeps_the_dense_runs_snapshots_and_reuses_them_for_its_config_only(tmp_path, capsys):
  workdir = str(tmp_path)
  config = helpers.tiny_config()
  dense = weight_fate.dense_run_config(config)
  assert (dense.pruning.levels, dense.branches, dense.trials) == (0, (), config.trials)
  (snapshots,) = weight_fate.train_snapshots(config, [0, 20, 60], workdir)
  assert 'dense runs: test_accuracy' in capsys.readouterr().out
  experiment = experiment_lib.prepare(config)
  init_seed, _ = lth_jax.search.trial_seeds(experiment.spec.seed, 0)
  dense_dir = os.path.join(workdir, weight_fate.DENSE_DIRECTORY)
  final = checkpoints.restore_tree(lth_jax.search.level_directory(dense_dir, 0, 0))['params']
  for step, expected in ((0, experiment.trainer().init_variables(init_seed)[0]), (60, final)):  # W_0 and the end
    for got, want in zip(jax.tree_util.tree_leaves(snapshots[step]), jax.tree_util.tree_leaves(expected)):
      np.testing.assert_array_equal(got, want)
  # Pruning fields only change the mask drawn afterwards: the same dense run, nothing trained.
  redrawn = helpers.tiny_config(pruning__fraction=0.2, pruning__scope='global')
  (again,) = weight_fate.train_snapshots(redrawn, [20, 60], workdir)
  output = capsys.readouterr().out
  assert 'reusing the snapshots' in output and not TRAINING_PROGRESS.search(output)
  for got, want in zip(jax.tree_util.tree_leaves(again[20]), jax.tree_util.tree_leaves(snapshots[20])):
    np.testing.assert_array_equal(got, want)
  # A second trial trains only its own dense run; trial 0's snapshots are the same.
  first, second = weight_fate.train_snapshots(helpers.tiny_config(trials=2), [20, 60], workdir)
  assert TRAINING_PROGRESS.search(capsys.readouterr().out)
  for got, want in zip(jax.tree_util.tree_leaves(first[20]), jax.tree_util.tree_leaves(snapshots[20])):
    np.testing.assert_array_equal(got, want)
  assert not np.array_equal(second[20]['dense_0']['kernel'], first[20]['dense_0']['kernel'])
  with pytest.raises(SystemExit, match=r'kept no weights at step\(s\) 7 \(it kept 0, 20, 60\)'):
    weight_fate.train_snapshots(config, [0, 7], workdir)
  with pytest.raises(SystemExit, match=r'different config(.|\n)*training.learning_rate: 0.003 -> 0.01'):
    weight_fate.train_snapshots(helpers.tiny_config(training__learning_rate=1e-2), [0], workdir)


def _snapshot_leaves(workdir, steps):
  dense_dir = os.path.join(str(workdir), weight_fate.DENSE_DIRECTORY)
  return {
      step: jax.tree_util.tree_leaves(checkpoints.restore_tree(workdir_lib.snapshot_directory(dense_dir, 0, step)))
      for step in steps
  }


@pytest.mark.slow
def test_weight_fate_continues_a_dense_run_stopped_by_sigterm(tmp_path):
  arguments = [
      '--config=configs/default.py',
      '--config.training.num_steps=3000',
      '--config.checkpointing.every_steps=200',
      '--snapshot_steps=0,500,2500',
  ]
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu')
  command = [sys.executable, '-m', 'experiments.weight_fate', *arguments]
  stopped = tmp_path / 'stopped'
  running = workdir_lib.running_directory(str(stopped / weight_fate.DENSE_DIRECTORY), 0, [(0, 'ticket')])
  process = subprocess.Popen(
      [*command, f'--workdir={stopped}'], cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
  )
  deadline = time.time() + 300
  while not (os.path.isdir(running) and any(name.isdigit() for name in os.listdir(running))):
    assert process.poll() is None and time.time() < deadline, process.stdout.read().decode()[-3000:]
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=300)[0].decode()
  assert process.returncode == 1, output[-3000:]
  assert 'stopped at step' in output and 'run the same command again to continue' in output
  assert not (stopped / 'weight_fate.png').exists()

  resumed = subprocess.run(
      [*command, f'--workdir={stopped}'], cwd=REPO, env=environment, capture_output=True, text=True, timeout=600
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming at step' in resumed.stdout + resumed.stderr
  assert not os.path.isdir(running)  # the checkpoints of the run in progress go once it is finished
  whole = subprocess.run(
      [*command, f'--workdir={tmp_path / "whole"}'],
      cwd=REPO,
      env=environment,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert whole.returncode == 0, whole.stderr[-3000:]
  steps = (0, 500, 2500, 3000)
  first, second = _snapshot_leaves(stopped, steps), _snapshot_leaves(tmp_path / 'whole', steps)
  for step in steps:  # the resumed run is the uninterrupted one, bit for bit
    assert len(first[step]) == len(second[step]) > 0
    for got, want in zip(first[step], second[step]):
      np.testing.assert_array_equal(got, want)
  for name in ('weight_fate_histograms.csv', 'weight_fate_summary.csv'):
    assert (stopped / name).read_text() == (tmp_path / 'whole' / name).read_text()


def _read_csv(path):
  with open(path) as file:
    return list(csv.DictReader(file))


def _results(workdir):
  """The results file of every variant of the sweep in `workdir`, by variant name."""
  variants = os.path.join(workdir, 'variants')
  return {
      name: open(os.path.join(variants, name, 'results.jsonl')).read()
      for name in sorted(os.listdir(variants))
      if os.path.isfile(os.path.join(variants, name, 'results.jsonl'))
  }


def _dense_runs(workdir):
  """The dense runs of the sweep in `workdir`: their level-0 records, by folder."""
  dense = os.path.join(workdir, 'dense')
  return {
      name: [json.loads(line) for line in open(os.path.join(dense, name, 'results.jsonl'))]
      for name in sorted(os.listdir(dense))
  }


@pytest.mark.slow
def test_learning_rate_sweep_quick_runs_every_variant_and_resumes(tmp_path):
  completed = _run('experiments.learning_rate_sweep', f'--workdir={tmp_path}', '--quick')
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = _results(tmp_path)
  assert sorted(results) == sorted(learning_rate_sweep.VARIANTS)
  dense = {}
  for name, text in results.items():
    records = [json.loads(line) for line in text.splitlines()]
    assert {(r['branch'], r['level']) for r in records} == {('ticket', 0)} | {
        (branch, level) for branch in ('ticket', 'reinit') for level in range(1, 7)
    }, name
    dense[name] = next(r['test_accuracy'] for r in records if r['level'] == 0)
  # standard and late_reset differ only after level 0: one dense run for both; low_lr and warmup, alone with
  # their level 0, train it in their own folders.
  assert len(_dense_runs(tmp_path)) == 1
  assert dense['standard'] == dense['late_reset']
  starts = {json.loads(text.splitlines()[-1])['start_step'] for text in results.values()}
  assert starts == {0, 33}  # late_reset resets to 1/30 of the 1000 steps
  cells = _read_csv(tmp_path / 'learning_rate_sweep_cells.csv')
  assert {(cell['variant'], cell['branch']) for cell in cells} == {
      (name, branch) for name in learning_rate_sweep.VARIANTS for branch in ('ticket', 'reinit')
  }
  table = _read_csv(tmp_path / 'learning_rate_sweep_table.csv')
  assert [row['variant'] for row in table] == list(learning_rate_sweep.VARIANTS)
  assert (tmp_path / 'learning_rate_sweep.png').stat().st_size > 0

  again = _run('experiments.learning_rate_sweep', f'--workdir={tmp_path}', '--quick')
  assert again.returncode == 0, again.stderr[-3000:]
  assert _results(tmp_path) == results  # nothing trained again
  assert not TRAINING_PROGRESS.search(again.stdout + again.stderr)


@pytest.mark.slow
def test_pruning_mode_sweep_quick_runs_every_variant_and_resumes(tmp_path):
  completed = _run(
      'experiments.pruning_mode_sweep', f'--workdir={tmp_path}', '--quick', '--variants=iterative,one_shot'
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = _results(tmp_path)
  assert sorted(results) == ['iterative', 'one_shot']
  (dense,) = _dense_runs(tmp_path).values()  # the variants differ only after level 0: one dense run
  assert [r['level'] for r in dense] == [0]
  config = json.load(open(tmp_path / 'variants' / 'one_shot' / 'config.json'))
  assert config['pruning']['mode'] == 'one_shot' and config['pruning']['rewind_step'] == 33
  records = {name: [json.loads(line) for line in text.splitlines()] for name, text in results.items()}
  density = {
      name: {r['level']: r['fraction_remaining'] for r in rows if r['branch'] == 'ticket'}
      for name, rows in records.items()
  }
  assert density['iterative'] == pytest.approx(density['one_shot'], abs=0.01)  # the same sparsities, two ways
  table = _read_csv(tmp_path / 'pruning_mode_sweep_table.csv')
  assert [row['variant'] for row in table] == ['iterative', 'one_shot']
  assert (tmp_path / 'pruning_mode_sweep.png').stat().st_size > 0

  again = _run('experiments.pruning_mode_sweep', f'--workdir={tmp_path}', '--quick', '--variants=iterative,one_shot')
  assert again.returncode == 0, again.stderr[-3000:]
  assert _results(tmp_path) == results  # nothing trained again
  assert not TRAINING_PROGRESS.search(again.stdout + again.stderr)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['iterative', 'one_shot'])
def test_turnaround_sweep_quick_tables_and_figure(tmp_path, mode):
  completed = _run(
      'experiments.turnaround_sweep',
      f'--workdir={tmp_path}',
      '--quick',
      f'--mode={mode}',
      '--turnaround_steps=100,1000',
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert sorted(_results(tmp_path)) == ['turnaround_100', 'turnaround_1000']
  assert len(_dense_runs(tmp_path)) == 1  # one dense run, its weights kept at the turnaround step
  configs = {
      name: json.load(open(tmp_path / 'variants' / name / 'config.json'))
      for name in ('turnaround_100', 'turnaround_1000')
  }
  assert configs['turnaround_100']['pruning']['turnaround_step'] == 100
  assert configs['turnaround_1000']['pruning']['turnaround_step'] == 0
  assert {config['pruning']['mode'] for config in configs.values()} == {mode}
  cells = _read_csv(tmp_path / f'turnaround_{mode}_cells.csv')
  table = _read_csv(tmp_path / f'turnaround_{mode}_table.csv')
  assert [row['turnaround_step'] for row in table] == ['100', '1000 (end)']
  dense = {cell['turnaround_step']: float(cell['mean']) for cell in cells if cell['level'] == '0'}
  for cell in cells:
    if cell['level'] != '0':
      assert cell['winning'] == str(int(float(cell['mean']) >= dense[cell['turnaround_step']]))
  for row in table:
    starred = [column for column, value in row.items() if value.endswith('*')]
    assert len(starred) == sum(c['winning'] == '1' for c in cells if c['turnaround_step'] == row['turnaround_step'])
  assert (tmp_path / f'turnaround_{mode}.png').stat().st_size > 0
  again = _run(
      'experiments.turnaround_sweep',
      f'--workdir={tmp_path}',
      '--quick',
      f'--mode={mode}',
      '--turnaround_steps=100,1000',
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert not TRAINING_PROGRESS.search(again.stdout + again.stderr)  # nothing trained again
  assert 'already done' in again.stdout + again.stderr


@pytest.mark.slow
def test_weight_fate_quick_histograms_match_the_mask_and_resume(tmp_path):
  completed = _run('experiments.weight_fate', f'--workdir={tmp_path}', '--quick', '--snapshot_steps=0,100,1000')
  assert completed.returncode == 0, completed.stderr[-3000:]
  histograms = _read_csv(tmp_path / 'weight_fate_histograms.csv')
  counts = {}
  for row in histograms:
    pruned, kept = counts.get((row['step'], row['row']), (0, 0))
    counts[(row['step'], row['row'])] = (pruned + int(row['pruned']), kept + int(row['kept']))
  sizes = {'dense_0/kernel': 40 * 300, 'dense_1/kernel': 300 * 100, 'output/kernel': 100 * 10}
  assert {row for _, row in counts} == set(sizes)
  for (step, row), (pruned, kept) in counts.items():
    assert pruned + kept == sizes[row]
    assert counts[('1000', row)] == (pruned, kept)  # one mask for every step
  summary = _read_csv(tmp_path / 'weight_fate_summary.csv')
  assert {float(row['final_mask_overlap']) for row in summary if row['step'] == '1000'} == {1.0}
  dense_dir = str(tmp_path / weight_fate.DENSE_DIRECTORY)
  snapshot_times = {step: os.path.getmtime(workdir_lib.snapshot_directory(dense_dir, 0, step)) for step in (100, 1000)}
  again = _run(
      'experiments.weight_fate', f'--workdir={tmp_path}', '--quick', '--snapshot_steps=100,1000', '--rows=pooled'
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'reusing the snapshots' in again.stdout and 'dense run' not in again.stdout
  assert not TRAINING_PROGRESS.search(again.stdout + again.stderr)  # nothing trained again
  assert {
      step: os.path.getmtime(workdir_lib.snapshot_directory(dense_dir, 0, step)) for step in (100, 1000)
  } == snapshot_times
  assert {row['row'] for row in _read_csv(tmp_path / 'weight_fate_summary.csv')} == {weight_fate.POOLED}


def test_regenerate_figures_names_every_image_once_and_refuses_unknown_names(tmp_path, capsys):
  from experiments import regenerate_figures

  images = [image for figure in regenerate_figures.FIGURES for _, image in figure.images]
  assert len(images) == len(set(images))
  modules = {command[1] for figure in regenerate_figures.FIGURES for command in figure.commands}
  for module in modules:  # every command is a module of this repository
    assert os.path.isfile(os.path.join(REPO, *module.split('.')) + '.py'), module
  assert regenerate_figures.main(['--only=fig99', f'--output_dir={tmp_path}']) == 2
  assert 'unknown --only fig99' in capsys.readouterr().out
  assert not os.listdir(tmp_path)


def test_save_small_png_shrinks_to_the_width_limit_in_256_colours_keeping_the_resolution(tmp_path):
  from PIL import Image

  from experiments import regenerate_figures

  width = 2 * regenerate_figures.MAX_WIDTH
  source = tmp_path / 'wide.png'
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, width, 3), dtype=np.uint8)).save(
      source, dpi=(300, 300)
  )
  regenerate_figures.save_small_png(source, tmp_path / 'docs' / 'small.png')
  with Image.open(tmp_path / 'docs' / 'small.png') as image:
    assert image.size == (regenerate_figures.MAX_WIDTH, 150) and image.mode == 'P'
    assert image.info['dpi'] == pytest.approx((150, 150), abs=0.5)  # half the pixels per inch, the same inches
  assert sorted(os.listdir(tmp_path / 'docs')) == ['small.png']  # no temporary file left
  narrow = tmp_path / 'narrow.png'
  Image.fromarray(np.zeros((100, 1500, 3), dtype=np.uint8)).save(narrow, dpi=(150, 150))  # a 10-inch figure
  regenerate_figures.save_small_png(narrow, tmp_path / 'docs' / 'narrow.png')
  with Image.open(tmp_path / 'docs' / 'narrow.png') as image:
    assert image.width == 1500 and image.info['dpi'] == pytest.approx((150, 150), abs=0.5)


@pytest.mark.slow
def test_regenerate_figures_runs_a_figure_command_and_writes_its_image(tmp_path):
  completed = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.regenerate_figures',
          '--only=blog',
          f'--workdir={tmp_path / "runs"}',
          f'--output_dir={tmp_path / "figures"}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'figures')) == ['blog.md', 'blog_sum_of_two.png']  # the image and its caption
  assert (tmp_path / 'figures' / 'blog.md').read_text().startswith('**Blog: sum of two.**')
  assert 'captions in' not in completed.stdout  # another output folder: the README is left alone
  assert (tmp_path / 'runs' / 'blog' / 'results.jsonl').stat().st_size > 0
