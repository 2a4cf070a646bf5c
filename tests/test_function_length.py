"""Every function of the library fits on a screen: at most 60 lines from its `def` to its last line
(docstring and nested functions included)."""

import ast
import pathlib

MAX_LINES = 60
LIBRARY = pathlib.Path(__file__).resolve().parent.parent / 'lth_jax'


def long_functions(root: pathlib.Path, max_lines: int) -> list[str]:
  """'path:line name (N lines)' of each function under `root` longer than `max_lines`."""
  found = []
  for path in sorted(root.rglob('*.py')):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > max_lines:
          found.append(f'{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)')
  return found


def test_no_function_is_longer_than_a_screen():
  too_long = long_functions(LIBRARY, MAX_LINES)
  assert not too_long, f'functions over {MAX_LINES} lines:\n' + '\n'.join(too_long)


def test_long_functions_counts_from_def_to_last_line(tmp_path):
  package = tmp_path / 'package'
  package.mkdir()
  fits = 'def fits():\n' + ''.join(f'  x{i} = {i}\n' for i in range(MAX_LINES - 1))
  too_long = 'class C:\n\n  def too_long(self):\n' + ''.join(f'    x{i} = {i}\n' for i in range(MAX_LINES))
  (package / 'module.py').write_text(fits + '\n\n' + too_long)
  assert long_functions(package, MAX_LINES) == [f'package/module.py:{MAX_LINES + 5} too_long ({MAX_LINES + 1} lines)']
