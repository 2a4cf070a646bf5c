"""The error a config check raises, and the small predicates the checks share."""

from __future__ import annotations

import math
import numbers
from typing import Any


class ConfigError(ValueError):
  """A config field holds a value the run cannot use."""


def require(condition: bool, field: str, message: str, value: Any) -> None:
  """Raises ConfigError('field=value: message') unless `condition` holds."""
  if not condition:
    raise ConfigError(f'{field}={value!r}: {message}')


def is_int(value: Any) -> bool:
  """An int that is not a bool."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  """A finite real number (not a bool)."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
