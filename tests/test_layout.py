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


NBS = ROOT.parent / 'nbs'


def _notebook_of()->dict:
    "module -> its notebook's number (the reading order), from each numbered notebook's `#| default_exp`."
    import json, re
    out = {}
    for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'#\| default_exp (\w+)', src)
        if m: out[m.group(1)] = int(nb.name[:2])
    return out


def test_reading_order_is_import_order():
    "Every module-level import of a room points to an earlier notebook (an old name kept in `__getattr__` is not an import)."
    order = _notebook_of()
    assert set(order) == {p.stem for p in MODULES}, (sorted(order), sorted(p.stem for p in MODULES))
    bad = [f"{p.stem} ({order[p.stem]:02d}) imports {m} ({order[m]:02d})" for p in MODULES for m, _ in _imports(p, top_only=True)
           if m in order and order[m] >= order[p.stem] and m != p.stem]
    assert not bad, "; ".join(bad)


def test_fit_step_fits_one_screen():
    "The training step (`LayerwiseTrainer.train_step`) reads in one screen: at most 30 lines, docstring included."
    import inspect
    from lift_nb.train import LayerwiseTrainer
    lines = inspect.getsource(LayerwiseTrainer.train_step).rstrip().split('\n')
    assert len(lines) <= 30, len(lines)


def test_notebooks_stay_short():
    "Every numbered notebook has at most 60 cells: a room that grows past it splits."
    import json
    long = {nb.name: n for nb in NBS.glob('[0-9][0-9]_*.ipynb') if (n := len(json.loads(nb.read_text())['cells'])) > 60}
    assert not long, long


def test_old_names_import_with_a_warning_pointing_to_their_room():
    "The names that moved up the reading order still import from their old room, as the same object, with a DeprecationWarning naming the new one."
    import importlib
    import warnings
    moved = [('freeze', 'trace_backward', 'checker'), ('freeze', 'SavedBytes', 'checker'), ('memory', 'measure_memory', 'train'),
             ('train', 'LiftCallback', 'hf'), ('bench', 'bench_command', 'cli'), ('bench', 'add_bench_args', 'cli')]
    for old, name, new in moved:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            obj = getattr(importlib.import_module(f'lift_nb.{old}'), name)
        assert obj is getattr(importlib.import_module(f'lift_nb.{new}'), name), (old, name)
        assert [str(x.message) for x in w if x.category is DeprecationWarning] == [f"lift_nb.{old}.{name} moved to lift_nb.{new}: import it from there."]


def test_the_trainer_keeps_to_the_loop():
    "LayerwiseTrainer holds the loop; batches, checks, evaluation, the optimizer and reading checkpoints are parts of their own."
    import ast
    tree = ast.parse((ROOT / 'train.py').read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == 'LayerwiseTrainer')
    assert cls.end_lineno - cls.lineno + 1 <= 300, cls.end_lineno - cls.lineno + 1
    from lift_nb.data import EpochBatches, check_examples  # noqa: F401  (the data room's)
    from lift_nb.train import evaluate_model, read_checkpoint, unit_adamw  # noqa: F401
