"""Objects named in a config by import path, 'package.module:name' (a model class, a loss, a metric)."""

from __future__ import annotations

import importlib
from typing import Any

PYTHON_PREFIX = 'python:'  # how config.json records a part passed from Python, e.g. 'python:ViT'


def is_import_path(name: Any) -> bool:
  """Whether `name` is written as an import path 'package.module:name'."""
  if not isinstance(name, str) or name.startswith(PYTHON_PREFIX):
    return False
  module, separator, attribute = name.partition(':')
  return bool(separator and module and attribute)


def import_object(path: str, field: str) -> Any:
  """The object at import path `path` ('package.module:name', dotted names allowed after the colon); a
  ValueError naming the config `field` when it cannot be imported or is not there."""
  if not is_import_path(path):
    raise ValueError(f"{field}={path!r}: an import path is written 'package.module:name'")
  module_name, _, attribute = path.partition(':')
  try:
    value: Any = importlib.import_module(module_name)
  except ImportError as error:
    raise ValueError(f'{field}={path!r}: cannot import {module_name} ({error})') from None
  for part in attribute.split('.'):
    if not hasattr(value, part):
      raise ValueError(f'{field}={path!r}: {module_name} has no {attribute}')
    value = getattr(value, part)
  return value
