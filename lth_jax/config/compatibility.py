"""Whether a workdir's recorded config and a new one give the same results: the config as JSON, and
the differences between two configs split into those that change recorded numbers and the rest."""

from __future__ import annotations

import json
from typing import Any, Mapping

import ml_collections

from lth_jax.config.errors import ConfigError


class WorkdirError(ConfigError):
  """The workdir cannot hold the run (a file, not writable)."""


# Fields that never change a recorded number of the (level, branch, trial) runs already in a workdir,
# so a re-run may change them freely: where checkpoints go and how often, what is printed, how many
# trials there are (trial t's seeds depend only on `seed` and t), and where the dataset files are read
# from. `pruning.levels` and `pruning.target_density` only say where to stop while `pruning.fraction`
# is set (and unchanged); they are exempt then. Every other field (also `training.eval_every`, which
# sets the recorded curve, and `training.steps_per_dispatch`, `training.eval_batch_size` and
# `parallel.num_devices`, which change the last bits of the floating-point results) must match.
CONFIG_FILE = 'config.json'  # a workdir's recorded config, compared with the config of every re-run
RESULT_NEUTRAL_FIELDS = ('checkpointing', 'report', 'trials', 'dataset.data_dir')
STOPPING_FIELDS = ('pruning.levels', 'pruning.target_density')
_ABSENT = '(absent)'


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values (tuples become lists; anything else unusual becomes its repr)."""
  return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=repr))


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """A nested JSON dict as {'section.field': value}."""
  fields = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping) and value:
      fields.update(flatten(value, f'{name}.'))
    else:
      fields[name] = value
  return fields


def _neutral(field: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
  if any(field == name or field.startswith(f'{name}.') for name in RESULT_NEUTRAL_FIELDS):
    return True
  return (
      field in STOPPING_FIELDS
      and old.get('pruning.fraction') is not None
      and old.get('pruning.fraction') == new.get('pruning.fraction')
  )


# Fields added to the schema after configs were recorded without them, whose behaviour before them is
# not their default: the value a config.json without the field ran with.
FORMER_VALUES = {'parallel.members_per_program': 1}  # one run at a time, as before cohorts


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
  """Compares two configs given as JSON dicts (see `config_to_json`).

  Returns (differences that change results, other differences), each as 'field: old -> new' lines.
  A field missing from `old` whose new value keeps the old behaviour (a field added to the schema after
  `old` was written, at its value in `FORMER_VALUES`, else its default in `defaults`) is no difference; nor is a
  'resolved.*' value (derived from the config, the devices and the data) that `old` did not record.
  """
  old_fields, new_fields = flatten(old), flatten(new)
  default_fields = flatten(defaults) if defaults is not None else {}
  changing: list[str] = []
  neutral: list[str] = []
  for field in sorted(set(old_fields) | set(new_fields)):
    old_value, new_value = old_fields.get(field, _ABSENT), new_fields.get(field, _ABSENT)
    if old_value == new_value:
      continue
    former = FORMER_VALUES.get(field, default_fields.get(field, _ABSENT))
    if field not in old_fields and former is not _ABSENT and former == new_value:
      continue
    if field.startswith('resolved.') and (field not in old_fields or field not in new_fields):
      continue
    line = (
        f'{field}: {json.dumps(old_value) if old_value is not _ABSENT else _ABSENT} -> '
        f'{json.dumps(new_value) if new_value is not _ABSENT else _ABSENT}'
    )
    (neutral if _neutral(field, old_fields, new_fields) else changing).append(line)
  return changing, neutral
