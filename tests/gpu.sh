#!/usr/bin/env bash
# The GPU checks in one call (issue #14): on a machine with a CUDA GPU, from the repo root,
#   bash tests/gpu.sh            # about 5 minutes on one H200
# 1. every `#| cuda` cell of the notebooks runs (the notebooks' other cells run too, for their state, but keep the
#    outputs stored on the CPU machine) and its outputs are stored in the notebook: commit them afterwards, after
#    `nbdev_clean`;
# 2. tests/test_cuda.py: memory prediction within 10% of the CUDA allocator on GPT-2 and LLaMA configs, a bf16
#    training run, the trainer on the GPU end to end.
# Writes a log to $OUT (the device tool's output folder) or ./gpu-run, with the machine it ran on.
# On the device machine (bare, offline): fetch the wheels here first with `bash tests/gpu_wheels.sh`, then
#   run(command='bash tests/gpu.sh', carry=['.whl'])
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -d .whl ]; then  # the packages the device image lacks (tests/gpu_wheels.sh), installed beside it
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" JUPYTER_PATH="/tmp/site/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
fi
python3 -c 'import lift_nb' 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # lift_nb from the tree
export PYTHONUNBUFFERED=1
LOG="${OUT:-gpu-run}"; mkdir -p "$LOG"
python3 - <<'PY'
import torch, sys
if not torch.cuda.is_available(): sys.exit("tests/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False)")
print('GPU:', torch.cuda.get_device_name(0), '| devices:', torch.cuda.device_count(), '| torch', torch.__version__)
PY
export HF_HUB_OFFLINE=1 LIFT_NB_NATIVE_KERNELS=1
nbs=$(grep -l '"#| cuda' nbs/*.ipynb nbs/tutorials/*.ipynb || true)
t0=$(date +%s)
RUN_CUDA=1 STORE_ONLY=cuda CELL_TIMEOUT=420 python3 tests/execute_nbs.py $nbs 2>&1 | tee "$LOG/notebooks.log"
echo "notebooks: $(( $(date +%s) - t0 )) s" | tee -a "$LOG/notebooks.log"
python3 -m pytest tests/test_cuda.py -p no:nbval -o addopts="" -q -rs 2>&1 | tee "$LOG/test_cuda.log"
for nb in $nbs; do mkdir -p "$LOG/$(dirname "$nb")"; cp "$nb" "$LOG/$nb"; done
echo "done in $(( $(date +%s) - t0 )) s; notebooks with new #| cuda outputs: $nbs"
