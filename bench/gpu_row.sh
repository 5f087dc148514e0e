#!/usr/bin/env bash
# The GPU row of docs/performance.md and the GPU figures of docs/distributed.md, in one short run (about 5
# minutes on one H100, most of it torch.compile). For a lent GPU machine: copy the tree, then
#   bash bench/gpu_row.sh [OUT_DIR]
# It installs what it needs into .venv-gpu if torch cannot see a GPU from the current Python.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-results/gpu}}
mkdir -p "$OUT"
PY=${PY:-python3}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA-enabled torch for $PY" >&2; exit 2
fi
"$PY" -m pip install --quiet -e . >/dev/null 2>&1 || true
J="$OUT/gpu.jsonl"; T="$OUT/gpu.md"; : > "$J"; : > "$T"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
b() { timeout 240 "$PY" bench/bench.py "$@" --device cuda --markdown "$T" | tee -a "$J" || echo "failed: $*" | tee -a "$J"; }
b matmul
b train --crop 256 --iters 20 --warmup 5 --reference_step
b train --crop 256 --iters 20 --warmup 5
b train --crop 256 --iters 20 --warmup 5 --amp --channels_last on
b train --crop 256 --iters 20 --warmup 10 --amp --channels_last on --compile
b testpy --crop 256 --images 50
b testpy --crop 256 --images 50 --amp
echo "written: $J $T"
