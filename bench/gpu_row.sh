#!/usr/bin/env bash
# Everything we check on a GPU, in one short run (a few minutes on one H100/H200, most of it torch.compile):
#   1. the benchmark rows of docs/performance.md's GPU table (crop 256: the reference's step, ours in fp32, with
#      AMP (NCHW, and NHWC with --channels_last on) and with compile on top; side by side; test.py, 50 + 50 images);
#   2. tests/test_cuda.py (CPU agreement, fp16 loss scaling, NHWC, compile, resume on CUDA);
#   3. the README's commands end to end on CUDA: train.py on the embedded data, --continue_train, test.py, stylize.
# Usage, from anywhere:  bash bench/gpu_row.sh [OUT_DIR]     (PY=python3 by default)
# Works without installing the package (it runs from the checkout); dominate must be importable.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-results/gpu}}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA-enabled torch for $PY" >&2; exit 2
fi
J="$OUT/gpu.jsonl"; T="$OUT/gpu.md"; L="$OUT/gpu_log.txt"; : > "$J"; : > "$T"; : > "$L"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} | tee "$OUT/gpu.txt"
b() {  # one benchmark row: its JSON line to gpu.jsonl, its table row to gpu.md
  local limit=$1; shift
  echo "== bench $*" >> "$L"
  timeout "$limit" "$PY" bench/bench.py "$@" --device cuda --markdown "$T" 2>>"$L" | tee -a "$J" \
    || echo "{\"failed\": \"$*\"}" | tee -a "$J"
}
step() {  # one end-to-end command, its output to the log
  local name=$1; shift
  echo "== $name: $*" >> "$L"
  if timeout 150 "$@" >> "$L" 2>&1; then echo "ok: $name"; else echo "FAILED: $name (see gpu_log.txt)"; fi
}

b 60 matmul
b 90 train --crop 256 --iters 30 --warmup 10 --reference_step --flops
b 90 train --crop 256 --iters 30 --warmup 10 --flops
b 90 train --crop 256 --iters 30 --warmup 10 --cudnn_benchmark off
b 90 train --crop 256 --iters 30 --warmup 10 --amp --flops
b 90 train --crop 256 --iters 30 --warmup 10 --amp --channels_last on
b 90 compare --crop 256 --iters 30 --warmup 10
b 90 compare --crop 256 --iters 30 --warmup 10 --amp
b 120 testpy --crop 256 --images 50 --reference_step
b 120 testpy --crop 256 --images 50
b 120 testpy --crop 256 --images 50 --amp
b 240 train --crop 256 --iters 30 --warmup 10 --amp --compile

echo "== pytest tests/test_cuda.py" >> "$L"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee -a "$L"

E=$(mktemp -d)
step train "$PY" train.py --dataroot datasets/photo2guohua --name e2e --checkpoints_dir "$E/ckpt" --gpu_ids 0 \
  --amp --max_dataset_size 40 --n_epochs 1 --n_epochs_decay 1 --display_id 0
step resume "$PY" train.py --dataroot datasets/photo2guohua --name e2e --checkpoints_dir "$E/ckpt" --gpu_ids 0 \
  --amp --max_dataset_size 40 --n_epochs 2 --n_epochs_decay 1 --display_id 0 --continue_train
step test "$PY" test.py --dataroot datasets/photo2guohua --name e2e --checkpoints_dir "$E/ckpt" \
  --results_dir "$E/results" --gpu_ids 0 --amp
step stylize "$PY" -c "import sys; from cyclegan_culture.cli import main; sys.argv[0] = 'cyclegan-culture'; sys.exit(main())" \
  stylize --model "$E/ckpt/e2e" --output "$E/stylized" --gpu_ids 0 --tile 256 datasets/photo2guohua/testA
echo "end to end: $(ls "$E/results/e2e/test_latest/images" 2>/dev/null | wc -l) test images," \
  "$(find "$E/stylized" -type f 2>/dev/null | wc -l) stylized" | tee -a "$L"

echo "written: $J $T $L"
