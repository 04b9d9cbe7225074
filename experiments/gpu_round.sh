#!/usr/bin/env bash
# One lent GPU's worth of runs (about 9 minutes on one H100 with 16 CPU cores), three jobs
# side by side on the one GPU:
#
#   experiments/gpu_round.sh OUT_DIR            (TRAIN_MINUTES=7 by default)
#
# 1. tests/test_cuda.py: the CUDA path against the CPU path (OUT/pytest.log);
# 2. issue 12's run without the presence loss: configs/digit-circle-mt-generic-nopresence.json
#    (the generic points decoder, presence_weight 0, trunk_presence_weight 0, resampling off
#    because the resampler aims a fresh channel through the presence head) trained from
#    scratch for TRAIN_MINUTES, evaluated on 10,000 test images (OUT/nopresence/);
# 3. issue 14's folder run with the trunk presence head: 100,000 DigitCircle training
#    images (train seeds 0-99,999) + 500 validation images + 10,000 test images exported in
#    8 parallel parts, configs/digit-circle-mt-trunk.json (the shipped recipe plus
#    presence_pool max+mean and trunk_presence_weight 1) trained from the folder for
#    TRAIN_MINUTES, evaluated on the exported test folder (OUT/folder/).
# The project runs from the checkout (PYTHONPATH); the machine's own torch is used.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: experiments/gpu_round.sh OUT_DIR}"
MIN="${TRAIN_MINUTES:-7}"
DEV="${DEVICE:-cuda}"     # DEVICE=cpu PART=20 TEST_PART=10 N_EVAL=20: a dry run anywhere
PART="${PART:-12500}"     # training images per export part (8 parts)
TEST_PART="${TEST_PART:-5000}"
N_EVAL="${N_EVAL:-10000}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SP=("$PY" -m sparling_core.cli)
WORK="${WORK:-/tmp/gpu-round}"
mkdir -p "$WORK" "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import os, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name(0), 'cpu cores', os.cpu_count())"
} > "$OUT/gpu.txt" 2>&1

nopresence() {
    local run="$WORK/nopresence"
    "${SP[@]}" train --config configs/digit-circle-mt-generic-nopresence.json --device "$DEV" \
        --threads 4 --out "$run" --max-minutes "$MIN" --no-progress
    tar -C "$WORK" -czf "$OUT/nopresence/checkpoint.tar.gz" nopresence
    "${SP[@]}" evaluate "$run" --device "$DEV" --n "$N_EVAL" --no-progress \
        --json "$OUT/nopresence/eval.json"
}

export_part() {  # split first_seed n out
    "${SP[@]}" export --domain digit-circle --split "$1" --mark-split --first-seed "$2" \
        --n "$3" --no-progress --out "$4" > /dev/null
}

export_folder() {  # DATA: DATA/train (train + val lines), DATA/test
    local data="$1" i pids=()
    for i in 0 1 2 3 4 5 6 7; do
        export_part train $((i * PART)) "$PART" "$data/p$i" & pids+=($!)
    done
    export_part val 1000000000 500 "$data/pval" & pids+=($!)
    for i in 0 1; do
        export_part test $((2000000000 + i * TEST_PART)) "$TEST_PART" "$data/t$i" & pids+=($!)
    done
    wait "${pids[@]}" || return 1
    mkdir -p "$data/train/images" "$data/test/images"
    for i in 0 1 2 3 4 5 6 7 val; do
        mv "$data/p$i/images/"* "$data/train/images/"
        cat "$data/p$i/labels.jsonl" >> "$data/train/labels.jsonl"
    done
    for i in 0 1; do
        mv "$data/t$i/images/"* "$data/test/images/"
        cat "$data/t$i/labels.jsonl" >> "$data/test/labels.jsonl"
    done
    echo "exported: $(wc -l < "$data/train/labels.jsonl") train+val lines," \
         "$(wc -l < "$data/test/labels.jsonl") test lines"
}

folder() {
    local data="$WORK/dc-folder" run="$WORK/folder"
    export_folder "$data" || return 1
    "${SP[@]}" train --config configs/digit-circle-mt-trunk.json --data "$data/train" \
        --device "$DEV" --threads 4 --out "$run" --max-minutes "$MIN" --no-progress
    tar -C "$WORK" -czf "$OUT/folder/checkpoint.tar.gz" folder
    "${SP[@]}" evaluate "$run" --data "$data/test" --split test --device "$DEV" --no-progress \
        --json "$OUT/folder/eval.json"
}

# MODE=unselective: only the folder run's continuation, from the carried checkpoint
# RESUME_FROM (default runs/gpu-round/folder, the folder run above) with
# configs/digit-circle-mt-trunk-unselective.json (resample_unselective on), for
# TRAIN_MINUTES, then evaluated on the exported test folder (OUT/unselective/).
if [ "${MODE:-round}" = unselective ]; then
    data="$WORK/dc-folder" run="$WORK/unselective"
    mkdir -p "$OUT/unselective"
    {
        export_folder "$data" || exit 1
        rm -rf "$run" && cp -r "${RESUME_FROM:-runs/gpu-round/folder}" "$run"
        "${SP[@]}" train --config configs/digit-circle-mt-trunk-unselective.json \
            --data "$data/train" --device "$DEV" --threads 8 --out "$run" --resume \
            --max-minutes "$MIN" --no-progress || exit 1
        tar -C "$WORK" -czf "$OUT/unselective/checkpoint.tar.gz" unselective
        "${SP[@]}" evaluate "$run" --data "$data/test" --split test --device "$DEV" \
            --no-progress --json "$OUT/unselective/eval.json"
    } > "$OUT/unselective/log.txt" 2>&1
    rc=$?
    grep -h "resampled\|stopped" "$OUT/unselective/log.txt" | cut -c1-300
    tail -n 2 "$OUT/unselective/log.txt"
    exit $rc
fi

mkdir -p "$OUT/nopresence" "$OUT/folder"
nopresence > "$OUT/nopresence/log.txt" 2>&1 & a=$!
folder > "$OUT/folder/log.txt" 2>&1 & b=$!
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py > "$OUT/pytest.log" 2>&1
t=$?
wait $a; ra=$?
wait $b; rb=$?
echo "pytest rc $t, nopresence rc $ra, folder rc $rb"
tail -n 3 "$OUT/pytest.log" "$OUT/nopresence/log.txt" "$OUT/folder/log.txt"
cat "$OUT/nopresence/eval.json" "$OUT/folder/eval.json" 2>/dev/null | head -c 1500
