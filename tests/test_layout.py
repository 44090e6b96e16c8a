"""The house keeps to itself (issue #17): no module of lift_nb imports another's private name, and the modules'
top-level imports of each other form no cycle."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / 'lift_nb'
MODULES = sorted(p for p in ROOT.glob('*.py') if p.name not in ('__init__.py', '_modidx.py'))


def _imports(path:Path, top_only:bool):
    "(module imported from lift_nb, names) for each `from lift_nb.x import ...` / `from .x import ...` in `path`."
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and (node.level == 1 or node.module.startswith('lift_nb.')):
            yield node.module.split('.')[-1], [a.name for a in node.names]


def test_no_module_imports_another_modules_private_names():
    bad = [f"{p.name} imports {n} from {m}" for p in MODULES for m, names in _imports(p, top_only=False)
           for n in names if n.startswith('_') and m != p.stem]
    assert not bad, "; ".join(bad)


def test_no_import_cycle_at_module_level():
    graph = {p.stem: {m for m, _ in _imports(p, top_only=True) if m != p.stem} for p in MODULES}
    def visit(m, path):
        if m in path: raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        for n in graph.get(m, ()): visit(n, path + [m])
    for m in graph: visit(m, [])
