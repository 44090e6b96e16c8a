#!/usr/bin/env bash
# Wheels for tests/gpu.sh (issue #14), fetched on this machine, where pip reaches the index: the device machine's image
# has PyTorch, transformers, accelerate and peft but not the notebook runner (nbclient, ipykernel), nbval (conftest.py
# imports it), fastcore (the notebooks' tests) or DeepSpeed (07_distributed), and nothing can be fetched there. The
# wheels go to .whl/ (git-ignored, about 20 MB); the device call carries it: run(command='bash tests/gpu.sh', carry=['.whl']).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl)
python3 -m pip download -q "${PLAT[@]}" nbformat nbclient ipykernel nbval pydantic hjson
python3 -m pip download -q --no-deps "${PLAT[@]}" "fastcore==$(python3 -c 'import fastcore; print(fastcore.__version__)')"
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(python3 -c 'import deepspeed; print(deepspeed.__version__)' 2>/dev/null || echo 0.19.8)"
# what the image has already (one version of each, or pip stops the whole install there)
(cd .whl && rm -f attrs-* coverage-* iniconfig-* packaging-* pluggy-* psutil-* pygments-* pytest-[0-9]* python_dateutil-* typing_extensions-* fastcore-2*)
ls .whl | wc -l; du -sh .whl
