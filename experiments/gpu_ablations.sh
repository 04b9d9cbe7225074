#!/usr/bin/env bash
# Rows of experiments/ablations.py's fast recipe on one lent GPU, side by side on the one GPU
# (fp32, 2 threads each, 199,744 samples per row: the MT and ST rows' budget), every row
# evaluated on the 10,000 test images:
#
#   experiments/gpu_ablations.sh OUT_DIR [VARIANTS:SEEDS ...]
#
# Each VARIANTS:SEEDS group (comma-separated variants and seeds) is one ablations.py call;
# all groups run at once. The default is what ran on 2026-11-27 (H200, 448 s for all six,
# 99% GPU utilisation, so about 3,100 samples/s in all: six rows take 7-8 minutes with
# their evaluations):
#
#   no-presence,st-no-presence:1,2   (does the presence loss do ST's balancing?)
#   no-resample,untied:1             (what resampling and phase tying buy)
#
# The rows still missing from the fast table: no-batchnorm,no-annealing,l1-0.1,l1-1,l1-2:1
# in one call, kl-0.1,kl-1,topk:1 in a second.
#
# The whole thing stops itself after LIMIT_S seconds (default 540): a row cut short keeps its
# last checkpoint (every 2,000 samples) and train state, so `experiments/ablations.py
# --recipe fast --runs RUNS` resumes it anywhere. Results: OUT/RUN.tar.gz for each run (its
# folder: config, history, weights, train state, eval.json; and its log), OUT/meta.tar.gz (the
# calls' logs and tables, GPU utilisation every 20 s) and OUT/summary.txt: at most 6 runs
# per call (8 files come back). Unpack the runs into runs/ablations and rerun ablations.py
# with the same --only/--seeds and --device cpu: it evaluates what was cut short and ships.
# The project runs from the checkout (PYTHONPATH); the machine's own torch is used.
# Dry run anywhere: DEVICE=cpu MAX_SAMPLES=600 EVAL_N=20 THREADS=1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: experiments/gpu_ablations.sh OUT_DIR}"
LIMIT="${LIMIT_S:-540}"
DEV="${DEVICE:-cuda}"
BUDGET="${MAX_SAMPLES:-199744}"
N_EVAL="${EVAL_N:-10000}"
THREADS="${THREADS:-2}"
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/gpu-ablations}"
GROUPS_=("${@:2}")
[ ${#GROUPS_[@]} -gt 0 ] || GROUPS_=(no-presence,st-no-presence:1,2 no-resample,untied:1)
for group in "${GROUPS_[@]}"; do
    [[ "$group" =~ ^[a-z0-9.,-]+:[0-9,]+$ ]] || {
        echo "bad group '$group': VARIANTS:SEEDS, e.g. no-batchnorm,topk:1,2" >&2; exit 2; }
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import os, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cpu cores', os.cpu_count())"
} > "$WORK/gpu.txt" 2>&1
( while sleep 20; do
    echo "$(date +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used \
        --format=csv,noheader 2>/dev/null) load $(cut -d' ' -f1 /proc/loadavg)"
  done ) > "$WORK/utilisation.log" 2>&1 &
monitor=$!

common=(--recipe fast --max-samples "$BUDGET" --device "$DEV" --threads "$THREADS"
        --eval-n "$N_EVAL" --runs "$WORK/runs" --ship "$WORK/ship")
pids=()
i=0
for group in "${GROUPS_[@]}"; do
    variants="${group%%:*}" seeds="${group#*:}"
    n=$(( $(tr -cd , <<<"$variants" | wc -c) + 1 ))
    n=$(( n * ($(tr -cd , <<<"$seeds" | wc -c) + 1) ))
    i=$((i + 1))
    timeout "$LIMIT" "$PY" experiments/ablations.py "${common[@]}" --only "$variants" \
        --seeds "$seeds" --parallel "$n" --table "$WORK/table-$i.md" > "$WORK/call-$i.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
kill $monitor 2>/dev/null

"$PY" - "$WORK" > "$WORK/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
print((work / "gpu.txt").read_text())
for run in sorted((work / "runs").glob("fast-*")):
    if not run.is_dir():
        continue
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()] \
        if (run / "history.jsonl").exists() else []
    ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
    last = hist[-1] if hist else {}
    print(run.name, {k: last.get(k) for k in ("samples", "accuracy", "density", "wall_s",
                                               "samples_per_s")})
    print("  eval", {k: ev.get(k) for k in ("e2ee", "fpe", "fne", "ce", "density_ratio",
                                            "exact_match_accuracy", "samples_seen")})
EOF
cat "$WORK/utilisation.log" >> "$WORK/summary.txt"
# at most 8 files of 16 MiB come back: one archive per run (its folder with weights and train
# state, and its log), one with the rest (logs, tables, utilisation); ship/ is rebuilt from the
# runs by ablations.py wherever they are unpacked
for run in "$WORK"/runs/fast-*/; do
    name="$(basename "$run")"
    tar -C "$WORK/runs" -czf "$OUT/$name.tar.gz" "$name" "$name.log"
done
tar -C "$WORK" -czf "$OUT/meta.tar.gz" --exclude=./runs --exclude=./ship .
cp "$WORK/summary.txt" "$OUT/summary.txt"
cat "$OUT/summary.txt" "$WORK"/call-*.log
