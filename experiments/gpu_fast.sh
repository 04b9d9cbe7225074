#!/usr/bin/env bash
# One lent GPU's worth of runs for issues 15 and 13 (about 9 minutes on one H200 with 16 CPU
# cores), four trainings side by side on the one GPU, fp32 (bf16 off, as on this CPU):
#
#   ROUND=1 experiments/gpu_fast.sh OUT_DIR [LATEX_WIP]     (TRAIN_MINUTES=6.5 by default)
#   ROUND=2 experiments/gpu_fast.sh OUT_DIR
#
# Round 1 (2026-11-27, 6 minutes of training):
# 1-3. Issue 15's faster schedule: the trunk-unselective recipe with a density cut every
#      2,000 samples instead of 4,000 and a 50,000-sample finish instead of 150,000, with the
#      learning rate on a cosine down to 0.1 x over it (configs/digit-circle-mt-fast.json as
#      it was then: finish_samples 50000, finish_lr 0.1; FAST_ROUND1 below) from scratch with
#      seeds 1 and 2, and with seed 1 and the old cut interval (--val-every 4000) to separate
#      the two changes; each evaluated on 10,000 test images.
# 4.   Issue 13's LaTeX run: the banked checkpoint LATEX_WIP (a copy of
#      experiments/latex-ocr-wip) resumed on the GPU for TRAIN_MINUTES to see where the recipe
#      goes (the shipped LaTeX checkpoint is trained on the CPU); evaluated on 1,000 images.
# Round 2 (4.5 minutes): configs/digit-circle-mt-fast.json as it is now (a 60,000-sample
# finish at a constant learning rate) with seeds 1, 2 and 3, and seed 1 with the resampler's
# cooldown halved (configs/digit-circle-mt-fast-cooldown15k.json).
# Results: OUT/summary.txt and OUT/results.tar.gz (config, history, log, evaluation and
# weights of each run). The project runs from the checkout (PYTHONPATH); the machine's own
# torch is used. DEVICE=cpu TRAIN_MINUTES=0.2 N_EVAL=20: a dry run anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: experiments/gpu_fast.sh OUT_DIR [LATEX_WIP]}"
WIP="${2:-experiments/latex-ocr-wip}"
MIN="${TRAIN_MINUTES:-6.5}"
DEV="${DEVICE:-cuda}"
N_EVAL="${N_EVAL:-10000}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SP=("$PY" -m sparling_core.cli)
WORK="${WORK:-/tmp/gpu-fast}"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import os, torch, matplotlib; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'matplotlib', matplotlib.__version__, 'cpu cores', os.cpu_count())"
} > "$WORK/gpu.txt" 2>&1

ROUND="${ROUND:-2}"
FAST_ROUND1="$WORK/fast-round1.json"
"$PY" -c "import json, sys; c = json.load(open('configs/digit-circle-mt-fast.json'))
c.update(finish_samples=50000, finish_lr=0.1); json.dump(c, open(sys.argv[1], 'w'))" \
    "$FAST_ROUND1"

fast() {  # name config seed [extra train flags]
    local name="$1" config="$2" seed="$3" run="$WORK/$1"
    shift 3
    "${SP[@]}" train --config "$config" --device "$DEV" --threads 3 \
        --seed "$seed" --out "$run" --max-minutes "$MIN" --no-progress "$@" \
        > "$WORK/$name.log" 2>&1
    "${SP[@]}" evaluate "$run" --device "$DEV" --n "$N_EVAL" --no-progress \
        --json "$run/eval.json" >> "$WORK/$name.log" 2>&1
}

latex() {
    local run="$WORK/latex"
    cp -r "$WIP" "$run"
    "${SP[@]}" train --config configs/latex-ocr-mt.json --device "$DEV" --threads 4 \
        --out "$run" --resume --max-minutes "$MIN" --no-progress > "$WORK/latex.log" 2>&1
    "${SP[@]}" evaluate "$run" --device "$DEV" --n $((N_EVAL / 10)) --no-progress \
        --json "$run/eval.json" >> "$WORK/latex.log" 2>&1
}

if [ "$ROUND" = 1 ]; then
    RUNS=(fast-s1 fast-s2 cut4000-s1 latex)
    fast fast-s1 "$FAST_ROUND1" 1 & p1=$!
    fast fast-s2 "$FAST_ROUND1" 2 & p2=$!
    fast cut4000-s1 "$FAST_ROUND1" 1 --val-every 4000 & p3=$!
    latex & p4=$!
else
    RUNS=(fast60k-s1 fast60k-s2 fast60k-s3 cooldown15k-s1)
    fast fast60k-s1 configs/digit-circle-mt-fast.json 1 & p1=$!
    fast fast60k-s2 configs/digit-circle-mt-fast.json 2 & p2=$!
    fast fast60k-s3 configs/digit-circle-mt-fast.json 3 & p3=$!
    fast cooldown15k-s1 configs/digit-circle-mt-fast-cooldown15k.json 1 & p4=$!
fi
wait $p1 $p2 $p3 $p4

"$PY" - "$WORK" "${RUNS[@]}" > "$WORK/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
print((work / "gpu.txt").read_text())
for run in sys.argv[2:]:
    d = work / run
    hist = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()] \
        if (d / "history.jsonl").exists() else []
    ev = json.loads((d / "eval.json").read_text()) if (d / "eval.json").exists() else {}
    print(f"== {run}: {len(hist)} validations")
    for h in hist[::max(1, len(hist) // 25)] + hist[-1:]:
        print({k: h.get(k) for k in ("samples", "accuracy", "density", "lowered", "resampled",
                                     "lr", "wall_s", "samples_per_s")})
    print("eval", {k: ev.get(k) for k in ("e2ee", "fpe", "fne", "ce", "density",
                                          "density_ratio", "n", "exact_match")})
EOF
for run in "${RUNS[@]}"; do rm -f "$WORK/$run/train_state.pt"; done
tar -C "$WORK" -czf "$OUT/results.tar.gz" .
cp "$WORK/summary.txt" "$OUT/summary.txt"
cat "$OUT/summary.txt"
