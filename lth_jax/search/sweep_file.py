"""A sweep's file, WORKDIR/sweep.json: the base config and the axes (or named variants) it records, the
variants read back from it, and the check that a re-run is of the same sweep (other axes, another base
config or a named variant changed are refused; more values on the same axes are welcome)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from lth_jax import config as config_lib
from lth_jax import results as results_lib
from lth_jax.search import sweep_plan
from lth_jax.search.workdir import SWEEP_FILE


def recorded_variants(workdir: str) -> list[sweep_plan.Variant]:
  """The variants of the sweep recorded in `workdir` (a FileNotFoundError when it holds none)."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{workdir} holds no sweep ({SWEEP_FILE} is missing)')
  with open(path) as file:
    recorded = json.load(file)
  if 'named' in recorded:
    return [sweep_plan.Variant(tuple(values.items()), name) for name, values in recorded['named'].items()]
  return sweep_plan.variants({field: tuple(values) for field, values in recorded['axes'].items()})


def check_sweep_file(workdir: str, base: ml_collections.ConfigDict, entry: dict[str, Any]) -> None:
  """Refuses a workdir holding a sweep of other axes (or a named variant changed), or of a base config
  with other results; records this sweep's base config and variants (an earlier run's kept, new ones
  added)."""
  path = os.path.join(workdir, SWEEP_FILE)
  new = {'config': config_lib.config_to_json(base), **entry}
  if os.path.isfile(path):
    with open(path) as file:
      old = json.load(file)
    _check_same_base(workdir, path, old, new)
    _merge_variants(workdir, old, new)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with results_lib.atomic_open(path) as file:
      json.dump(new, file, indent=1, sort_keys=True)


def _check_same_base(workdir: str, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
  """A ConfigError when the recorded base config gives other results than the new one."""
  defaults = config_lib.config_to_json(config_lib.base_config())
  changing, _ = config_lib.config_differences(old['config'], new['config'], defaults)
  if changing:
    raise config_lib.ConfigError(
        f'{workdir} holds a sweep of a different base config ({path}); fields that differ (old -> new):\n  '
        + '\n  '.join(changing)
        + '\nUse the same config or another --workdir.'
    )


def _merge_variants(workdir: str, old: dict[str, Any], new: dict[str, Any]) -> None:
  """Adds the recorded variants to `new` (in place), refusing other axes or a named variant changed."""
  if 'axes' in new:
    if sorted(old.get('axes', ())) != sorted(new['axes']):
      raise config_lib.ConfigError(
          f'{workdir} holds a sweep over {", ".join(old.get("axes", ())) or "named variants"}, not over '
          f'{", ".join(new["axes"]) or "no axis"}; use another --workdir'
      )
    for field, values in old['axes'].items():  # values of an earlier run stay part of the sweep
      new['axes'][field] = values + [value for value in new['axes'][field] if value not in values]
    return
  for name, values in old.get('named', {}).items():
    if name in new['named'] and new['named'][name] != values:
      raise config_lib.ConfigError(
          f'{workdir}: sweep variant {name} changes {new["named"][name]} now, {values} when it was trained; '
          'use another name or another --workdir'
      )
    new['named'].setdefault(name, values)
