"""Checks on the notebooks themselves and on the test set-up (conftest.py, pytest.ini, tests/sanitize.cfg).

The notebooks' cells are run by `pytest` itself (strict nbval, see pytest.ini); these tests check
what nbval does not: notebooks are clean and numbered, README.md is in step with nbs/index.ipynb,
and conftest's nbdev-directive handling works.
"""
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from configparser import ConfigParser
from pathlib import Path

import nbformat
import pytest
from execnb.nbio import nb2str, read_nb
from nbdev.clean import clean_nb
from nbdev.config import get_config
from nbdev.process import extract_directives

from readme import readme_from_index  # tests/readme.py (pytest puts tests/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"


def _notebooks():
    "Notebooks under nbs/, except `_*` files and anything in `_*` / `.*` folders (_proc, checkpoints)."
    return sorted(p for p in NBS.rglob("*.ipynb")
                  if not p.name.startswith("_") and not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts[:-1]))


NOTEBOOKS = _notebooks()
_ids = [str(p.relative_to(NBS)) for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert (NBS / "index.ipynb").exists(), "nbs/index.ipynb is missing (it is the README and the docs' home page)"


# ---------------------------------------------------------------- notebooks are clean
def nbdev_cleaned(path):
    "The text `nbdev_clean` would write for the notebook at `path` (computed in memory, nothing written)."
    cfg = get_config(path=ROOT)
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    # What nbdev.clean._nbdev_clean does, minus the `nbdev_trust` call that would write to disk.
    clean_nb(nb, cfg.clear_all, cfg.get("allowed_metadata_keys").split(),
             cfg.get("allowed_cell_metadata_keys").split(), cfg.clean_ids)
    return nb2str(nb)  # what nbdev.clean.process_write writes


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_clean(path):
    text, clean = path.read_text(encoding="utf-8"), nbdev_cleaned(path)
    if clean == text: return
    diff = list(difflib.unified_diff(text.splitlines(), clean.splitlines(), "on disk", "after nbdev_clean", lineterm="", n=1))
    pytest.fail(f"{path.relative_to(ROOT)} is not clean: run nbdev_clean (then commit the notebook).\n"
                f"First differences ({len(diff)} diff lines):\n" + "\n".join(diff[:25]), pytrace=False)


# ---------------------------------------------------------------- names and modules
_NAME_RE = re.compile(r"^\d{2}_[A-Za-z0-9_]+\.ipynb$")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name != "index.ipynb"],
                         ids=[i for i, p in zip(_ids, NOTEBOOKS) if p.name != "index.ipynb"])
def test_notebook_is_numbered(path):
    assert _NAME_RE.match(path.name), (
        f"{path.relative_to(ROOT)}: notebooks other than index.ipynb are named NN_name.ipynb (two digits, "
        f"reading order), e.g. 01_blocks.ipynb")


def default_exps(path):
    "The `#| default_exp` module names declared in a notebook (nbdev's directive parsing)."
    return [d["default_exp"][0] for c in read_nb(path).cells if c.cell_type == "code"
            for d in [extract_directives(c, remove=False)] if d.get("default_exp")]


def test_default_exp_unique():
    seen = {}
    for p in NOTEBOOKS:
        exps = default_exps(p)
        assert len(exps) <= 1, f"{p.relative_to(ROOT)} declares `#| default_exp` {len(exps)} times: {exps}"
        for e in exps:
            assert e not in seen, f"`#| default_exp {e}` in both {seen[e]} and {p.relative_to(ROOT)}"
            seen[e] = p.relative_to(ROOT)


# ---------------------------------------------------------------- README.md
def test_readme_in_step_with_index():
    index, readme = NBS / "index.ipynb", ROOT / "README.md"
    assert index.exists(), "nbs/index.ipynb is missing"
    assert readme.exists(), "README.md is missing: run python tests/readme.py"
    assert readme.read_text(encoding="utf-8") == readme_from_index(index), (
        "README.md is out of step with nbs/index.ipynb: run python tests/readme.py")


def _code(src, outputs=(), **kw): return nbformat.v4.new_code_cell(src, outputs=list(outputs), **kw)
def _stream(text, name="stdout"): return nbformat.v4.new_output("stream", name=name, text=text)


