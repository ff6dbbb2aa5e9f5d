"""benchmarks/: scripts share code through modules that run nothing, never through each
other, and no script takes the name of a jaxseg module."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / 'benchmarks'


def _is_script(path: pathlib.Path) -> bool:
  return "if __name__ == '__main__':" in path.read_text(encoding='utf-8')


def _benchmark_imports(path: pathlib.Path, stems: set[str]) -> set[str]:
  """The benchmarks modules that the file imports: from the package, or by a bare name
  (benchmarks/ first on sys.path, as when a script there runs)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module == 'benchmarks':
      modules = [f'benchmarks.{alias.name}' for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      modules = [node.module]
    else:
      continue
    for module in modules:
      parts = module.split('.')
      if parts[0] == 'benchmarks' and len(parts) > 1:
        names.add(parts[1])
      elif parts[0] in stems:
        names.add(parts[0])
  return names


def test_no_script_imports_another():
  scripts = {p.stem for p in BENCHMARKS.glob('*.py') if _is_script(p)}
  assert {'compare_torch', 'accelerator', 'memory'} <= scripts
  stems = {p.stem for p in BENCHMARKS.glob('*.py')}
  imported = {p.stem: _benchmark_imports(p, stems) & scripts
              for p in BENCHMARKS.rglob('*.py')}
  assert {name: found for name, found in imported.items() if found} == {}


def test_no_benchmark_takes_a_jaxseg_module_name():
  library = {p.stem for p in (ROOT / 'jaxseg').rglob('*.py')}
  assert {p.stem for p in BENCHMARKS.rglob('*.py')} & library == {'__init__'}
