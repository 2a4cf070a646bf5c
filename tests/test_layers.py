"""The house rules of `lth_jax/`, read from its source: imports point down the layers, nothing imports
inside a function to dodge a cycle, only a package's `__init__` hands on names it did not define, no
function is longer than a screen, and no module is longer than one job needs."""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'lth_jax'

# The layers from the bottom up: a module may import a module of an earlier layer, or of its own package
# (never in a cycle). Each entry is a top-level module or subpackage of lth_jax.
LAYERS = (
    ('version', 'importing'),
    ('data', 'models', 'tasks'),
    ('masks',),
    ('structured',),
    ('pruning', 'optim', 'results'),
    ('init_pruning',),
    ('branches',),
    ('config',),
    ('training',),
    ('tickets',),
    ('search',),
    ('analysis',),
    ('reporting',),
    ('report', 'main'),
    ('',),  # lth_jax/__init__.py
)
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


@dataclasses.dataclass(frozen=True)
class Import:
  module: str  # the importing module, e.g. lth_jax.search.levels
  target: str  # the imported module, e.g. lth_jax.training.trainer
  line: int
  in_function: bool


def module_name(path: pathlib.Path) -> str:
  parts = ('lth_jax',) + path.relative_to(PACKAGE).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


@functools.cache
def modules() -> dict[str, ast.Module]:
  """Every module of lth_jax, parsed (once)."""
  return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob('*.py'))}


def unit(module: str) -> str:
  """The layer entry a module belongs to: its top-level module or subpackage ('' for lth_jax itself)."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else ''


def layer_index(module: str) -> int:
  return next(index for index, names in enumerate(LAYERS) if unit(module) in names)


def imports(known: set[str], module: str, tree: ast.Module) -> list[Import]:
  """Every import of an lth_jax module by `module`, resolved to the module imported."""
  function_nodes = {
      id(inner)
      for node in ast.walk(tree)
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
      for inner in ast.walk(node)
  }
  found = []
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        submodule = f'{node.module}.{alias.name}'
        targets.append(submodule if submodule in known else node.module)
    for target in targets:
      if target in known and target != module:
        found.append(Import(module, target, node.lineno, id(node) in function_nodes))
  return found


def all_imports() -> list[Import]:
  trees = modules()
  return [found for module, tree in trees.items() for found in imports(set(trees), module, tree)]


def test_every_module_has_a_layer():
  for module in modules():
    assert any(unit(module) in names for names in LAYERS), f'{module} is in no layer of LAYERS'


def test_imports_point_down_the_layers():
  upward = [
      f'{found.module}:{found.line} imports {found.target}'
      for found in all_imports()
      if unit(found.module) != unit(found.target) and layer_index(found.target) >= layer_index(found.module)
  ]
  assert not upward, 'imports that do not point down the layers:\n' + '\n'.join(upward)


def test_no_import_inside_a_function():
  inside = [f'{found.module}:{found.line} imports {found.target}' for found in all_imports() if found.in_function]
  assert not inside, 'lth_jax imports inside functions:\n' + '\n'.join(inside)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of the directed graph as a list of nodes, or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 1:
        return path[path.index(target) :] + [target]
      if target not in state and (cycle := visit(target)):
        return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_no_import_cycle():
  graph: dict[str, set[str]] = {}
  for found in all_imports():
    graph.setdefault(found.module, set()).add(found.target)
  cycle = find_cycle(graph)
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle or ())


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def defined_names(tree: ast.Module) -> set[str]:
  """The names a module defines itself (functions, classes, assignments), not the ones it imports."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name))
  return names


def exported_names(tree: ast.Module) -> list[str]:
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '__all__' for t in node.targets):
      return [element.value for element in node.value.elts]  # type: ignore[attr-defined]
  return []


def test_only_a_package_init_hands_names_on():
  re_exports = []
  for module, tree in modules().items():
    path_is_init = module == 'lth_jax' or (PACKAGE / (module.replace('lth_jax.', '', 1).replace('.', '/'))).is_dir()
    if path_is_init:
      continue
    defined = defined_names(tree)
    re_exports += [f'{module} re-exports {name}' for name in exported_names(tree) if name not in defined]
  assert not re_exports, 'modules that hand on names they import:\n' + '\n'.join(re_exports)


def long_functions(tree: ast.Module, limit: int) -> list[tuple[int, str, int]]:
  """(line, name, length) of each function longer than `limit` lines, docstring and inner functions included."""
  return [
      (node.lineno, node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
      for node in ast.walk(tree)
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
  ]


def test_long_functions_are_found():
  tree = ast.parse('def short():\n  return 1\n\n\ndef long():\n' + '  x = 1\n' * 70)
  assert long_functions(tree, MAX_FUNCTION_LINES) == [(5, 'long', 71)]


@pytest.mark.parametrize('module', sorted(modules()))
def test_functions_fit_on_a_screen(module):
  found = long_functions(modules()[module], MAX_FUNCTION_LINES)
  assert not found, '\n'.join(
      f'{module}:{line} {name} is {length} lines (at most {MAX_FUNCTION_LINES})' for line, name, length in found
  )


def module_path(module: str) -> pathlib.Path:
  """The source file of an lth_jax module (its `__init__.py` for a package)."""
  path = PACKAGE.joinpath(*module.split('.')[1:])
  return path / '__init__.py' if path.is_dir() else path.with_suffix('.py')


@pytest.mark.parametrize('module', sorted(modules()))
def test_modules_keep_to_one_job(module):
  lines = len(module_path(module).read_text().splitlines())
  assert lines <= MAX_MODULE_LINES, (
      f'{module} ({module_path(module).relative_to(PACKAGE.parent)}) is {lines} lines (at most {MAX_MODULE_LINES}): '
      'split it by job into modules of their own'
  )
