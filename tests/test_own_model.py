"""Your own model and data: a flax module of the user's (from Python, by import path), data from arrays,
a loss and metrics of the user's, a prunable rule; bad input refused in one line before training."""

import json
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lth_jax
from lth_jax import data as data_lib
from lth_jax import tasks
from lth_jax import tickets
from lth_jax.analysis import mask_overlap
from lth_jax.config import errors
from lth_jax.search import lottery
from lth_jax.training import steps as steps_lib


class TokenMixer(nn.Module):
  """Integer tokens -> embedding, LayerNorm, dropout, batch norm, dense layers: every convention at once."""

  vocabulary: int = 16
  num_classes: int = 3

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    hidden = nn.Embed(self.vocabulary, 8)(tokens).reshape(tokens.shape[0], -1)
    hidden = nn.LayerNorm()(nn.Dense(32)(hidden))
    hidden = nn.Dropout(0.2, deterministic=not train)(nn.relu(hidden))
    hidden = nn.BatchNorm(use_running_average=not train)(hidden)
    return nn.Dense(self.num_classes, name='output')(hidden)


class NoModeArgument(nn.Module):
  """A module without a train argument."""

  width: int = 3

  @nn.compact
  def __call__(self, inputs):
    return nn.Dense(self.width, name='output')(inputs.reshape(inputs.shape[0], -1))


class WithIntegerParameter(nn.Module):

  @nn.compact
  def __call__(self, inputs):
    self.param('kernel_counter', lambda key: jnp.zeros((), jnp.int32))
    return nn.Dense(3, name='output')(inputs.reshape(inputs.shape[0], -1))


def _token_data(num_train=256, num_test=64):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 16, size=(num_train + num_test, 6))
  labels = (tokens.sum(axis=1) % 3).astype(np.int64)
  return data_lib.from_arrays(tokens[:num_train], labels[:num_train], tokens[num_train:], labels[num_train:])


def _config(**overrides):
  config = lth_jax.config.base_config()
  config.training.num_steps, config.training.eval_every, config.training.batch_size = 30, 15, 32
  config.training.eval_batch_size = 64
  config.pruning.levels = 2
  config.checkpointing.tensorboard = False
  for name, value in overrides.items():
    section, field = name.split('__')
    config[section][field] = value
  return config


def _kernels_and_embeddings(path, leaf):
  return path.endswith(('/kernel', '/embedding'))


