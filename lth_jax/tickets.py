"""Tickets as artifacts: a finished level's winning ticket out of a workdir, into one portable file.

    ticket = tickets.load(workdir, level=5, trial=0)
    ticket.keep_mask, ticket.start_params, ticket.final_params, ticket.record, ticket.config, ticket.model
    tickets.export(ticket, 'ticket.npz')                  # arrays by parameter path + JSON metadata
    tickets.export(ticket, 'mask.npz', masks_only=True)   # the keep mask alone, for other code
    ticket = tickets.load_exported('ticket.npz')

    python -m lth_jax.tickets export --workdir=DIR --level=L [--trial=T] --out=FILE [--masks_only]

A ticket is the level's keep mask, the weights its surviving connections start from (W_k at the rewind
step, or W_0 when resetting to initialization, times the mask) with the model state at that point, and
the weights it reached at the end of that level. An exported file holds every array under a key
'<part>/<parameter path>' ('keep_mask/dense_0/kernel', 'start_params/...', 'final_params/...',
'start_model_state/...') and a JSON entry '__metadata__' (config, level, trial, density, rewind step,
lth_jax version, and a CRC-32 of every array, checked on load).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import zipfile
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np

from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import results as results_lib
from lth_jax.training import checkpoints
from lth_jax.config.compatibility import CONFIG_FILE
from lth_jax.results import RESULTS_FILE
from lth_jax.version import __version__

METADATA_KEY = '__metadata__'
PARTS = ('keep_mask', 'start_params', 'start_model_state', 'final_params')
FORMAT_VERSION = 1


class TicketError(ValueError):
  """A ticket that cannot be loaded: not an lth_jax workdir, a level or trial that is not there, a
  damaged or foreign file."""


@dataclasses.dataclass
class Ticket:
  """A winning ticket: its mask, where it starts, where it ended, and the run that found it."""

  level: int
  trial: int
  keep_mask: Any  # bool tree mirroring the parameters
  start_params: Any  # the weights the surviving connections start from (masked)
  start_model_state: Any  # the model state at that point (batch-norm statistics), {} when none
  final_params: Any  # the weights at the end of the level's training
  record: dict[str, Any]  # the level's ticket record from results.jsonl
  config: ml_collections.ConfigDict  # the config of the run that found it (as config.json recorded it)
  rewind_step: int  # the step the ticket starts from (0: reset to initialization)

  @property
  def model(self) -> Any:
    """The flax module of the ticket's architecture (output width read from the weights); a TicketError
    for a module that was passed from Python (build it yourself: `ticket.config.model` records its fields)."""
    try:
      return models_lib.build(config_lib.model_spec(self.config), output_width(self.start_params))
    except ValueError as error:
      raise TicketError(str(error)) from None

  def prunable(self) -> Any:
    """The tree of prunable leaves (booleans) of the run that found the ticket: the leaves its record
    counts (any prunable rule, also one given from Python), or its config's rule for older records."""
    counted = self.record.get('layer_density')
    if counted:
      return masks_lib.prunable_named(self.keep_mask, counted)
    return config_lib.pruning_plan(self.config).prunable(self.keep_mask)

  @property
  def density(self) -> float:
    """The fraction of prunable weights the mask keeps."""
    return masks_lib.density(self.keep_mask, self.prunable())

  def layer_density(self) -> dict[str, float]:
    """The kept fraction of each prunable layer."""
    return masks_lib.density_per_layer(self.keep_mask, self.prunable())


def output_width(params: Any) -> int:
  """The number of outputs of a model's parameters (its 'output' layer's kernel; 0 without one, as for
  an imported module class, which sets its own)."""
  if not isinstance(params, dict) or 'kernel' not in params.get('output', {}):
    return 0
  return int(np.shape(params['output']['kernel'])[-1])


