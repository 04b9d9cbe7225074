#!/usr/bin/env bash
# The CUDA checks (issue 18) in one command, for a machine with an NVIDIA GPU:
#
#   scripts/gpu_check.sh [OUT_DIR]          (default: runs/gpu-check)
#   GPU_MINUTES=2 CPU_MINUTES=1.5 PYTHON=python3 scripts/gpu_check.sh
#
# 1. the GPU and torch's versions (OUT/gpu.txt);
# 2. the CUDA-against-CPU tests, tests/test_cuda.py (OUT/pytest.log);
# 3. the shipped digit-circle-mt evaluated on 10,000 test images on the GPU (OUT/eval-cuda.json),
#    to compare with its CPU metrics.json;
# 4. the shipped recipe (configs/digit-circle-mt.json) trained from scratch for GPU_MINUTES on
#    the GPU (bf16 autocast) and for CPU_MINUTES on all of the machine's CPU cores: the two
#    histories (OUT/history-cuda.jsonl, OUT/history-cpu.jsonl) give samples per second.
# The project runs from this checkout (PYTHONPATH), so only torch, numpy, scipy, safetensors,
# pillow, typer, tqdm, matplotlib and pytest need to be installed there (torch 2.11 with CUDA
# 13.0 was enough on an H200).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-runs/gpu-check}"
GPU_MINUTES="${GPU_MINUTES:-2}"
CPU_MINUTES="${CPU_MINUTES:-1.5}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import os, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name(0), 'cpu cores', os.cpu_count())"
} 2>&1 | tee "$OUT/gpu.txt"

status=0
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$OUT/pytest.log" || status=1

"$PY" -m sparling_core.cli evaluate checkpoints/digit-circle-mt --device cuda --n 10000 \
    --no-progress --json "$OUT/eval-cuda.json" || status=1

"$PY" -m sparling_core.cli train --config configs/digit-circle-mt.json --device cuda \
    --out "$work/cuda" --max-minutes "$GPU_MINUTES" --no-progress 2>&1 | tail -n 3 || status=1
cp "$work/cuda/history.jsonl" "$OUT/history-cuda.jsonl" || status=1

"$PY" -m sparling_core.cli train --config configs/digit-circle-mt.json --device cpu \
    --threads "$(nproc)" --out "$work/cpu" --max-minutes "$CPU_MINUTES" --no-progress \
    2>&1 | tail -n 3 || status=1
cp "$work/cpu/history.jsonl" "$OUT/history-cpu.jsonl" || status=1
exit "$status"