def test_a_module_of_your_own_on_arrays_runs_levels_controls_and_tickets(tmp_path):
  dataset = _token_data()
  assert dataset.train_inputs.dtype == np.int32  # token ids stay integers for the embedding
  workdir, lines = str(tmp_path / 'work'), []
  task = tasks.Task(loss=tasks.cross_entropy, metrics=(tasks.accuracy(), tasks.top_k_accuracy(2)))
  results = lth_jax.run(
      _config(), workdir, lines.append, model=TokenMixer(), dataset=dataset, task=task,
      prunable=_kernels_and_embeddings,
  )  # fmt: skip
  assert 'python:TokenMixer on python:arrays@' in lines[0] and '8 device(s)' in lines[0]
  assert int(lines[0].split('up to ')[1].split(' run')[0]) > 1  # the level's runs train as a cohort
  assert {(record['level'], record['branch']) for record in results.records} == {
      (0, 'ticket'), (1, 'ticket'), (1, 'reinit'), (2, 'ticket'), (2, 'reinit'),
  }  # fmt: skip
  last = results.select(level=2, branch='ticket')[0]
  assert last['metric'] == 'test_accuracy' and 0.0 <= last['test_top_2_accuracy'] <= 1.0
  assert last['test_top_2_accuracy'] >= last['test_accuracy']
  assert last['layer_density']['Embed_0/embedding'] == pytest.approx(0.8**2, abs=0.01)  # the rule prunes it
  assert 'LayerNorm_0/scale' not in last['layer_density']
  recorded = json.load(open(os.path.join(workdir, 'config.json')))
  assert recorded['model']['name'] == 'python:TokenMixer' and recorded['model']['arguments']['vocabulary'] == 16
  assert recorded['dataset']['name'].startswith('python:arrays@')  # and a hash of the arrays
  assert recorded['task'] == {'loss': 'python:cross_entropy', 'metrics': ['accuracy', 'top_2_accuracy']}
  # The report's mask overlap counts the leaves the rule pruned.
  rows = mask_overlap.overlap_rows(workdir, results.records)
  assert {row['layer'] for row in rows} >= {'Embed_0', 'output'}
  assert all(np.isfinite(row['overlap']) for row in rows)
  # Tickets export and load back, the prunable leaves of the rule counted.
  ticket = tickets.load(workdir, level=2)
  loaded = tickets.load_exported(tickets.export(ticket, str(tmp_path / 'ticket.npz')))
  chex.assert_trees_all_equal(loaded.keep_mask, ticket.keep_mask)
  assert loaded.density == pytest.approx(last['fraction_remaining'])
  with pytest.raises(tickets.TicketError, match='passed from Python; pass it again'):
    _ = loaded.model
  # Resuming needs the same parts; another module is a config change, named.
  again = lth_jax.run(
      _config(), workdir, lambda line: None, model=TokenMixer(), dataset=dataset, task=task,
      prunable=_kernels_and_embeddings,
  )  # fmt: skip
  assert again.records == results.records
  other_labels = data_lib.from_arrays(
      dataset.train_inputs, (dataset.train_targets + 1) % 3, dataset.test_inputs, dataset.test_targets
  )
  with pytest.raises(errors.ConfigError, match=r'dataset.name: "python:arrays@[0-9a-f]+" -> "python:arrays@[0-9a-f]+"'):
    lth_jax.run(
        _config(), workdir, lambda line: None, model=TokenMixer(), dataset=other_labels, task=task,
        prunable=_kernels_and_embeddings,
    )  # fmt: skip
  with pytest.raises(errors.ConfigError, match=r'model.arguments.vocabulary: 16 -> 17'):
    lth_jax.run(
        _config(), workdir, lambda line: None, model=TokenMixer(vocabulary=17), dataset=dataset, task=task,
        prunable=_kernels_and_embeddings,
    )  # fmt: skip
  with pytest.raises(
      errors.ConfigError,
      match=r'dataset.name=.python:arrays@[0-9a-f]{12}.: this dataset was passed from Python; pass it again',
  ):
    lottery.run(lth_jax.config.complete(recorded_config(workdir)), str(tmp_path / 'other'), lambda line: None)


def recorded_config(workdir):
  config, _ = tickets.read_workdir_config(workdir)
  return config


def test_dropout_draws_follow_the_run_seed_and_the_step():
  model = TokenMixer()
  tokens = jnp.asarray(_token_data().train_inputs[:8])
  variables = model.init(jax.random.PRNGKey(0), tokens)
  params, model_state = steps_lib.split_variables(variables)

  def outputs(seed, step):
    rngs = {'dropout': steps_lib.dropout_key(jnp.uint32(seed), jnp.int32(step))}
    return steps_lib.apply_model(model, params, model_state, tokens, train=True, rngs=rngs)[0]

  chex.assert_trees_all_equal(outputs(1, 5), outputs(1, 5))
  assert not np.allclose(outputs(1, 5), outputs(2, 5)) and not np.allclose(outputs(1, 5), outputs(1, 6))


def test_a_module_without_a_train_argument_and_the_default_task(tmp_path):
  results = lth_jax.run(
      _config(pruning__levels=1, pruning__layer_fractions={}),
      str(tmp_path / 'work'),
      lambda line: None,
      model=lambda num_outputs: NoModeArgument(width=num_outputs),  # a builder gets the number of outputs
      dataset=_token_data(),
  )
  assert len(results.records) == 3 and results.records[0]['metric'] == 'test_accuracy'


