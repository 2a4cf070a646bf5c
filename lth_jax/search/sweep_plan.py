"""The plan of a sweep: a base config and axes of values (`{'pruning.rewind_step': (0, 100, 500)}`),
expanded into variants (one per combination of values), and the variants grouped by the dense training
they share: variants that differ only after level 0 (rewind or turnaround point, pruning mode,
fraction, scope or levels, branches) train level 0 once per trial, keeping a snapshot at every rewind
and turnaround step any of them needs."""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import itertools
import json
from typing import Any, Mapping, Sequence

import ml_collections

from lth_jax import config as config_lib
from lth_jax.config import compatibility

SWEEP_SECTION = 'sweep'  # the config's own axes, nested like the config: config.sweep.pruning.rewind_step = (0, 100)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One combination of axis values: ((field, value), ...) in the order of the axes."""

  values: tuple[tuple[str, Any], ...]
  name: str | None = None  # a named variant's name (its values: the fields it changes)

  @property
  def label(self) -> str:
    """The variant's name and folder: its name, or its values by field name, as in
    'pruning.rewind_step=100,training.learning_rate=0.01'."""
    return self.name or ','.join(f'{field}={_format_value(value)}' for field, value in sorted(self.values)) or 'base'

  def as_dict(self) -> dict[str, Any]:
    """{field: value}, as records carry it (tuples as lists, as JSON has them)."""
    return json.loads(json.dumps(dict(self.values)))

  def config(self, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`base` with this variant's values set and no sweep of its own."""
    config = copy.deepcopy(base)
    with config.unlocked():
      if SWEEP_SECTION in config:
        config[SWEEP_SECTION] = ml_collections.ConfigDict()
      for field, value in self.values:
        section, _, name = field.rpartition('.')
        target = config
        for part in filter(None, section.split('.')):
          target = target[part]
        target[name] = value
    return config


def named_variant(name: str, base: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> Variant:
  """The variant `name` whose config is `config`: its values are the fields that differ from `base`."""
  if not name or '/' in name or name.startswith('.'):
    raise config_lib.ConfigError(f'sweep variant {name!r}: a name must be a plain folder name')
  old = compatibility.flatten(config_lib.config_to_json(base))
  new = compatibility.flatten(config_lib.config_to_json(config))
  changed = sorted(field for field in set(old) | set(new) if old.get(field) != new.get(field))
  return Variant(tuple((field, new.get(field)) for field in changed), name)


def _format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ' '.join(_format_value(element) for element in value) + ')'
  return f'{value:g}' if isinstance(value, float) else str(value)


def axes_from_config(config: ml_collections.ConfigDict) -> dict[str, tuple[Any, ...]]:
  """The axes a config's `sweep` section names ({} when it names none)."""
  section = config.get(SWEEP_SECTION)
  if not section:
    return {}
  flat = compatibility.flatten(section.to_dict())
  return {field: tuple(values) if isinstance(values, (tuple, list)) else (values,) for field, values in flat.items()}


def parse_axis(text: str) -> tuple[str, tuple[Any, ...]]:
  """An axis from the command line: 'pruning.rewind_step=0,100,500' (values separated by ';' instead
  when one of them holds a comma, as a tuple does: 'training.decay_boundaries=(100,200);(300,)')."""
  field, separator, values_text = text.partition('=')
  if not separator or not field or not values_text:
    raise config_lib.ConfigError(f'--sweep={text}: give FIELD=VALUE,VALUE,... (for example pruning.rewind_step=0,100)')
  parts = values_text.split(';') if ';' in values_text else values_text.split(',')
  return field.strip(), tuple(_literal(part.strip()) for part in parts)


def _literal(text: str) -> Any:
  """A Python literal (number, bool, tuple, quoted string), or the text itself (a bare word such as one_shot)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def check_axes(base: ml_collections.ConfigDict, axes: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
  """The axes as {field: values}, each field a config field and each value one it can hold; a
  ConfigError naming the field otherwise (before anything trains)."""
  known = compatibility.flatten(config_lib.config_to_json(config_lib.base_config()))
  checked = {}
  for field, values in axes.items():
    if field not in known or field.split('.')[0] == SWEEP_SECTION:
      raise config_lib.ConfigError(f'sweep axis {field}: not a config field (see lth_jax/config/schema.py)')
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not values:
      raise config_lib.ConfigError(f'sweep axis {field}: no values')
    if len({json.dumps(value, sort_keys=True, default=repr) for value in values}) < len(values):
      raise config_lib.ConfigError(f'sweep axis {field}: a value is repeated in {values!r}')
    for value in values:
      try:
        Variant(((field, value),)).config(base)
      except (TypeError, ValueError, KeyError) as error:
        raise config_lib.ConfigError(f'sweep axis {field}: {value!r} is not a value of this field ({error})') from error
    checked[field] = values
  return checked


def variants(axes: Mapping[str, Sequence[Any]]) -> list[Variant]:
  """Every combination of the axes' values, the first axis varying slowest."""
  fields = list(axes)
  return [Variant(tuple(zip(fields, combination))) for combination in itertools.product(*(axes[f] for f in fields))]


def dense_key(spec: config_lib.RunSpec) -> str:
  """A name for the dense training (level 0) of a resolved variant: equal for variants whose level 0
  is the same training with the same records, different otherwise."""
  fields = dataclasses.asdict(spec)
  for unused in ('branches', 'report', 'checkpointing'):
    del fields[unused]
  pruning = fields.pop('pruning')
  fields['prunable'] = (  # the records' densities
      pruning['prunable_parameters'],
      pruning['excluded_layers'],
      pruning['prunable_patterns'],  # a rule given from Python is named here ('python:NAME')
  )
  text = json.dumps(fields, sort_keys=True, default=repr)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def snapshot_steps(specs: Sequence[config_lib.RunSpec]) -> tuple[int, ...]:
  """Every rewind and turnaround step the variants of one dense run need, ascending."""
  return tuple(
      sorted(
          {spec.pruning.rewind_step for spec in specs}
          | {spec.pruning.turnaround_step for spec in specs if spec.pruning.turnaround_step}
      )
  )


def dense_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of a variant's dense run alone: level 0 and no branches; of its pruning section only
  what level 0's records depend on (which parameters are prunable) is kept."""
  dense = copy.deepcopy(config)
  pruning = config_lib.base_config().pruning
  pruning.prunable_parameters = tuple(config.pruning.prunable_parameters)
  pruning.excluded_layers = tuple(config.pruning.excluded_layers)
  pruning.prunable_patterns = tuple(config.pruning.get('prunable_patterns', ()))
  pruning.levels = 0
  with dense.unlocked():
    dense.pruning = pruning
    dense.branches = ()
  return dense
