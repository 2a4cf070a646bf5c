"""Progress lines of the programs that train a level, and their ETA: how a program is named
('trial 0 level 1/3 ticket', 'level 1/3 cohort of 8 (trials 0-3 x ticket, reinit)'), its metrics (over
its members: mean and range), its training speed and the time left."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lth_jax.search.members import Member


def format_duration(seconds: float) -> str:
  """'42s', '3m05s', '2h07m'."""
  seconds = int(round(max(seconds, 0.0)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def estimate_remaining_seconds(
    step: int, end_step: int, eval_every: int, batch_size: int, examples_per_second: float, evaluation_seconds: float
) -> float:
  """Time left in a run at `step`: its remaining steps at the training speed measured so far, plus
  one evaluation (as long as the last) at each evaluation point still ahead (and at the end)."""
  if step >= end_step:
    return 0.0
  training = (end_step - step) * batch_size / examples_per_second if examples_per_second > 0 else 0.0
  evaluations = 1 + (len(range(step - step % eval_every + eval_every, end_step, eval_every)) if eval_every else 0)
  return training + evaluations * evaluation_seconds


def format_speed(examples_per_second: float) -> str:
  """'12,345' for fast runs, '0.731' for slow ones (a ResNet-50 on a CPU)."""
  if examples_per_second >= 100:
    return f'{examples_per_second:,.0f}'
  return f'{examples_per_second:.3g}'


def describe(members: Sequence[Member]) -> str:
  """'trials 0-3 x ticket, reinit' (or the list of members when they are not a full grid)."""
  trials = sorted({member.trial for member in members})
  branches = list(dict.fromkeys(member.branch for member in members))
  if len(trials) * len(branches) == len(members):
    span = (
        f'trial {trials[0]}'
        if len(trials) == 1
        else f'trials {trials[0]}-{trials[-1]}'
        if trials == list(range(trials[0], trials[-1] + 1))
        else 'trials ' + ','.join(map(str, trials))
    )
    return f'{span} x {", ".join(branches)}'
  return ', '.join(member.key for member in members)


def summary(values: Sequence[float]) -> str:
  """'0.8123 [0.7912, 0.8311]': the mean over members and their range (non-finite values counted apart:
  '0.8123 [0.7912, 0.8311], 1 non-finite')."""
  finite = [value for value in values if np.isfinite(value)]
  if not finite:
    return 'nan'
  text = f'{float(np.mean(finite)):.4g} [{min(finite):.4g}, {max(finite):.4g}]'
  return text + (f', {len(values) - len(finite)} non-finite' if len(finite) < len(values) else '')


def label(members: Sequence[Member], levels: int) -> str:
  """How progress lines name a program: 'trial 0 level 1/3 ticket', 'level 1/3 cohort of 8 (trials 0-3 x
  ticket, reinit)', 'level 1/3 cohort of 16 (2 variants x trials 0-3 x ticket, reinit)'."""
  first = members[0]
  if len(members) == 1:
    variant = f' of {first.variant}' if first.variant else ''
    return f'trial {first.trial} level {first.level}/{levels} {first.branch}{variant}'
  variants = list(dict.fromkeys(member.variant for member in members))
  runs = [member for member in members if member.variant == variants[0]]
  if len(variants) == 1:
    return f'level {first.level}/{levels} cohort of {len(members)} ({describe(members)})'
  if len(runs) * len(variants) == len(members):
    return f'level {first.level}/{levels} cohort of {len(members)} ({len(variants)} variants x {describe(runs)})'
  return f'level {first.level}/{levels} cohort of {len(members)} ({len(variants)} variants)'


def metrics_text(entry: dict[str, Any], metric: str, started: Sequence[int]) -> str:
  """The metrics of a population's curve `entry` (one value per member) for its progress line:
  'METRIC=V train_loss=V ' for one run alone; for more, each as its `summary` over the members that have
  started (`started`: their indices)."""
  alone = len(entry[metric]) == 1
  metrics = ''
  for name in (metric, 'train_loss'):
    if name in entry:
      values = [entry[name][index] for index in started]
      metrics += f'{name}={values[0]:.4g} ' if alone else f'{name}={summary(values)} '
  return metrics


def line(
    name: str,
    step: int,
    start_step: int,
    end_step: int,
    eval_every: int,
    batch_size: int,
    speed: float,
    metrics: str,
    evaluation_seconds: float,
) -> str:
  """'NAME: step S/N (P%) METRICS| SPEED examples/s | ETA T': the progress line of the program `name` (from
  `start_step` to `end_step`) at `step`, training `batch_size` examples a step (all its members) at `speed`
  examples/s, its evaluations (every `eval_every` steps) taking `evaluation_seconds`."""
  eta = estimate_remaining_seconds(step, end_step, eval_every, batch_size, speed, evaluation_seconds)
  return (
      f'{name}: step {step}/{end_step} ({100 * (step - start_step) / max(end_step - start_step, 1):.0f}%) '
      f'{metrics}| {format_speed(speed)} examples/s | ETA {format_duration(eta)}'
  )
