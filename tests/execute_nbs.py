"""Re-run notebooks in place with a real kernel, as a developer does before committing (not a test).

    python tests/execute_nbs.py nbs/02_freeze.ipynb [...]     # then: nbdev_export && nbdev_clean

Cells flagged `#| cuda`, `#| slow` or `#| eval: false` keep their stored outputs (they are real runs from a
machine that could run them); set RUN_SLOW=1 to run the `#| slow` ones too (on a CPU), RUN_ALL=1 for every cell
(`#| cuda` ones on a GPU).
CELL_TIMEOUT sets the limit per cell in seconds (default 1800).
"""
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

os.environ.setdefault('HF_HUB_OFFLINE', '1')
if 'DS_ACCELERATOR' not in os.environ:  # as conftest.py: DeepSpeed (if installed) stays quiet on a machine without a GPU
    import torch
    if not torch.cuda.is_available(): os.environ['DS_ACCELERATOR'] = 'cpu'
FLAGS = () if os.environ.get('RUN_ALL') else ('cuda', 'eval: false', 'eval:false') + (() if os.environ.get('RUN_SLOW') else ('slow',))


def _skipped(cell)->bool:
    "Does the cell carry one of the flags in its leading `#|` lines?"
    for line in cell.source.splitlines():
        s = line.strip()
        if not s.startswith('#|'): break
        if s[2:].strip() in FLAGS: return True
    return False


def execute(path:str):
    "Run the notebook at `path` top to bottom and save it with its outputs (flagged cells untouched)."
    nb = nbformat.read(path, as_version=4)
    kept = {i: c for i, c in enumerate(nb.cells) if c.cell_type == 'code' and _skipped(c)}
    for i in kept: nb.cells[i] = nbformat.v4.new_raw_cell('')
    t = time.time()
    NotebookClient(nb, timeout=int(os.environ.get('CELL_TIMEOUT', 1800)), kernel_name='python3', resources={'metadata': {'path': os.path.dirname(path) or '.'}}).execute()
    for i, c in kept.items(): nb.cells[i] = c
    nbformat.write(nb, path)
    print(f'{path}: {time.time() - t:.1f} s')


if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    for p in sys.argv[1:]: execute(p)