def read_workdir_config(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """(config, the resolved values) recorded in WORKDIR/config.json; a TicketError when it is not a workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isdir(workdir):
    raise TicketError(f'{workdir}: no such folder')
  if not os.path.isfile(path) or not os.path.isfile(os.path.join(workdir, RESULTS_FILE)):
    raise TicketError(
        f'{workdir} is not an lth_jax workdir (it has no {CONFIG_FILE} and {RESULTS_FILE}; '
        'tickets are loaded from the --workdir of a lottery run)'
    )
  try:
    with open(path) as file:
      recorded = json.load(file)
  except (OSError, ValueError) as error:
    raise TicketError(f"{path}: cannot read the run's config ({error})") from error
  resolved = recorded.pop('resolved', {})
  return ml_collections.ConfigDict(recorded), resolved


def _finished_levels(records: list[dict[str, Any]], trial: int) -> list[int]:
  return sorted({record['level'] for record in records if record['trial'] == trial and record['branch'] == 'ticket'})


def load(workdir: str, level: int, trial: int = 0) -> Ticket:
  """The ticket that the lottery run in `workdir` found at `level` (0: the dense network) of `trial`.
  Works on finished levels of finished or running experiments; a TicketError names what exists when
  the level or trial does not."""
  config, resolved = read_workdir_config(workdir)
  records = results_lib.read_records(os.path.join(workdir, RESULTS_FILE))
  trials = sorted({record['trial'] for record in records})
  if trial not in trials:
    raise TicketError(
        f'{workdir}: no trial {trial!r} has finished a level (trials with records: '
        f'{", ".join(map(str, trials)) or "none"})'
    )
  record = next(
      (
          record
          for record in records
          if record['trial'] == trial and record['level'] == level and record['branch'] == 'ticket'
      ),
      None,
  )
  if record is None:
    raise TicketError(
        f'{workdir}: level {level!r} of trial {trial} is not finished (finished levels: '
        f'{", ".join(map(str, _finished_levels(records, trial)))})'
    )
  # lth_jax.search.workdir's trial_directory (search, above tickets, cannot be imported here)
  trial_dir = os.path.join(workdir, checkpoints.CHECKPOINTS_DIRECTORY, f'trial_{trial}')
  try:
    level_tree = checkpoints.restore_tree(os.path.join(trial_dir, f'level_{level}'))
    start_params, start_model_state = checkpoints.restore_tree(os.path.join(trial_dir, 'rewind'))
  except (FileNotFoundError, checkpoints.CheckpointError) as error:
    raise TicketError(f'{workdir}: the checkpoints of trial {trial} level {level} cannot be read ({error})') from error
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, bool), level_tree['mask'])
  recorded_step = (resolved.get('pruning') or {}).get('rewind_step')  # absent from older workdirs' config.json
  rewind_step = int(config_lib.pruning_plan(config).rewind_step if recorded_step is None else recorded_step)
  return Ticket(
      level=level,
      trial=trial,
      keep_mask=keep_mask,
      start_params=masks_lib.apply(jax.tree_util.tree_map(np.asarray, start_params), keep_mask),
      start_model_state=jax.tree_util.tree_map(np.asarray, start_model_state or {}),
      final_params=jax.tree_util.tree_map(np.asarray, level_tree['params']),
      record=record,
      config=config,
      rewind_step=rewind_step,
  )


def _flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat[f'{prefix}/{"/".join(masks_lib.path_to_names(path))}'] = np.asarray(leaf)
  return flat


def _unflatten(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for key, value in arrays.items():
    if not key.startswith(prefix + '/'):
      continue
    node = tree
    *parents, name = key[len(prefix) + 1 :].split('/')
    for parent in parents:
      node = node.setdefault(parent, {})
    node[name] = value
  return tree


def export(ticket: Ticket, path: str, masks_only: bool = False) -> str:
  """Writes `ticket` to one .npz file (atomically): every array by '<part>/<parameter path>' and the
  JSON metadata; with `masks_only`, the keep mask alone. Returns the path."""

  arrays = _flatten(ticket.keep_mask, 'keep_mask')
  if not masks_only:
    arrays.update(_flatten(ticket.start_params, 'start_params'))
    arrays.update(_flatten(ticket.start_model_state, 'start_model_state'))
    arrays.update(_flatten(ticket.final_params, 'final_params'))
  metadata = {
      'format': 'lth_jax ticket',
      'format_version': FORMAT_VERSION,
      'lth_jax_version': __version__,
      'masks_only': masks_only,
      'level': ticket.level,
      'trial': ticket.trial,
      'density': ticket.density,
      'layer_density': ticket.layer_density(),
      'rewind_step': ticket.rewind_step,
      'record': ticket.record,
      'config': ticket.config.to_dict(),
      'checksums': {key: checkpoints.leaf_checksum(value) for key, value in arrays.items()},
  }
  metadata_bytes = results_lib.strict_json(metadata, sort_keys=True, default=list).encode('utf-8')
  contents = {**arrays, METADATA_KEY: np.frombuffer(metadata_bytes, np.uint8)}
  buffer = io.BytesIO()
  np.savez(buffer, **contents)  # type: ignore[arg-type]  # numpy's stub takes ** for allow_pickle
  with results_lib.atomic_open(path, 'wb') as file:
    file.write(buffer.getvalue())
  return path


def load_exported(path: str) -> Ticket:
  """Reads a file written by `export` (a masks-only file gives a Ticket whose weights are None);
  a TicketError when it is not such a file or its arrays differ from their checksums."""
  try:
    with np.load(path, allow_pickle=False) as contents:
      arrays = {key: contents[key] for key in contents.files}
  except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as error:
    raise TicketError(f'{path}: not a readable ticket file ({type(error).__name__}: {error})') from error
  if METADATA_KEY not in arrays:
    raise TicketError(f'{path}: not an lth_jax ticket file (no {METADATA_KEY})')
  try:
    metadata = json.loads(arrays.pop(METADATA_KEY).tobytes().decode('utf-8'))
  except ValueError as error:
    raise TicketError(f'{path}: its metadata is damaged ({error})') from error
  if metadata.get('format') != 'lth_jax ticket':
    raise TicketError(f'{path}: not an lth_jax ticket file')
  expected = metadata.get('checksums', {})
  differing = sorted(
      key
      for key in set(expected) | set(arrays)
      if key not in arrays or expected.get(key) != checkpoints.leaf_checksum(arrays[key])
  )
  if differing:
    raise TicketError(
        f'{path}: {len(differing)} array(s) differ from what was exported (checksum mismatch: '
        f'{", ".join(differing[:5])}); the file is damaged'
    )
  parts = {part: _unflatten(arrays, part) for part in PARTS}
  masks_only = bool(metadata.get('masks_only'))
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, bool), parts['keep_mask'])
  return Ticket(
      level=int(metadata['level']),
      trial=int(metadata['trial']),
      keep_mask=keep_mask,
      start_params=None if masks_only else parts['start_params'],
      start_model_state=None if masks_only else parts['start_model_state'],
      final_params=None if masks_only else parts['final_params'],
      record=metadata.get('record', {}),
      config=ml_collections.ConfigDict(metadata['config']),
      rewind_step=int(metadata.get('rewind_step', 0)),
  )


def check_shapes(ticket: Ticket, params: Any, where: str, skip_layers: tuple[str, ...] = ()) -> None:
  """A TicketError naming the first parameter whose shape (or presence) differs between the ticket's
  mask and `params` (another architecture); layers in `skip_layers` are not compared."""
  ticket_shapes = {
      key[len('keep_mask/') :]: value.shape for key, value in _flatten(ticket.keep_mask, 'keep_mask').items()
  }
  target_shapes = {key[len('x/') :]: np.shape(value) for key, value in _flatten(params, 'x').items()}
  for name in sorted(set(ticket_shapes) | set(target_shapes)):
    if name.split('/')[0] in skip_layers:
      continue
    if ticket_shapes.get(name) != target_shapes.get(name):
      raise TicketError(
          f'{where}: the ticket does not fit this model: parameter {name} is '
          f'{ticket_shapes.get(name, "absent")} in the ticket and {target_shapes.get(name, "absent")} '
          f"in the model ({ticket.config.model.name} -> the config's model)"
      )


TRANSFER_STARTS = ('ticket', 'reinit')
OUTPUT_LAYERS = ('dense', 'ticket_density')


def transfer_start(
    ticket: Ticket,
    fresh_params: Any,
    fresh_model_state: Any,
    start: str,
    output_layer: str,
    seed: int,
    where: str = 'transfer.ticket',
) -> tuple[Any, Any, Any]:
  """The (params, model_state, keep_mask) a transferred ticket trains from, for a model whose fresh
  initialization is (`fresh_params`, `fresh_model_state`):

  * start 'ticket': the ticket's own starting weights and model state; 'reinit': the fresh weights under
    the ticket's mask (the control that tells whether the weights or the mask carry the win);
  * an output layer of another shape (another number of classes) cannot transfer: it starts fresh, and
    is trained dense ('dense') or pruned at random to the ticket's output-layer density
    ('ticket_density', drawn from `seed`).

  A TicketError when any other parameter's shape differs (another architecture)."""
  if start not in TRANSFER_STARTS:
    raise TicketError(f'transfer.start={start!r}: must be one of {TRANSFER_STARTS}')
  if output_layer not in OUTPUT_LAYERS:
    raise TicketError(f'transfer.output_layer={output_layer!r}: must be one of {OUTPUT_LAYERS}')
  if start == 'ticket' and ticket.start_params is None:
    raise TicketError(f"{where}: a masks-only ticket has no weights to start from; use transfer.start='reinit'")
  new_output = (
      'output' in fresh_params
      and 'output' in ticket.keep_mask
      and jax.tree_util.tree_map(np.shape, dict(ticket.keep_mask['output']))
      != jax.tree_util.tree_map(np.shape, dict(fresh_params['output']))
  )
  check_shapes(ticket, fresh_params, where, skip_layers=('output',) if new_output else ())
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, bool), dict(ticket.keep_mask))
  params = dict(jax.tree_util.tree_map(np.asarray, ticket.start_params if start == 'ticket' else fresh_params))
  model_state = ticket.start_model_state if start == 'ticket' else fresh_model_state
  if new_output:
    rng = np.random.default_rng(seed)
    output_mask = {}
    for name, fresh in fresh_params['output'].items():
      old = np.asarray(ticket.keep_mask['output'].get(name, np.ones(1, bool)), bool)
      if output_layer == 'ticket_density' and name == 'kernel':
        kept = np.zeros(np.size(fresh), bool)
        kept[rng.choice(np.size(fresh), size=int(round(old.mean() * np.size(fresh))), replace=False)] = True
        output_mask[name] = kept.reshape(np.shape(fresh))
      else:
        output_mask[name] = np.ones(np.shape(fresh), bool)
    keep_mask['output'] = output_mask
    params['output'] = jax.tree_util.tree_map(np.asarray, fresh_params['output'])
  return masks_lib.apply(params, keep_mask), model_state, keep_mask