@pytest.mark.slow  # the README test runs configs/own_model.py too
def test_the_config_file_searches_an_imported_module_in_cohorts_on_eight_devices(tmp_path):
  from configs import own_model as own_model_config  # pylint: disable=import-outside-toplevel

  assert jax.device_count() == 8
  config = own_model_config.get_config()
  config.training.num_steps, config.training.eval_every, config.pruning.levels = 40, 20, 2
  lines = []
  results = lottery.run(config, str(tmp_path / 'work'), lines.append)
  assert 'experiments.own_model:TinyViT on digits_arrays' in lines[0] and '8 device(s)' in lines[0]
  assert int(lines[0].split('up to ')[1].split(' run')[0]) > 1  # runs train side by side, as a cohort
  assert len(results.records) == config.trials * (1 + 2 * 2)
  record = results.records[-1]
  assert 'test_top_3_accuracy' in record and record['higher_is_better'] is True
  assert set(record['layer_density']) >= {'block_0/attention/query/kernel', 'patch_embedding/kernel', 'output/kernel'}
  assert not any(name.startswith('position') or name.endswith(('bias', 'scale')) for name in record['layer_density'])


@pytest.mark.slow  # the README test runs experiments.own_model too
def test_the_example_searches_exports_and_plots(tmp_path):
  from experiments import own_model  # pylint: disable=import-outside-toplevel

  made = own_model.run(str(tmp_path / 'work'), steps=40, levels=3, trials=1, log=lambda line: None)
  assert made['same_mask'] and os.path.getsize(made['plot']) > 10_000
  assert {record['level'] for record in made['results'].records} == {0, 1, 2, 3}
  assert {record['branch'] for record in made['results'].records} == {'ticket', 'reinit'}
  assert made['ticket'].level == 3 and made['ticket'].density == pytest.approx(0.8**3, abs=0.01)


# ------------------------------------------------------------------------------------------------
# Bad input: one line naming the problem, before any training (nothing is written).


def _refused(tmp_path, match, config=None, **parts):
  workdir = tmp_path / 'refused'
  with pytest.raises(errors.ConfigError, match=match) as raised:
    lth_jax.run(config or _config(), str(workdir), lambda line: None, **parts)
  assert '\n' not in str(raised.value)
  assert not workdir.exists()


def test_outputs_that_do_not_fit_the_labels_are_refused(tmp_path):
  _refused(
      tmp_path,
      r'outputs of shape \(2, 7\) .*3 classes need outputs of shape \(batch, 3\)',
      model=NoModeArgument(width=7),
      dataset=_token_data(),
  )


def test_a_prunable_rule_that_selects_nothing_or_no_weight_is_refused(tmp_path):
  _refused(
      tmp_path,
      r'the prunable rule .* selects no leaf of the parameters \(their leaves: output/bias, output/kernel\)',
      model=NoModeArgument(),
      dataset=_token_data(),
      prunable=lambda path, leaf: False,
  )
  _refused(
      tmp_path,
      r'selects kernel_counter, a int32 leaf: only floating-point weights can be pruned',
      model=WithIntegerParameter(),
      dataset=_token_data(),
      prunable=lambda path, leaf: 'kernel' in path,
  )
  _refused(
      tmp_path,
      r"pruning.prunable_patterns=\('\*/embedding',\) selects no leaf",
      config=_config(pruning__prunable_patterns=('*/embedding',)),
      model=NoModeArgument(),
      dataset=_token_data(),
  )


def test_a_loss_that_is_not_a_scalar_and_a_metric_that_is_not_per_example_are_refused(tmp_path):
  per_example = tasks.Task(loss=lambda outputs, labels: jnp.square(outputs).sum(-1), metrics=(tasks.accuracy(),))
  _refused(tmp_path, r'the loss must return one scalar \(the batch mean\), got shape \(2,\)', task=per_example)
  mean_metric = tasks.Metric('mean_correct', lambda outputs, labels: (outputs.argmax(-1) == labels).mean())
  _refused(
      tmp_path,
      r"metric 'mean_correct' must return one value per example, shape \(2,\), got \(\)",
      task=tasks.Task(loss=tasks.cross_entropy, metrics=(mean_metric,)),
  )


