"""Re-run notebooks in place with a real kernel, as a developer does before committing (not a test).

    python tests/execute_nbs.py nbs/02_freeze.ipynb [...]     # then: nbdev_export && nbdev_clean

Cells flagged `#| cuda`, `#| slow` or `#| eval: false` keep their stored outputs (they are real runs from a
machine that could run them); set RUN_SLOW=1 to run the `#| slow` ones too (on a CPU), RUN_CUDA=1 for the `#| cuda`
ones (on a GPU), RUN_ALL=1 for every cell. STORE_ONLY=cuda (or slow) keeps every other cell's stored output, so a run
on another machine (tests/gpu.sh) changes only the cells it was meant for.
CELL_TIMEOUT sets the limit per cell in seconds (default 1800).

The kernel level of PyTorch, oneDNN and MKL is pinned to AVX2 (as conftest.py does for the tests), so the stored
outputs are the same on AVX2-only and AVX-512 machines; set LIFT_NB_NATIVE_KERNELS=1 to use the machine's own.
"""
import os
import sys
import time

# before torch is imported anywhere in this process or the kernels it starts
if not os.environ.get('LIFT_NB_NATIVE_KERNELS'):
    for k, v in (('ATEN_CPU_CAPABILITY', 'avx2'), ('ONEDNN_MAX_CPU_ISA', 'AVX2'), ('MKL_ENABLE_INSTRUCTIONS', 'AVX2')): os.environ.setdefault(k, v)
import nbformat
from nbclient import NotebookClient

os.environ.setdefault('HF_HUB_OFFLINE', '1')
if 'DS_ACCELERATOR' not in os.environ:  # as conftest.py: DeepSpeed (if installed) stays quiet on a machine without a GPU
    import torch
    if not torch.cuda.is_available(): os.environ['DS_ACCELERATOR'] = 'cpu'
ALL = os.environ.get('RUN_ALL')
FLAGS = () if ALL else (('eval: false', 'eval:false') + (() if os.environ.get('RUN_SLOW') else ('slow',))
                        + (() if os.environ.get('RUN_CUDA') else ('cuda',)))
STORE_ONLY = os.environ.get('STORE_ONLY')


def _flags(cell)->set:
    "The flags in the cell's leading `#|` lines."
    out = set()
    for line in cell.source.splitlines():
        s = line.strip()
        if not s.startswith('#|'): break
        out.add(s[2:].strip())
    return out


def _skipped(cell)->bool:
    "Does the cell carry one of the flags in its leading `#|` lines?"
    return bool(_flags(cell) & set(FLAGS))


def execute(path:str):
    "Run the notebook at `path` top to bottom and save it with its outputs (flagged cells untouched)."
    nb = nbformat.read(path, as_version=4)
    stored = nbformat.read(path, as_version=4)
    kept = {i: c for i, c in enumerate(nb.cells) if c.cell_type == 'code' and _skipped(c)}
    for i in kept: nb.cells[i] = nbformat.v4.new_raw_cell('')
    t = time.time()
    NotebookClient(nb, timeout=int(os.environ.get('CELL_TIMEOUT', 1800)), kernel_name='python3', resources={'metadata': {'path': os.path.dirname(path) or '.'}}).execute()
    for i, c in kept.items(): nb.cells[i] = c
    if STORE_ONLY:  # only the cells carrying that flag take the new outputs
        for i, c in enumerate(nb.cells):
            if c.cell_type == 'code' and STORE_ONLY not in _flags(c): nb.cells[i] = stored.cells[i]
    nbformat.write(nb, path)
    print(f'{path}: {time.time() - t:.1f} s')


if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    for p in sys.argv[1:]: execute(p)
