#!/usr/bin/env bash
# The measurements behind docs/performance.md. Run on an otherwise idle machine (about 50 minutes on 2 cores):
#   bash bench/run_all.sh [OUT_DIR]
# Writes OUT_DIR/results.jsonl and OUT_DIR/table.md (default OUT_DIR: results/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-results/bench}
mkdir -p "$OUT"
J="$OUT/results.jsonl"; T="$OUT/table.md"
: > "$J"
echo "| what | step | crop | batch | precision | channels_last | compile | s/it median (q1-q3) | it/s or speedup | GFLOP/s | peak RSS MB |" > "$T"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" >> "$T"
b() { "$PY" bench/bench.py "$@" --markdown "$T" | tee -a "$J"; }

b matmul
# side by side with the reference's step, alternating iterations in one process
b compare --crop 128 --iters 8
b compare --crop 128 --iters 8 --amp
b compare --crop 256 --iters 5 --warmup 1
b compare --crop 256 --iters 5 --warmup 1 --conv_algorithm direct
b compare --crop 256 --iters 5 --warmup 1 --amp
# one configuration per process: peak memory and achieved GFLOP/s
b train --crop 128 --reference_step --flops --iters 5
b train --crop 128 --flops --iters 5
b train --crop 128 --flops --iters 5 --amp
b train --crop 256 --reference_step --flops --iters 4 --warmup 1
b train --crop 256 --flops --iters 4 --warmup 1
b train --crop 256 --flops --iters 4 --warmup 1 --amp
b train --crop 512 --flops --iters 3 --warmup 1 --amp
b train --crop 128 --flops --iters 4 --amp --batch_size 2
b train --crop 128 --flops --iters 3 --amp --batch_size 4
b train --crop 128 --iters 5 --compile
b train --crop 128 --iters 5 --amp --compile
# the CPU preset's network
b train --crop 128 --netG resnet_6blocks --ngf 32 --ndf 32 --iters 8
b train --crop 128 --netG resnet_6blocks --ngf 32 --ndf 32 --iters 8 --amp
# inference: generator alone, and the whole test.py process on 50 + 50 images at 256x256
b infer --crop 256 --iters 5
b infer --crop 256 --iters 5 --conv_algorithm direct
b infer --crop 256 --iters 5 --amp
b testpy --crop 256 --images 50
b testpy --crop 256 --images 50 --conv_algorithm direct
b testpy --crop 256 --images 50 --amp
b testpy --crop 256 --images 50 --reference_step
"$PY" bench/winograd_conv.py | tee -a "$J"
"$PY" bench/winograd_conv.py --channels_last --shapes 256x64x64 256x32x32 256x24x24 256x16x16 128x64x64 128x32x32 64x64x64 | tee -a "$J"
"$PY" bench/step_parts.py | tee -a "$J"
"$PY" bench/memory_soak.py --iters 5000 | tee -a "$J"
echo "table: $T"
