"""nbdev's processing of every notebook for the docs site, as `nbdev_proc_nbs` does it after its Quarto install (which
would try to download Quarto with sudo and pip-install the package again): the show_doc cells and the cells the docs
execute (exported cells and every cell with an import in it) run, into _proc/. Each notebook is processed on its own,
so every page that cannot be built is reported; exits non-zero if any. Not a pytest test (CI runs it as its own stage).

    python tests/docs_pages.py [nbs/09_train.ipynb ...]     # default: every notebook under nbs/
"""
import os
import shutil
import sys
from pathlib import Path

if __name__ == '__main__':
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import nbdev.doclinks
    import nbdev.serve_drv
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.serve import _proc_file
    cfg = get_config()
    nbs, cache = Path(cfg.nbs_path), cfg.config_path / '_proc'
    nbdev.doclinks._build_modidx()
    files = [Path(a).resolve() for a in sys.argv[1:]] or sorted(nbglob(nbs, func=Path, file_glob='*.ipynb'))
    bad = []
    try:
        for f in files:
            job = _proc_file(f, cache=cache, path=nbs.resolve())
            if job is None: continue
            try: nbdev.serve_drv.main(job)
            except Exception as e: bad.append(f"{f.relative_to(nbs.resolve())}: {str(e).splitlines()[0]}"); print(f"FAILED {f.name}: {e}"[:3000], flush=True)
    finally: shutil.rmtree(cache, ignore_errors=True)
    if bad: sys.exit("docs pages that cannot be built:\n  " + "\n  ".join(bad))
    print(f"docs pages: {len(files)} notebooks processed")
