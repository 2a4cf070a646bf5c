"""Where a search's time goes: compiled programs against the host, and how many programs and dispatches.

`DispatchProfile` patches the library while its block runs. It counts the Trainers built (each one set
of compiled programs, by population size), the train programs that ran and their dispatches. With
`synchronous=True` it also waits for every dispatch, so that each one's time is that of its compiled
program (waiting serializes host and device work, so the profiled run is a little slower than a free one).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from typing import Any, Iterator

import jax

from lth_jax.training import placement as placement_lib
from lth_jax.training import train_loop
from lth_jax.training import trainer as trainer_lib


@dataclasses.dataclass
class DispatchProfile:
  """What the patched library did while `DispatchProfile.recording` ran (see the module docstring)."""

  synchronous: bool = False
  population_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  train_programs: set[int] = dataclasses.field(default_factory=set)  # ids of the train programs that ran
  dispatches: int = 0
  member_steps: int = 0  # steps times members, over every dispatch
  items_s: float = 0.0  # host: building and sending the dispatches' items
  train_s: float = 0.0  # the dispatches after their items (synchronous: the compiled train programs)
  evaluation_s: float = 0.0  # evaluations (they wait for their results)
  wall_s: float = 0.0

  @contextlib.contextmanager
  def recording(self) -> Iterator[DispatchProfile]:
    """Patches Trainer construction, dispatches, items and evaluation while the block runs."""
    profile = self
    originals = (trainer_lib.Trainer.__init__, train_loop.TrainLoop.dispatch)
    original_items, original_evaluate = placement_lib.Placement.items, placement_lib.Placement.evaluate

    def init(trainer: Any, *args: Any, **kwargs: Any) -> None:
      originals[0](trainer, *args, **kwargs)
      profile.population_sizes[trainer.population_size] += 1

    def dispatch(loop: Any, seeds: list[int], chunk: int) -> None:
      started, items_before = time.perf_counter(), profile.items_s
      originals[1](loop, seeds, chunk)
      if profile.synchronous:
        jax.block_until_ready(loop.state.params)
      profile.train_s += time.perf_counter() - started - (profile.items_s - items_before)
      profile.train_programs.add(id(loop.placement.programs.train_chunk))
      profile.dispatches += 1
      profile.member_steps += chunk * loop.placement.population_size

    def items(placement: Any, *args: Any) -> Any:
      started = time.perf_counter()
      try:
        return original_items(placement, *args)
      finally:
        profile.items_s += time.perf_counter() - started

    def evaluate(placement: Any, state: Any) -> Any:
      started = time.perf_counter()
      try:
        return original_evaluate(placement, state)
      finally:
        profile.evaluation_s += time.perf_counter() - started

    trainer_lib.Trainer.__init__ = init  # type: ignore[method-assign]
    train_loop.TrainLoop.dispatch = dispatch  # type: ignore[method-assign]
    placement_lib.Placement.items = items  # type: ignore[method-assign]
    placement_lib.Placement.evaluate = evaluate  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
      yield self
    finally:
      self.wall_s += time.perf_counter() - started
      trainer_lib.Trainer.__init__, train_loop.TrainLoop.dispatch = originals  # type: ignore[method-assign]
      placement_lib.Placement.items = original_items  # type: ignore[method-assign]
      placement_lib.Placement.evaluate = original_evaluate  # type: ignore[method-assign]

  def fields(self) -> dict[str, Any]:
    """The profile as figure fields: counts, seconds and the share of the wall time in compiled programs."""
    compiled = self.train_s + self.evaluation_s
    counts = ','.join(f'{size}x{count}' for size, count in sorted(self.population_sizes.items())) or 'none'
    fields: dict[str, Any] = {
        'trainers': counts,  # population size x Trainers of that size built
        'train_programs': len(self.train_programs),
        'dispatches': self.dispatches,
        'member_steps': self.member_steps,
    }
    if self.synchronous:
      fields.update(
          wall_s=self.wall_s,
          train_programs_s=self.train_s,
          evaluation_s=self.evaluation_s,
          items_s=self.items_s,
          host_s=self.wall_s - compiled,
          compiled_share=compiled / self.wall_s if self.wall_s else float('nan'),
      )
    return fields
