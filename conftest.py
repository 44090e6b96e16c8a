"""Repo-wide pytest configuration: makes strict `--nbval` agree with nbdev 2.

`pytest` from the repo root (options in pytest.ini) runs `tests/` and every notebook under `nbs/`
with strict nbval. Two things nbval does not know about nbdev are settled here, in memory only
(the notebooks on disk stay exactly as `nbdev_clean` leaves them):

1. nbdev directives. A code cell is skipped (marked `skip`, so nbval never sends it to the kernel)
   exactly when `nbdev_test` would not run it (nbdev/test.py, `test_nb._no_eval`):
   - it carries a flag from `tst_flags` in settings.ini (`#| slow`, `#| cuda`), unless the flag is
     forced with `pytest --nbdev-flags "slow"` (the equivalent of `nbdev_test --flags slow`);
   - it carries `#| eval: false` (any spacing nbdev accepts: `#|eval:false`, `# | eval: false`);
   - it calls `nbdev_export(` (nbdev_test never runs those; under nbval they would rewrite lift_nb/);
   - its notebook's frontmatter says `skip_exec: true` (nbdev_test skips the whole notebook).
   Directives are parsed by nbdev's own `extract_directives`, so the syntax is nbdev's: only the
   leading `#|` lines of a cell count, as in nbdev.

2. Execution counts. `nbdev_clean` sets every `execution_count` to null, and nbval 0.11 treats a
   cell with a null count as "unrun": if it has stored outputs the cell fails with
   "Unrun reference cell has outputs" (`IPyNbCell.runtest`, which tests `self.cell.execution_count
   is None`), and if it has none its outputs are never compared. nbval reads each notebook once, in
   `IPyNbFile.collect`, and every `IPyNbCell` item keeps a reference to its cell node. So after
   collection we give every code cell of the in-memory notebook an increasing count (its code-cell
   index + 1). Strict nbval then compares every cell's outputs with the stored ones, including cells
   stored with no output at all.
"""
import os

# Before anything imports torch: one CPU kernel level for every machine the suite runs on. The stored outputs were
# made at this level (tests/execute_nbs.py pins it too), so an AVX-512 machine computes the last digits of a loss as an
# AVX2-only one does (they differ in the fourth decimal otherwise). The notebook kernels inherit it.
# LIFT_NB_NATIVE_KERNELS=1 leaves the machine's own kernels (the outputs may then differ in the last digits).
KERNEL_LEVEL = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
if not os.environ.get("LIFT_NB_NATIVE_KERNELS"):
    for _k, _v in KERNEL_LEVEL.items(): os.environ.setdefault(_k, _v)

# Before anything can import transformers / huggingface_hub: hub ids fail at once instead of after
# 25-45 s of retries. nbval's kernels are subprocesses and inherit this environment.
os.environ["HF_HUB_OFFLINE"] = "1"
# DeepSpeed, where installed (.ci/run installs it), prints a notice into the first cell that imports it on a machine
# without a GPU unless its backend is named; naming the CPU keeps the stored outputs the same with or without it.
if "DS_ACCELERATOR" not in os.environ:
    import torch
    if not torch.cuda.is_available(): os.environ["DS_ACCELERATOR"] = "cpu"

from configparser import ConfigParser
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell

# Never import `nbdev.test.test_nb` here under that name: pytest would collect it as a test.
from nbdev.process import extract_directives, NBProcessor
from nbdev.frontmatter import FrontmatterProc

ROOT = Path(__file__).resolve().parent

# Keep generated and cached copies of notebooks out of collection (also in pytest.ini's norecursedirs).
collect_ignore_glob = ["_proc", "_docs", ".ipynb_checkpoints", ".venv*", "*/_proc", "*/_docs", "*/.ipynb_checkpoints"]


def tst_flags(settings=ROOT / "settings.ini"):
    "The `tst_flags` of settings.ini (space separated, as nbdev 2 reads them)."
    cfg = ConfigParser(delimiters=["="])
    if not cfg.read(settings, encoding="utf-8"): raise FileNotFoundError(f"conftest.py: no {settings}")
    return cfg["DEFAULT"].get("tst_flags", "").split()


def pytest_addoption(parser):
    parser.addoption("--nbdev-flags", default="",
                     help="space separated tst_flags whose cells run anyway (like `nbdev_test --flags`)")


def pytest_configure(config):
    # pytest.ini passes `--nbval-sanitize-with tests/sanitize.cfg`, relative to the root; nbval opens
    # it relative to the cwd. Resolve it against the root when pytest runs from a subfolder.
    san = getattr(config.option, "nbval_sanitize_with", None)
    if san and not Path(san).exists() and (config.rootpath / san).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / san)


def nbdev_skip_reason(cell, flags, lang="python"):
    "Why `nbdev_test` would not run code `cell` (mirrors nbdev.test.test_nb's `_no_eval`), or None."
    if "nbdev_export" + "(" in cell.source: return "nbdev_export() cell (nbdev_test skips it too)"
    direc = extract_directives(cell, remove=False, lang=lang)
    if direc.get("eval:", [""])[0].lower() == "false": return "nbdev `#| eval: false`"
    hit = sorted(set(flags) & direc.keys())
    if hit: return f"nbdev tst_flags `#| {' '.join(hit)}` (run with --nbdev-flags)"
    return None


_skip_exec = {}

def _nb_skip_exec(path):
    "Does the notebook's frontmatter say `skip_exec: true` (nbdev_test then skips it)?"
    if path not in _skip_exec:
        fm = getattr(NBProcessor(path, procs=FrontmatterProc, process=True).nb, "frontmatter_", {}) or {}
        _skip_exec[path] = str(fm.get("skip_exec", False)).lower() in ("true", "1", "yes", "y", "t", "on")
    return _skip_exec[path]


def pytest_collection_modifyitems(session, config, items):
    flags = set(tst_flags()) - set(config.getoption("nbdev_flags").split())
    for item in items:
        if not isinstance(item, IPyNbCell): continue
        cell = item.cell  # the node of the notebook nbval read in IPyNbFile.collect; runtest uses it
        # (2) see the module docstring: what nbdev_clean nulled, numbered again in memory only.
        if cell.execution_count is None: cell.execution_count = item.cell_num + 1
        # (1) nbdev directives: a skip mark makes pytest skip the item in setup, before nbval's
        # runtest could send the cell to the kernel.
        lang = item.parent.nb.metadata.get("kernelspec", {}).get("language", "python")
        reason = "nbdev frontmatter `skip_exec: true`" if _nb_skip_exec(str(item.path)) else nbdev_skip_reason(cell, flags, lang)
        if reason: item.add_marker(pytest.mark.skip(reason=f"Cell {item.cell_num}: {reason}"))