def _command_line(argv: list[str]) -> int:
  """`python -m lth_jax.tickets export --workdir=DIR --level=L [--trial=T] --out=FILE [--masks_only]`."""
  import argparse  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(prog='python -m lth_jax.tickets', description=__doc__.split('\n\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  exporting = commands.add_parser(
      'export',
      help="write a finished level's ticket to one .npz file",
      description="Writes a finished level's winning ticket to one .npz file: its keep mask, the weights it "
      'starts from and the model state there, the weights it reached, and JSON metadata (config, level, '
      'trial, density, rewind step, a CRC-32 of every array). Read it back with lth_jax.tickets.load_exported, '
      'or train it under another config with --config.transfer.ticket=FILE.',
  )
  exporting.add_argument(
      '--workdir', required=True, help='the --workdir of the lottery run that found the ticket (required)'
  )
  exporting.add_argument(
      '--level', type=int, required=True, help='the pruning level of the ticket, a finished one (required; 0: dense)'
  )
  exporting.add_argument('--trial', type=int, default=0, help='the trial of the ticket (default: 0)')
  exporting.add_argument('--out', required=True, help='the .npz file to write, replaced if it exists (required)')
  exporting.add_argument(
      '--masks_only', action='store_true', help='write the keep mask alone, without weights (a smaller file)'
  )
  arguments = parser.parse_args(argv)
  try:
    ticket = load(arguments.workdir, arguments.level, arguments.trial)
    path = export(ticket, arguments.out, arguments.masks_only)
  except (TicketError, OSError) as error:
    print(f'lth_jax.tickets: {error}', file=sys.stderr)
    return 1
  print(
      f'wrote {path}: trial {ticket.trial} level {ticket.level}, {100 * ticket.density:.3g}% of the weights'
      + (' (masks only)' if arguments.masks_only else '')
  )
  return 0


if __name__ == '__main__':
  sys.exit(_command_line(sys.argv[1:]))