def test_names_in_a_config_that_cannot_be_imported_are_refused(tmp_path):
  _refused(
      tmp_path,
      r"model.name='no_such_package.models:Net': cannot import",
      _config(model__name='no_such_package.models:Net'),
  )
  _refused(
      tmp_path,
      r"model.arguments=\{'heads': 3\} do not fit experiments.own_model:TinyViT",
      _config(model__name='experiments.own_model:TinyViT', model__arguments={'heads': 3}),
  )
  _refused(tmp_path, r"task.metrics: unknown metric 'f1'", _config(task__metrics=('accuracy', 'f1')))
  _refused(tmp_path, r'model.name=.*unknown model', _config(model__name='vit'))


def test_top_k_accuracy_and_a_root_mean_metric_on_hand_made_numbers():
  logits = jnp.asarray([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06], [0.2, 0.3, 0.5]])
  labels = jnp.asarray([2, 1, 0])
  chex.assert_trees_all_close(tasks.top_k_accuracy(2).per_example(logits, labels), jnp.asarray([1.0, 0.0, 0.0]))
  chex.assert_trees_all_close(tasks.accuracy().per_example(logits, labels), jnp.asarray([0.0, 0.0, 0.0]))
  regression = tasks.REGRESSION
  sums = regression.sums(jnp.asarray([[1.0], [3.0]]), jnp.asarray([0.0, 3.0]), jnp.asarray([1.0, 1.0]))
  assert regression.summary(sums, 'test')['test_rmse'] == pytest.approx(np.sqrt(0.5))
  with pytest.raises(ValueError, match='names must be distinct'):
    tasks.Task(loss=tasks.cross_entropy, metrics=(tasks.accuracy(), tasks.accuracy()))


@pytest.mark.slow  # tests/test_sweeps.py shares dense runs of the built-in models
def test_a_sweep_over_your_own_model_shares_its_dense_run(tmp_path):
  dataset, workdir, lines = _token_data(), str(tmp_path / 'sweep'), []
  config = _config(pruning__levels=1)
  config.branches = ()
  axes = {'pruning.rewind_step': (0, 10)}
  parts = dict(model=TokenMixer(), dataset=dataset, prunable=_kernels_and_embeddings)
  results = lth_jax.sweep(config, axes, workdir, lines.append, **parts)
  assert any('2 variant(s); 1 dense run(s)' in line for line in lines)
  assert len(results.records) == 4  # two variants, each level 0 (adopted from the one dense run) and level 1
  level_zero = [record for record in results.records if record['level'] == 0]
  assert level_zero[0]['test_accuracy'] == level_zero[1]['test_accuracy']
  assert all('Embed_0/embedding' in record['layer_density'] for record in results.records)
  lines.clear()
  again = lth_jax.sweep(config, axes, workdir, lines.append, **parts)  # resumes: nothing left to train
  assert again.records == results.records and not any('step 30/30' in line for line in lines)


def test_named_variants_of_your_own_model(tmp_path):
  base = _config(pruning__levels=0)
  base.branches = ()
  faster = _config(pruning__levels=0, training__learning_rate=3e-3)
  faster.branches = ()
  results = lth_jax.search.sweep_named(
      base, {'base': base, 'faster': faster}, str(tmp_path / 'named'), lambda line: None,
      model=TokenMixer(), dataset=_token_data(),
  )  # fmt: skip
  assert sorted(str(record['variant'].get('training.learning_rate', 'base')) for record in results.records) == [
      '0.003', 'base'
  ]  # fmt: skip
  recorded = json.load(open(tmp_path / 'named' / 'variants' / 'faster' / 'config.json'))
  assert recorded['model']['name'] == 'python:TokenMixer'


