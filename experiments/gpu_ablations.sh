#!/usr/bin/env bash
# Issue 15's aid rows on one lent GPU: six rows of experiments/ablations.py's fast recipe
# (199,744 samples each, the budget of the MT and ST rows) side by side on the one GPU, fp32,
# 2 threads each, every row evaluated on the 10,000 test images:
#
#   no-presence s1 s2, st-no-presence s1 s2   (does the presence loss do ST's balancing?)
#   no-resample s1, untied s1                  (what resampling and phase tying buy)
#
#   experiments/gpu_ablations.sh OUT_DIR
#
# The whole thing stops itself after LIMIT_S seconds (default 540): a row cut short keeps its
# last checkpoint (every 2,000 samples) and train state, so `experiments/ablations.py
# --recipe fast --runs RUNS` resumes it anywhere. Results: OUT/RUN.tar.gz for each run (its
# folder: config, history, weights, train state, eval.json; and its log), OUT/meta.tar.gz (the
# two invocations' logs and tables, GPU utilisation every 20 s) and OUT/summary.txt.
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
timeout "$LIMIT" "$PY" experiments/ablations.py "${common[@]}" \
    --only no-presence,st-no-presence --seeds 1,2 --parallel 4 --table "$WORK/table-presence.md" \
    > "$WORK/presence.log" 2>&1 & p1=$!
timeout "$LIMIT" "$PY" experiments/ablations.py "${common[@]}" \
    --only no-resample,untied --seeds 1 --parallel 2 --table "$WORK/table-aids.md" \
    > "$WORK/aids.log" 2>&1 & p2=$!
wait $p1 $p2
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
cat "$OUT/summary.txt" "$WORK/presence.log" "$WORK/aids.log"