def test_readme_rules(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# lift_nb\n\n> Layer-wise fine-tuning."),
        nbformat.v4.new_raw_cell("---\ntitle: x\n---"),
        _code("#| hide\nfrom lift_nb.blocks import *"),
        _code("!pip install lift_nb"),
        _code("%%sh\n#| eval: false\nlift-nb --help"),
        _code("#| echo: false\nprint('only output')", [_stream("only output\n")]),
        _code("# | output: false\nx = 1\nx", [nbformat.v4.new_output("execute_result", data={"text/plain": "1"})]),
        _code("1 + 1", [nbformat.v4.new_output("execute_result", data={"text/plain": "2"})]),
        _code("plot()", [nbformat.v4.new_output("display_data", data={"image/png": "iVBO", "text/plain": "<Figure>"})]),
        _code("#|include:false\nsecret()"),
        _code("progress()", [_stream("0%\r50%\r100%\n", "stderr")]),
    ])
    p = tmp_path / "index.ipynb"
    nbformat.write(nb, p)
    body = readme_from_index(p).split("\n", 1)[1]  # after the autogenerated-file header
    assert body == ("\n# lift_nb\n\n> Layer-wise fine-tuning.\n\n"
                    "```sh\npip install lift_nb\n```\n\n"
                    "```sh\nlift-nb --help\n```\n\n"
                    "```\nonly output\n```\n\n"
                    "```python\nx = 1\nx\n```\n\n"
                    "```python\n1 + 1\n```\n\n```\n2\n```\n\n"
                    "```python\nplot()\n```\n\n"
                    "```python\nprogress()\n```\n\n```\n100%\n```\n")


# ---------------------------------------------------------------- settings.ini
def test_tst_flags_space_separated():
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    assert cfg["DEFAULT"]["tst_flags"] == "slow cuda", (
        "settings.ini: tst_flags must be `slow cuda` (nbdev 2 splits on spaces; `slow|cuda` skips nothing)")
    assert get_config(path=ROOT).tst_flags.split() == ["slow", "cuda"]


# ---------------------------------------------------------------- sanitizer
def _sanitize(s):
    from nbval.plugin import get_sanitize_patterns
    for regex, replace in get_sanitize_patterns((ROOT / "tests" / "sanitize.cfg").read_text()):
        s = re.sub(regex, replace, s)
    return s


@pytest.mark.parametrize("a,b", [
    ("100%|##########| 10/10 [00:01<00:00,  9.87it/s]", "100%|##########| 10/10 [00:03<00:00,  3.21it/s]"),
    ("  0%|          | 0/3 [00:00<?, ?it/s, loss=0.693]", "  0%|          | 0/3 [00:02<?, ?it/s, loss=0.693]"),
    ("3/3 [01:02:03<00:00, 1.23s/it]", "3/3 [00:02<00:00,  1.01it/s]"),
    ("step: 0.123 s (12.3 ms per batch)", "step: 1.5 s (1 ms per batch)"),
    ("CPU times: user 1.2 s, sys: 10 ms\nWall time: 345 ms", "CPU times: user 3 s, sys: 7 \u00b5s\nWall time: 1.2 s"),
    ("1.2 s/it, 850.1 samples/s", "2.5s/it, 99 samples/s"),
    ("<lift_nb.Foo at 0x7f3a2c1b9d50>", "<lift_nb.Foo>"),  # nbdev_clean strips ' at 0x..' from stored reprs
    ("buffer 0x7f3a2c1b9d50", "buffer 0x55d0c0ffee00"),
    ("/work/main/.venv/lib/python3.11/site-packages/torch/nn/x.py:12: UserWarning",
     "/home/ci/lift_nb/.venv-ci/lib/python3.12/site-packages/torch/nn/x.py:99: UserWarning"),
    ("saved to /tmp/tmpab12_x9z/config.json", "saved to /tmp/tmp0q9w8e7r/config.json"),
    ("[2026-11-30 10:19:20,708] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU. If you have "
     "GPU or other accelerator, we were unable to detect it.\n0 ['block.3'] optimizer state 101,680 bytes\n",
     "0 ['block.3'] optimizer state 101,680 bytes\n"),  # DeepSpeed installed (CI) or not
])
def test_sanitizer_masks_noise(a, b):
    assert _sanitize(a) == _sanitize(b)


@pytest.mark.parametrize("s", [
    "loss 0.6931", "22.7 M parameters", "90.9 MB", "1234 bytes", "6 blocks, 38 nodes", "lr=1e-05",
    "{'train_loss': 0.6931, 'epoch': 1.0}", "0xff", "torch.Size([16, 64])", "3 steps, 12 s-blocks",
])
def test_sanitizer_keeps_numbers_the_docs_teach(s):
    assert _sanitize(s) == s


def test_sanitizer_keeps_tqdm_postfix():
    bar = "10/10 [00:01<00:00,  9.87it/s, loss=0.693]"
    assert _sanitize(bar) != _sanitize(bar.replace("0.693", "0.694"))


# ---------------------------------------------------------------- conftest's nbdev-directive hook
def _cell(src, text=None, **kw):
    "A code cell as nbdev_clean leaves it: execution_count null, stdout output `text` if given."
    return nbformat.v4.new_code_cell(src, outputs=[_stream(text)] if text else [], execution_count=None, **kw)