@pytest.mark.slow  # tests/test_stability.py measures the built-in models' tickets
def test_stability_of_a_ticket_of_your_own_model(tmp_path):
  from lth_jax.analysis import stability  # pylint: disable=import-outside-toplevel
  from lth_jax.analysis import ticket_stability  # pylint: disable=import-outside-toplevel

  config = _config(pruning__levels=1, pruning__rewind_step=5)
  parts = dict(model=TokenMixer(), dataset=_token_data(), prunable=_kernels_and_embeddings)
  workdir = str(tmp_path / 'work')
  result, measured = ticket_stability.measure_lottery_ticket_once(
      config, workdir, level=1, measure_steps=(15,), **parts
  )
  assert measured and result.rewind_step == 5 and [entry['step'] for entry in result.curve] == [15, 30]
  assert 0.0 < result.final['ticket']['l2_distance'] and set(result.test_metrics) == set(stability.MEMBERS)
  again, measured = ticket_stability.measure_lottery_ticket_once(config, workdir, level=1, measure_steps=(15,), **parts)
  assert not measured and again == result


def test_linear_mode_connectivity_of_a_ticket_of_your_own_model(tmp_path):
  parts = dict(model=TokenMixer(), dataset=_token_data(), prunable=_kernels_and_embeddings)
  workdir = str(tmp_path / 'work')
  config = _config(pruning__levels=1)
  config.branches = ()
  lth_jax.run(config, workdir, lambda line: None, **parts)
  ticket = tickets.load(workdir, level=1)
  experiment = lth_jax.search.prepare(ticket.config, lth_jax.search.CustomParts(**parts))
  path = lth_jax.analysis.linear_mode_connectivity(
      experiment.trainer(2),
      experiment.trainer(),
      (ticket.start_params, ticket.start_model_state),
      ticket.keep_mask,
      start_step=ticket.rewind_step,
      end_step=experiment.total_steps,
      data_seeds=(1, 2),
      num_points=3,
  )
  assert len(path.errors) == 3 and all(0.0 <= error <= 1.0 for error in path.errors)


def _token_examples(dataset, split):
  inputs, targets = getattr(dataset, f'{split}_inputs'), getattr(dataset, f'{split}_targets')
  return [{'tokens': inputs[index].astype(np.int64), 'label': int(targets[index])} for index in range(len(targets))]


def test_a_streamed_source_trains_on_the_batches_of_the_same_data_in_memory(tmp_path):
  in_memory = _token_data()
  streamed = data_lib.stream_source(
      _token_examples(in_memory, 'train'), _token_examples(in_memory, 'test'), num_classes=3, input_key='tokens'
  )
  assert streamed.input_shape == (6,) and streamed.preprocessing.model_input_dtype == np.int32
  config = _config(pruning__levels=1)
  config.branches = ()
  runs = {}
  for label, dataset in (('memory', in_memory), ('streamed', streamed)):
    runs[label] = lth_jax.run(config, str(tmp_path / label), lambda line: None, model=TokenMixer(), dataset=dataset)
  for memory_record, streamed_record in zip(runs['memory'].records, runs['streamed'].records):
    assert streamed_record['test_accuracy'] == pytest.approx(memory_record['test_accuracy'], abs=1 / 64)
    assert streamed_record['curve'][-1]['train_loss'] == pytest.approx(
        memory_record['curve'][-1]['train_loss'], rel=1e-4
    )
  recorded = json.load(open(tmp_path / 'streamed' / 'config.json'))
  assert recorded['dataset']['name'] == 'python:source'  # a stream is named, not hashed


def test_a_streamed_source_refuses_what_it_cannot_stream():
  examples = [{'image': np.zeros((4,), np.float32), 'label': 1}] * 8
  with pytest.raises(ValueError, match=r'num_classes=None: a streamed source needs num_classes'):
    data_lib.stream_source(examples, examples, num_classes=None)
  other = [{'image': np.zeros((5,), np.float32), 'label': 1}] * 8
  with pytest.raises(ValueError, match=r'train and test inputs differ in the shape of an example: \(4,\) vs \(5,\)'):
    data_lib.stream_source(examples, other, num_classes=2)
  mixed = data_lib.stream_source(examples + other, examples, num_classes=2)
  with pytest.raises(ValueError, match=r"train example 8: input shape \(5,\) differs from example 0's \(4,\)"):
    mixed.train_records[8]
