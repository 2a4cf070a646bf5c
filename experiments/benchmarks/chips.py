"""Accelerators by their published figures, and the targets `compile_at_scale` compiles for.

A `Chip` holds one JAX device's published peak (dense bfloat16 FLOP/s), memory and memory bandwidth,
with the document the figures come from (per chip: v3 123 TFLOP/s, 32 GiB, 900 GB/s; v4 275, 32 GiB,
1228 GB/s; v5e 197, 16 GiB, 819 GB/s; v5p 459, 95 GiB, 2765 GB/s; v6e 918, 32 GiB, 1640 GB/s; H100 SXM
989 dense, 80 GB, 3.35 TB/s; H200 989, 141 GB, 4.8 TB/s; A100 312, 80 GB, 2.0 TB/s). TPU v3 shows each of a chip's two TensorCores as a device
(half the chip's figures); v4 and v5p fuse them (megacore: one device per chip). `for_device_kind`
finds the chip of an attached device, so any benchmark can print an MFU line beside its measured time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One device's published figures."""

  name: str
  peak_flops: float  # dense bfloat16 FLOP/s of one JAX device
  memory_bytes: int  # HBM of one JAX device
  bandwidth: float  # HBM bytes/s of one JAX device
  devices_per_chip: int
  source: str  # the published document (a page address without its scheme: one token on a figure line)


CHIPS = {
    'v3': Chip('TPU v3', 61.5e12, 16 * GIB, 450e9, 2, 'cloud.google.com/tpu/docs/v3'),
    'v4': Chip('TPU v4', 275e12, 32 * GIB, 1228e9, 1, 'cloud.google.com/tpu/docs/v4'),
    'v5e': Chip('TPU v5e', 197e12, 16 * GIB, 819e9, 1, 'cloud.google.com/tpu/docs/v5e'),
    'v5p': Chip('TPU v5p', 459e12, 95 * GIB, 2765e9, 1, 'cloud.google.com/tpu/docs/v5p'),
    'v6e': Chip('TPU v6e', 918e12, 32 * GIB, 1640e9, 1, 'cloud.google.com/tpu/docs/v6e'),
    'h100': Chip('H100 SXM', 989e12, 80 * 10**9, 3350e9, 1, 'nvidia.com/en-us/data-center/h100'),
    'h200': Chip('H200 SXM', 989e12, 141 * 10**9, 4800e9, 1, 'nvidia.com/en-us/data-center/h200'),
    'a100': Chip('A100 SXM', 312e12, 80 * 10**9, 2039e9, 1, 'nvidia.com/en-us/data-center/a100'),
}

# jax's `device.device_kind` -> the chip (checked by substring, in this order).
_DEVICE_KINDS = (
    ('TPU v3', 'v3'),
    ('TPU v4', 'v4'),
    ('TPU v5 lite', 'v5e'),
    ('TPU v5e', 'v5e'),
    ('TPU v5', 'v5p'),
    ('TPU v6', 'v6e'),
    ('H100', 'h100'),
    ('H200', 'h200'),
    ('A100', 'a100'),
)


@dataclasses.dataclass(frozen=True)
class Target:
  """What `compile_at_scale` compiles for: a TPU topology (libtpu compiles for it without the chips)
  or simulated CPU devices."""

  name: str
  platform: str  # 'tpu' or 'cpu'
  devices: int
  chip: Chip | None  # None: simulated CPU devices (no published peak)
  topology: str = ''  # jax.experimental.topologies' topology_name
  chip_config: str = 'default'  # 'megacore' where one device is a whole chip of two cores
  chips_per_host: tuple[int, int, int] = (2, 2, 1)


TARGETS = {
    target.name: target
    for target in (
        Target('v3-8', 'tpu', 8, CHIPS['v3'], 'v3:2x2', 'default', (2, 2, 1)),
        Target('v4-8', 'tpu', 4, CHIPS['v4'], 'v4:2x2x1', 'megacore', (2, 2, 1)),
        Target('v4-128', 'tpu', 64, CHIPS['v4'], 'v4:4x4x4', 'megacore', (2, 2, 1)),
        Target('v5e-8', 'tpu', 8, CHIPS['v5e'], 'v5e:2x4', 'default', (2, 4, 1)),
        Target('v5e-64', 'tpu', 64, CHIPS['v5e'], 'v5e:8x8', 'default', (2, 2, 1)),
        Target('v5p-8', 'tpu', 4, CHIPS['v5p'], 'v5:2x2x1', 'megacore', (2, 2, 1)),
        Target('v6e-8', 'tpu', 8, CHIPS['v6e'], 'v6e:2x4', 'default', (2, 4, 1)),
        Target('cpu-8', 'cpu', 8, None),
        Target('cpu-64', 'cpu', 64, None),
        Target('cpu-256', 'cpu', 256, None),
    )
}


def target(name: str) -> Target:
  """The target `name`; a ValueError listing the known ones otherwise."""
  if name not in TARGETS:
    raise ValueError(f'unknown target {name!r}; known targets: {", ".join(TARGETS)}')
  return TARGETS[name]


def for_device_kind(device_kind: str) -> Chip | None:
  """The chip of a device whose `device_kind` is this (None: a CPU, or a device with no entry)."""
  for fragment, key in _DEVICE_KINDS:
    if fragment.lower() in device_kind.lower():
      return CHIPS[key]
  return None


def model_flops_utilization(
    flops_per_step: float, step_seconds: float, devices: int, chip: Chip | None
) -> float | None:
  """The share of the devices' published peak that `flops_per_step` (all devices together) in
  `step_seconds` achieves (None without a published peak)."""
  if chip is None or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / (devices * chip.peak_flops)


def mfu_fields(flops_per_step: float | None, step_seconds: float, devices: Sequence[Any]) -> dict[str, Any]:
  """The MFU line's fields for a measured step: the device kind, the step's FLOPs (all devices), the
  achieved TFLOP/s, and their share of the published peak with its source ('n/a' on a CPU or a device
  with no published peak), so a GPU or TPU run prints its measured figure beside `compile_at_scale`'s
  predicted one."""
  kind = devices[0].device_kind if devices else 'unknown'
  chip = for_device_kind(kind)
  fields: dict[str, Any] = {'device_kind': kind.replace(' ', '_')}  # one token on a figure line
  if not flops_per_step:
    return {**fields, 'mfu': 'n/a', 'mfu_peak': 'n/a'}  # no FLOP count
  fields['step_tflop'] = flops_per_step / 1e12
  fields['achieved_tflops'] = flops_per_step / step_seconds / 1e12
  utilization = model_flops_utilization(flops_per_step, step_seconds, len(devices), chip)
  if utilization is None:
    return {**fields, 'mfu': 'n/a', 'mfu_peak': 'n/a'}  # no published peak for this device kind
  assert chip is not None
  return {**fields, 'mfu': utilization, 'mfu_peak': chip.source}


def xla_flops(compiled: Any) -> float | None:
  """XLA's FLOP count of a compiled program (None where the backend gives none)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and analysis.get('flops') else None