HOOK_CELLS = [
    ("ok", _cell("print('hello')", "hello\n")),                                   # Cell 0
    ("cuda", _cell("#| cuda\nran_cuda = True\nraise RuntimeError('no GPU here')")),  # Cell 1
    ("slow", _cell("# |slow\nran_slow = True\n1/0")),                              # Cell 2
    ("evalfalse", _cell("#|eval:false\nran_eval = True\n1/0")),                    # Cell 3
    ("evalfalse2", _cell("#| eval: false\n1/0")),                                  # Cell 4
    ("export", _cell("#| hide\nimport nbdev; nbdev.nbdev_export()")),              # Cell 5
    ("never_ran", _cell("print([n for n in ('ran_cuda', 'ran_slow', 'ran_eval') if n in globals()])", "[]\n")),  # Cell 6
    ("wrong", _cell("print(6 * 7)", "41\n")),                                      # Cell 7
    ("timing", _cell("print('took 0.0123 s at 0x7f3a2c1b9d50')", "took 1.5 s at 0x55d0c0ffee00\n")),  # Cell 8
    ("no_stored_output", _cell("print('surprise')")),                              # Cell 9
    ("flag_not_leading", _cell("x = 1\n#| cuda\nprint(x)", "1\n")),                # Cell 10
    ("offline", _cell("import os; print(os.environ.get('HF_HUB_OFFLINE'))", "1\n")),  # Cell 11
]
EXPECTED = {"ok": "passed", "cuda": "skipped", "slow": "skipped", "evalfalse": "skipped", "evalfalse2": "skipped",
            "export": "skipped", "never_ran": "passed", "wrong": "failed", "timing": "passed",
            "no_stored_output": "failed", "flag_not_leading": "passed", "offline": "passed"}


def _run_pytest_on(tmp_path, cells, *args):
    "Copy the repo's pytest set-up next to a small notebook in tmp_path and run pytest there."
    for f in ["conftest.py", "pytest.ini", "settings.ini", "tests/sanitize.cfg"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / "nbs").mkdir()
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}})
    nbformat.write(nb, tmp_path / "nbs" / "hook.ipynb")
    before = (tmp_path / "nbs" / "hook.ipynb").read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HF_HUB_OFFLINE"))}
    res = subprocess.run([sys.executable, "-m", "pytest", "nbs", "-p", "no:cacheprovider", "-q",
                          f"--junitxml={tmp_path / 'report.xml'}", *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for tc in ET.parse(tmp_path / "report.xml").iter("testcase"):
        kids = {k.tag for k in tc}
        outcomes[int(tc.get("name").split()[-1])] = ("failed" if kids & {"failure", "error"}
                                                     else "skipped" if "skipped" in kids else "passed")
    assert (tmp_path / "nbs" / "hook.ipynb").read_bytes() == before, "the run changed the notebook on disk"
    return res, outcomes


def test_conftest_hook_on_a_cleaned_notebook(tmp_path):
    names = [n for n, _ in HOOK_CELLS]
    cells = [c for _, c in HOOK_CELLS]
    nb = nbformat.v4.new_notebook(cells=cells)
    assert all(c.execution_count is None for c in nb.cells)
    res, outcomes = _run_pytest_on(tmp_path, cells)
    got = {names[i]: o for i, o in outcomes.items()}
    assert got == EXPECTED, res.stdout + res.stderr
    out = res.stdout
    assert "Unrun reference cell has outputs" not in out, out
    assert "nbdev tst_flags `#| cuda`" in out and "nbdev `#| eval: false`" in out, out  # skip reasons (-rs)
    assert res.returncode == 1, out
    # the nbdev_export() cell is skipped: nothing was exported next to the notebook
    assert not (tmp_path / "lift_nb").exists()


def test_conftest_nbdev_flags_option_runs_flagged_cells(tmp_path):
    cells = [_cell("#| slow\nprint('slow ran')", "slow ran\n"), _cell("#| cuda\n1/0")]
    res, outcomes = _run_pytest_on(tmp_path, cells, "--nbdev-flags", "slow")
    assert outcomes == {0: "passed", 1: "skipped"}, res.stdout + res.stderr
    assert res.returncode == 0


def test_conftest_skip_exec_frontmatter_skips_the_notebook(tmp_path):
    cells = [nbformat.v4.new_raw_cell("---\ntitle: x\nskip_exec: true\n---"), _cell("1/0"), _cell("print('x')", "x\n")]
    res, outcomes = _run_pytest_on(tmp_path, cells)
    assert outcomes == {0: "skipped", 1: "skipped"}, res.stdout + res.stderr
    assert res.returncode == 0


def test_cpu_kernel_level_pinned_for_stored_outputs():
    "The suite (and the notebook kernels it starts) runs PyTorch at the AVX2 kernel level on any x86-64 machine (conftest.py)."
    import torch
    if os.environ.get("LIFT_NB_NATIVE_KERNELS"): pytest.skip("LIFT_NB_NATIVE_KERNELS=1: the machine's own kernels")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT"), torch.backends.cpu.get_cpu_capability()
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                       capture_output=True, text=True, env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert r.stdout.strip() == "DEFAULT", r.stdout + r.stderr  # the variable takes effect (checked, not assumed)
