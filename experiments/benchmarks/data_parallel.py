"""Data-parallel scaling over simulated CPU devices (trainer_speed's data_parallel figure).

One subprocess worker per device count, each with XLA_FLAGS=--xla_force_host_platform_device_count=N:
Trainer steps/s of LeNet-300-100 at global batch 64, and how far its parameters after 10 steps are from
the 1-device run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib

from experiments.benchmarks.builders import FUSED_STEPS
from experiments.benchmarks.builders import MASK_DENSITY
from experiments.benchmarks.builders import adam_optimizers
from experiments.benchmarks.builders import apply_mask
from experiments.benchmarks.builders import build_model
from experiments.benchmarks.builders import classification_data
from experiments.benchmarks.builders import random_mask
from experiments.benchmarks.builders import random_variables
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import Workers
from experiments.benchmarks.harness import median

PARAM_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure."""

  parallel_steps: int  # steps per timed Trainer.train call in each data-parallel worker
  parallel_reps: int
  device_counts: tuple[int, ...]  # one worker each; the first is the reference for the parameters


def parallel_worker(devices: int, settings: Settings, output: str) -> None:
  """Runs in the subprocess: 10 steps whose parameters are saved for the check, then timed
  Trainer.train calls of `settings.parallel_steps` steps from a fresh state."""
  assert len(jax.devices()) == devices, (jax.devices(), os.environ.get('XLA_FLAGS'))
  batch_size = 64
  model = build_model('lenet', 10)
  dataset = classification_data((784,), num_train=100 * batch_size, num_test=batch_size)
  optimizer, _ = adam_optimizers(1e-3, 10**6)
  params, model_state = random_variables(model, dataset.input_shape, seed=0)
  keep_mask = random_mask(params, MASK_DENSITY, seed=1)
  params = apply_mask(params, keep_mask)
  trainer = trainer_lib.Trainer(
      model, dataset, optimizer, parallel.create_mesh(devices), batch_size, FUSED_STEPS, eval_batch_size=batch_size
  )

  def fresh_state() -> steps.TrainState:  # a run alone: a population of one member
    stacked = (steps.stack_members([tree]) for tree in (params, model_state, keep_mask))
    return jax.block_until_ready(trainer.create_state(*stacked, 0))

  started = time.perf_counter()
  checked = steps.member(parallel.to_host(trainer.train(fresh_state(), 10, data_seed=[0]).state.params), 0)
  first_call_s = time.perf_counter() - started
  flat, _ = jax.tree_util.tree_flatten_with_path(checked)
  np.savez(output + '.npz', **{masks_lib.leaf_name(masks_lib.path_to_names(path)): leaf for path, leaf in flat})

  def measure() -> float:
    state = fresh_state()
    started = time.perf_counter()
    trainer.train(state, settings.parallel_steps, data_seed=[0])
    return (time.perf_counter() - started) / settings.parallel_steps

  times = [measure() for _ in range(settings.parallel_reps)]
  pathlib.Path(output).write_text(json.dumps({'step_seconds': times, 'first_call_s': first_call_s}))


def parallel_figures(report: Report, settings: Settings, workers: Workers) -> bool:
  """Emits one data_parallel line per device count, each from a 'parallel' worker; returns whether every
  device count matched the first one's parameters to PARAM_TOLERANCE."""
  all_match, reference, one_device_step_s = True, None, None
  for devices in settings.device_counts:
    result, output, process_s = workers.run('parallel', devices)
    with np.load(output + '.npz') as loaded:
      params = {name: loaded[name] for name in loaded.files}
    if reference is None:
      reference = params
    max_diff = max(float(np.max(np.abs(params[name] - reference[name]))) for name in reference)
    match = max_diff <= PARAM_TOLERANCE
    all_match &= match
    step_s = median(result['step_seconds'])
    one_device_step_s = one_device_step_s or step_s
    report.emit(
        'data_parallel',
        raw=result,
        devices=devices,
        global_batch=64,
        per_device_batch=64 // devices,
        steps=settings.parallel_steps,
        reps=settings.parallel_reps,
        steps_per_s=1 / step_s,
        step_ms=step_s * 1e3,
        speedup_vs_1=one_device_step_s / step_s,
        max_abs_diff_vs_1=max_diff,
        tolerance=PARAM_TOLERANCE,
        params_match=match,
        first_call_s=result['first_call_s'],
        process_s=process_s,
    )
  return all_match
